"""`cdmqta finetune`: a tiny smoke run of the fine-tuning study (JSON shape, finite values) and its bad inputs."""

import argparse
import json
import math

import numpy as np
import pytest

from cdmqta.errors import UsageError
from cdmqta.sw.apps import finetune
from cdmqta.sw.apps.diffusion_study import StudyConfig, frechet_distance


def _parse(argv):
    parser = argparse.ArgumentParser(prog="cdmqta finetune")
    finetune.add_arguments(parser)
    return parser.parse_args(argv)


def test_smoke_json(tmp_path, capsys):
    out = tmp_path / "out.json"
    md = tmp_path / "out.md"
    args = _parse(["--quick", "--json", str(out), "--markdown", str(md), "--seeds", "2", "--steps", "2",
                   "--pretrain-steps", "3", "--samples", "40", "--quiet"])
    assert finetune.main(args) == 0
    result = json.loads(out.read_text())
    assert set(result["modes"]) == {"fp32", "int8", "int8-w4"}
    for mode, r in result["modes"].items():
        for key in ("fid_mean", "fid_std", "seconds_per_step"):
            assert isinstance(r[key], float) and math.isfinite(r[key]), (mode, key, r[key])
        assert r["fid_mean"] > 0 and r["seconds_per_step"] > 0 and r["fid_std"] >= 0
        assert len(r["fids"]) == 2
    assert result["modes"]["fp32"]["dfid_vs_fp32"] == 0.0
    assert result["placements"]["kv"]["targets"] == ["attn2.to_k", "attn2.to_v"]
    assert result["config"]["steps"] == 2 and result["config"]["seeds"] == [0, 1]
    assert "| kv | int8-w4 |" in md.read_text()
    assert "| kv | int8 |" in capsys.readouterr().out


@pytest.mark.parametrize("argv,match", [
    (["--seeds", "1"], "at least 2 seeds"),
    (["--modes", "fp32,int3"], "--modes"),
    (["--rank", "17"], "rank=17"),
    (["--samples", "10"], "--samples"),
    (["--pretrain-steps", "-1"], "--pretrain-steps"),
])
def test_bad_values(argv, match):
    with pytest.raises(ValueError, match=match):
        finetune.main(_parse(["--quick"] + argv))


def test_bad_paths_and_argparse_values(tmp_path):
    with pytest.raises(UsageError, match=r"--json \S+x\.json: \S+missing does not exist"):
        finetune.main(_parse(["--quick", "--json", str(tmp_path / "missing" / "x.json")]))
    for argv in (["--steps", "0"], ["--placement", "qkv"], ["--seeds", "two"]):
        with pytest.raises(SystemExit):
            _parse(argv)


def test_study_config_validation():
    with pytest.raises(ValueError, match="placements"):
        StudyConfig(placements=("kv", "mlp"))
    with pytest.raises(ValueError, match="distinct"):
        StudyConfig(seeds=(1, 1))


def test_frechet_distance():

    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    b = rng.normal(size=(4000, 3)) * 2.0 + 1.0
    # N(0, I) vs N(1, 4I): |mu|^2 = 3, trace term 3 * (1 + 4 - 2 * 2) = 3
    assert abs(frechet_distance(a, b) - 6.0) < 0.4
    assert frechet_distance(a, a) < 1e-6
