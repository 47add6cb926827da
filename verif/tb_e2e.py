"""cocotb testbench: the golden LoRA model trains on the RTL (SimTop) through the runtime's RtlBackend.

Environment: CDMQTA_CONFIG (config JSON), HOST_WORDS / CMD_WORDS (SimTop sizes), E2E_JOBS (JSON list of jobs for
:func:`cdmqta.sw.rtl_backend.run_job`), RESULTS_JSON (where to write the per-job results).

Each job runs in a cocotb bridge thread (the autograd code is blocking; every GEMM / requantization is a resume
coroutine on the simulator), so the RTL's integer outputs feed the next GEMM of the step. Checked per job: every
integer tensor of the step(s) equals the TorchEngine run of the same step(s) (call sequence, shapes, epilogue
parameters, every bit), each GEMM's output equals TorchEngine on the same operands, the float parameters after the
host optimizer updates are equal, and each program's result rows equal the ISA emulator's.
"""

import json
import os

import cocotb
from cocotb.task import bridge

from cdmqta.hw.config import QTAConfig
from cdmqta.sw.rtl_backend import RtlBackend, run_job
from cdmqta.sw.rtl_driver import AccelDriver


@cocotb.test()
async def e2e_jobs(dut):
    config = QTAConfig.from_json(os.environ["CDMQTA_CONFIG"])
    drv = AccelDriver(dut, config, host_words=int(os.environ["HOST_WORDS"]), cmd_words=int(os.environ["CMD_WORDS"]))
    await drv.reset()
    results = []
    for job in json.loads(os.environ["E2E_JOBS"]):
        eng = RtlBackend(config, drv, dataflow=job.get("dataflow"))
        res = await bridge(run_job)(eng, job)
        res["sim_seconds"] = eng.sim_seconds
        results.append(res)
        cocotb.log.info("%s: bit_exact=%s calls=%d sim %.1f s", job, res["bit_exact"], res["calls"], eng.sim_seconds)
    with open(os.environ["RESULTS_JSON"], "w") as f:
        json.dump(results, f, indent=1)
    for res in results:
        assert not res["diffs"], (res["job"], res["diffs"][:5])
        assert res["params_equal"] and res["grads_equal"], res["job"]
        assert all(s["bit_exact"] for s in res["stats"]), res["job"]
        assert not res["emulator_mismatches"], (res["job"], res["emulator_mismatches"])
