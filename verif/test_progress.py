"""Long steps say what they do (cdmqta.progress): on a terminal only, never under ``--quiet`` or into a pipe.

The reporter itself on a stream that claims to be a terminal; the bench's bars; the Verilator build's steps, its
cache note and the log path of a failed build (a fresh build directory: real, small Verilator builds); the demo's
steps on the RTL (the 8x8 SimTop the RTL tests build, from the shared cache).
"""

import io
import json
import re
import sys

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from cdmqta.cli import main as cli_main
from cdmqta.errors import ToolError
from cdmqta.progress import SILENT, Reporter


class _Terminal(io.StringIO):
    """A stream that says it is a terminal (what a user's stderr is)."""

    def isatty(self):
        return True


def _lines(text):
    """What a terminal shows at the end: each line after its last carriage return."""
    return [line.rsplit("\r", 1)[-1].replace("\033[K", "") for line in text.split("\n") if line.strip()]


def test_step_reports_elapsed_time_and_outcome():
    out = _Terminal()
    rep = Reporter(stream=out)
    with rep.step("building"):
        pass
    with pytest.raises(KeyError), rep.step("simulating"):
        raise KeyError("x")
    rep.note("log: /tmp/x.log")
    shown = _lines(out.getvalue())
    assert re.fullmatch(r"building: done in \d+\.\d s", shown[0]), shown
    assert re.fullmatch(r"simulating: failed after \d+\.\d s", shown[1]), shown
    assert shown[2] == "log: /tmp/x.log" and len(shown) == 3


@pytest.mark.parametrize("stream, quiet", [(_Terminal(), True), (io.StringIO(), False)])
def test_quiet_or_not_a_terminal_writes_nothing(stream, quiet):
    rep = Reporter(quiet=quiet, stream=stream)
    assert not rep.enabled
    with rep.step("building"):
        rep.note("note")
    assert list(rep.bar(range(5), desc="gemms")) == [0, 1, 2, 3, 4]
    with rep.bar(total=3, desc="sim") as bar:
        bar.update(3)
    assert stream.getvalue() == ""
    assert not SILENT.enabled


def test_bar_counts_the_work():
    out = _Terminal()
    assert sum(Reporter(stream=out).bar(range(7), desc="modeling", unit="GEMM")) == 21
    assert "modeling" in out.getvalue() and "7/7" in _lines(out.getvalue())[-1]


def _bench_csv(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("name,phase,cls,rank,m,n,k,count,a_id,b_id,c_id\n"
                    "conv,fwd,frozen,0,256,128,576,1,x,w,y\n"
                    "a.H,fwd,lora,4,77,4,768,1,t,a.A,a.H\n"
                    "a.H,fwd,lora,8,77,8,768,1,t,a.A,a.H\n")
    return str(path)


@pytest.mark.parametrize("quiet", [False, True])
def test_bench_shows_a_bar_of_the_gemms_it_models(tmp_path, monkeypatch, capsys, quiet):
    """Two ranks x (1 fused + 3 unfused designs + the 2 fused what-ifs) x 2 rows: 24 rows modeled, shown on stderr
    (a terminal)."""
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    rc = cli_main(["bench", "--workload", _bench_csv(tmp_path), "--rows", "16", "--cols", "16", "--no-scalesim",
                   *(["--quiet"] if quiet else [])])
    assert rc == 0 and "targets (minimum over ranks)" in capsys.readouterr().out
    if quiet:
        assert err.getvalue() == ""
    else:
        last = _lines(err.getvalue())[-1]
        assert last.startswith("modeling GEMMs (6 designs): 100%") and "24/24" in last, last


class _Counter(wiring.Component):
    q: Out(8)
    en: In(1)

    def elaborate(self, platform):
        m = Module()
        r = Signal(8)
        with m.If(self.en):
            m.d.sync += r.eq(r + 1)
        m.d.comb += self.q.eq(r)
        return m


@pytest.mark.rtl
def test_verilator_build_reports_its_steps_then_the_cache(tmp_path, monkeypatch):
    from cdmqta.sw.rtl import build as rtlbuild

    monkeypatch.setenv("CDMQTA_BUILD_DIR", str(tmp_path))
    out = _Terminal()
    rep = Reporter(stream=out)
    built = rtlbuild.build(lambda: _Counter(), "counter", design_key="progress-test-counter", progress=rep)
    shown = _lines(out.getvalue())
    assert [s.split(":")[0] for s in shown] == ["converting to Verilog",
                                                "building with Verilator (first time ~1-2 min, cached later)"]
    assert all(": done in " in s for s in shown), shown
    out.seek(0)
    out.truncate()
    again = rtlbuild.build(lambda: _Counter(), "counter", design_key="progress-test-counter", progress=rep)
    assert again.build_dir == built.build_dir
    assert _lines(out.getvalue()) == [f"using the cached verilator model {built.build_dir}"]


@pytest.mark.rtl
def test_failed_verilator_build_names_its_log(tmp_path, monkeypatch):
    from cdmqta.sw.rtl import build as rtlbuild

    monkeypatch.setenv("CDMQTA_BUILD_DIR", str(tmp_path))
    with pytest.raises(ToolError) as info:
        rtlbuild.build(None, "broken", verilog_text="module broken(input clk); wire x = ; endmodule\n")
    first = str(info.value).splitlines()[0]
    log = re.search(r"log: (\S+build\.log);", first).group(1)
    assert "verilator build of broken failed" in first
    assert "syntax error" in open(log).read()


@pytest.mark.rtl
def test_demo_says_what_it_does(tmp_path, monkeypatch, capsys):
    """The demo's first line comes before the work; stderr (a terminal) names each step with its time."""
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    out_json = tmp_path / "demo.json"
    assert cli_main(["demo", "--json", str(out_json)]) == 0
    stdout = capsys.readouterr().out.splitlines()
    assert stdout[0].startswith("cdm-qta demo: 8x8 array, LoRA layer in=72 out=40 r=4 T=50, int8")
    assert stdout[-1] == "all bit-exact: yes"
    steps = [s.split(":")[0] for s in _lines(err.getvalue()) if ": done in " in s]
    assert steps[0] == "loading torch, the runtime and the simulator"
    assert steps[-1] == "simulating 1 job on the RTL (Verilator)"
    assert json.loads(out_json.read_text())["all_bit_exact"] is True
