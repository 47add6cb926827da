"""The RTL backend: every GEMM and requantization of the golden model runs on the generated Verilog.

:class:`RtlBackend` is a :class:`cdmqta.sw.runtime.engines.TiledEngine` whose programs run on
:class:`cdmqta.hw.top.SimTop` under Verilator through cocotb (:class:`cdmqta.sw.rtl.driver.AccelDriver`): operands
are written into the simulated host memory in bulk (VPI, no clock edges), the program runs to ``done``, the result
rows are read back, and the cycles come from the hardware's ``busy_cycles`` counter.

The golden LoRA model calls ``engine.gemm`` synchronously from autograd, while cocotb is async: the training step
runs in a thread started with :func:`cocotb.task.bridge`, and each program is a :func:`cocotb.task.resume`
coroutine that the blocking code waits for -- so the RTL's outputs really feed the next GEMM. Every program is also
run on the ISA emulator (``cross_check=True``, :func:`cdmqta.sw.runtime.emulator.crosscheck`): status, failing
index and the result region of host memory must be identical.

Inside a simulation (e.g. a cocotb test)::

    drv = AccelDriver(dut, config, host_words, cmd_words); await drv.reset()
    eng = RtlBackend(config, drv)
    out = await bridge(lambda: reference_step(eng, ...))()

From Python (no simulator running): :func:`run_jobs` builds (cached) a SimTop and runs the project's one cocotb job
module (:mod:`cdmqta.sw.rtl.tb_jobs`) on it, for a list of jobs (:mod:`cdmqta.sw.runtime.jobs`), and returns their
results.
"""

import json
import os
import tempfile
import time

from cocotb.task import resume

from cdmqta.hw.top import SimTop
from cdmqta.progress import SILENT
from cdmqta.sw.runtime.emulator import Emulator, crosscheck
from cdmqta.sw.runtime.engines import TiledEngine
from cdmqta.sw.runtime.hostmem import image_words, words_image

from . import build as rtlbuild

__all__ = ["RtlBackend", "SIM_SIZES", "sim_sizes", "build_simtop", "run_jobs"]

#: (host_words, cmd_words) of the SimTop that a configuration is simulated with (shared with the RTL tests, so one
#: build serves both): the default memories get 8192 host words, small ones 2048.
SIM_SIZES = {"default": (8192, 1024), "small": (2048, 256)}


def sim_sizes(config):
    if config.host_addr_width <= 16 or config.sp_rows <= 512:
        return SIM_SIZES["small"]
    return SIM_SIZES["default"]


class RtlBackend(TiledEngine):
    """Engine on the RTL (inside a cocotb test). ``driver``: a reset :class:`cdmqta.sw.rtl.driver.AccelDriver`.

    Programs longer than the command memory run as several back-to-back runs (CONFIG state persists between
    runs; ``done`` of a run means all its commands completed), their cycles summed. ``cross_check`` runs each
    program on the ISA emulator as well; a disagreement is recorded in ``emulator_mismatches``."""

    cycles_source = "rtl"

    def __init__(self, config, driver, dataflow=None, compare=True, cost=None, cross_check=True):
        super().__init__(config, dataflow=dataflow, compare=compare, cost=cost, host_words=driver.host_words)
        self.driver = driver
        self.cross_check = cross_check
        self.emulator_mismatches = []
        self.sim_seconds = 0.0
        self._run_blocking = resume(self._run_async)

    async def _run_async(self, plan, host):
        drv = self.driver
        lo, hi = plan.host_base, plan.c_region.base
        drv.write_words(lo, image_words(host[lo:hi]))
        total = {"cycles": 0, "macs": 0, "stall_cycles": 0, "compute_cycles": 0}
        res = None
        prog = list(plan.program)
        amax = None
        for start in range(0, len(prog), drv.cmd_words):
            res = await drv.run(prog[start:start + drv.cmd_words])
            for key in total:
                total[key] += res[key]
            # the registers restart at every run: the program's amax is the largest over its runs
            amax = res["amax"] if amax is None else [max(x, y) for x, y in zip(amax, res["amax"])]
            if res["error_index"] is not None:
                res["error_index"] += start
                break
        c = plan.c_region
        host[c.base:c.base + c.words] = words_image(drv.read_words(c.base, c.words), host.shape[1])
        res.update(total)
        res["amax"] = amax
        return res

    def execute(self, plan, host):
        before = host.copy() if self.cross_check else None
        t = time.perf_counter()
        res = self._run_blocking(plan, host)
        self.sim_seconds += time.perf_counter() - t
        if self.cross_check:
            c = plan.c_region
            if crosscheck(Emulator(self.config, host=before), plan.program, host, res["status"], res["error_index"],
                          region=(c.base, c.words), amax=res["amax"]):
                self.emulator_mismatches.append(getattr(plan, "gemm", None) and plan.gemm.name or plan.dataflow)
        return res


