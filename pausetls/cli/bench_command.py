"""``pausetls bench``: find the benchmark harness and run it.

The harness is ``bench/`` of a pausetls checkout, outside the package (it
starts nginx, draws with matplotlib and writes into the checkout), so the
installed command looks for it: ``--bench-dir DIR``, else ``./bench`` (run it
from the checkout, as after ``pip install '.[bench]'``), else the checkout
this pausetls was imported from (an in-place build or an editable install).
Every other argument goes to the harness: ``pausetls bench --help`` is its help,
or, where there is no harness (an installed pausetls), this command's own.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_bench_parser", "find_bench_dir"]

NOT_FOUND = (
    "pausetls bench: no benchmark harness found (looked for {looked}); it is the bench/ directory of a pausetls "
    "source checkout, so run the command from the checkout's top directory or give --bench-dir PATH/bench"
)
DESCRIPTION = (
    "Benchmark pausetls against threads, gevent + stdlib ssl and nginx. The harness is the bench/ directory of "
    "a pausetls source checkout (git clone, then pip install '.[bench]'): run from the checkout's top directory, "
    "or give --bench-dir; there, 'pausetls bench --help' lists the harness's own options."
)


def add_bench_parser(commands: Any) -> None:
    bench = commands.add_parser(
        "bench",
        add_help=False,  # --help belongs to the harness
        help="benchmark pausetls against threads, gevent + stdlib ssl and nginx (bench/ of a checkout; "
        "'pausetls bench --help' lists its options)",
        description=DESCRIPTION,
    )
    bench.add_argument("--bench-dir", type=Path, metavar="DIR", help="the checkout's bench/ directory")
    bench.add_argument("-h", "--help", action="store_true", help="this help, or the harness's when it is found")
    bench.set_defaults(run=_run, takes_extra_arguments=True, subparser=bench)


def find_bench_dir(explicit: Path | None = None) -> Path | None:
    """The harness directory, or None."""
    candidates = [explicit] if explicit else [Path.cwd() / "bench", Path(__file__).resolve().parents[2] / "bench"]
    for candidate in candidates:
        if candidate is not None and (candidate / "run.py").is_file() and (candidate / "__init__.py").is_file():
            return candidate.resolve()
    return None


def _run(args: argparse.Namespace) -> int:
    directory = find_bench_dir(args.bench_dir)
    if directory is not None and args.help:
        args.extra_arguments.append("--help")  # the harness's options are what the user is after
    elif args.help:
        args.subparser.print_help()
        return 0
    if directory is None:
        looked = str(args.bench_dir) if args.bench_dir else "./bench and the checkout of this pausetls"
        print(NOT_FOUND.format(looked=looked), file=sys.stderr)
        return 2
    sys.path.append(str(directory.parent))  # appended: the pausetls already imported stays the one used
    runner = importlib.import_module("bench.run")
    if Path(runner.__file__ or "").resolve().parent != directory:
        print(f"pausetls bench: another 'bench' module ({runner.__file__}) shadows {directory}", file=sys.stderr)
        return 2
    status: int = runner.main(args.extra_arguments)
    return status
