#!/usr/bin/env python3
"""Wall time of the command line's start-up: ``cdmqta --help`` and ``cdmqta generate --help``.

    python scripts/bench_cli.py [--cdmqta PATH] [--repeat 15] [--json out.json]

Runs each command ``--repeat`` times as a fresh process and prints min / median / max seconds. ``--cdmqta``
measures another installation's entry point (e.g. an older checkout's virtualenv ``bin/cdmqta``), which is how the
README's before/after numbers were taken.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = (["--help"], ["generate", "--help"], ["demo", "--help"], ["bench", "--help"])


def measure(exe, argv, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        p = subprocess.run([exe, *argv], capture_output=True)
        times.append(time.perf_counter() - t)
        if p.returncode not in (0, 2):
            raise SystemExit(f"{exe} {' '.join(argv)} failed ({p.returncode}): {p.stderr.decode()[-500:]}")
    return {"min_s": round(min(times), 3), "median_s": round(statistics.median(times), 3),
            "max_s": round(max(times), 3)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cdmqta", default=shutil.which("cdmqta"), help="the cdmqta executable (default: on PATH)")
    ap.add_argument("--repeat", type=int, default=15, help="runs per command (default 15)")
    ap.add_argument("--json", help="also write the results as JSON")
    args = ap.parse_args(argv)
    if not args.cdmqta:
        raise SystemExit("cdmqta is not on PATH; pass --cdmqta PATH")
    if args.repeat < 1:
        raise SystemExit(f"--repeat {args.repeat} must be >= 1")
    results = {}
    for cmd in COMMANDS:
        key = "cdmqta " + " ".join(cmd)
        results[key] = measure(args.cdmqta, cmd, args.repeat)
        r = results[key]
        print(f"{key:26s} min {r['min_s']:.3f} s  median {r['median_s']:.3f} s  max {r['max_s']:.3f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cdmqta": args.cdmqta, "repeat": args.repeat, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