# ----------------------------------------------------------------------------------------------------------------
# Building and running from plain Python
# ----------------------------------------------------------------------------------------------------------------

def build_simtop(config, host_words=None, cmd_words=None, progress=None, simulator="verilator"):
    """Verilator (or Icarus) model of ``SimTop(config)`` (cached, see :func:`cdmqta.sw.rtl.build.build`, which
    tells ``progress`` about its steps); returns (Build, host_words, cmd_words)."""
    hw_, cw = sim_sizes(config)
    host_words, cmd_words = host_words or hw_, cmd_words or cw
    key = f"SimTop|{config.to_json()}|{host_words}|{cmd_words}"
    # Icarus: Verilog-2005 semantics (-g2005 after cocotb's -g2012). Under -g2012 a declaration initializer runs
    # before time 0 and raises no event, so yosys' `always @*` blocks whose inputs never change (e.g. the execute
    # unit's accumulator write-back mux while idle) are never evaluated and stay X: `done` never rises.
    args = ["-g2005"] if simulator == "icarus" else None
    built = rtlbuild.build(lambda: SimTop(config, host_words=host_words, cmd_words=cmd_words), "simtop",
                           simulator=simulator, build_args=args, design_key=key, progress=progress)
    return built, host_words, cmd_words


def run_jobs(config, jobs, workdir=None, host_words=None, cmd_words=None, progress=None):
    """Run ``jobs`` (dicts, see :func:`cdmqta.sw.runtime.jobs.run_job`) on the RTL of ``config`` in one simulation;
    returns (results list, {"build_s", "sim_s"}). Raises RuntimeError if the simulation fails before it reports;
    the results say per job whether it was bit-exact. ``progress``: a :class:`cdmqta.progress.Reporter` told
    about the build and the simulation (None: silent)."""
    progress = SILENT if progress is None else progress
    t0 = time.perf_counter()
    built, host_words, cmd_words = build_simtop(config, host_words, cmd_words, progress)
    t1 = time.perf_counter()
    workdir = workdir or tempfile.mkdtemp(prefix="cdmqta-rtl-")
    out = os.path.join(workdir, "rtl_jobs.json")
    env = {"CDMQTA_CONFIG": config.to_json(), "HOST_WORDS": host_words, "CMD_WORDS": cmd_words,
           "CDMQTA_JOBS": json.dumps(jobs), "RESULTS_JSON": out}
    try:
        with progress.step(f"simulating {len(jobs)} job{'s' if len(jobs) != 1 else ''} on the RTL (Verilator)"):
            rtlbuild.run(built, "cdmqta.sw.rtl.tb_jobs", env=env, testcase="rtl_jobs")
    except AssertionError as exc:
        if not os.path.exists(out):     # the simulation failed before it could report
            raise RuntimeError(f"RTL simulation failed: {exc}") from None
    with open(out) as f:
        results = json.load(f)
    return results, {"build_s": t1 - t0, "sim_s": time.perf_counter() - t1}
