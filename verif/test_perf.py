"""Cycle models against hand-computed cases, SCALE-Sim's measured cycles, and the ideal bound; energy table;
fusion exactness."""

import random

import pytest

from cdmqta.hw.config import PRESETS, QTAConfig
from cdmqta.hw.isa import Op, encode
from cdmqta.sw.perf import analytic as P
from cdmqta.sw.perf import energy as E
from cdmqta.sw.perf import fusion as F
from cdmqta.sw.perf.program import program_cycles
from cdmqta.sw.perf.workloads import Gemm
from cdmqta.sw.runtime.tiler import GemmSpec, build_plan, candidates

T0 = P.ArrayTiming()
T1 = P.ArrayTiming(lanes=1)     # a one-lane shift chain (QTAConfig(shift_lanes=1))


def test_single_tile_1x1_array():
    # 1x1 array: last beat to completion = R + C + 5 = 7 (array LATENCY R + C + 2, issue, write, completion).
    # WS: 1 preload shift (in the cycle the PRELOAD is accepted), the COMPUTE accepted a cycle later, 1 compute
    # beat, +7 = 10.
    assert P.sequence_cycles([("ws", 1, 1)], 1, 1, T0) == 2 + 1 + 7
    # OS: the COMPUTE's first beat a cycle after it is accepted, 1 compute beat, then (H2 guard) 1 bubble + 1 drain
    # shift, +7 = 11.
    assert P.sequence_cycles([("os", 1, 1)], 1, 1, T0) == 1 + 1 + 1 + 1 + 7


def test_1x1_array_gemm_is_ideal_plus_one_fill_and_drain():
    m, n, k = 7, 5, 3
    c = P.dataflow_cost(m, n, k, "ws", 1, 1, T0, P.Tiling(ws_m=64))
    assert c.ideal_cycles == m * n * k
    assert c.tiles == n * k
    # the first preload (1 shift, the COMPUTE accepted a cycle later) + the pipeline latency, nothing per tile
    assert c.compute_cycles == m * n * k + 2 + 7


@pytest.mark.parametrize("lanes", [1, 2])
def test_single_tile_64x64(lanes):
    R = C = 64
    lat = R + C + 5
    t = P.ArrayTiming(lanes=lanes)
    # WS: 64 / lanes preload shifts, m=100 beats, latency
    assert P.dataflow_cost(100, 64, 64, "ws", R, C, t).compute_cycles == 64 // lanes + 100 + lat
    # OS: issue (first beat a cycle after the COMPUTE is accepted), K=100 beats, guard + 64 / lanes drain shifts
    assert P.dataflow_cost(64, 64, 100, "os", R, C, t).compute_cycles == 1 + 100 + 1 + 64 // lanes + lat
    # a tall tile with a short stream (attention head dim 40 on 64 rows): 2 lanes hide its 64-row drain
    os40 = P.dataflow_cost(64 * 8, 64, 40, "os", R, C, t).compute_cycles
    # (1 lane: the first drain window pays the H2 bubble and ends on a shift-only beat, the later ones do not)
    assert os40 == (1 + 40 + 65 + 6 * 64 + 64 + lat if lanes == 1 else 1 + 8 * 40 + 1 + 32 + lat)


