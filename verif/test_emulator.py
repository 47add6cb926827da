"""The ISA emulator on hand-written programs: tile semantics, INT4 lanes, epilogue, lane masking, error statuses."""

import numpy as np
import pytest
import torch

from cdmqta.hw.config import QTAConfig
from cdmqta.hw.isa import Dataflow, Op, OutFormat, Precision, Rounding, Status, encode, pack_int4
from cdmqta.sw.model.requant import requantize
from cdmqta.sw.runtime.emulator import Emulator, EmulatorError

CFG = QTAConfig(rows=4, cols=3, sp_rows=64, sp_banks=1, acc_rows=32, acc_banks=1, host_addr_width=10)
LANES = CFG.lanes   # 4


def host_int8(em, addr, rows):
    rows = np.asarray(rows, np.int64)
    em.host[addr:addr + len(rows), :rows.shape[1]] = rows.astype(np.int8).view(np.uint8)


def host_int32(em, addr, rows):
    rows = np.asarray(rows, np.int64)
    em.host[addr:addr + len(rows), :4 * rows.shape[1]] = rows.astype("<i4").view(np.uint8).reshape(len(rows), -1)


def read_int32(em, addr, rows, cols):
    return em.host[addr:addr + rows, :4 * cols].copy().view("<i4").astype(np.int64)


def read_int8(em, addr, rows, cols):
    return em.host[addr:addr + rows, :cols].view(np.int8).astype(np.int64)


def test_ws_tile_partial_and_accumulate():
    rng = np.random.default_rng(0)
    em = Emulator(CFG, host_words=256)
    a = rng.integers(-128, 128, (5, 3))      # m=5 (streamed), k=3 < rows
    b = rng.integers(-128, 128, (3, 2))      # n=2 < cols
    a2 = rng.integers(-128, 128, (5, 3))
    host_int8(em, 0, a)
    host_int8(em, 10, b)
    host_int8(em, 20, a2)
    prog = [encode(Op.CONFIG, mult=1),
            encode(Op.LOAD, sp_addr=0, rows=5, host_addr=0, host_stride=1),
            encode(Op.LOAD, sp_addr=8, rows=3, host_addr=10, host_stride=1),
            encode(Op.LOAD, sp_addr=16, rows=5, host_addr=20, host_stride=1),
            encode(Op.PRELOAD, b_addr=8, k=3, n=2),
            encode(Op.COMPUTE, dataflow=Dataflow.WS, a_addr=0, c_addr=4, m=5, n=2, k=3),
            encode(Op.COMPUTE, dataflow=Dataflow.WS, accumulate=1, a_addr=16, c_addr=4, m=5, n=2, k=3),
            encode(Op.STORE, out=OutFormat.INT32, acc_addr=4, rows=5, cols=2, host_addr=100, host_stride=2)]
    assert em.run(prog) == Status.OK
    c = np.stack([read_int32(em, 100 + 2 * r, 1, 2)[0] for r in range(5)])
    np.testing.assert_array_equal(c, a @ b + a2 @ b)
    # STORE writes full words: lanes >= cols (and the stride gap words stay untouched)
    assert not em.host[100:110:2, 8:].any()
    assert em.counters["macs"] == 2 * 5 * 2 * 3


def test_os_tile_and_lanes_kept():
    rng = np.random.default_rng(1)
    em = Emulator(CFG, host_words=256)
    a = rng.integers(-128, 128, (3, 7))      # m=3 <= rows, k=7 streamed
    b = rng.integers(-128, 128, (7, 3))
    host_int8(em, 0, a.T)                    # OS: row t = A[0..m-1, t]
    host_int8(em, 10, b)
    host_int32(em, 50, np.full((3, 3), 1000))
    prog = [encode(Op.LOAD, sp_addr=0, rows=7, host_addr=0, host_stride=1),
            encode(Op.LOAD, sp_addr=7, rows=7, host_addr=10, host_stride=1),
            encode(Op.LOAD, to_acc=1, sp_addr=0, rows=3, host_addr=50, host_stride=1),
            encode(Op.COMPUTE, dataflow=Dataflow.OS, a_addr=0, b_addr=7, c_addr=0, m=3, n=2, k=7),
            encode(Op.STORE, acc_addr=0, rows=3, cols=3, host_addr=60, host_stride=1)]
    assert em.run(prog) == Status.OK
    c = read_int32(em, 60, 3, 3)
    np.testing.assert_array_equal(c[:, :2], a @ b[:, :2])
    assert (c[:, 2] == 1000).all()           # lanes >= n keep the accumulator's value


