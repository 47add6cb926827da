"""End to end on the RTL: quantized LoRA training steps and random irregular GEMMs, bit-exact.

Two presets (8x8 with the default memories, non-square 8x4 with small ones: operands beyond its 512-row
scratchpad are reloaded), the same SimTop builds as verif/test_accel_rtl.py. Per shape one simulation
(:func:`cdmqta.sw.rtl.backend.run_jobs`, the project's one cocotb job module) runs: one full training step (all
seven GEMMs with their epilogues) and three consecutive steps with host SGD updates, for INT8 and for an INT4 base
weight (int8-w4), plus a random irregular-shape GEMM suite; each job's every integer tensor is compared with a
TorchEngine run and every program with the ISA emulator. The same suite also runs on the golden backend (ISA
emulator) and must choose the same mappings.
"""

import random

import pytest

from cdmqta.hw.config import PRESETS
from cdmqta.sw.rtl.backend import run_jobs, sim_sizes
from cdmqta.sw.runtime.engines import GoldenBackend
from cdmqta.sw.runtime.jobs import run_job

NAMES = ["8x8", "8x4"]

LAYER = {"tokens": 50, "in": 72, "out": 40, "rank": 4}          # the demo's layer
SMALL = {"tokens": 21, "in": 27, "out": 19, "rank": 4}          # for the 3-step runs: still no multiple of 8 or 4


def lora_jobs():
    return [dict(LAYER, kind="lora", quant="int8", steps=1, seed=1),
            dict(SMALL, kind="lora", quant="int8", steps=3, seed=2, rounding="stochastic"),
            dict(LAYER, kind="lora", quant="int8-w4", steps=1, seed=3),
            dict(SMALL, kind="lora", quant="int8-w4", steps=3, seed=4)]


def random_gemms(seed, n=14):
    """Irregular shapes: 1, primes, non-multiples of the array, beyond one tile; INT8 and INT4; all mappings."""
    rng = random.Random(seed)
    fixed = [[1, 1, 1, "int8", None], [1, 13, 1, "int4", "os"], [17, 1, 29, "int8", "is"], [7, 11, 13, "int4", "ws"],
             [60, 12, 96, "int8", "ws"],   # A is 720 scratchpad rows: beyond the 8x4 config's 512 (reloads)
             [31, 37, 41, "int8", "os"]]
    out = [g + [1000 + i] for i, g in enumerate(fixed)]
    # fused requantizing STOREs: IS stores transposed tiles, stochastic rounding must use C's coordinates
    sr = {"mult": 40503, "shift": 21, "bits": 8, "rounding": "stochastic", "seed": 0xC0FFEE}
    out += [[19, 13, 29, "int8", df, 3000 + i, f"fused_{df}", sr] for i, df in enumerate(("ws", "os", "is"))]
    out.append([23, 9, 17, "int4", "is", 3003, "fused_int4_out", dict(sr, bits=4, shift=12)])
    for i in range(n - len(fixed)):
        m, nn, k = (rng.choice([1, 2, 3, 5, 7, 9, 16, 23, 33, 47]) for _ in range(3))
        out.append([m, nn, k, rng.choice(["int8", "int4"]), rng.choice([None, "ws", "os", "is"]), 2000 + i])
    return out


@pytest.mark.rtl
@pytest.mark.parametrize("name", NAMES)
def test_lora_steps_and_random_gemms_on_rtl(name, tmp_path):
    cfg = PRESETS[name]
    gemms = {"kind": "gemms", "gemms": random_gemms(seed=len(name) + cfg.cols)}
    results, _ = run_jobs(cfg, lora_jobs() + [gemms], workdir=tmp_path)
    assert len(results) == 5
    assert sum(s["name"].startswith("fused") for s in results[4]["stats"]) == 4
    for res in results:
        assert res["bit_exact"], (res["job"], res["diffs"][:5])
        assert not res["emulator_mismatches"]
    one, three = results[0], results[1]
    assert one["calls"] == 10                    # 8 GEMMs (dX = dX0 + dXlora) and 2 requantizations
    assert three["calls"] == 30
    names = [s["name"] for s in one["stats"]]
    assert names == ["H", "H", "Y1", "Y0", "dH", "dH", "dB", "dA", "dX0", "dXlora"]
    for res in results:
        for s in res["stats"]:
            assert s["cycles"] > 0
            if s["kind"] == "gemm":
                # the hardware cannot beat the physical limit M*N*K/(R*C)
                assert s["cycles"] >= s["ideal"], s
    # the same random suite on the golden backend picks the same mappings and gives the same integers
    golden = run_job(GoldenBackend(cfg, host_words=sim_sizes(cfg)[0]), gemms)
    assert golden["bit_exact"]
    assert [s["dataflow"] for s in golden["stats"]] == [s["dataflow"] for s in results[4]["stats"]]
    assert {s["dataflow"] for s in results[4]["stats"]} == {"ws", "os", "is"}


def test_random_gemms_on_golden():
    """The RTL suite's shapes on the golden backend alone (no simulator): exact on both array shapes."""
    for name in NAMES:
        cfg = PRESETS[name]
        res = run_job(GoldenBackend(cfg, host_words=sim_sizes(cfg)[0]), {"kind": "gemms", "gemms": random_gemms(7, 20)})
        assert res["bit_exact"] and not res["diffs"], (name, res["diffs"])
        assert all(s["bit_exact"] for s in res["stats"])
