"""``cdmqta finetune``: what quantized LoRA training costs on a small diffusion model (fp32 vs int8 vs int8-w4).

Pre-trains a small diffusers U-Net on sklearn digits 0-8, LoRA-fine-tunes it to the unseen digit 9 in each
quantization mode over several seeds, and reports a digits-FID (mean +- std over seeds) and seconds per
fine-tuning step; see ``cdmqta.sw.apps.diffusion_study``. ``--quick`` is a ~1 minute version (2 cores).
"""

import argparse
import dataclasses
import json

from cdmqta.errors import UsageError
from cdmqta.paths import check_outputs

__all__ = ["add_arguments", "main", "config_from_args"]


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text} must be >= 1")
    return v


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true",
                        help="quick version (short pre-training and fine-tuning, 3 seeds, kv placement; ~1 min)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    parser.add_argument("--markdown", metavar="PATH", help="write the results table as markdown to PATH")
    parser.add_argument("--seeds", type=_positive_int, metavar="N",
                        help="number of fine-tuning seeds (0..N-1), at least 2 (default: 3 quick, 5 full)")
    parser.add_argument("--steps", type=_positive_int, metavar="N",
                        help="LoRA fine-tuning steps per run (default: 30 quick, 150 full)")
    parser.add_argument("--placement", choices=("kv", "all", "both"),
                        help="LoRA targets: kv = cross-attention to_k/to_v (Custom-Diffusion style), all = "
                             "to_q/to_k/to_v/to_out.0 of every attention, both (default: kv quick, both full)")
    parser.add_argument("--rank", type=_positive_int, metavar="R", help="LoRA rank (default 4, at most 16)")
    parser.add_argument("--modes", metavar="LIST",
                        help="comma-separated subset of fp32,int8,int8-w4,int8-delayed (delayed max-abs "
                             "scaling of H/dH), int8-delayed-sr (delayed, stochastic gradient rounding) "
                             "(default: the first three)")
    parser.add_argument("--rounding", choices=("nearest", "stochastic"),
                        help="gradient rounding of the quantized modes (default nearest)")
    parser.add_argument("--pretrain-steps", type=int, metavar="N",
                        help="pre-training steps of the base model (default: 200 quick, 1200 full)")
    parser.add_argument("--samples", type=_positive_int, metavar="N",
                        help="generated images per run for the digits-FID (default: 100 quick, 180 full)")
    parser.add_argument("--threads", type=_positive_int, metavar="N", help="torch CPU threads (default 1)")
    parser.add_argument("--quiet", action="store_true", help="print only the final table")


def config_from_args(args):
    # the study (torch, diffusers, scikit-learn: seconds to import) is needed to run, not for ``--help``
    from .diffusion_study import FULL, MODES, QUICK

    cfg = QUICK if args.quick else FULL
    changes = {}
    if args.seeds is not None:
        if args.seeds < 2:
            raise UsageError(f"--seeds {args.seeds}: need at least 2 seeds for a standard deviation")
        changes["seeds"] = tuple(range(args.seeds))
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.placement is not None:
        changes["placements"] = ("kv", "all") if args.placement == "both" else (args.placement,)
    if args.rank is not None:
        changes["rank"] = args.rank
        changes["alpha"] = float(args.rank)
    if args.modes is not None:
        modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
        bad = [m for m in modes if m not in MODES]
        if bad or not modes:
            raise UsageError(f"--modes {args.modes!r}: choose from {','.join(MODES)}")
        changes["modes"] = modes
    if args.rounding is not None:
        changes["rounding"] = args.rounding
    if args.pretrain_steps is not None:
        if args.pretrain_steps < 0:
            raise UsageError(f"--pretrain-steps {args.pretrain_steps} must be >= 0")
        changes["pretrain_steps"] = args.pretrain_steps
    if args.samples is not None:
        if args.samples < 40:
            raise UsageError(f"--samples {args.samples} must be >= 40 (the FID covariance is 32-dimensional)")
        changes["samples"] = args.samples
    if args.threads is not None:
        changes["threads"] = args.threads
    return dataclasses.replace(cfg, **changes)


def main(args):
    from .diffusion_study import format_table, run_study  # (see config_from_args)

    cfg = config_from_args(args)
    check_outputs(files={"--json": args.json, "--markdown": args.markdown})
    result = run_study(cfg, log=(lambda *a: None) if args.quiet else (lambda msg: print(msg, flush=True)))
    table = format_table(result)
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    return 0
