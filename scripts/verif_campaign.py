"""Random-program campaign: many constrained-random programs on the RTL against the ISA emulator.

Runs the random tier of the regression (``verif/test_random_programs.py``, :mod:`cdmqta.sw.rtl.tb_random`) at
scale: batches of ``--batch`` hypothesis-generated programs, one Verilator simulation per batch, the batches going
round the random configurations (:data:`cdmqta.sw.runtime.randprog.RANDOM_CONFIGS`), batch i with hypothesis seed
``--seed + i`` (logged per batch). Every program starts from poisoned memories and is compared over the whole state
(status, failing index, macs, host memory, scratchpad, accumulator); a mismatch is shrunk to a minimal program,
which the summary records. The summary JSON (``--out``) is rewritten after every batch and the campaign resumes
from it (batches already in it are skipped), so an interrupted campaign continues where it stopped.

    python scripts/verif_campaign.py                        # 10,000 programs -> results/verif_campaign.json
    python scripts/verif_campaign.py --programs 600 --batch 100 --out /tmp/c.json
"""

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

from cdmqta.sw.runtime.randprog import RANDOM_CONFIGS, all_bins

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--programs", type=int, default=10000, help="programs in all (default 10000)")
    p.add_argument("--batch", type=int, default=250, help="programs per simulation (default 250)")
    p.add_argument("--configs", default=",".join(sorted(RANDOM_CONFIGS)),
                   help=f"random configurations, comma-separated (default: all of {', '.join(sorted(RANDOM_CONFIGS))})")
    p.add_argument("--seed", type=int, default=1000, help="hypothesis seed of batch 0; batch i uses seed + i")
    p.add_argument("--max-len", type=int, default=24, help="longest program in commands (default 24)")
    p.add_argument("--out", default=str(ROOT / "results" / "verif_campaign.json"),
                   help="summary JSON, rewritten after every batch and read back to resume")
    p.add_argument("--fresh", action="store_true", help="ignore an existing --out instead of resuming from it")
    a = p.parse_args(argv)
    names = [n for n in a.configs.split(",") if n]
    bad = [n for n in names if n not in RANDOM_CONFIGS]
    if bad or not names:
        p.error(f"--configs {a.configs}: unknown configuration(s) {', '.join(bad) or '(none)'}; "
                f"choose from {', '.join(sorted(RANDOM_CONFIGS))}")
    if a.programs < 1 or a.batch < 1:
        p.error("--programs and --batch must be >= 1")
    out_dir = Path(a.out).resolve().parent
    if not out_dir.is_dir():
        p.error(f"--out {a.out}: {out_dir} does not exist")
    a.names = names
    return a


def _summary(batches, args):
    per_config = {}
    for b in batches:
        c = per_config.setdefault(b["name"], {"programs": 0, "commands": 0, "mismatches": 0, "seconds": 0.0,
                                              "statuses": Counter(), "bins": Counter()})
        c["programs"] += b["programs_run"]
        c["commands"] += b["commands_run"]
        c["mismatches"] += int(b["failure"] is not None)
        c["seconds"] += b["seconds"]
        c["statuses"].update(b["statuses"])
        c["bins"].update(b["bins"])
    for name, c in per_config.items():
        cfg = RANDOM_CONFIGS[name][0]
        want = {"|".join(map(str, x)) for x in all_bins(cfg)}
        c["bins_total"], c["bins_hit"] = len(want), len(want & set(c["bins"]))
        c["bins_missing"] = sorted(want - set(c["bins"]))
        c["statuses"], c["bins"] = dict(c["statuses"]), dict(sorted(c["bins"].items()))
    return {
        "command": "python scripts/verif_campaign.py " + " ".join(sys.argv[1:]),
        "programs": sum(b["programs_run"] for b in batches),
        "commands": sum(b["commands_run"] for b in batches),
        "mismatches": sum(int(b["failure"] is not None) for b in batches),
        "target_programs": args.programs,
        "batch": args.batch,
        "per_config": per_config,
        "failures": [{"name": b["name"], "seed": b["seed"], **b["failure"]} for b in batches if b["failure"]],
        "batches": [{k: b[k] for k in ("name", "seed", "programs_run", "commands_run", "seconds")}
                    | {"mismatch": b["failure"] is not None} for b in batches],
    }


def _write(path, data):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def main(argv=None):
    args = parse_args(argv)
    from cdmqta.sw.rtl.random_tier import run_random  # the simulator stack, only once the arguments are good

    done = []
    if not args.fresh and os.path.exists(args.out):
        with open(args.out) as f:
            old = json.load(f)
        done = old.get("_batches_full", [])
        print(f"resuming from {args.out}: {len(done)} batches, {sum(b['programs_run'] for b in done)} programs done")
    have = {(b["name"], b["seed"]) for b in done}
    n_batches = -(-args.programs // args.batch)
    t0 = time.time()
    ran = 0
    for i in range(n_batches):
        name, seed = args.names[i % len(args.names)], args.seed + i
        if (name, seed) in have:
            continue
        count = min(args.batch, args.programs - i * args.batch)
        t = time.time()
        res = run_random(name, count, seed, max_len=args.max_len)
        res.pop("config", None)
        done.append(res)
        ran += res["programs_run"]
        total = sum(b["programs_run"] for b in done)
        rate = ran / (time.time() - t0)
        eta = (args.programs - total) / rate if rate else float("nan")
        status = "MISMATCH (shrunk program in the summary)" if res["failure"] else "0 mismatches"
        print(f"[batch {i + 1}/{n_batches}] {name} seed {seed}: {res['programs_run']} programs in "
              f"{time.time() - t:.0f} s, {status}; {total}/{args.programs} done, ETA {eta / 60:.0f} min", flush=True)
        if res["failure"]:
            print(res["failure"]["listing"])
            print("; ".join(res["failure"]["diffs"]), flush=True)
        _write(args.out, {**_summary(done, args), "_batches_full": done})
    data = _summary(done, args)
    _write(args.out, {**data, "_batches_full": done})
    print(f"{data['programs']} programs, {data['commands']} commands, {data['mismatches']} mismatches -> {args.out}")
    for name, c in data["per_config"].items():
        print(f"  {name}: {c['programs']} programs, {c['mismatches']} mismatches, functional bins "
              f"{c['bins_hit']}/{c['bins_total']}" + (f", missing {c['bins_missing']}" if c["bins_missing"] else ""))
    return 1 if data["mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
