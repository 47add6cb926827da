"""The RTL backend: every GEMM and requantization of the golden model runs on the generated Verilog.

:class:`RtlBackend` is an :class:`cdmqta.sw.engine.Engine` (via :class:`cdmqta.sw.runtime.TiledEngine`) whose
programs run on :class:`cdmqta.hw.top.SimTop` under Verilator through cocotb (:class:`cdmqta.sw.rtl_driver.
AccelDriver`): operands are written into the simulated host memory in bulk (VPI, no clock edges), the program runs
to ``done``, the result rows are read back, and the cycles come from the hardware's ``busy_cycles`` counter.

The golden LoRA model calls ``engine.gemm`` synchronously from autograd, while cocotb is async: the training step
runs in a thread started with :func:`cocotb.task.bridge`, and each program is a :func:`cocotb.task.resume`
coroutine that the blocking code waits for -- so the RTL's outputs really feed the next GEMM. Every program can
also be run on the ISA emulator (``cross_check=True``): the result region of host memory must be identical.

Inside a simulation (e.g. a cocotb test)::

    drv = AccelDriver(dut, config, host_words, cmd_words); await drv.reset()
    eng = RtlBackend(config, drv)
    out = await bridge(lambda: reference_step(eng, ...))()

From Python (no simulator running): :func:`run_jobs` builds (cached) and runs the cocotb test ``rtl_jobs`` of
this module on a SimTop, for a list of jobs (LoRA training steps, lists of GEMMs), and returns their results.
"""

import json
import os
import time

import numpy as np

from .runtime import TiledEngine

__all__ = ["RtlBackend", "SIM_SIZES", "sim_sizes", "build_simtop", "run_jobs", "run_job", "host_words_of",
           "words_to_host"]

#: (host_words, cmd_words) of the SimTop that a configuration is simulated with (shared with the RTL tests, so one
#: build serves both): the default memories get 8192 host words, small ones 2048.
SIM_SIZES = {"default": (8192, 1024), "small": (2048, 256)}


def sim_sizes(config):
    if config.host_addr_width <= 16 or config.sp_rows <= 512:
        return SIM_SIZES["small"]
    return SIM_SIZES["default"]


def host_words_of(host):
    """Host-memory image rows (uint8 [words, 4*lanes]) as Python ints (little-endian words)."""
    return [int.from_bytes(r.tobytes(), "little") for r in host]


def words_to_host(words, nbytes):
    return np.frombuffer(b"".join(int(w).to_bytes(nbytes, "little") for w in words), np.uint8).reshape(-1, nbytes)


class RtlBackend(TiledEngine):
    """Engine on the RTL (inside a cocotb test). ``driver``: a reset :class:`cdmqta.sw.rtl_driver.AccelDriver`.

    Programs longer than the command memory run as several back-to-back runs (CONFIG state persists between
    runs; ``done`` of a run means all its commands completed), their cycles summed. ``cross_check`` runs each
    program on the ISA emulator as well and records in ``stat.emulator_exact`` whether the results agree."""

    cycles_source = "rtl"

    def __init__(self, config, driver, dataflow=None, compare=True, cost=None, cross_check=True):
        super().__init__(config, dataflow=dataflow, compare=compare, cost=cost, host_words=driver.host_words)
        self.driver = driver
        self.cross_check = cross_check
        self.emulator_mismatches = []
        self.sim_seconds = 0.0
        from cocotb.task import resume
        self._run_blocking = resume(self._run_async)

    async def _run_async(self, plan, host):
        drv = self.driver
        mem = drv.dut.host_mem
        lo, hi = plan.host_base, plan.c_region.base
        for i, w in enumerate(host_words_of(host[lo:hi])):
            mem[lo + i].value = w
        total = {"cycles": 0, "macs": 0, "stall_cycles": 0, "compute_cycles": 0}
        res = None
        prog = list(plan.program)
        for start in range(0, len(prog), drv.cmd_words):
            res = await drv.run(prog[start:start + drv.cmd_words])
            for key in total:
                total[key] += res[key]
            if res["error_index"] is not None:
                res["error_index"] += start
                break
        c = plan.c_region
        words = [int(mem[c.base + i].value) for i in range(c.words)]
        host[c.base:c.base + c.words] = words_to_host(words, host.shape[1])
        res.update(total)
        return res

    def execute(self, plan, host):
        image = host.copy() if self.cross_check else None
        t = time.perf_counter()
        res = self._run_blocking(plan, host)
        self.sim_seconds += time.perf_counter() - t
        if self.cross_check:
            from .emulator import Emulator
            em = Emulator(self.config, host=image)
            status = em.run(plan.program)
            c = plan.c_region
            same = (status == res["status"] and em.bad_index == res["error_index"]
                    and np.array_equal(image[c.base:c.base + c.words], host[c.base:c.base + c.words]))
            if not same:
                self.emulator_mismatches.append(getattr(plan, "gemm", None) and plan.gemm.name or plan.dataflow)
        return res


