"""The array on Verilator (all shapes) and Icarus (a subset) through cocotb: see verif/tb_array.py."""

from pathlib import Path

import pytest

from cdmqta.hw.config import QTAConfig
from cdmqta.hw.harness import ArrayHarness
from cdmqta.sw.rtl import build as rtlbuild

HERE = Path(__file__).parent
DEPTH = 1024
SHAPES = [(4, 4), (8, 4), (16, 16), (5, 3)]


def _run(rows, cols, simulator, testcase=None):
    cfg = QTAConfig(rows=rows, cols=cols)
    # only the harness's top module (ports, memories) is visible to cocotb: faster to build and to run
    built = rtlbuild.build(lambda: ArrayHarness(cfg, depth=DEPTH), "array_harness", simulator=simulator,
                         public=[("array_harness", "*")], design_key=f"ArrayHarness({cfg!r}, depth={DEPTH})")
    env = {"CDMQTA_ROWS": rows, "CDMQTA_COLS": cols, "CDMQTA_ACC": cfg.acc_width, "CDMQTA_DEPTH": DEPTH,
           "CDMQTA_LANES": cfg.chain_lanes,
           "CDMQTA_SEED": rows * 131 + cols}
    rtlbuild.run(built, "tb_array", env=env, python_path=[HERE], testcase=testcase)


@pytest.mark.rtl
@pytest.mark.parametrize("rows,cols", SHAPES, ids=[f"{r}x{c}" for r, c in SHAPES])
def test_array_verilator(rows, cols):
    _run(rows, cols, "verilator")


@pytest.mark.rtl
@pytest.mark.parametrize("rows,cols", [(4, 4), (5, 3)], ids=["4x4", "5x3"])
def test_array_icarus(rows, cols, icarus):
    _run(rows, cols, "icarus", testcase="mixed_tiles")