def test_overlap_hides_preload_and_drain():
    R = C = 8
    lat = R + C + 5
    # 3 WS tiles of 20 rows, k=8: preload of tiles 2 and 3 ride on the beats of tiles 1 and 2
    assert P.sequence_cycles([("ws", 20, 8)] * 3, R, C, T1) == 8 + 60 + lat
    assert P.sequence_cycles([("ws", 20, 8)] * 3, R, C, T0) == 4 + 60 + lat
    # short WS tiles (m=3 < k=8): each window is preload bound (the PRELOAD shifts from the cycle it is accepted)
    assert P.sequence_cycles([("ws", 3, 8)] * 3, R, C, T1) == 8 + 8 + 8 + 3 + lat
    assert P.sequence_cycles([("ws", 3, 8)] * 3, R, C, T0) == 4 + 4 + 4 + 3 + lat
    # OS then WS: the WS tile's weights preload on the OS beats; the controller (one result row per cycle) drains
    # the OS tile first: 1 (H2) + 8 shift-only beats, then the 20 WS beats (+1: the first OS beat comes a cycle
    # after its COMPUTE is accepted)
    assert P.sequence_cycles([("os", 8, 30), ("ws", 20, 8)], R, C, T1) == 1 + 30 + 1 + 8 + 20 + lat
    assert P.sequence_cycles([("os", 8, 30), ("ws", 20, 8)], R, C, T0) == 1 + 30 + 1 + 4 + 20 + lat
    # an array driver that lets the drain ride on the WS beats (hw/array.py allows it): hidden
    t = P.ArrayTiming(drain_on_ws=True)
    assert P.sequence_cycles([("os", 8, 30), ("ws", 20, 8)], R, C, t) == 1 + 30 + 20 + lat
    # OS then OS: the drain rides on the next tile's beats
    assert P.sequence_cycles([("os", 8, 30), ("os", 8, 30)], R, C, T1) == 1 + 30 + 30 + 1 + 8 + lat
    assert P.sequence_cycles([("os", 8, 30), ("os", 8, 30)], R, C, T0) == 1 + 30 + 30 + 1 + 4 + lat
    # a dataflow switch costs what ArrayTiming says
    t = P.ArrayTiming(switch=5, drain_on_ws=True)
    assert P.sequence_cycles([("os", 8, 30), ("ws", 20, 8)], R, C, t) == 1 + 30 + 20 + 5 + lat


def _exec_span(tiles, cfg):
    """The validated program model's cycles for ``tiles`` (operands loaded and fenced first), minus that prologue."""
    base = [encode(Op.LOAD, sp_addr=0, rows=100, host_addr=0, host_stride=1), encode(Op.FENCE)]
    prog = list(base)
    for i, (df, m, k) in enumerate(tiles):
        c_addr = (i % 4) * 64
        if df == "ws":
            prog.append(encode(Op.PRELOAD, b_addr=0, k=k, n=cfg.cols))
            prog.append(encode(Op.COMPUTE, dataflow=0, a_addr=0, b_addr=0, c_addr=c_addr, m=m, n=cfg.cols, k=k))
        else:
            prog.append(encode(Op.COMPUTE, dataflow=1, a_addr=0, b_addr=50, c_addr=c_addr, m=m, n=cfg.cols, k=k))
    prog.append(encode(Op.FENCE))
    return program_cycles(prog, cfg) - program_cycles(base, cfg)


@pytest.mark.parametrize("rows,cols,lanes", [(8, 8, 2), (8, 4, 2), (4, 8, 2), (16, 16, 2), (7, 5, 2), (8, 8, 1),
                                             (5, 4, 1)])
def test_sequence_model_equals_program_model(rows, cols, lanes):
    """The analytic tile-sequence model (cdmqta bench) is exactly the validated program model's execute span, up to
    the 3 cycles of FENCE -> dispatch -> queue head, for any tile sequence (short tiles, dataflow switches)."""
    cfg = QTAConfig(rows=rows, cols=cols, sp_rows=1024, acc_rows=512, shift_lanes=lanes)
    t = P.ArrayTiming(lanes=lanes)
    rng = random.Random(rows * 100 + cols + lanes)
    for _ in range(80):
        tiles = [rng.choice([("ws", rng.randint(1, 40), rng.randint(1, rows)),
                             ("os", rng.randint(1, rows), rng.randint(1, 40))]) for _ in range(rng.randint(1, 5))]
        assert _exec_span(tiles, cfg) == P.sequence_cycles(tiles, rows, cols, t) + 3, tiles
    for tiles in ([("ws", 3, 8)] * 3, [("os", 5, 7), ("os", 6, 9), ("os", 4, 6)], [("os", 8, 20), ("ws", 20, 8)],
                  [("ws", 1, 1), ("ws", 7, 1)], [("os", 7, 11), ("ws", 4, 3), ("os", 1, 11)]):
        assert _exec_span(tiles, QTAConfig(rows=8, cols=8, sp_rows=1024, acc_rows=512, shift_lanes=lanes)) == \
            P.sequence_cycles(tiles, 8, 8, t) + 3, tiles


