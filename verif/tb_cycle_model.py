"""cocotb testbench: random irregular GEMMs on SimTop, recording each GEMM's command program and ``busy_cycles``.

Environment: CDMQTA_CONFIG (config JSON), HOST_WORDS / CMD_WORDS (SimTop sizes), CYCLE_GEMMS (JSON list of
gemm entries of :func:`cdmqta.sw.rtl_backend.run_job`), RESULTS_JSON (output). Each GEMM runs through the runtime's
RtlBackend (the tiler's plan with its default cost model, operands written to host memory, results checked against
TorchEngine and the ISA emulator); the output holds, per GEMM, the program (hex words), the RTL cycles (sum over
runs if the program is longer than the command memory), the number of runs and whether the result was exact, so
the cycle model can be evaluated later without simulating again (scripts/validate_cycle_model.py).
"""

import json
import os

import cocotb
from cocotb.task import bridge

from cdmqta.hw.config import QTAConfig
from cdmqta.sw.rtl_backend import RtlBackend, run_job
from cdmqta.sw.rtl_driver import AccelDriver


@cocotb.test()
async def cycle_gemms(dut):
    config = QTAConfig.from_json(os.environ["CDMQTA_CONFIG"])
    drv = AccelDriver(dut, config, host_words=int(os.environ["HOST_WORDS"]), cmd_words=int(os.environ["CMD_WORDS"]))
    await drv.reset()
    out = []
    for g in json.loads(os.environ["CYCLE_GEMMS"]):
        eng = RtlBackend(config, drv)
        res = await bridge(run_job)(eng, {"kind": "gemms", "gemms": [g]})
        (plan,) = eng._plans.values()
        (stat,) = res["stats"]
        out.append({"gemm": g, "dataflow": plan.dataflow, "order": plan.order, "chunk": plan.chunk,
                    "program": [f"{int(w):032x}" for w in plan.program], "cycles": stat["cycles"],
                    "runs": -(-len(plan.program) // drv.cmd_words), "est_cycles": stat["est_cycles"],
                    "bit_exact": res["bit_exact"] and not res["emulator_mismatches"]})
    with open(os.environ["RESULTS_JSON"], "w") as f:
        json.dump(out, f, indent=1)
    assert all(r["bit_exact"] for r in out), [r["gemm"] for r in out if not r["bit_exact"]]
