"""Run pytest while busy loops hog every core: the suite must pass on a loaded machine too.

    python tests/under_load.py                      # the whole suite, once
    python tests/under_load.py --repeat 3           # three times in a row (stops at the first failure)
    python tests/under_load.py -- -m timing         # only the timing-sensitive tests (what CI does)

One busy-loop process per core (``os.cpu_count()``, or ``--hogs N``) runs for
the whole time and is killed at the end, whatever happens.  Arguments after
``--`` go to pytest.  The exit status is pytest's (the first failing run's).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

BUSY_LOOP = "while True: pass"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs in a row (default 1)")
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 2, help="busy loops (default: one per core)")
    parser.add_argument("pytest_args", nargs="*", help="arguments for pytest (after --)")
    args = parser.parse_args(argv)
    # the pytest script, not ``python -m pytest``: that would put the checkout first on sys.path, and its
    # pausetls/ has no compiled binding when pausetls is installed (as CI does)
    pytest = shutil.which("pytest")
    if pytest is None:
        parser.error("pytest is not installed: pip install '.[test]'")
    hogs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(args.hogs)]
    try:
        for run in range(1, args.repeat + 1):
            started = time.monotonic()
            code = subprocess.call([pytest, *args.pytest_args])
            print(
                f"under_load: run {run} of {args.repeat} with {args.hogs} busy loops: exit {code} "
                f"in {time.monotonic() - started:.0f} s",
                flush=True,
            )
            if code != 0:
                return code
        return 0
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


if __name__ == "__main__":
    sys.exit(main())