def test_program_model_skips_only_quiet_cycles():
    """Skipping quiet stretches in program_cycles changes no result (tiler programs with and without FENCEs)."""
    cfg = PRESETS["8x4"]
    rng = random.Random(4)
    checked = 0
    for i in range(6):
        g = GemmSpec(rng.randint(1, 60), rng.randint(1, 60), rng.randint(1, 60), rng.choice(["int8", "int4"]))
        for cand in candidates(g, cfg)[::3]:
            plan = build_plan(g, cfg, *cand, fences=i % 2 == 0)
            if plan is None:
                continue
            assert program_cycles(plan.program, cfg, skip_quiet=False) == program_cycles(plan.program, cfg), \
                (g, cand)
            checked += 1
    assert checked >= 10


def test_fixed_ws_formula_matches_scalesim_measurements():
    # SCALE-Sim 3.0.0 (WS, 64x64, CALC) reported these total cycles: folds * (2R + C + M - 2) - 1
    measured = {(64, 64, 64): 253, (100, 64, 64): 289, (64, 128, 64): 507, (77, 4, 768): 3203,
                (1024, 320, 320): 30349, (4096, 320, 2880): 964349}
    for (m, n, k), cyc in measured.items():
        assert P.fixed_ws_cycles(m, n, k, 64, 64) - 1 == cyc


@pytest.mark.parametrize("shape,best", [((4096, 64, 100), "os"), ((4096, 100, 64), "is"), ((100, 4096, 64), "ws")])
def test_mapping_choice(shape, best):
    m, n, k = shape
    ours = P.gemm_cost(m, n, k, "ours", 64, 64)
    assert ours.dataflow == best
    for df in P.DATAFLOWS:
        assert ours.total_cycles <= P.dataflow_cost(m, n, k, df, 64, 64).total_cycles
    # the chosen mapping fills the array; fixed WS (K x N spatial) leaves 28 of 64 rows or columns empty
    assert ours.ideal_cycles / ours.total_cycles > 0.9


def test_skinny_lora_gemms():
    # dA = dH^T X with r = 4: M = 4. Every mapping is bound by r/64 (preload or drain of 64 rows per tile),
    # but ours and (b) overlap them, while (a) pays 2R + C + M - 2 per fold.
    m, n, k = 4, 320, 4096
    ours = P.gemm_cost(m, n, k, "ours", 64, 64)
    a = P.gemm_cost(m, n, k, "fixed_ws", 64, 64)
    assert a.total_cycles == 64 * 5 * (128 + 64 + 4 - 2)
    assert ours.total_cycles < a.total_cycles / 2.5


def test_ideal_never_beaten():
    rnd = random.Random(1)
    for _ in range(150):
        R, C = rnd.choice([(1, 1), (4, 8), (16, 16), (64, 64), (64, 32)])
        sizes = [1, 3, 4, 40, 63, 64, 65, 77, 128, 300, 1000] if R * C > 32 else [1, 2, 3, 5, 8, 13, 40]
        m, n, k = (rnd.choice(sizes) for _ in range(3))
        ideal = P.ideal_cycles(m, n, k, R, C)
        for d in P.DESIGNS:
            c = P.gemm_cost(m, n, k, d, R, C, bandwidth=rnd.choice([0, 8.0]))
            assert c.total_cycles >= ideal, (m, n, k, R, C, d)
            assert 0 < c.mapping_efficiency <= 1


def test_memory_stalls():
    m, n, k = 4, 320, 4096                   # reads X (1.3 MB) for few MACs: memory bound at 16 B/cycle
    free = P.gemm_cost(m, n, k, "ours", 64, 64)
    slow = P.gemm_cost(m, n, k, "ours", 64, 64, bandwidth=16.0)
    assert free.stall_cycles == 0
    assert slow.stall_cycles > 0
    assert slow.total_cycles >= slow.dram_bytes / 16