# ----------------------------------------------------------------------------------------------------------------
# Building and running from plain Python
# ----------------------------------------------------------------------------------------------------------------

def _simtop_verilog(config, host_words, cmd_words):
    """Verilog of SimTop, cached by a hash of the generator sources (hw/*.py), the config and the sizes: Amaranth's
    elaboration + conversion takes longer than a cached Verilator build's lookup, so it is skipped as well."""
    import hashlib
    from pathlib import Path

    import amaranth

    from . import rtlsim
    hw_dir = Path(__file__).resolve().parent.parent / "hw"
    h = hashlib.sha256()
    for p in sorted(hw_dir.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    h.update(f"{config.to_json()}|{host_words}|{cmd_words}|{amaranth.__version__}".encode())
    path = rtlsim.cache_dir() / f"simtop-verilog-{h.hexdigest()[:20]}.v"
    if path.exists():
        return path.read_text()
    from ..hw.top import SimTop
    text = rtlsim.to_verilog(SimTop(config, host_words=host_words, cmd_words=cmd_words), "simtop")
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return text


def build_simtop(config, host_words=None, cmd_words=None):
    """Verilator model of SimTop(config) (cached by sw/rtlsim.py); returns (Build, host_words, cmd_words)."""
    from . import rtlsim
    hw_, cw = sim_sizes(config)
    host_words, cmd_words = host_words or hw_, cmd_words or cw
    text = _simtop_verilog(config, host_words, cmd_words)
    return rtlsim.build(None, "simtop", verilog_text=text), host_words, cmd_words


def run_jobs(config, jobs, workdir=None, host_words=None, cmd_words=None):
    """Run ``jobs`` (dicts, see :func:`run_job`) on the RTL of ``config`` in one simulation; returns
    (results list, {"build_s", "sim_s"})."""
    import tempfile
    from . import rtlsim
    t0 = time.perf_counter()
    built, host_words, cmd_words = build_simtop(config, host_words, cmd_words)
    t1 = time.perf_counter()
    workdir = workdir or tempfile.mkdtemp(prefix="cdmqta-rtl-")
    out = os.path.join(workdir, "rtl_jobs.json")
    env = {"CDMQTA_CONFIG": config.to_json(), "HOST_WORDS": host_words, "CMD_WORDS": cmd_words,
           "CDMQTA_JOBS": json.dumps(jobs), "RESULTS_JSON": out,
           "COCOTB_REWRITE_ASSERTION_FILES": os.path.abspath(__file__)}
    try:
        rtlsim.run(built, "cdmqta.sw.rtl_backend", env=env, testcase="rtl_jobs")
    except AssertionError as exc:
        if not os.path.exists(out):     # the simulation failed before it could report
            raise RuntimeError(f"RTL simulation failed: {exc}") from None
    with open(out) as f:
        results = json.load(f)
    return results, {"build_s": t1 - t0, "sim_s": time.perf_counter() - t1}


def _gemm_operands(seed, m, n, k, precision):
    import torch
    lo, hi = (-128, 127) if precision == "int8" else (-8, 7)
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(lo, hi + 1, (m, k), generator=g, dtype=torch.int32)
    b = torch.randint(lo, hi + 1, (k, n), generator=g, dtype=torch.int32)
    return a, b


def run_job(engine, job):
    """Run one job on ``engine`` (blocking; on the RTL inside a bridge thread) and return its result dict.

    {"kind": "lora", "tokens", "in", "out", "rank", "quant", "steps", "seed", "rounding"}: the golden model's
    training step(s) (:func:`cdmqta.sw.lora.reference_step`) on ``engine`` and on a TorchEngine; every integer
    tensor of both runs is compared (``diffs`` empty = bit-exact), and the float parameters after the steps.
    {"kind": "gemms", "gemms": [[m, n, k, precision, dataflow or null, seed(, name, epilogue)], ...]}: random
    operands; ``epilogue`` {"mult", "shift", "bits", "rounding", "seed"} requantizes in the GEMM's STOREs.
    """
    import torch

    from .engine import TorchEngine
    start = len(engine.stats)
    res = {"job": job}
    if job["kind"] == "lora":
        from .lora import reference_step
        kw = dict(tokens=job["tokens"], in_features=job["in"], out_features=job["out"], rank=job["rank"],
                  quant=job.get("quant", "int8"), rounding=job.get("rounding", "nearest"), seed=job.get("seed", 0),
                  steps=job.get("steps", 1))
        t = time.perf_counter()
        got = reference_step(engine, **kw)
        res["seconds"] = time.perf_counter() - t
        ref = reference_step(TorchEngine(), **kw)
        res["diffs"] = got["capture"].compare(ref["capture"])
        res["calls"] = len(got["capture"])
        res["params_equal"] = all(torch.equal(got["params"][p], ref["params"][p]) for p in ("A", "B"))
        res["grads_equal"] = all(torch.equal(got["grads"][p], ref["grads"][p]) for p in ("A", "B", "X"))
    elif job["kind"] == "gemms":
        diffs = []
        for i, g in enumerate(job["gemms"]):
            m, n, k, precision, dataflow, seed = g[:6]
            a, b = _gemm_operands(seed, m, n, k, precision)
            engine.dataflow = dataflow
            name = g[6] if len(g) > 6 and g[6] else f"g{i}_{m}x{n}x{k}_{precision}_{dataflow or 'auto'}"
            expect = (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32)
            if len(g) > 7 and g[7]:     # fused requantization epilogue {"mult", "shift", "bits", "rounding", "seed"}
                from .requant import requantize
                ep = g[7]
                out = engine.gemm_requant(name, a, b, precision, **ep)
                expect = requantize(expect, ep["mult"], ep["shift"], bits=ep["bits"], rounding=ep["rounding"],
                                    seed=ep["seed"])
            else:
                out = engine.gemm(name, a, b, precision)
            if not torch.equal(out, expect):
                diffs.append(f"gemm {i} {(m, n, k, precision, dataflow)} differs")
        engine.dataflow = None
        res["diffs"] = diffs
        res["calls"] = len(job["gemms"])
        res["params_equal"] = res["grads_equal"] = True
    else:
        raise ValueError(f"unknown job kind {job['kind']!r}")
    res["stats"] = [s.to_dict() for s in engine.stats[start:]]
    res["bit_exact"] = (not res["diffs"] and res["params_equal"] and res["grads_equal"]
                        and all(s["bit_exact"] is not False for s in res["stats"]))
    res["emulator_mismatches"] = list(getattr(engine, "emulator_mismatches", []))
    return res


try:    # the cocotb test that run_jobs() runs (collected only when this module is a cocotb test module)
    import cocotb as _cocotb

    @_cocotb.test()
    async def rtl_jobs(dut):
        """Runs the jobs of $CDMQTA_JOBS on this SimTop through RtlBackend; writes the results to $RESULTS_JSON."""
        from cocotb.task import bridge

        from ..hw.config import QTAConfig
        from .rtl_driver import AccelDriver
        config = QTAConfig.from_json(os.environ["CDMQTA_CONFIG"])
        drv = AccelDriver(dut, config, host_words=int(os.environ["HOST_WORDS"]),
                          cmd_words=int(os.environ["CMD_WORDS"]))
        await drv.reset()
        results = []
        for job in json.loads(os.environ["CDMQTA_JOBS"]):
            eng = RtlBackend(config, drv, dataflow=job.get("dataflow"))
            if job.get("dataflow"):
                eng.dataflow = job["dataflow"]
            results.append(await bridge(run_job)(eng, job))
            results[-1]["sim_seconds"] = eng.sim_seconds
        with open(os.environ["RESULTS_JSON"], "w") as f:
            json.dump(results, f, indent=1)
        bad = [r["job"] for r in results if not r["bit_exact"] or r["emulator_mismatches"]]
        assert not bad, f"not bit-exact: {bad}"
except ImportError:     # pragma: no cover
    pass
