"""`cdmqta generate`: Verilog + config.json, one-line errors, and lint-clean output (only the listed waivers)."""

import json
import re
import subprocess
import sys

import pytest

from cdmqta.hw.config import QTAConfig
from cdmqta.sw.rtl import build as rtlbuild


def cli(*args):
    return subprocess.run([sys.executable, "-m", "cdmqta.cli", "generate", *args], capture_output=True, text=True)


def test_generate_array_5x3(tmp_path):
    p = cli("--rows", "5", "--cols", "3", "--no-int4", "--dataflows", "os,ws", "--top", "array", "-o", str(tmp_path))
    assert p.returncode == 0, p.stderr
    cfg = QTAConfig.from_json(tmp_path / "config.json")
    assert (cfg.rows, cfg.cols, cfg.int4, cfg.dataflows) == (5, 3, False, ("ws", "os"))
    text = (tmp_path / "array.v").read_text()
    assert "module array(" in text
    # 15 PEs, each with its own MAC
    assert text.count("module \\array.pe_") == 15 + 15
    assert json.loads((tmp_path / "config.json").read_text())["acc_width"] == 32


@pytest.mark.parametrize("args,option", [
    (["--rows", "0"], "--rows"),
    (["--cols", "129"], "--cols"),
    (["--dataflows", "ws,is"], "--dataflows"),
    (["--acc-width", "16"], "--acc-width"),
    (["--shift-lanes", "3"], "--shift-lanes"),
    (["--bus-width", "100"], "--bus-width"),
    (["--bus-width", "1024"], "--bus-width"),
    (["--max-reads", "0"], "--max-reads"),
    (["--bus-addr-width", "16"], "--bus-addr-width"),
])
def test_generate_bad_value_one_line(tmp_path, args, option):
    p = cli(*args, "--top", "array", "-o", str(tmp_path))
    assert p.returncode != 0
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and option in lines[0] and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "array.v").exists()


def test_generate_help_lists_every_option():
    p = cli("--help")
    assert p.returncode == 0
    for opt in ("--rows", "--cols", "--int4", "--no-int4", "--dataflows", "--max-k", "--acc-width", "--shift-lanes",
                "--bus-width", "--bus-addr-width", "--max-reads", "--top", "-o"):
        assert opt in p.stdout


@pytest.mark.parametrize("top,rows,cols,int4", [("array", 5, 3, True), ("harness", 4, 2, False), ("axi", 2, 2, True)])
def test_generated_verilog_lints(tmp_path, top, rows, cols, int4):
    p = cli("--rows", str(rows), "--cols", str(cols), "--int4" if int4 else "--no-int4", "--top", top,
            "-o", str(tmp_path))
    assert p.returncode == 0, p.stderr
    rc, out = rtlbuild.lint(tmp_path / f"{top}.v", top)
    assert rc == 0, out[-3000:]
    assert "%Warning" not in out and "%Error" not in out, out[-3000:]
    # without the waivers -Wall does warn, and only about waived kinds
    rc_all, out_all = rtlbuild.lint(tmp_path / f"{top}.v", top, waivers={})
    kinds = set(re.findall(r"%Warning-(\w+)", out_all))
    assert rc_all != 0 and kinds and kinds <= set(rtlbuild.LINT_WAIVERS), kinds
    assert {"UNUSEDSIGNAL", "PROCASSINIT"} <= kinds
    if top == "axi":    # the AMBA port names integration tools look for, and the C header beside the Verilog
        text = (tmp_path / "axi.v").read_text()
        for port in ("input m_axi_arready;", "output [31:0] m_axi_awaddr;", "output [15:0] m_axi_wstrb;",
                     "input m_axi_rlast;", "input [11:0] s_axil_awaddr;", "output [31:0] s_axil_rdata;",
                     "output irq;"):
            assert port in text, port
        assert (tmp_path / "cdmqta_regs.h").exists()