@pytest.mark.parametrize("k", [7, 8])
def test_int4_lanes(k):
    """INT4: two elements per lane along K (low nibble first); an odd K ignores the padding nibble."""
    rng = np.random.default_rng(k)
    em = Emulator(CFG, host_words=256)
    m, n = 6, 3
    a = rng.integers(-8, 8, (m, k))
    b = rng.integers(-8, 8, (k, n))
    ap = np.pad(a, ((0, 0), (0, k % 2)))
    bp = np.pad(b, ((0, k % 2), (0, 0)))
    if k % 2:   # garbage in the padding nibble must not count
        ap[:, -1] = 5
        bp[-1, :] = -3
    a_bytes = pack_int4(ap[:, 0::2], ap[:, 1::2])            # WS: row t, lane i = (A[t,2i], A[t,2i+1])
    b_bytes = pack_int4(bp[0::2, :], bp[1::2, :])            # row s, lane j = (B[2s,j], B[2s+1,j])
    host_int8(em, 0, a_bytes.astype(np.uint8).view(np.int8))
    host_int8(em, 20, b_bytes.astype(np.uint8).view(np.int8))
    at_bytes = pack_int4(ap.T[0::2, :], ap.T[1::2, :])       # OS: row s, lane i = (A[i,2s], A[i,2s+1])
    host_int8(em, 40, at_bytes[:, :4].astype(np.uint8).view(np.int8))
    steps = (k + 1) // 2
    prog = [encode(Op.CONFIG, precision=Precision.INT4),
            encode(Op.LOAD, sp_addr=0, rows=m, host_addr=0, host_stride=1),
            encode(Op.LOAD, sp_addr=10, rows=steps, host_addr=20, host_stride=1),
            encode(Op.LOAD, sp_addr=20, rows=steps, host_addr=40, host_stride=1),
            encode(Op.PRELOAD, b_addr=10, k=k, n=n),
            encode(Op.COMPUTE, dataflow=Dataflow.WS, a_addr=0, c_addr=0, m=m, n=n, k=k),
            encode(Op.COMPUTE, dataflow=Dataflow.OS, a_addr=20, b_addr=10, c_addr=8, m=4, n=n, k=k),
            encode(Op.STORE, acc_addr=0, rows=m, cols=n, host_addr=100, host_stride=1),
            encode(Op.STORE, acc_addr=8, rows=4, cols=n, host_addr=110, host_stride=1)]
    assert em.run(prog) == Status.OK
    np.testing.assert_array_equal(read_int32(em, 100, m, n), a @ b)
    np.testing.assert_array_equal(read_int32(em, 110, 4, n), a[:4] @ b)


