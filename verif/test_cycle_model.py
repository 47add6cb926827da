"""The program-level cycle model (cdmqta.sw.perf.program_cycles, the tiler's cost model) against the RTL's
busy_cycles counter: exact, GEMM by GEMM, on both array shapes of verif/test_e2e_rtl.py (the same SimTop builds),
an odd-row two-lane array and a one-lane array (scripts/validate_cycle_model.py's configs).

The full suite (48 GEMMs) with the per-GEMM table: ``python scripts/validate_cycle_model.py``.
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import validate_cycle_model as V    # noqa: E402

# irregular shapes: 1, primes, non-multiples, beyond one tile; INT8 / INT4; ws / os / is; INT32 and fused requant
GEMMS = [[1, 1, 1, "int8", "ws", 1, None, None],
         [17, 1, 29, "int8", "is", 2, None, None],
         [31, 37, 41, "int8", "os", 3, None, None],
         [23, 9, 17, "int4", "is", 4, None, V.NE4],
         [19, 13, 29, "int8", "ws", 5, None, V.SR],
         [40, 9, 17, "int4", "os", 6, None, V.SR]]


@pytest.mark.rtl
@pytest.mark.parametrize("shape", ["8x8", "8x4", "7x5", "5x3s1"])
def test_cycle_model_exact_on_rtl(shape, tmp_path):
    from cdmqta.sw.perf import program_cycles
    recs = V.run_rtl(shape, GEMMS, tmp_path)
    cfg = V.configs()[shape]
    assert [r["dataflow"] for r in recs] == [g[4] for g in GEMMS]
    for g, r in zip(GEMMS, recs):
        assert r["bit_exact"], g
        # (a program longer than the SimTop's command memory runs in several runs; the model splits it the same way)
        model = V.model_cycles(r, cfg)
        assert model == r["cycles"], (shape, g, r["cycles"], model)
        if r["runs"] == 1:
            # the tiler scored the program it ran with the same model
            assert r["est_cycles"] == program_cycles([int(w, 16) for w in r["program"]], cfg) == model
