#!/usr/bin/env python3
"""Regenerate the Stable Diffusion 1.5 LoRA training-step workloads in sw/perf/data/.

    python scripts/extract_workloads.py            # writes sw/perf/data/sd15-lora-{kv,all}.csv and
    workloads_summary.json

The U-Net is built from the published SD-1.5 config on PyTorch's meta device (shapes only, random weights, no
download; a few seconds), batch 1, 64x64 latent, 77 text tokens; see cdmqta.sw.perf.workloads for what is recorded.
``--check`` also runs a small U-Net for real on the CPU and compares the recorded MACs with PyTorch's FLOP counter.
"""

import argparse
import json
import os
import sys

from cdmqta.sw.perf import extract as X
from cdmqta.sw.perf import workloads as W

COMMAND = "python scripts/extract_workloads.py"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=W.data_dir(), help="output folder (default: the package's sw/perf/data)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--latent", type=int, default=64, help="latent height = width (default 64, i.e. 512x512 images)")
    p.add_argument("--tokens", type=int, default=77, help="text tokens (default 77)")
    p.add_argument(
        "--check", action="store_true", help="also verify MAC totals on a small U-Net against torch's FLOP counter"
    )
    args = p.parse_args(argv)

    os.makedirs(args.out, exist_ok=True)
    summary = {}
    for workload, placement in W.WORKLOADS.items():
        rows = X.build_workload(placement, W.RANKS, batch=args.batch, latent=args.latent, tokens=args.tokens)
        path = os.path.join(args.out, f"{workload}.csv")
        W.save_csv(rows, path, header_comment=(
            f"{workload}: GEMMs of one Stable Diffusion 1.5 U-Net LoRA training step (placement {placement!r}: "
            f"{', '.join(W.PLACEMENTS[placement])}),\nbatch {args.batch}, {args.latent}x{args.latent} latent, "
            f"{args.tokens} text tokens, frozen U-Net; rank 0 = rows of every rank. Regenerate: {COMMAND}"))
        per_rank = {}
        for r in W.RANKS:
            sel = [g for g in rows if g.rank in (0, r)]
            per_rank[r] = {f"{ph}/{cls}": {"gemms": c, "rows": d, "macs": mac}
                           for (ph, cls), (c, d, mac) in W.summarize(sel).items()}
        summary[workload] = {"placement": list(W.PLACEMENTS[placement]), "batch": args.batch, "latent": args.latent,
                             "tokens": args.tokens, "csv_rows": len(rows), "per_rank": per_rank}
        print(f"{workload}: {len(rows)} rows -> {path}")
        print(f"  {'phase/class':<16}{'GEMMs':>8}{'rows':>6}{'GMAC':>12}   (rank 4 | rank 128 for lora)")
        for key, v in per_rank[4].items():
            extra = f"   | {per_rank[128][key]['gemms']:>5} {per_rank[128][key]['macs'] / 1e9:10.3f}" \
                if key.endswith("lora") else ""
            print(f"  {key:<16}{v['gemms']:>8}{v['rows']:>6}{v['macs'] / 1e9:12.3f}{extra}")
    with open(os.path.join(args.out, "workloads_summary.json"), "w") as f:
        json.dump({"command": COMMAND, "workloads": summary}, f, indent=1, sort_keys=True)
        f.write("\n")
    if args.check:
        for placement in W.PLACEMENTS:
            res = X.verify(W.TINY_CONFIG, placement, rank=8, tokens=7)
            ok = all(a == b for a, b in res.values())
            print(f"check tiny U-Net, placement {placement}: {res} {'OK' if ok else 'MISMATCH'}")
            if not ok:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
