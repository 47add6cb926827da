"""Jobs: the units of work that a backend runs and checks -- LoRA training steps and lists of GEMMs.

A job is a JSON-serialisable dict, so the same job runs on the golden backend in this process or on the RTL in a
cocotb simulation (:func:`cdmqta.sw.rtl.backend.run_jobs`), and both return the same result dict
(:func:`run_job`). The RTL backend's programs are also checked against the ISA emulator
(:func:`cdmqta.sw.runtime.emulator.crosscheck`).
"""

import time

import torch

from cdmqta.sw.model.crossattn import compare_fused, crossattn_steps
from cdmqta.sw.model.engine import TorchEngine
from cdmqta.sw.model.lora import reference_step
from cdmqta.sw.model.requant import requantize

__all__ = ["run_job", "gemm_operands"]


def gemm_operands(seed, m, n, k, precision):
    """Random operands A [m, k], B [k, n] (int32 tensors) of a job's GEMM, from its seed."""
    lo, hi = (-128, 127) if precision == "int8" else (-8, 7)
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(lo, hi + 1, (m, k), generator=g, dtype=torch.int32)
    b = torch.randint(lo, hi + 1, (k, n), generator=g, dtype=torch.int32)
    return a, b


def run_job(engine, job):
    """Run one job on ``engine`` (blocking; on the RTL inside a bridge thread) and return its result dict.

    {"kind": "lora", "tokens", "in", "out", "rank", "quant", "steps", "seed", "rounding"}: the golden model's
    training step(s) (:func:`cdmqta.sw.model.lora.reference_step`) on ``engine`` and on a TorchEngine; every integer
    tensor of both runs is compared (``diffs`` empty = bit-exact), and the float parameters after the steps.
    {"kind": "crossattn", "layers", "tokens", "ctx_tokens", "dim", "ctx_dim", "rank", "scaling", "steps", "seed",
    "fused"}: K/V LoRA of a cross-attention stack (:func:`cdmqta.sw.model.crossattn.crossattn_steps`) on ``engine``
    (fused GEMMs by default) against the unfused golden model on a TorchEngine, compared layer by layer
    (:func:`cdmqta.sw.model.crossattn.compare_fused`); ``amax`` holds each fused GEMM's amax registers as read
    back (``gemm_q`` calls) and the golden max |value| of the same columns.
    {"kind": "gemms", "gemms": [[m, n, k, precision, dataflow or null, seed(, name, epilogue)], ...]}: random
    operands; ``epilogue`` {"mult", "shift", "bits", "rounding", "seed"} requantizes in the GEMM's STOREs.
    """
    start = len(engine.stats)
    res = {"job": job}
    if job["kind"] == "lora":
        kw = dict(tokens=job["tokens"], in_features=job["in"], out_features=job["out"], rank=job["rank"],
                  quant=job.get("quant", "int8"), rounding=job.get("rounding", "nearest"), seed=job.get("seed", 0),
                  steps=job.get("steps", 1), scaling=job.get("scaling", "current"))
        t = time.perf_counter()
        got = reference_step(engine, **kw)
        res["seconds"] = time.perf_counter() - t
        ref = reference_step(TorchEngine(), **kw)
        res["diffs"] = got["capture"].compare(ref["capture"])
        res["calls"] = len(got["capture"])
        res["params_equal"] = all(torch.equal(got["params"][p], ref["params"][p]) for p in ("A", "B"))
        res["grads_equal"] = all(torch.equal(got["grads"][p], ref["grads"][p]) for p in ("A", "B", "X"))
    elif job["kind"] == "crossattn":
        kw = {k: job[k] for k in ("layers", "tokens", "ctx_tokens", "dim", "ctx_dim", "rank", "scaling", "steps",
                                  "seed", "rounding") if k in job}
        t = time.perf_counter()
        got = crossattn_steps(engine, fused=job.get("fused", True), **kw)
        res["seconds"] = time.perf_counter() - t
        ref = crossattn_steps(TorchEngine(), fused=False, **kw)
        res["diffs"] = compare_fused(got, ref) if job.get("fused", True) else got["capture"].compare(ref["capture"])
        res["calls"] = len(got["capture"])
        res["params_equal"] = all(torch.equal(a, b) for n in ref["params"]
                                  for a, b in zip(got["params"][n], ref["params"][n]))
        res["grads_equal"] = all(torch.equal(a, b) for n in ref["grads"]
                                 for a, b in zip(got["grads"][n], ref["grads"][n]))
        res["amax"] = []
        for r, t in zip(got["capture"].records, got["capture"].tensors):
            if r.kind == "gemm_q":
                acc = t["a"].to(torch.int64) @ t["b"].to(torch.int64)
                c0, golden = 0, []
                for cols, *_ in r.params["segments"]:
                    golden.append(int(acc[:, c0:c0 + cols].abs().max()))
                    c0 += cols
                res["amax"].append({"name": r.name, "register": t["amax"].tolist(), "golden": golden})
        res["amax_history"] = got["amax"]
        res["amax_history_golden"] = ref["amax"]
    elif job["kind"] == "gemms":
        diffs = []
        for i, g in enumerate(job["gemms"]):
            m, n, k, precision, dataflow, seed = g[:6]
            a, b = gemm_operands(seed, m, n, k, precision)
            engine.dataflow = dataflow
            name = g[6] if len(g) > 6 and g[6] else f"g{i}_{m}x{n}x{k}_{precision}_{dataflow or 'auto'}"
            expect = (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32)
            if len(g) > 7 and g[7]:     # fused requantization epilogue {"mult", "shift", "bits", "rounding", "seed"}
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
