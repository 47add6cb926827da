"""Tiler + ISA emulator against exact integer matmul: irregular shapes, all mappings, INT4, requantization, errors."""

import numpy as np
import pytest
import torch

from cdmqta.hw.config import QTAConfig
from cdmqta.hw.isa import Op, decode
from cdmqta.sw.model.requant import requantize
from cdmqta.sw.runtime.emulator import Emulator
from cdmqta.sw.runtime.tiler import Epilogue, GemmSpec, TilerError, candidates, plan_gemm, plan_many, plan_requant

CFG = QTAConfig()
CFG_8x4 = QTAConfig(rows=8, cols=4, sp_rows=512, sp_banks=2, acc_rows=256, acc_banks=2)
# tiny memories: operands beyond the scratchpad are reloaded, outputs beyond the accumulator split
CFG_TINY = QTAConfig(rows=3, cols=5, sp_rows=32, sp_banks=1, acc_rows=16, acc_banks=1)

RANGE = {"int8": (-128, 127), "int4": (-8, 7)}


def operands(rng, m, n, k, precision):
    lo, hi = RANGE[precision]
    return rng.integers(lo, hi + 1, (m, k)), rng.integers(lo, hi + 1, (k, n))


def run(plan, a, b):
    em = Emulator(plan.config, host_words=plan.host_end)
    plan.pack_host(a, b, em.host)
    em.run(plan.program, check=True)
    return plan.read_result(em.host), em


SHAPES = [(1, 1, 1), (1, 7, 1), (7, 1, 13), (13, 17, 19), (50, 4, 72), (4, 72, 50), (40, 4, 50), (31, 37, 2),
          (64, 9, 33)]


@pytest.mark.parametrize("cfg", [CFG, CFG_8x4, CFG_TINY], ids=["8x8", "8x4", "3x5tiny"])
@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_all_mappings_exact(cfg, precision):
    rng = np.random.default_rng(hash((cfg.rows, cfg.cols, precision)) & 0xFFFF)
    for m, n, k in SHAPES:
        a, b = operands(rng, m, n, k, precision)
        for df in (None, "ws", "os", "is"):
            plan = plan_gemm(GemmSpec(m, n, k, precision), cfg, dataflow=df)
            c, _ = run(plan, a, b)
            assert c.dtype == np.int32
            np.testing.assert_array_equal(c, a @ b, err_msg=f"{cfg.rows}x{cfg.cols} {precision} {(m, n, k)} {df}")
            if df is not None:
                assert plan.dataflow == df


def test_random_shapes_exact():
    rng = np.random.default_rng(7)
    for _ in range(25):
        m, n, k = (int(x) for x in rng.integers(1, 90, 3))
        precision = ["int8", "int4"][int(rng.integers(2))]
        cfg = [CFG, CFG_8x4, CFG_TINY][int(rng.integers(3))]
        a, b = operands(rng, m, n, k, precision)
        plan = plan_gemm(GemmSpec(m, n, k, precision), cfg)
        c, _ = run(plan, a, b)
        np.testing.assert_array_equal(c, a @ b, err_msg=f"{cfg.rows}x{cfg.cols} {precision} {(m, n, k)}")


def test_beyond_scratchpad_reloads():
    """Operands far larger than a 32-row scratchpad: tiles are reloaded, the result stays exact."""
    rng = np.random.default_rng(3)
    m, n, k = 40, 23, 61
    a, b = operands(rng, m, n, k, "int8")
    for df in ("ws", "os", "is"):
        plan = plan_gemm(GemmSpec(m, n, k), CFG_TINY, dataflow=df)
        assert not plan.resident
        operand_rows = plan.a_region.words + plan.b_region.words
        assert plan.loads > operand_rows, (df, plan.loads, operand_rows)   # something was loaded twice
        c, em = run(plan, a, b)
        np.testing.assert_array_equal(c, a @ b)
        assert em.counters["macs"] == m * n * k


def test_split_k_accumulates():
    plan = plan_gemm(GemmSpec(20, 8, 50), CFG, dataflow="ws")
    computes = [f for op, f in map(decode, plan.program) if op == Op.COMPUTE]
    assert len(computes) == 7                       # ceil(50 / 8) K blocks
    assert [c["accumulate"] for c in computes] == [0] + [1] * 6
    assert sum(c["k"] for c in computes) == 50


def test_int4_host_packing():
    """INT4 operands are packed along K: byte = hi << 4 | lo, an odd K padded with a zero nibble."""
    a = np.array([[1, -2, 3]])            # M=1, K=3
    b = np.array([[-8], [7], [-1]])       # K=3, N=1
    plan = plan_gemm(GemmSpec(1, 1, 3, "int4"), CFG, dataflow="os")
    host = np.zeros((plan.host_end, 4 * CFG.lanes), np.uint8)
    plan.pack_host(a, b, host)
    ra, rb = plan.a_region, plan.b_region
    assert list(host[ra.base:ra.base + 2, 0]) == [(0xE << 4) | 1, 3]      # (-2, 1), (pad, 3)
    assert list(host[rb.base:rb.base + 2, 0]) == [(7 << 4) | 8, 0xF]      # (7, -8), (pad, -1)
    c, _ = run(plan, a, b)
    assert c[0, 0] == 1 * -8 + -2 * 7 + 3 * -1


