"""Workload extraction: recorded GEMMs against PyTorch's FLOP counter on a small U-Net, and the SD-1.5 CSVs."""

import json
import os

import pytest
from torch import nn

from cdmqta.sw.perf import extract as X
from cdmqta.sw.perf import workloads as W


@pytest.mark.parametrize("placement", ["kv", "all"])
def test_tiny_unet_macs_match_flop_counter(placement):
    # fwd and bwd MACs recorded by the hooks equal what torch's FLOP counter sees on a real CPU run with LoRA
    # (frozen weights: activation gradients only; adapters trained)
    res = X.verify(W.TINY_CONFIG, placement, rank=8, tokens=7)
    for phase, (counted, recorded) in res.items():
        assert counted == recorded, (phase, counted, recorded)
        assert counted > 0


def test_tiny_unet_rows_follow_module_shapes():

    base, sites = X.record_unet(W.TINY_CONFIG, "kv", tokens=7)
    unet = X.build_unet(W.TINY_CONFIG, "meta")
    linears = [m for m in unet.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    fwd_frozen = [g for g in base if g.phase == "fwd" and g.cls == "frozen"]
    assert len(fwd_frozen) == len(linears)          # one forward GEMM per linear / conv (each runs once)
    n_attn = sum(1 for n, m in unet.named_modules() if n.endswith((".attn1", ".attn2")))
    assert len([g for g in base if g.phase == "fwd" and g.cls == "attention"]) == 2 * n_attn
    # cross-attention K/V: M = tokens, K = cross_attention_dim; no dX towards the frozen text embedding
    kv = [g for g in fwd_frozen if g.name.endswith(("attn2.to_k", "attn2.to_v"))]
    assert kv and all(g.m == 7 and g.k == W.TINY_CONFIG["cross_attention_dim"] and g.a_id == W.TEXT_ID for g in kv)
    assert not [g for g in base if g.phase == "bwd" and g.name.endswith(("attn2.to_k.dX", "attn2.to_v.dX"))]
    assert not [g for g in base if g.name.startswith(("conv_in.dX", "time_embedding")) and g.phase == "bwd"]
    assert len(sites) == n_attn                     # one K and one V adapter per attn2 (n_attn / 2 of them)
    lora = W.lora_gemms(sites, 4)
    assert len(lora) == 5 * len(sites)              # H, Y1, dH, dB, dA (no dXl: the input is the text embedding)


def test_lora_gemm_shapes_follow_design_table():
    site = dict(name="blk", t=77, d_in=768, d_out=320, input_grad=True, a_id="x")
    rows = {g.name.split(".")[-1]: (g.m, g.n, g.k) for g in W.lora_gemms([site], 16)}
    assert rows == {"H": (77, 16, 768), "Y1": (77, 320, 16), "dH": (77, 16, 320), "dB": (320, 16, 77),
                    "dA": (16, 768, 77), "dXl": (77, 768, 16)}


@pytest.mark.parametrize("workload,sites_per_block", [("sd15-lora-kv", 2), ("sd15-lora-all", 8)])
def test_sd15_csv_consistency(workload, sites_per_block):
    rows = W.load_workload(workload)
    assert W.available_ranks(rows) == list(W.RANKS)
    n_blocks = 16                                   # transformer blocks of SD-1.5 (6 down, 1 mid, 9 up)
    for r in W.RANKS:
        sel = [g for g in rows if g.rank == r]
        assert len([g for g in sel if g.name.endswith(".H")]) == n_blocks * sites_per_block
        for g in sel:
            if ".attn2.to_k." in g.name or ".attn2.to_v." in g.name:
                # every K/V adapter reads the 77 x 768 text embedding
                dims = {"H": (77, r, 768), "dA": (r, 768, 77)}.get(g.name.rsplit(".", 1)[1])
                if dims:
                    assert (g.m, g.n, g.k) == dims, g
                    assert g.a_id == W.TEXT_ID or g.b_id == W.TEXT_ID
                assert 77 in (g.m, g.n, g.k)
    # totals recorded by the extraction script agree with the CSV
    with open(os.path.join(W.data_dir(), "workloads_summary.json")) as f:
        summary = json.load(f)["workloads"][workload]["per_rank"]
    for r in (4, 128):
        s = W.summarize(W.load_workload(workload, r))
        for (ph, cls), (count, _, macs) in s.items():
            assert summary[str(r)][f"{ph}/{cls}"]["macs"] == macs
            assert summary[str(r)][f"{ph}/{cls}"]["gemms"] == count
    # the frozen forward of the SD-1.5 U-Net at 64x64: 338.6 GMAC (convolutions + linears)
    fwd = sum(g.macs for g in rows if g.phase == "fwd" and g.cls == "frozen")
    assert fwd == 338_610_585_600
    # a 3x3 convolution: im2col GEMM M = 64*64, N = C_out, K = 9*C_in, A a view of the 320 x 64 x 64 input;
    # its dX as the transposed convolution (M = 64*64, N = C_in, K = 9*C_out), A a view of dY
    by_name = {g.name: g for g in rows}
    conv = by_name["down_blocks.0.resnets.0.conv1"]
    assert (conv.m, conv.n, conv.k, conv.a_elems) == (4096, 320, 2880, 320 * 64 * 64)
    # the first resnet precedes every adapter: no activation gradient is needed there
    assert "down_blocks.0.resnets.0.conv1.dX" not in by_name
    dx = by_name["down_blocks.0.resnets.1.conv1.dX"]
    assert (dx.m, dx.n, dx.k, dx.a_elems) == (4096, 320, 2880, 320 * 64 * 64)
    down = by_name["down_blocks.0.downsamplers.0.conv.dX"]      # stride 2: dcols = dY . W, then col2im
    assert (down.m, down.n, down.k) == (32 * 32, 320 * 9, 320)


def test_load_workload_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown workload"):
        W.load_workload("sd14-lora")
    with pytest.raises(FileNotFoundError):
        W.load_workload(str(tmp_path / "missing.csv"))
    bad = tmp_path / "bad.csv"
    bad.write_text("name,m,n\nx,1,2\n")
    with pytest.raises(ValueError, match="m, n, k"):
        W.load_workload(str(bad))
    bad.write_text("name,m,n,k\nx,1,0,3\n")
    with pytest.raises(ValueError, match="n=0"):
        W.load_workload(str(bad))
