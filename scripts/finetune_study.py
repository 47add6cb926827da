#!/usr/bin/env python3
"""The full fine-tuning study: what quantized LoRA training (int8, int8-w4) costs against fp32.

    python scripts/finetune_study.py        # ~10-15 min on 2 cores; writes results/finetune_study.{json,md}

Pre-trains a small diffusers U-Net on sklearn digits 0-8, LoRA-fine-tunes it to the unseen digit 9 with both
placements (cross-attention K/V, all attention projections), fp32 / int8 / int8-w4, 5 seeds, and reports the
digits-FID (mean +- std over seeds) and seconds per fine-tuning step (see cdmqta.sw.apps.diffusion_study). Every
option of ``cdmqta finetune`` is accepted (e.g. --seeds, --steps, --placement, --rank, --rounding); ``--quick``
gives the one-minute version.
"""

import argparse
import json
import os
import platform
import sys

from cdmqta.sw.apps import finetune

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(os.path.dirname(HERE), "results")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    finetune.add_arguments(p)
    p.set_defaults(json=os.path.join(RESULTS, "finetune_study.json"),
                   markdown=os.path.join(RESULTS, "finetune_study.md"))
    args = p.parse_args(argv)
    try:
        rc = finetune.main(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"finetune_study: error: {exc}", file=sys.stderr)
        return 2
    command = " ".join(["python", "scripts/finetune_study.py"] + list(argv))
    with open(args.json) as f:
        result = json.load(f)
    result["command"] = command
    result["machine"] = {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                         "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    with open(args.markdown) as f:
        table = f.read()
    with open(args.markdown, "w") as f:
        f.write(f"Command: `{command}`\n\n{table}")
    print(f"wrote {args.json} and {args.markdown}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
