"""``cdmqta generate``: write the Verilog of a generated design and its ``config.json``.

``cdmqta generate --rows 8 --cols 8 -o build/`` writes ``build/accel.v`` (module ``accel``) and
``build/config.json`` (:meth:`QTAConfig.to_json`), so a runtime reads the exact configuration of the hardware,
and ``build/cdmqta_regs.h`` (:func:`cdmqta.hw.regs.c_header`: register offsets, fields, error codes and the built
configuration). ``--top`` picks the design from :data:`TOPS`.
"""

import argparse
import importlib
import os

from cdmqta.errors import UsageError
from cdmqta.paths import check_outputs
from cdmqta.progress import Reporter

__all__ = ["TOPS", "HEADER", "add_arguments", "main", "generate"]

#: The C header of the register map, written beside the Verilog.
HEADER = "cdmqta_regs.h"

#: top name -> (module, class); each class takes a QTAConfig as its only required argument.
TOPS = {
    "accel": ("cdmqta.hw.top", "Accelerator"),
    "axi": ("cdmqta.hw.axi_top", "AxiAccelerator"),
    "array": ("cdmqta.hw.array", "Array"),
    "harness": ("cdmqta.hw.harness", "ArrayHarness"),
}

_OPTION_OF_FIELD = {"rows": "--rows", "cols": "--cols", "int4": "--int4", "dataflows": "--dataflows",
                    "max_k": "--max-k", "acc_width": "--acc-width", "shift_lanes": "--shift-lanes",
                    "bus_width": "--bus-width", "bus_addr_width": "--bus-addr-width", "max_reads": "--max-reads"}


def add_arguments(parser):
    parser.add_argument("--rows", type=int, default=8, metavar="R",
                        help="PE array rows R (1..128): the K extent of a WS tile, the M extent of an OS tile "
                             "(default 8)")
    parser.add_argument("--cols", type=int, default=8, metavar="C",
                        help="PE array columns C (1..128): the N extent of every tile (default 8)")
    parser.add_argument("--int4", action=argparse.BooleanOptionalAction, default=True,
                        help="build the INT4 mode (two signed INT4 products per MAC per cycle on the same "
                             "multiplier); --no-int4 builds INT8 only (default: --int4)")
    parser.add_argument("--dataflows", default="ws,os", metavar="LIST",
                        help="comma-separated dataflows the controller accepts: any non-empty subset of ws,os "
                             "(default ws,os)")
    parser.add_argument("--max-k", type=int, default=65536, metavar="K",
                        help="largest reduction length the accumulators must hold without overflow; sets the "
                             "accumulator width (default 65536 -> 32 bits)")
    parser.add_argument("--acc-width", type=int, default=0, metavar="BITS",
                        help="accumulator width in bits (0 = derive from --max-k, at least 32; max 40)")
    parser.add_argument("--shift-lanes", type=int, default=2, metavar="S",
                        help="rows the stationary registers' shift chain moves per cycle, 1 or 2: with 2, WS "
                             "weights preload and OS results drain twice as fast, so tiles whose stream is "
                             "shorter than the array is tall (e.g. attention head dim 40 on 64 rows) still "
                             "overlap fully; costs a register per PE, a scratchpad read port and an accumulator "
                             "write port (default 2)")
    parser.add_argument("--bus-width", type=int, default=128, metavar="BITS",
                        help="data width of the AXI4 master m_axi_* (a power of two, 32..512; default 128: one "
                             "beat per 16 bytes, the width of Zynq UltraScale+ HP ports; an 8x8 INT32 row is 2 "
                             "beats)")
    parser.add_argument("--bus-addr-width", type=int, default=32, metavar="BITS",
                        help="address width of the AXI4 master (32..64, default 32)")
    parser.add_argument("--max-reads", type=int, default=4, metavar="N",
                        help="read bursts the AXI4 master keeps in flight (1..32, default 4)")
    parser.add_argument("--top", choices=sorted(TOPS), default="accel",
                        help="design to write: accel = the whole accelerator (cdmqta.hw.top.Accelerator) with the "
                             "ideal host-memory port, axi = the accelerator with an AXI4 master m_axi_*, an "
                             "AXI4-Lite register slave s_axil_* and irq (cdmqta.hw.axi_top.AxiAccelerator), "
                             "array = the bare systolic array (cdmqta.hw.array.Array), harness = the array with "
                             "beat/result memories used by the RTL tests (default accel)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR",
                        help="output directory (created if missing); receives <top>.v, config.json and the C "
                             "header cdmqta_regs.h")
    parser.add_argument("--quiet", action="store_true", help="no progress line on stderr")


def _config(args):
    from .config import ConfigError, QTAConfig

    dataflows = tuple(d.strip().lower() for d in str(args.dataflows).split(",") if d.strip())
    try:
        return QTAConfig(rows=args.rows, cols=args.cols, int4=args.int4, dataflows=dataflows,
                         max_k=args.max_k, acc_width=args.acc_width, shift_lanes=args.shift_lanes,
                         bus_width=args.bus_width, bus_addr_width=args.bus_addr_width, max_reads=args.max_reads)
    except ConfigError as exc:
        field = str(exc).split("=", 1)[0].strip()
        option = _OPTION_OF_FIELD.get(field)
        value = getattr(args, field, None) if option else None
        prefix = f"{option} {value if field != 'dataflows' else args.dataflows}: " if option else ""
        raise UsageError(f"{prefix}{exc}") from None


def _top_class(top):
    module_name, class_name = TOPS[top]
    try:
        module = importlib.import_module(module_name)
        return getattr(module, class_name)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"--top {top}: {module_name}.{class_name} is not available in this installation "
                         f"({exc.__class__.__name__}: {exc}); use --top array") from None


def generate(config, top, out_dir):
    """Write ``<top>.v``, ``config.json`` and ``cdmqta_regs.h`` for ``config`` into ``out_dir``; returns the paths
    of the first two."""
    from amaranth.back import verilog

    from .regs import c_header

    cls = _top_class(top)
    os.makedirs(out_dir, exist_ok=True)
    text = verilog.convert(cls(config), name=top)
    v_path = os.path.join(out_dir, f"{top}.v")
    with open(v_path, "w") as f:
        f.write(text)
    j_path = os.path.join(out_dir, "config.json")
    config.to_json(j_path)
    with open(os.path.join(out_dir, HEADER), "w") as f:
        f.write(c_header(config))
    return v_path, j_path


def main(args):
    config = _config(args)
    check_outputs(dirs={"-o": args.output})
    with Reporter(quiet=args.quiet).step(f"converting the {args.top} to Verilog"):
        v_path, j_path = generate(config, args.top, args.output)
    print(f"wrote {v_path}, {j_path} and {HEADER} ({config.rows}x{config.cols}, int4={config.int4}, "
          f"dataflows={','.join(config.dataflows)}, acc_width={config.acc_width}, "
          f"bus {config.bus_width} bits)")
    return 0