@pytest.mark.parametrize("df", ["ws", "os", "is"])
@pytest.mark.parametrize("out,rounding", [("int8", "nearest"), ("int8", "stochastic"), ("int4", "stochastic")])
def test_requant_epilogue_on_store(df, out, rounding):
    """The epilogue uses C's coordinates whatever the mapping (IS stores transposed tiles)."""
    rng = np.random.default_rng(11)
    m, n, k = 19, 13, 29
    a, b = operands(rng, m, n, k, "int8")
    ep = Epilogue(out=out, mult=40503, shift=22, rounding=rounding, seed=0xC0FFEE)
    plan = plan_gemm(GemmSpec(m, n, k, "int8", ep), CFG_8x4, dataflow=df)
    c, _ = run(plan, a, b)
    expect = requantize(torch.from_numpy(a @ b), ep.mult, ep.shift, bits=8 if out == "int8" else 4,
                        rounding=rounding, seed=ep.seed).numpy()
    assert c.dtype == np.int8
    np.testing.assert_array_equal(c, expect)


@pytest.mark.parametrize("bits,rounding", [(8, "nearest"), (8, "stochastic"), (4, "nearest")])
def test_requant_program(bits, rounding):
    rng = np.random.default_rng(5)
    acc = rng.integers(-(1 << 31), 1 << 31, (37, 11))
    ep = Epilogue(out=f"int{bits}", mult=12345, shift=30, rounding=rounding, seed=99)
    plan = plan_requant(37, 11, ep, CFG_TINY)       # 37 rows > acc_rows=16: chunked
    em = Emulator(CFG_TINY, host_words=plan.host_end)
    plan.pack_host(acc, em.host)
    em.run(plan.program, check=True)
    expect = requantize(torch.from_numpy(acc), ep.mult, ep.shift, bits=bits, rounding=rounding, seed=ep.seed)
    np.testing.assert_array_equal(plan.read_result(em.host), expect.numpy())


def test_flexible_choice_is_cheapest():
    """The chosen mapping costs no more (by the cost model) than any forced one, and LoRA's shapes use them."""
    chosen = {}
    for name, (m, n, k) in {"H": (50, 4, 72), "dA": (4, 72, 50), "dB": (40, 4, 50), "Y0": (50, 40, 72)}.items():
        best = plan_gemm(GemmSpec(m, n, k), CFG)
        forced = {df: plan_gemm(GemmSpec(m, n, k), CFG, dataflow=df).est_cycles for df in ("ws", "os", "is")}
        assert best.est_cycles == min(forced.values()), (name, best.dataflow, forced)
        chosen[name] = best.dataflow
    assert chosen["dA"] != "ws"       # WS would stream m = r = 4 rows per tile behind 8-row preloads


def test_plan_many_back_to_back():
    rng = np.random.default_rng(9)
    gemms = [GemmSpec(9, 10, 11), GemmSpec(5, 3, 17, "int4"), GemmSpec(12, 12, 12)]
    plans = plan_many(gemms, CFG_8x4)
    assert plans[1].host_base == plans[0].host_end and plans[2].host_base == plans[1].host_end
    em = Emulator(CFG_8x4, host_words=plans[-1].host_end)
    data = []
    for g, p in zip(gemms, plans):
        a, b = operands(rng, g.m, g.n, g.k, g.precision)
        p.pack_host(a, b, em.host)
        data.append(a @ b)
    em.run([w for p in plans for w in p.program], check=True)
    for p, expect in zip(plans, data):
        np.testing.assert_array_equal(p.read_result(em.host), expect)


@pytest.mark.parametrize("kw,match", [
    (dict(m=0, n=3, k=3), "M=0"), (dict(m=3, n=0, k=3), "N=0"), (dict(m=3, n=3, k=0), "K=0"),
    (dict(m=3, n=3, k=-1), "K=-1"), (dict(m=2, n=2, k=70000), "K=70000 exceeds"),
])
def test_cannot_map_shapes(kw, match):
    with pytest.raises(TilerError, match=match):
        plan_gemm(GemmSpec(**kw), CFG)


def test_cannot_map_configuration():
    with pytest.raises(TilerError, match="int4"):
        plan_gemm(GemmSpec(4, 4, 4, "int4"), QTAConfig(int4=False))
    with pytest.raises(TilerError, match="OS"):
        plan_gemm(GemmSpec(4, 4, 4), QTAConfig(dataflows=("ws",)), dataflow="os")
    with pytest.raises(TilerError, match="dataflow='xs'"):
        plan_gemm(GemmSpec(4, 4, 4), CFG, dataflow="xs")
    with pytest.raises(TilerError, match="precision"):
        plan_gemm(GemmSpec(4, 4, 4, "int2"), CFG)
    with pytest.raises(TilerError, match="host_addr_width"):
        plan_gemm(GemmSpec(300, 300, 300), QTAConfig(host_addr_width=8))
    with pytest.raises(TilerError, match="shift"):
        Epilogue(out="int8", mult=1, shift=48)
    # only WS built: the flexible tiler still maps every shape (WS and IS)
    ws_only = QTAConfig(dataflows=("ws",))
    assert {c[0] for c in candidates(GemmSpec(4, 72, 50), ws_only)} == {"ws", "is"}
