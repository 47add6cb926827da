"""The accelerator behind AXI4 / AXI4-Lite (hw/axi_top.py) on Verilator: GEMM programs fetched from memory, bit-exact
against torch under random pauses, bus errors with the failing command's index, soft reset (verif/tb_axi_top.py).
Two array configurations and two bus widths: 8x8 with 128 bits, 8x4 (small memories) with 64 bits."""

import dataclasses

import pytest

from cdmqta.hw.axi_top import AxiAccelerator
from cdmqta.hw.config import PRESETS
from cdmqta.sw.rtl import build as rtlbuild

CONFIGS = {"8x8-128": PRESETS["8x8"], "8x4-64": dataclasses.replace(PRESETS["8x4"], bus_width=64, max_reads=2)}


@pytest.mark.rtl
@pytest.mark.parametrize("name", list(CONFIGS))
def test_axi_accelerator(name, tb_dir):
    cfg = CONFIGS[name]
    built = rtlbuild.build(lambda: AxiAccelerator(cfg), "axi_accelerator", public=[("axi_accelerator", "*")],
                           design_key=f"AxiAccelerator({cfg.to_json()})")
    rtlbuild.run(built, "tb_axi_top", env={"CDMQTA_CONFIG": cfg.to_json()}, python_path=[tb_dir])
