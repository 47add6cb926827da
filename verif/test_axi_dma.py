"""The AXI4 DMA engines and the command fetcher (hw/axi_dma.py) on Verilator against cocotbext-axi's AxiRam, under
random pauses on all five channels, with the bus protocol checked on every cycle: see verif/tb_axi_dma.py.
Two bus widths (64 and 128 bits) with 128-byte rows, different read depths."""

import pytest

from cdmqta.hw.axi_dma import AxiDmaHarness
from cdmqta.sw.rtl import build as rtlbuild

#: (bus width, max row bytes, outstanding reads)
PARAMS = [(64, 128, 4), (128, 128, 2)]


@pytest.mark.rtl
@pytest.mark.parametrize("width,row_bytes,reads", PARAMS, ids=[f"{w}bit" for w, _, _ in PARAMS])
def test_axi_dma(width, row_bytes, reads, tb_dir):
    kw = dict(data_width=width, max_row_bytes=row_bytes, max_reads=reads)
    built = rtlbuild.build(lambda: AxiDmaHarness(**kw), "axi_dma_harness", public=[("axi_dma_harness", "*")],
                           design_key=f"AxiDmaHarness({kw!r})")
    rtlbuild.run(built, "tb_axi_dma", env={"DATA_WIDTH": width, "MAX_ROW_BYTES": row_bytes, "SEED": width + reads},
                 python_path=[tb_dir])
    rc, out = rtlbuild.lint(built.verilog, "axi_dma_harness")
    assert rc == 0 and "%Warning" not in out, out[-3000:]
