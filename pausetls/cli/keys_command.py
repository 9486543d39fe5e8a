"""``pausetls keys new|rotate|show FILE``: make and rotate the key file a fleet shares.

One file serves ``--session-key-file`` (sealing sessions in a shared store) and
``--ticket-key-file`` (stateless session tickets).  The format lives in
`pausetls.sessions.key_file`; this module only reads and writes it, and never
prints a key.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from typing import Any

from ..sessions.key_file import KeyFileError, new_key, read_key_file, rotated, write_key_file

__all__ = ["add_keys_parser"]

FORMAT_HELP = """\
key file format: one key a line, ID:HEX:CREATED
  ID       0-255, unique in the file (the first new key is 1; rotate takes the next
           free id after the current one, wrapping after 255)
  HEX      64 hex digits: 32 random bytes
  CREATED  when the key was made, seconds since the epoch (files without it still
           load; their keys have no age and are never retired by age)
The LAST line is the current key: it seals new sessions and encrypts new tickets.
The lines above only open sessions and decrypt tickets they made, until removed
(or, for tickets, older than --ticket-key-max-age). Blank lines and # comments
are ignored. Files are written atomically with mode 0600.

rotating a fleet: run `pausetls keys rotate FILE`, copy FILE to every server,
then send each `pausetls serve` SIGHUP; tickets and sessions made before stay
resumable with the old keys."""


def add_keys_parser(commands: Any) -> None:
    keys = commands.add_parser(
        "keys",
        help="make, rotate and list session and ticket key files",
        description="Make, rotate and list the key file shared by servers that resume each other's sessions "
        "(--session-key-file, --ticket-key-file).",
        epilog=FORMAT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = keys.add_subparsers(dest="keys_action", required=True, metavar="ACTION")
    for name, help_text in (
        ("new", "write a new key file with one fresh key (mode 0600); refuses to overwrite"),
        ("rotate", "append a fresh current key; the older keys stay, and only decrypt"),
        ("show", "list the key ids, their ages and which one is current (never the keys)"),
    ):
        action = actions.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=FORMAT_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        action.add_argument("file", metavar="FILE")
        action.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        if args.keys_action == "new":
            write_key_file(args.file, [new_key(1)], replace=False)
            print(f"pausetls: wrote {args.file} with key 1 (mode 0600)")
        elif args.keys_action == "rotate":
            keys = rotated(read_key_file(args.file))
            write_key_file(args.file, keys, replace=True)
            print(f"pausetls: {args.file}: key {keys[-1].id} is now current; {len(keys) - 1} older keys decrypt only")
        else:
            _show(args.file)
    except KeyFileError as exc:
        print(f"pausetls: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _show(path: str) -> None:
    keys = read_key_file(path)
    now = time.time()
    print("id  age          role")
    for key in keys:
        age = key.age(now)
        role = "current (encrypts)" if key is keys[-1] else "decrypts only"
        print(f"{key.id:<3} {_age(age):<12} {role}")


def _age(seconds: float | None) -> str:
    """``3d 4h``, ``2h 5m``, ``4m 3s`` or ``12s``: two units are enough to tell keys apart."""
    if seconds is None:
        return "unknown"
    left = max(0, int(seconds))
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    for (big, big_size), (small, small_size) in itertools.pairwise(units):
        if left >= big_size:
            return f"{left // big_size}{big} {left % big_size // small_size}{small}"
    return f"{left}s"
