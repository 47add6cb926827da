"""The ``cdmqta`` command line: one sub-command per job, each implemented in the module that owns it.

Every sub-command module defines ``add_arguments(parser)`` and ``main(args) -> int``. A module is imported only
when its sub-command is chosen (``cdmqta --help`` imports none of them, ``cdmqta generate`` no torch), so the
top-level parser lists the sub-commands from :data:`SUBCOMMANDS` alone.

Errors: the project's own input errors (:class:`cdmqta.errors.InputError`: a configuration value, a bad option,
a shape that cannot map, a missing input file) and a missing or failing external tool print one line
``cdmqta <command>: error: ...`` and exit with status 2; anything else is a bug and shows its traceback.
"""

import argparse
import importlib
import sys

from cdmqta.errors import InputError, ToolError, UsageError

__all__ = ["SUBCOMMANDS", "UsageError", "build_parser", "main"]

#: name -> (module, one-line help)
SUBCOMMANDS = {
    "generate": ("cdmqta.hw.generate", "write the Verilog of an accelerator and its config.json"),
    "demo": ("cdmqta.sw.apps.demo", "run one quantized LoRA training step on the RTL and check it bit for bit"),
    "finetune": ("cdmqta.sw.apps.finetune",
                 "LoRA fine-tuning study of a small diffusion model: fp32 vs int8 vs int8-w4"),
    "bench": ("cdmqta.sw.apps.bench", "cycles, utilization and energy of a workload: ours vs fixed-WS baselines"),
    "synth": ("cdmqta.synth.flow", "FPGA synthesis and place-and-route with yosys/nextpnr (YoWASP)"),
}


def build_parser(command=None):
    """The argument parser; with ``command`` (a sub-command name) that sub-command's options are added (its
    module is imported), otherwise only the sub-command names are known."""
    parser = argparse.ArgumentParser(
        prog="cdmqta",
        description="cdm-qta: generator, verification and performance flow for a quantized LoRA-training "
                    "accelerator.",
        epilog="Run 'cdmqta COMMAND --help' for the options of a command.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_module=module)
    return parser


def _command_of(argv):
    """The sub-command named in ``argv`` (the first argument that is one), or None."""
    for arg in argv:
        if arg in SUBCOMMANDS:
            return arg
        if not arg.startswith("-"):
            return None
    return None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_of(argv))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._module.main(args) or 0)
    except (InputError, ToolError) as exc:
        print(f"cdmqta {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
