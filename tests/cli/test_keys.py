"""``pausetls keys new|rotate|show``: the key file a fleet shares, and its format (`pausetls.sessions.key_file`)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from pausetls.cli.main import main
from pausetls.sealing import SessionSealer
from pausetls.sessions.key_file import KeyFileError, read_key_file

from served import run_pausetls


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_writes_one_key_readable_by_the_owner_only_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keys"
    assert main(["keys", "new", str(path)]) == 0
    assert mode(path) == 0o600
    (key,) = read_key_file(path)
    assert key.id == 1 and len(key.secret) == 32 and key.age() is not None and 0 <= key.age() < 3600
    before = path.read_bytes()
    assert main(["keys", "new", str(path)]) == 1
    assert "exists: not overwriting" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_rotate_appends_a_current_key_and_keeps_the_old_ones(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    main(["keys", "new", str(path)])
    old = read_key_file(path)
    sealed = SessionSealer.from_file(path).seal(b"session", b"where")
    assert main(["keys", "rotate", str(path)]) == 0
    assert main(["keys", "rotate", str(path)]) == 0
    keys = read_key_file(path)
    assert [key.id for key in keys] == [1, 2, 3] and keys[0] == old[0]
    assert len({key.secret for key in keys}) == 3
    assert mode(path) == 0o600
    sealer = SessionSealer.from_file(path)
    assert sealer.current == 3 and sealer.open(sealed, b"where") == b"session"  # old keys still open
    assert not [name for name in os.listdir(tmp_path) if name != "keys"], "no temporary file left behind"


def test_rotate_wraps_ids_after_255_and_skips_ids_in_use(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"0:{'11' * 32}:1\n255:{'22' * 32}:2\n")
    main(["keys", "rotate", str(path)])
    assert [key.id for key in read_key_file(path)] == [0, 255, 1]


def test_show_lists_ids_and_ages_never_the_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys"
    path.write_text(f"4:{'ab' * 32}\n7:{'cd' * 32}:{int(time.time()) - 7200}\n")
    assert main(["keys", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ab" * 8 not in out and "cd" * 8 not in out
    rows = [line.split() for line in out.splitlines()[1:]]
    assert rows[0][:2] == ["4", "unknown"] and "decrypts" in rows[0]
    assert rows[1][:3] == ["7", "2h", "0m"] and "current" in rows[1]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("1:abcd\n", r"keys:1: expected ID:HEX\[:CREATED\]"),
        (f"256:{'00' * 32}\n", "keys:1: expected"),
        (f"1:{'00' * 32}\n1:{'11' * 32}\n", "keys:2: key id 1 appears twice"),
        ("# nothing\n", "no keys"),
    ],
)
def test_malformed_files_are_refused_without_quoting_the_key(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(KeyFileError, match=error) as caught:
        read_key_file(path)
    assert "00000000" not in str(caught.value)


def test_a_missing_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "rotate", str(tmp_path / "absent")]) == 1
    assert f"no such file: {tmp_path / 'absent'}" in capsys.readouterr().err


def test_help_documents_the_format_and_id_rules(tmp_path: Path) -> None:
    result = run_pausetls(tmp_path, "keys", "rotate", "--help")
    assert result.returncode == 0, result.stderr
    for words in ("ID:HEX:CREATED", "0-255", "LAST line is the current key", "wrapping after 255", "0600", "SIGHUP"):
        assert words in result.stdout
