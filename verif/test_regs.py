"""The register map (hw/regs.py): one table -> decoder (on Verilator through cocotbext-axi, verif/tb_regs.py),
driver view, README table and C header (`cdmqta generate` writes it; the C compiler accepts it)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cdmqta.hw import regs
from cdmqta.hw.config import QTAConfig
from cdmqta.sw.rtl import build as rtlbuild

ROOT = Path(__file__).resolve().parent.parent


def test_encode_decode_and_errors():
    v = regs.encode("CTRL", start=1, irq_enable=1)
    assert v == 0b101 and regs.decode("CTRL", v) == {"start": 1, "soft_reset": 0, "irq_enable": 1}
    assert regs.decode("STATUS", regs.encode("STATUS", error=9, busy=1)) == {"busy": 1, "done": 0, "error": 9}
    with pytest.raises(regs.RegisterError, match="no register 'NOPE'"):
        regs.reg("NOPE")
    with pytest.raises(regs.RegisterError, match="CTRL has no field 'go'"):
        regs.encode("CTRL", go=1)
    with pytest.raises(regs.RegisterError, match="does not fit in 4 bits"):
        regs.encode("STATUS", error=16)
    assert regs.words("MACS") == [0x48, 0x4C]


def test_sync_driver_view_over_a_dict():
    mem = {}
    r = regs.Registers(lambda off: mem.get(off, 0), mem.__setitem__)
    r.write("CMD_BASE_LO", 0x1234)
    r.write("BUSY_CYCLES", 0x1_0000_0002)
    assert mem == {0x20: 0x1234, 0x40: 2, 0x44: 1}
    assert r.read("BUSY_CYCLES") == 0x1_0000_0002 and r.fields("CMD_BASE_LO") == {"addr": 0x1234}


def test_config_hash_is_the_config_json_digest(tmp_path):
    import hashlib
    cfg = QTAConfig(rows=4, cols=3, bus_width=64)
    cfg.to_json(tmp_path / "config.json")
    digest = hashlib.sha256((tmp_path / "config.json").read_bytes()).digest()
    assert regs.config_hash(cfg) == int.from_bytes(digest[:4], "big")
    assert regs.config_hash(cfg) != regs.config_hash(QTAConfig(rows=4, cols=3, bus_width=128))


def test_readme_register_table_is_generated():
    assert regs.markdown_table() in (ROOT / "README.md").read_text()


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_generate_writes_a_c_header_the_compiler_accepts(tmp_path):
    p = subprocess.run([sys.executable, "-m", "cdmqta.cli", "generate", "--rows", "2", "--cols", "3", "--top",
                        "array", "--bus-width", "64", "-o", str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    header = tmp_path / "cdmqta_regs.h"
    text = header.read_text()
    assert "#define CDMQTA_REG_CTRL 0x010u" in text and "#define CDMQTA_BUILT_BUS_BYTES 0x8u" in text
    cfg = QTAConfig.from_json(tmp_path / "config.json")
    assert f"#define CDMQTA_BUILT_CONFIG_HASH 0x{regs.config_hash(cfg):X}u" in text
    src = tmp_path / "use.c"
    src.write_text('#include "cdmqta_regs.h"\n'
                   "_Static_assert(CDMQTA_REG_STATUS == 0x14u, \"offset\");\n"
                   "_Static_assert(CDMQTA_STATUS_ERROR_MASK == 0xF0u, \"mask\");\n"
                   "_Static_assert(CDMQTA_BUILT_COLS == 3u, \"cols\");\n"
                   "unsigned f(unsigned s) { return (s & CDMQTA_STATUS_ERROR_MASK) >> CDMQTA_STATUS_ERROR_SHIFT; }\n")
    c = subprocess.run(["cc", "-std=c11", "-Wall", "-Werror", "-fsyntax-only", "-I", str(tmp_path), str(src)],
                       capture_output=True, text=True)
    assert c.returncode == 0, c.stderr


@pytest.mark.rtl
def test_register_file_rtl(tb_dir):
    cfg = QTAConfig(rows=8, cols=8)
    built = rtlbuild.build(lambda: regs.RegsHarness(cfg), "regs_harness", public=[("regs_harness", "*")],
                           design_key=f"RegsHarness({cfg.to_json()})")
    rtlbuild.run(built, "tb_regs", env={"CDMQTA_CONFIG": cfg.to_json()}, python_path=[tb_dir])
    rc, out = rtlbuild.lint(built.verilog, "regs_harness")
    assert rc == 0 and "%Warning" not in out, out[-3000:]
