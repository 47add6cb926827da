"""The ``cdmqta`` command line: one sub-command per job, each implemented in the module that owns it.

Every sub-command module defines ``add_arguments(parser)`` and ``main(args) -> int``; they are imported only
when that sub-command runs, so ``cdmqta generate`` does not pay for importing torch.
"""

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "generate": ("cdmqta.hw.generate", "write the Verilog of an accelerator and its config.json"),
    "demo": ("cdmqta.sw.demo", "run one quantized LoRA training step on the RTL and check it bit for bit"),
    "finetune": ("cdmqta.sw.finetune", "LoRA fine-tuning study of a small diffusion model: fp32 vs int8 vs int8-w4"),
    "bench": ("cdmqta.sw.bench", "cycles, utilization and energy of a workload: ours vs fixed-WS baselines"),
    "synth": ("cdmqta.synth.flow", "FPGA synthesis and place-and-route with yosys/nextpnr (YoWASP)"),
}


class UsageError(Exception):
    """A bad command-line value: printed as one line, exit code 2, no traceback."""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="cdmqta",
        description="cdm-qta: generator, verification and performance flow for a quantized LoRA-training accelerator.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._module.main(args) or 0)
    except (UsageError, ValueError, FileNotFoundError) as exc:
        print(f"cdmqta {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