@pytest.mark.parametrize("out,bits", [(OutFormat.INT8, 8), (OutFormat.INT4, 4)])
@pytest.mark.parametrize("transposed", [0, 1])
def test_store_epilogue(out, bits, transposed):
    rng = np.random.default_rng(3)
    em = Emulator(CFG, host_words=64)
    acc = rng.integers(-(1 << 31), 1 << 31, (5, 3))
    host_int32(em, 0, acc)
    em.host[20:25] = 0xAB                      # a store rewrites whole words
    prog = [encode(Op.CONFIG, rounding=Rounding.STOCHASTIC, shift=27, mult=51234, seed=0xDEADBEEF),
            encode(Op.LOAD, to_acc=1, sp_addr=3, rows=5, host_addr=0, host_stride=1),
            encode(Op.STORE, out=out, transposed=transposed, acc_addr=3, rows=5, cols=2, host_addr=20,
                   host_stride=1, origin_row=7, origin_col=11)]
    assert em.run(prog) == Status.OK
    expect = requantize(torch.from_numpy(acc[:, :2]), 51234, 27, bits=bits, rounding="stochastic",
                        seed=0xDEADBEEF, origin=(7, 11), transposed=bool(transposed)).numpy()
    np.testing.assert_array_equal(read_int8(em, 20, 5, 2), expect)
    assert not em.host[20:25, 2:].any()        # lanes >= cols and the upper bits are zero
    if bits == 4:
        assert np.abs(expect).max() <= 7


def test_store_int32_wraps_low_bits_and_mult_zero():
    em = Emulator(CFG, host_words=16)
    host_int32(em, 0, [[-5, 2 ** 31 - 1, -(2 ** 31)]])
    prog = [encode(Op.LOAD, to_acc=1, sp_addr=0, rows=1, host_addr=0, host_stride=1),
            encode(Op.STORE, out=OutFormat.INT32, acc_addr=0, rows=1, cols=3, host_addr=1, host_stride=1),
            encode(Op.STORE, out=OutFormat.INT8, acc_addr=0, rows=1, cols=3, host_addr=2, host_stride=1)]
    assert em.run(prog) == Status.OK
    assert list(read_int32(em, 1, 1, 3)[0]) == [-5, 2 ** 31 - 1, -(2 ** 31)]
    assert not em.host[2].any()                # mult = 0 (never configured) requantizes to 0


GOOD = encode(Op.NOP)
BAD = [
    ("bad opcode", 7, Status.BAD_OPCODE),
    ("bad opcode 15", 15 | (123 << 4), Status.BAD_OPCODE),
    ("shift > 47", encode(Op.CONFIG, shift=48, mult=1), Status.BAD_FIELD),
    ("out format 3", encode(Op.STORE, out=3, rows=1, cols=1), Status.BAD_FIELD),
    ("load zero rows", encode(Op.LOAD, rows=0), Status.ZERO_SIZE),
    ("load beyond sp", encode(Op.LOAD, sp_addr=60, rows=5), Status.ADDR_RANGE),
    ("load beyond acc", encode(Op.LOAD, to_acc=1, sp_addr=30, rows=3), Status.ADDR_RANGE),
    ("load beyond host", encode(Op.LOAD, rows=3, host_addr=62, host_stride=1), Status.ADDR_RANGE),
    ("load host stride", encode(Op.LOAD, rows=3, host_addr=10, host_stride=30), Status.ADDR_RANGE),
    ("preload k=0", encode(Op.PRELOAD, k=0, n=1), Status.ZERO_SIZE),
    ("preload k > rows", encode(Op.PRELOAD, k=5, n=1), Status.TILE_TOO_LARGE),
    ("preload n > cols", encode(Op.PRELOAD, k=1, n=4), Status.TILE_TOO_LARGE),
    ("preload beyond sp", encode(Op.PRELOAD, b_addr=62, k=4, n=1), Status.ADDR_RANGE),
    ("compute m=0", encode(Op.COMPUTE, m=0, n=1, k=1), Status.ZERO_SIZE),
    ("compute ws k > rows", encode(Op.COMPUTE, dataflow=Dataflow.WS, m=1, n=1, k=5), Status.TILE_TOO_LARGE),
    ("compute os m > rows", encode(Op.COMPUTE, dataflow=Dataflow.OS, m=5, n=1, k=1), Status.TILE_TOO_LARGE),
    ("compute os n > cols", encode(Op.COMPUTE, dataflow=Dataflow.OS, m=1, n=4, k=1), Status.TILE_TOO_LARGE),
    ("compute ws beyond sp", encode(Op.COMPUTE, dataflow=Dataflow.WS, a_addr=60, m=8, n=1, k=1), Status.ADDR_RANGE),
    ("compute os beyond sp", encode(Op.COMPUTE, dataflow=Dataflow.OS, b_addr=60, m=1, n=1, k=8), Status.ADDR_RANGE),
    ("compute beyond acc", encode(Op.COMPUTE, dataflow=Dataflow.WS, c_addr=30, m=4, n=1, k=1), Status.ADDR_RANGE),
    ("store cols=0", encode(Op.STORE, rows=1, cols=0), Status.ZERO_SIZE),
    ("store cols > cols", encode(Op.STORE, rows=1, cols=4), Status.TILE_TOO_LARGE),
    ("store beyond acc", encode(Op.STORE, acc_addr=31, rows=2, cols=1), Status.ADDR_RANGE),
    ("store beyond host", encode(Op.STORE, rows=2, cols=1, host_addr=63, host_stride=1), Status.ADDR_RANGE),
]


