"""The project's one cocotb job module: runs the jobs of ``$CDMQTA_JOBS`` on a SimTop through the RTL backend.

Started by :func:`cdmqta.sw.rtl.backend.run_jobs` (which is how the demo, the tests and the scripts run work on the
RTL). Environment: CDMQTA_CONFIG (config JSON), HOST_WORDS / CMD_WORDS (SimTop sizes), CDMQTA_JOBS (JSON list of
jobs, :func:`cdmqta.sw.runtime.jobs.run_job`), RESULTS_JSON (where the per-job results go). A job may set
``"dataflow"`` (forced mapping for every GEMM) and ``"record_programs": true`` (each GEMM's stat carries its
command program). Each job runs in a :func:`cocotb.task.bridge` thread, so the RTL's outputs feed the next GEMM.
The test fails if any job is not bit-exact or disagrees with the ISA emulator.
"""

import json
import os

import cocotb
from cocotb.task import bridge

from cdmqta.hw.config import QTAConfig
from cdmqta.sw.runtime.jobs import run_job

from .backend import RtlBackend
from .driver import AccelDriver


@cocotb.test()
async def rtl_jobs(dut):
    config = QTAConfig.from_json(os.environ["CDMQTA_CONFIG"])
    drv = AccelDriver(dut, config, host_words=int(os.environ["HOST_WORDS"]), cmd_words=int(os.environ["CMD_WORDS"]))
    await drv.reset()
    results = []
    for job in json.loads(os.environ["CDMQTA_JOBS"]):
        eng = RtlBackend(config, drv, dataflow=job.get("dataflow"))
        eng.record_programs = bool(job.get("record_programs"))
        res = await bridge(run_job)(eng, job)
        res["sim_seconds"] = eng.sim_seconds
        results.append(res)
        cocotb.log.info("job %d: bit_exact=%s calls=%d sim %.1f s", len(results) - 1, res["bit_exact"], res["calls"],
                        eng.sim_seconds)
    with open(os.environ["RESULTS_JSON"], "w") as f:
        json.dump(results, f, indent=1)
    bad = [i for i, r in enumerate(results) if not r["bit_exact"] or r["emulator_mismatches"]]
    assert not bad, f"jobs {bad} not bit-exact: {[results[i]['diffs'][:5] for i in bad]}"
