"""Run every benchmark in turn (``make bench``); each prints its own markdown table.

Each script measures errtrace against its baseline in one process, so the ratios hold
on any machine; absolute microseconds depend on it. ``--quick`` asks each script for
a shorter run where it supports one.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = {
    "asgi_overhead.py": ["--quick"],
    "wsgi_overhead.py": ["--quick"],
    "grpc_overhead.py": ["--reps", "5"],
    "classify.py": [],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    args = parser.parse_args()
    failed = []
    for script, quick_args in SCRIPTS.items():
        print(f"\n## {script}\n", flush=True)
        started = time.monotonic()
        command = [sys.executable, str(HERE / script), *(quick_args if args.quick else [])]
        if subprocess.call(command) != 0:
            failed.append(script)
        print(f"\n({script}: {time.monotonic() - started:.0f} s)", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
