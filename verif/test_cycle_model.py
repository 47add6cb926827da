"""The program-level cycle model (:func:`cdmqta.sw.perf.program.program_cycles`, the tiler's cost model) against the
RTL's busy_cycles counter: exact, GEMM by GEMM, on the four presets (8x8 and 8x4 as in verif/test_e2e_rtl.py, an
odd-row two-lane 7x5 and a one-lane 5x3; the same SimTop builds as the validation script).

The full validation (96 GEMMs) with the per-GEMM table: ``python scripts/validate_cycle_model.py``.
"""

import pytest

from cdmqta.hw.config import PRESETS
from cdmqta.sw.perf.program import program_cycles, runs_cycles
from cdmqta.sw.rtl.backend import run_jobs, sim_sizes

SR = {"mult": 40503, "shift": 21, "bits": 8, "rounding": "stochastic", "seed": 0xC0FFEE}
NE4 = {"mult": 23111, "shift": 14, "bits": 4, "rounding": "nearest", "seed": 0}

# irregular shapes: 1, primes, non-multiples, beyond one tile; INT8 / INT4; ws / os / is; INT32 and fused requant
GEMMS = [[1, 1, 1, "int8", "ws", 1, None, None],
         [17, 1, 29, "int8", "is", 2, None, None],
         [31, 37, 41, "int8", "os", 3, None, None],
         [23, 9, 17, "int4", "is", 4, None, NE4],
         [19, 13, 29, "int8", "ws", 5, None, SR],
         [40, 9, 17, "int4", "os", 6, None, SR]]


@pytest.mark.rtl
@pytest.mark.parametrize("name", list(PRESETS))
def test_cycle_model_exact_on_rtl(name, tmp_path):
    cfg = PRESETS[name]
    (res,), _ = run_jobs(cfg, [{"kind": "gemms", "gemms": GEMMS, "record_programs": True}], workdir=tmp_path)
    assert res["bit_exact"] and not res["emulator_mismatches"]
    stats = res["stats"]
    assert [s["dataflow"] for s in stats] == [g[4] for g in GEMMS]
    cmd_words = sim_sizes(cfg)[1]
    for g, s in zip(GEMMS, stats):
        program = [int(w, 16) for w in s["program"]]
        # (a program longer than the SimTop's command memory runs in several runs; the model splits it the same way)
        model = runs_cycles(program, cfg, cmd_words)
        assert model == s["cycles"], (name, g, s["cycles"], model)
        if len(program) <= cmd_words:
            # the tiler scored the program it ran with the same model
            assert s["est_cycles"] == program_cycles(program, cfg) == model
