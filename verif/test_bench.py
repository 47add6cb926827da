"""``cdmqta bench``: JSON keys and value ranges, the SCALE-Sim column, bad input."""

import argparse
import json
import os

import pytest

from cdmqta import cli
from cdmqta.sw.apps import bench
from cdmqta.sw.perf import analytic as P
from cdmqta.sw.perf import scalesim_ref as S

REQUIRED = ("step_utilization", "speedup_vs_fixed_ws", "speedup_vs_fixed_ws_overlap", "lora_speedup_vs_fixed_ws",
            "lora_gemm_utilization_mean", "energy_efficiency_vs_fp16_fixed_ws", "classes", "speedup_bound_vs_fixed_ws")


def _args(*argv):
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    return p.parse_args(list(argv))


@pytest.fixture
def small_csv(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("# a small LoRA workload\nname,phase,cls,rank,m,n,k,count,a_id,b_id,c_id\n"
                    "conv,fwd,frozen,0,256,128,576,1,x,w,y\n"
                    "qk,fwd,attention,0,256,256,40,8,q,k,s\n"
                    "a.H,fwd,lora,4,77,4,768,1,text_emb,a.A,a.H\n"
                    "b.H,fwd,lora,4,77,4,768,1,text_emb,b.A,b.H\n"
                    "a.dA,bwd,lora,4,4,768,77,1,a.dH,text_emb,a.dA\n"
                    "a.H,fwd,lora,8,77,8,768,1,text_emb,a.A,a.H\n")
    return str(path)


def test_bench_json_keys_and_ranges(small_csv, tmp_path, capsys):
    out_json = tmp_path / "b.json"
    png = tmp_path / "b.png"
    assert bench.main(_args("--workload", small_csv, "--rows", "16", "--cols", "16", "--no-scalesim",
                            "--json", str(out_json), "--plot", str(png))) == 0
    text = capsys.readouterr().out
    assert "total_cycles" in text and "overall_util" in text and "targets" in text
    out = json.loads(out_json.read_text())
    for k in REQUIRED:
        assert k in out
    assert out["ranks"] == [4, 8]
    assert 0 < out["step_utilization"] <= 1
    assert 0 < out["lora_gemm_utilization_mean"] <= 1
    assert 1 <= out["speedup_vs_fixed_ws"] <= out["speedup_bound_vs_fixed_ws"]
    assert out["speedup_vs_fixed_ws_overlap"] >= 1
    assert out["energy_efficiency_vs_fp16_fixed_ws"] > 0
    assert out["energy_efficiency_onchip_vs_fp16_fixed_ws"] > 1       # INT8 MACs and SRAM bytes beat FP16's
    for pr in out["per_rank"].values():
        e = pr["energy_mj_designs"]
        assert e["ours_flash"] <= e["ours"] and e["ours_fused_requant"] <= e["ours"]
        assert pr["dram_bytes"] >= pr["compulsory_bytes"] > 0
        assert pr["roofline_utilization"] == pytest.approx(pr["ideal_cycles"] / pr["cycles"]["ours"])  # unlimited
    for row in out["classes"]:
        assert row["total_cycles"] >= row.get("ideal_cycles", 0)
        assert 0 <= row["overall_util"] <= 1
    # fusion of the two H GEMMs that read the text embedding: one fewer LoRA GEMM at rank 4
    lora4 = {r["design"]: r["gemms"] for r in out["classes"] if r["class"] == "lora" and r["rank"] == 4}
    assert lora4["ours"] == 2 and lora4["ours_nofusion"] == 3
    assert png.stat().st_size > 1000
    assert out["per_rank"]["4"]["scalesim"]["available"] is False


def test_bench_sd15_rank4():
    out = bench.run_bench("sd15-lora-kv", 4, 64, 64, scalesim=False)
    s = out["per_rank"]["4"]
    assert 0.85 < s["step_utilization"] <= 1
    # baseline (a) can never beat its physical bound; ours sits between (b) and the bound
    assert 1 < s["speedup_vs_fixed_ws"] < s["speedup_bound_vs_fixed_ws"]
    assert s["speedup_vs_fixed_ws_overlap"] >= 1
    assert s["lora_speedup_vs_fixed_ws"] > s["lora_speedup_vs_fixed_ws_no_fusion"] > 1
    cyc = s["cycles"]
    assert cyc["fixed_ws"] > cyc["ws_overlap"] >= cyc["ours"] >= s["ideal_cycles"]
    names = {t["name"]: t for t in out["targets"]}
    assert set(names) == set(bench.TARGETS)
    for t in names.values():
        assert t["met"] == (t["value"] >= t["target"])
        assert t["met"] or t["why"]
    # the headline: the two-lane chain hides the 64-row preload / drain of head-dim-40 attention tiles
    assert s["step_utilization"] >= 0.98 and s["speedup_vs_fixed_ws"] >= 1.5
    att = {c["design"]: c for c in out["classes"] if c["class"] == "attention"}
    assert att["ours"]["overall_util"] > 0.95 > 0.7 > att["ws_overlap"]["overall_util"]


def test_bench_one_lane_chain_is_slower_on_attention():
    """--shift-lanes 1 (the classic chain) models the same step with one row per preload / drain beat."""
    two = bench.run_bench("sd15-lora-kv", 4, 64, 64, scalesim=False)
    one = bench.run_bench("sd15-lora-kv", 4, 64, 64, scalesim=False, shift_lanes=1)
    util = lambda out: {c["class"]: c["overall_util"] for c in out["classes"] if c["design"] == "ours"}
    u1, u2 = util(one), util(two)
    assert u1["attention"] < 0.7 < 0.95 < u2["attention"]
    assert abs(u1["frozen"] - u2["frozen"]) < 0.01       # long-stream GEMMs hide either chain
    assert one["per_rank"]["4"]["speedup_vs_fixed_ws"] < 1.45 < 1.5 <= two["per_rank"]["4"]["speedup_vs_fixed_ws"]


@pytest.mark.parametrize("argv,exc,msg", [
    (("--workload", "sd99-lora"), ValueError, "unknown workload"),
    (("--rows", "0"), ValueError, "--rows=0"),
    (("--cols", "129"), ValueError, "--cols=129"),
    (("--workload", "/nonexistent/w.csv"), FileNotFoundError, "not found"),
    (("--rank", "5"), ValueError, "rank 5"),
    (("--bandwidth", "-1"), ValueError, "bandwidth"),
    (("--bandwidth", "fast"), ValueError, "bandwidth"),
    (("--bandwidth", "0"), ValueError, "--bandwidth: '0' must be > 0 bytes/cycle"),
    (("--bandwidth", "foo"), ValueError, "--bandwidth: 'foo' is not a number"),
    (("--latency", "-1"), ValueError, "--latency=-1"),
    (("--sp-rows", "8"), ValueError, "--sp-rows=8"),
])
def test_bad_input_one_line_error(argv, exc, msg):
    with pytest.raises(exc) as e:
        bench.main(_args(*argv, "--no-scalesim"))
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_bad_shift_lanes_names_the_option(capsys):
    with pytest.raises(SystemExit) as e:
        _args("--shift-lanes", "3")
    assert e.value.code == 2
    assert "--shift-lanes" in capsys.readouterr().err.strip().splitlines()[-1]


def test_cli_bad_bandwidth_is_one_line(capsys):
    rc = cli.main(["bench", "--bandwidth", "0", "--no-scalesim"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--bandwidth" in err[0]


def test_cli_error_exit_code(capsys):
    rc = cli.main(["bench", "--rows", "0", "--no-scalesim"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--rows=0" in err[0]


def test_scalesim_reference_or_clear_reason(tmp_path, monkeypatch):
    ok, info = S.available()
    if not ok:
        assert "pip install" in info
        col = bench.scalesim_column([], 64, 64, 1000, True)
        assert col == {"available": False, "reason": info}
        pytest.skip(info)
    monkeypatch.setenv("CDMQTA_SCALESIM_DIR", info or S.scalesim_dir())
    monkeypatch.setenv("HOME", str(tmp_path))            # fresh cache: SCALE-Sim really runs
    shapes = [(64, 64, 64), (77, 4, 320), (20, 70, 130)]
    for df, formula in (("ws", lambda m, n, k: P.fixed_ws_cycles(m, n, k, 16, 16)),
                        ("os", lambda m, n, k: -(-m // 16) * -(-n // 16) * (2 * 16 + k - 2)),
                        ("is", lambda m, n, k: P.fixed_ws_cycles(n, m, k, 16, 16))):
        res = S.run_shapes(shapes, 16, 16, df, path=info)
        for s in shapes:
            assert res[s]["total_cycles"] == formula(*s) - 1, (df, s, res[s])
            assert res[s]["stall_cycles"] == 0
            assert 0 < res[s]["mapping_efficiency"] <= 1
    assert os.path.isfile(S.cache_path())