@pytest.mark.parametrize("word,status", [(w, s) for _, w, s in BAD], ids=[n for n, _, _ in BAD])
def test_malformed_stops_at_first_bad_command(word, status):
    em = Emulator(CFG, host_words=64)
    host_int32(em, 0, [[1, 2, 3]])
    prog = [GOOD, encode(Op.LOAD, to_acc=1, rows=1, host_addr=0, host_stride=1),
            encode(Op.STORE, rows=1, cols=3, host_addr=1, host_stride=1),     # runs: before the bad command
            word,
            encode(Op.STORE, rows=1, cols=3, host_addr=2, host_stride=1)]     # never runs
    assert em.run(prog) == status
    assert em.bad_index == 3
    assert list(read_int32(em, 1, 1, 3)[0]) == [1, 2, 3]
    assert not em.host[2].any()
    with pytest.raises(EmulatorError, match=f"command 3 .*{status.name}"):
        Emulator(CFG, host_words=64).run(prog, check=True)


def test_ws_compute_needs_weights():
    """A WS COMPUTE needs a PRELOAD before it with no OS COMPUTE in between (BAD_FIELD otherwise)."""
    ws = encode(Op.COMPUTE, dataflow=Dataflow.WS, m=1, n=1, k=1)
    os_ = encode(Op.COMPUTE, dataflow=Dataflow.OS, m=1, n=1, k=1)
    pre = encode(Op.PRELOAD, k=1, n=1)
    for prog, status, index in [([GOOD, ws], Status.BAD_FIELD, 1), ([pre, ws, ws], Status.OK, None),
                                ([pre, ws, os_, ws], Status.BAD_FIELD, 3), ([pre, os_, pre, ws], Status.OK, None)]:
        em = Emulator(CFG, host_words=16)
        assert em.run(prog) == status and em.bad_index == index


def test_not_built():
    ws_only = QTAConfig(rows=4, cols=3, dataflows=("ws",), int4=False, sp_rows=64, acc_rows=32)
    os_only = QTAConfig(rows=4, cols=3, dataflows=("os",), sp_rows=64, acc_rows=32)
    cases = [(ws_only, encode(Op.COMPUTE, dataflow=Dataflow.OS, m=1, n=1, k=1)),
             (ws_only, encode(Op.CONFIG, precision=Precision.INT4)),
             (os_only, encode(Op.COMPUTE, dataflow=Dataflow.WS, m=1, n=1, k=1)),
             (os_only, encode(Op.PRELOAD, k=1, n=1))]
    for cfg, word in cases:
        em = Emulator(cfg, host_words=16)
        assert em.run([GOOD, word]) == Status.NOT_BUILT and em.bad_index == 1


def test_host_memory_checks():
    with pytest.raises(ValueError, match="host_words"):
        Emulator(CFG)
    with pytest.raises(ValueError, match="host_addr_width"):
        Emulator(CFG, host_words=2048)