def test_program_cycles_single_tile():
    """A hand-timed program (hw/controller.py, hw/dma.py timings): exact busy_cycles."""

    cfg = QTAConfig(rows=8, cols=8)
    prog = [encode(Op.LOAD, sp_addr=0, rows=8, host_addr=0, host_stride=1),
            encode(Op.LOAD, sp_addr=8, rows=20, host_addr=8, host_stride=1),
            encode(Op.PRELOAD, b_addr=0, k=8, n=8),
            encode(Op.COMPUTE, dataflow=0, a_addr=8, b_addr=0, c_addr=0, m=20, n=8, k=8),
            encode(Op.STORE, out=0, acc_addr=0, rows=20, cols=8, host_addr=100, host_stride=1),
            encode(Op.FENCE)]
    # command i is dispatched at cycle 2 + i and reaches its queue head 2 cycles later. LOAD 0 accepted at 4,
    # done pulse 4 + 8 + 2 = 14 (visible at 15, the load unit takes the next LOAD at 15); LOAD 1: 15 + 20 + 2 = 37
    # (visible at 38). PRELOAD (waits for LOAD 0) accepted at 15, shifts 16..23; COMPUTE (waits for LOAD 1)
    # accepted at 38, beats 39..58; its last row is written at 58 + 1 + LATENCY(18) = 77, completed at 79
    # (visible at 80). STORE accepted at 80, store unit idle from 80 + 20 + 7 = 107; FENCE dispatched at 107, the
    # run ends (done) at 109.
    assert program_cycles(prog, cfg) == 109
    assert program_cycles(prog[:-1], cfg) == 108
    # the same program with INT4 state from an earlier run: k=8 -> 4 shifts, the COMPUTE still waits for LOAD 1
    int4 = [encode(Op.CONFIG, precision=1)]
    assert program_cycles(prog, cfg, state=int4) == 109
    # a second LOAD for the preload's weights delays it: the COMPUTE's beats then start after the shifts
    late = prog[:2] + [encode(Op.LOAD, sp_addr=0, rows=8, host_addr=40, host_stride=1)] + prog[2:]
    assert program_cycles(late, cfg) > 109


def test_energy_table():
    t = E.load_table()
    assert "Horowitz" in t["source"] and "ISSCC 2014" in t["source"]
    assert t["ops"] == {"int8_add": 0.03, "int32_add": 0.1, "int8_mult": 0.2, "int32_mult": 3.1, "fp16_add": 0.4,
                        "fp32_add": 0.9, "fp16_mult": 1.1, "fp32_mult": 3.7}
    assert all(v > 0 for v in t["memory_per_64bit"].values())
    assert E.mac_energy_pj("int8", t) == pytest.approx(0.3)
    assert E.mac_energy_pj("fp16", t) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        E.mac_energy_pj("bf16", t)


def test_fusion_groups_shared_operands():
    rows = [Gemm(f"b{i}.H", "fwd", "lora", 77, 4, 768, 1, 4, "text_emb", f"b{i}.A^T", f"b{i}.H") for i in range(3)]
    rows += [Gemm(f"b{i}.dA", "bwd", "lora", 4, 768, 77, 1, 4, f"b{i}.dH^T", "text_emb", f"b{i}.dA") for i in range(3)]
    rows += [Gemm("x.H", "fwd", "lora", 4096, 4, 320, 1, 4, "x", "x.A^T", "x.H")]
    out = F.fuse(rows)
    assert len(out) == 3
    assert (out[0].m, out[0].n, out[0].k) == (77, 12, 768)
    assert (out[1].m, out[1].n, out[1].k) == (12, 768, 77)
    assert out[2] == rows[-1]
    assert sum(g.macs for g in out) == sum(g.macs for g in rows)
    # fusing buys cycles on the array
    cyc = lambda rs: sum(P.gemm_cost(g.m, g.n, g.k, "ours", 64, 64).total_cycles for g in rs)
    assert cyc(out) < cyc(rows)
