"""cocotb testbench of the whole accelerator (hw/top.py SimTop) on Verilator, run by verif/test_accel_rtl.py.

Hand-written command programs (GEMMs in WS and OS, INT8 and INT4, partial tiles, split K, requantization
passes, malformed programs) run on the RTL; every result is compared exactly with torch integer matmul /
sw.requant.requantize, and the whole host memory, status and failing index with the ISA emulator
(sw/runtime/emulator.py) running the same program. Parameters come from the environment: CDMQTA_CONFIG (JSON),
HOST_WORDS, CMD_WORDS, and for the measurements PERF_SHAPES, PERF_JSON, TIMING, TIMING_JSON.
"""

import json
import os
import random

import cocotb
import numpy as np
import torch

from cdmqta.hw.config import QTAConfig
from cdmqta.hw.isa import Dataflow, Op, OutFormat, Precision, Rounding, Status, decode, encode
from cdmqta.hw.isa import pack_k as isa_pack_k
from cdmqta.sw.model.requant import requantize
from cdmqta.sw.rtl.driver import AccelDriver
from cdmqta.sw.runtime.emulator import Emulator, crosscheck
from cdmqta.sw.runtime.hostmem import image_words, rows_image, words_image

CFG = QTAConfig.from_json(os.environ.get("CDMQTA_CONFIG", "{}"))
HOST_WORDS = int(os.environ.get("HOST_WORDS", "4096"))
CMD_WORDS = int(os.environ.get("CMD_WORDS", "1024"))


# -- program builders ---------------------------------------------------------------------------------------

def pack_k(x, precision):
    """int [rows, K] -> int8 lane values [rows, lanes of K] (INT4: two per byte along K, cdmqta.hw.isa.pack_k)."""
    return isa_pack_k(x, precision, axis=1).view(np.int8).astype(np.int64)


class Gemm:
    """A GEMM C[M x N] = A[M x K] . B[K x N] as a command program with its host memory image.

    WS: K chunks of kt elements (kt <= R, 2R in INT4) x N chunks of C columns; every tile streams all M rows;
    chunks after the first accumulate. OS: M chunks of R rows x N chunks of C columns, K split in ``k_split``
    parts (accumulate after the first). Host layout: A region, B region, C region (INT32 rows); every operand
    chunk has its own scratchpad rows and every C tile its own accumulator rows.
    The program is software-pipelined the way the controller's scoreboard wants it: the LOADs of tile step
    i + ``prefetch`` come before the computes of step i, the STOREs of step i after the computes of step i+1.
    """

    def __init__(self, cfg, M, N, K, dataflow, precision, a, b, kt=None, k_split=1, prefetch=2, host_base=0,
                 store_out=OutFormat.INT32):
        R, C = cfg.rows, cfg.cols
        self.cfg, self.M, self.N, self.K, self.df, self.prec = cfg, M, N, K, dataflow, precision
        self.a, self.b = np.asarray(a, np.int64), np.asarray(b, np.int64)
        per_lane = 2 if precision == Precision.INT4 else 1
        host = {}
        h = host_base
        nn = -(-N // C)
        steps_list = []     # [(loads, execs, stores)]
        self.tiles = []     # (c_addr, m, n, row0, col0) of each C tile
        if dataflow == Dataflow.WS:
            kt = kt or R * per_lane
            nk = -(-K // kt)
            kls = [(kc * kt, min(K, kc * kt + kt)) for kc in range(nk)]
            ha, hb = h, h + nk * M
            hc = hb + nk * nn * R
            sa, sb = 0, nk * M
            assert sb + nk * nn * R <= cfg.sp_rows and nn * M <= cfg.acc_rows, "GEMM too big for the memories"
            self.tiles = [(nc * M, M, min(C, N - nc * C), 0, nc * C) for nc in range(nn)]
            for kc, (k0, k1) in enumerate(kls):
                host[ha + kc * M] = pack_k(self.a[:, k0:k1], precision)
                steps = -(-(k1 - k0) // per_lane)
                for nc in range(nn):
                    n = min(C, N - nc * C)
                    sbb = sb + (kc * nn + nc) * R
                    host[hb + (kc * nn + nc) * R] = pack_k(self.b[k0:k1, nc * C:nc * C + C].T, precision).T
                    loads = [encode(Op.LOAD, sp_addr=sbb, rows=steps, host_addr=hb + (kc * nn + nc) * R, host_stride=1)]
                    if nc == 0:
                        loads.insert(0, encode(Op.LOAD, sp_addr=sa + kc * M, rows=M, host_addr=ha + kc * M,
                                               host_stride=1))
                    execs = [encode(Op.PRELOAD, b_addr=sbb, k=k1 - k0, n=n),
                             encode(Op.COMPUTE, dataflow=Dataflow.WS, accumulate=int(kc > 0), a_addr=sa + kc * M,
                                    c_addr=nc * M, m=M, n=n, k=k1 - k0)]
                    stores = [self._store(self.tiles[nc], hc, store_out)] if kc == nk - 1 else []
                    steps_list.append((loads, execs, stores))
        else:
            nm = -(-M // R)
            steps = -(-K // per_lane)
            ha, hb = h, h + nm * steps
            hc = hb + nn * steps
            sa, sb = 0, nm * steps
            assert sb + nn * steps <= cfg.sp_rows and nm * nn * R <= cfg.acc_rows, "GEMM too big for the memories"
            bounds = np.linspace(0, K, k_split + 1).astype(int)
            for mc in range(nm):
                host[ha + mc * steps] = pack_k(self.a[mc * R:mc * R + R, :], precision).T
            for nc in range(nn):
                host[hb + nc * steps] = pack_k(self.b[:, nc * C:nc * C + C].T, precision).T
            for mc in range(nm):
                for nc in range(nn):
                    mm, n = min(R, M - mc * R), min(C, N - nc * C)
                    c_addr = (mc * nn + nc) * R
                    loads = []
                    if nc == 0:
                        loads.append(encode(Op.LOAD, sp_addr=sa + mc * steps, rows=steps, host_addr=ha + mc * steps,
                                            host_stride=1))
                    if mc == 0:
                        loads.append(encode(Op.LOAD, sp_addr=sb + nc * steps, rows=steps, host_addr=hb + nc * steps,
                                            host_stride=1))
                    execs = []
                    for part in range(k_split):
                        k0, k1 = bounds[part], bounds[part + 1]
                        if k1 == k0:
                            continue
                        assert k0 % per_lane == 0
                        s0 = k0 // per_lane
                        execs.append(encode(Op.COMPUTE, dataflow=Dataflow.OS, accumulate=int(k0 > 0),
                                            a_addr=sa + mc * steps + s0, b_addr=sb + nc * steps + s0, c_addr=c_addr,
                                            m=mm, n=n, k=k1 - k0))
                    tile = (c_addr, mm, n, mc * R, nc * C)
                    self.tiles.append(tile)
                    steps_list.append((loads, execs, [self._store(tile, hc, store_out)]))
        prog = [encode(Op.CONFIG, precision=precision, mult=1)]
        for i in range(min(prefetch, len(steps_list))):
            prog += steps_list[i][0]
        for i, (_, execs, _) in enumerate(steps_list):
            if i + prefetch < len(steps_list):
                prog += steps_list[i + prefetch][0]
            prog += execs
            if i:
                prog += steps_list[i - 1][2]
        prog += steps_list[-1][2]
        self.hc = hc
        self.program = prog
        self.host = host
        self.host_end = hc + max(c + mm for (c, mm, _, _, _) in self.tiles)

    @staticmethod
    def _store(tile, hc, out):
        c_addr, mm, n, r0, c0 = tile
        return encode(Op.STORE, out=out, acc_addr=c_addr, rows=mm, cols=n, host_addr=hc + c_addr, host_stride=1,
                      origin_row=r0, origin_col=c0)

    def expected(self):
        return (torch.from_numpy(self.a) @ torch.from_numpy(self.b)).numpy()

    def result(self, words):
        """C from the INT32 host rows ``words`` (array [rows from hc, lanes])."""
        out = np.zeros((self.M, self.N), np.int64)
        for (c_addr, mm, n, r0, c0) in self.tiles:
            out[r0:r0 + mm, c0:c0 + n] = words[c_addr:c_addr + mm, :n]
        return out


# -- testbench helpers --------------------------------------------------------------------------------------

class TB:
    def __init__(self, dut):
        self.dut = dut
        self.drv = AccelDriver(dut, CFG, host_words=HOST_WORDS, cmd_words=CMD_WORDS)
        self.emu = Emulator(CFG, host_words=HOST_WORDS)

    async def start(self):
        await self.drv.reset()
        self.drv.clear_host()   # the model keeps its memory from the previous test

    def write(self, images):
        """{addr: int8 rows or ('int32', rows)} into the RTL's and the emulator's host memory."""
        for addr, rows in images.items():
            kind = "int8"
            if isinstance(rows, tuple):
                kind, rows = rows
            image = rows_image(rows, kind, CFG.lanes)
            self.drv.write_words(addr, image_words(image))
            self.emu.host[addr:addr + len(image)] = image

    async def run(self, program, compare_words=None):
        """Run on RTL and emulator; check status / index and (a range of) host memory are equal."""
        res = await self.drv.run(program)
        lo, hi = compare_words or (0, HOST_WORDS)
        after = self.emu.host.copy()
        after[lo:hi] = words_image(self.drv.read_words(lo, hi - lo), 4 * CFG.lanes)
        diffs = crosscheck(self.emu, program, after, res["status"], res["error_index"], region=(lo, hi - lo))
        assert not diffs, "; ".join(diffs)
        return res


def rand_operands(rng, M, N, K, precision):
    lim = (-8, 7) if precision == Precision.INT4 else (-128, 127)
    a = torch.randint(lim[0], lim[1] + 1, (M, K), generator=rng).numpy()
    b = torch.randint(lim[0], lim[1] + 1, (K, N), generator=rng).numpy()
    return a, b


async def check_gemm(tb, g, label):
    tb.write(g.host)
    res = await tb.run(g.program, compare_words=(g.hc, g.host_end))
    assert res["status"] == Status.OK, f"{label}: status {res['status'].name} at {res['error_index']}"
    got = g.result(tb.drv.read_host(g.hc, g.host_end - g.hc, kind="int32"))
    exp = g.expected()
    assert np.array_equal(got, exp), f"{label}: C differs from torch at {np.argwhere(got != exp)[:5].tolist()}"
    per_lane = 2 if g.prec == Precision.INT4 else 1
    assert res["macs"] == sum(_macs(c) for c in g.program), f"{label}: macs counter {res['macs']}"
    assert res["compute_cycles"] == sum(_beats(c, per_lane) for c in g.program), \
        f"{label}: compute_cycles {res['compute_cycles']}"
    assert 0 <= res["stall_cycles"] < res["cycles"]
    return res


def _fields(word):
    return decode(word)


def _macs(word):
    op, f = _fields(word)
    return f["m"] * f["n"] * f["k"] if op == Op.COMPUTE else 0


def _beats(word, per_lane):
    op, f = _fields(word)
    if op != Op.COMPUTE:
        return 0
    return f["m"] if f["dataflow"] == Dataflow.WS else -(-f["k"] // per_lane)


# -- tests ----------------------------------------------------------------------------------------------------

@cocotb.test()
async def gemm_ws_os_int8_int4(dut):
    """WS and OS GEMMs, INT8 and INT4, with partial tiles (M, N, K not multiples of the array) and split K."""
    tb = TB(dut)
    await tb.start()
    rng = torch.Generator().manual_seed(1)
    R, C = CFG.rows, CFG.cols
    shapes = [
        (Dataflow.WS, Precision.INT8, 2 * R + 3, C + 1, 2 * R + 1, 1),
        (Dataflow.OS, Precision.INT8, R + 2, 2 * C - 1, 37, 1),
        (Dataflow.WS, Precision.INT4, R + 1, C, 2 * R + 5, 1),
        (Dataflow.OS, Precision.INT4, R - 1 if R > 1 else 1, C + 3, 23, 1),
        (Dataflow.OS, Precision.INT8, R, C, 3 * R + 1, 3),      # split K, accumulate-on-write
        (Dataflow.WS, Precision.INT8, 1, 1, 1, 1),
        (Dataflow.OS, Precision.INT8, 1, 1, 1, 1),
    ]
    base = 0
    for df, prec, M, N, K, split in shapes:
        a, b = rand_operands(rng, M, N, K, prec)
        g = Gemm(CFG, M, N, K, df, prec, a, b, k_split=split, host_base=base)
        await check_gemm(tb, g, f"{df.name} {prec.name} {M}x{N}x{K} split {split}")
        base = g.host_end


@cocotb.test()
async def gemm_mixed_dataflows_back_to_back(dut):
    """WS and OS tiles interleaved in one program (dataflow switches between tiles, weights reused)."""
    tb = TB(dut)
    await tb.start()
    rng = torch.Generator().manual_seed(2)
    R, C = CFG.rows, CFG.cols
    M, N, K = R, C, R
    a, b = rand_operands(rng, M, N, K, Precision.INT8)
    ga = Gemm(CFG, M, N, K, Dataflow.WS, Precision.INT8, a, b)
    gb = Gemm(CFG, M, N, K, Dataflow.OS, Precision.INT8, a, b, host_base=ga.host_end)
    # Scratchpad/accumulator regions of the second GEMM moved past the first one's.
    tb.write(ga.host)
    tb.write(gb.host)
    off_sp, off_acc = 2 * (M + R), 2 * M
    prog = [w for w in ga.program if _fields(w)[0] != Op.STORE]
    for w in gb.program:
        op, f = _fields(w)
        if op == Op.LOAD:
            f["sp_addr"] += off_sp
        elif op == Op.COMPUTE:
            f["a_addr"] += off_sp
            f["b_addr"] += off_sp
            f["c_addr"] += off_acc
        elif op == Op.STORE:
            f["acc_addr"] += off_acc
            f["host_addr"] = gb.hc + f["acc_addr"] - off_acc
        if op != Op.CONFIG:
            prog.append(encode(op, **f))
    # WS again with the same weights after OS is illegal (BAD_FIELD); with a PRELOAD it is fine.
    prog += [encode(Op.PRELOAD, b_addr=M, k=K, n=N),
             encode(Op.COMPUTE, dataflow=Dataflow.WS, a_addr=0, c_addr=off_acc + R, m=M, n=N, k=K)]
    prog += [w for w in ga.program if _fields(w)[0] == Op.STORE]
    prog.append(encode(Op.STORE, acc_addr=off_acc + R, rows=M, cols=N, host_addr=gb.host_end, host_stride=1))
    res = await tb.run(prog, compare_words=(0, gb.host_end + M))
    assert res["status"] == Status.OK
    exp = ga.expected()
    assert np.array_equal(ga.result(tb.drv.read_host(ga.hc, ga.host_end - ga.hc, "int32")), exp)
    assert np.array_equal(gb.result(tb.drv.read_host(gb.hc, gb.host_end - gb.hc, "int32")), exp)
    assert np.array_equal(tb.drv.read_host(gb.host_end, M, "int32")[:, :N], exp)


@cocotb.test()
async def requant_store(dut):
    """LOAD INT32 rows to the accumulator, STORE with requantization (nearest / stochastic, INT8 / INT4,
    transposed origin) -- against sw.requant.requantize and the emulator."""
    tb = TB(dut)
    await tb.start()
    rng = random.Random(3)
    C = CFG.cols
    rows = 2 * CFG.rows + 1
    acc = np.array([[rng.choice([rng.randint(-(1 << 31), (1 << 31) - 1), rng.randint(-5000, 5000),
                                 rng.randint(-64, 64) << rng.randint(0, 20)]) for _ in range(C)] for _ in range(rows)])
    tb.write({0: ("int32", acc)})
    out_base = rows
    cases = [
        (Rounding.NEAREST_EVEN, OutFormat.INT8, 1000, 10, 0, 0, 0),
        (Rounding.STOCHASTIC, OutFormat.INT8, 321, 12, 0xDEADBEEF, 5, 0),
        (Rounding.STOCHASTIC, OutFormat.INT4, 65535, 30, 7, 3, 1),
        (Rounding.NEAREST_EVEN, OutFormat.INT4, 1, 0, 0, 0, 1),
        (Rounding.NEAREST_EVEN, OutFormat.INT8, 77, 47, 0, 0, 0),
    ]
    prog = [encode(Op.LOAD, to_acc=1, sp_addr=0, rows=rows, host_addr=0, host_stride=1)]
    for n, (rnd, out, mult, shift, seed, origin, transposed) in enumerate(cases):
        prog.append(encode(Op.CONFIG, rounding=rnd, mult=mult, shift=shift, seed=seed))
        prog.append(encode(Op.STORE, out=out, transposed=transposed, acc_addr=0, rows=rows, cols=C,
                           host_addr=out_base + n * rows, host_stride=1, origin_row=origin, origin_col=2 * origin))
    prog.append(encode(Op.STORE, out=OutFormat.INT32, acc_addr=0, rows=rows, cols=C,
                       host_addr=out_base + len(cases) * rows, host_stride=1))
    res = await tb.run(prog, compare_words=(0, out_base + (len(cases) + 1) * rows))
    assert res["status"] == Status.OK
    for n, (rnd, out, mult, shift, seed, origin, transposed) in enumerate(cases):
        got = tb.drv.read_host(out_base + n * rows, rows, "int8")
        exp = requantize(torch.from_numpy(acc), mult, shift, bits=8 if out == OutFormat.INT8 else 4,
                         rounding="stochastic" if rnd == Rounding.STOCHASTIC else "nearest", seed=seed,
                         origin=(origin, 2 * origin), transposed=bool(transposed)).numpy()
        assert np.array_equal(got[:, :C], exp), f"requant case {n}"
        assert not got[:, C:].any()
    assert np.array_equal(tb.drv.read_host(out_base + len(cases) * rows, rows, "int32")[:, :C], acc)


@cocotb.test()
async def malformed_programs_stop(dut):
    """Each error status stops the program at the bad command: status, index, and nothing after it ran."""
    tb = TB(dut)
    await tb.start()
    R, C = CFG.rows, CFG.cols
    tb.write({0: np.ones((4, CFG.lanes), np.int64)})
    good = [encode(Op.LOAD, sp_addr=0, rows=4, host_addr=0, host_stride=1),
            encode(Op.COMPUTE, dataflow=Dataflow.OS, a_addr=0, b_addr=0, c_addr=0, m=1, n=1, k=4)]
    after = encode(Op.STORE, out=OutFormat.INT32, acc_addr=0, rows=1, cols=1, host_addr=100, host_stride=1)
    bad_cases = [
        (Status.BAD_OPCODE, 0xF),
        (Status.BAD_OPCODE, 7),
        (Status.ADDR_RANGE, encode(Op.LOAD, sp_addr=CFG.sp_rows - 1, rows=2, host_addr=0, host_stride=1)),
        (Status.ADDR_RANGE, encode(Op.LOAD, sp_addr=0, rows=2, host_addr=HOST_WORDS - 1, host_stride=1)),
        (Status.ADDR_RANGE, encode(Op.STORE, acc_addr=CFG.acc_rows - 1, rows=2, cols=1, host_addr=0)),
        (Status.ADDR_RANGE, encode(Op.COMPUTE, dataflow=Dataflow.OS, a_addr=CFG.sp_rows - 2, m=1, n=1, k=3)),
        (Status.TILE_TOO_LARGE, encode(Op.COMPUTE, dataflow=Dataflow.OS, m=R + 1, n=1, k=1)),
        (Status.TILE_TOO_LARGE, encode(Op.PRELOAD, k=R + 1, n=1)),
        (Status.TILE_TOO_LARGE, encode(Op.STORE, rows=1, cols=C + 1)),
        (Status.ZERO_SIZE, encode(Op.COMPUTE, dataflow=Dataflow.OS, m=0, n=1, k=1)),
        (Status.ZERO_SIZE, encode(Op.LOAD, rows=0)),
        (Status.ZERO_SIZE, encode(Op.STORE, rows=1, cols=0)),
        (Status.BAD_FIELD, encode(Op.CONFIG, shift=48)),
        (Status.BAD_FIELD, encode(Op.STORE, out=3, rows=1, cols=1)),
    ]
    if not CFG.int4:
        bad_cases.append((Status.NOT_BUILT, encode(Op.CONFIG, precision=Precision.INT4)))
    for n, (status, word) in enumerate(bad_cases):
        tb.write({100: np.full((1, CFG.lanes), 0x55, np.int64)})
        prog = good + [word, after, encode(Op.FENCE)]
        res = await tb.run(prog)
        assert res["status"] == status, f"case {n}: {res['status'].name} != {status.name}"
        assert res["error_index"] == len(good), f"case {n}: index {res['error_index']}"
        assert tb.drv.read_host(100, 1, "int8")[0, 0] == 0x55, f"case {n}: a command after the error ran"
    # After an error the next run starts clean.
    res = await tb.run(good + [after])
    assert res["status"] == Status.OK and res["error_index"] is None
    assert tb.drv.read_host(100, 1, "int32")[0, 0] == 4


@cocotb.test()
async def performance(dut):
    """Cycles of GEMMs vs the ideal M*N*K/(R*C) (written to PERF_JSON when set)."""
    shapes = json.loads(os.environ.get("PERF_SHAPES", "[]"))
    if not shapes:
        return
    tb = TB(dut)
    await tb.start()
    rng = torch.Generator().manual_seed(4)
    out = []
    for name, df, M, N, K in shapes:
        df = Dataflow[df]
        a, b = rand_operands(rng, M, N, K, Precision.INT8)
        g = Gemm(CFG, M, N, K, df, Precision.INT8, a, b)
        res = await check_gemm(tb, g, name)
        ideal = M * N * K / (CFG.rows * CFG.cols)
        out.append({"name": name, "dataflow": df.name, "M": M, "N": N, "K": K, "cycles": res["cycles"],
                    "ideal": ideal, "ratio": res["cycles"] / ideal, "compute_cycles": res["compute_cycles"],
                    "stall_cycles": res["stall_cycles"]})
        cocotb.log.info("%s", out[-1])
    if os.environ.get("PERF_JSON"):
        with open(os.environ["PERF_JSON"], "w") as f:
            json.dump(out, f, indent=1)


def random_program(rng, precision, cfg=None, host_words=None):
    """A random mix of WS / OS tiles, PRELOADs, continuations and split-K accumulation on shared rows.

    Returns (host rows at word 0, program, end of the host words that the program writes)."""
    cfg = cfg or CFG
    host_words = host_words or HOST_WORDS
    R, C = cfg.rows, cfg.cols
    per_lane = 2 if precision == Precision.INT4 else 1
    S = min(cfg.sp_rows, 64)
    A = min(cfg.acc_rows, 4 * R)
    data = np.array([[rng.randint(-128, 127) for _ in range(cfg.lanes)] for _ in range(S)])
    # Accumulator rows start at zero in the RTL and the emulator alike (earlier tests used them): stride 0
    # repeats the last host word, which no test writes.
    prog = [encode(Op.CONFIG, precision=precision, mult=1),
            encode(Op.LOAD, to_acc=1, sp_addr=0, rows=A, host_addr=host_words - 1, host_stride=0),
            encode(Op.LOAD, sp_addr=0, rows=S, host_addr=0, host_stride=1)]
    weights = None
    for _ in range(rng.randint(6, 14)):
        if rng.random() < 0.5:
            if weights is None or rng.random() < 0.7:
                k = rng.randint(1, R * per_lane)
                steps = -(-k // per_lane)
                prog.append(encode(Op.PRELOAD, b_addr=rng.randint(0, S - steps), k=k, n=rng.randint(1, C)))
                weights = k
            k = rng.randint(1, R * per_lane)
            m = rng.choice([1, 2, R - 1 if R > 1 else 1, R, R + 3, 3 * R])
            prog.append(encode(Op.COMPUTE, dataflow=Dataflow.WS, accumulate=rng.randint(0, 1),
                               a_addr=rng.randint(0, S - m), c_addr=rng.randint(0, A - m), m=m,
                               n=rng.randint(1, C), k=k))
        else:
            m = rng.randint(1, R)
            k = rng.choice([1, 2, 3, R, 2 * R + 1, 17])
            steps = -(-k // per_lane)
            prog.append(encode(Op.COMPUTE, dataflow=Dataflow.OS, accumulate=rng.randint(0, 1),
                               a_addr=rng.randint(0, S - steps), b_addr=rng.randint(0, S - steps),
                               c_addr=rng.randint(0, A - m), m=m, n=rng.randint(1, C), k=k))
            weights = None
        if rng.random() < 0.2:
            r0 = rng.randint(0, A - 1)
            prog.append(encode(Op.STORE, acc_addr=r0, rows=rng.randint(1, A - r0), cols=C, host_addr=S + A + r0,
                               host_stride=1))
    prog.append(encode(Op.STORE, acc_addr=0, rows=A, cols=C, host_addr=S, host_stride=1))
    return data, prog, S + 2 * A


@cocotb.test()
async def random_tile_sequences(dut):
    """Random sequences of WS / OS tiles (dataflow switches, drains, preloads riding on computes, weight
    reuse, overlapping accumulate) against the emulator, INT8 and INT4."""
    tb = TB(dut)
    await tb.start()
    rng = random.Random(5)
    for n in range(12):
        precision = Precision.INT4 if (n % 3 == 2 and CFG.int4) else Precision.INT8
        data, prog, end = random_program(rng, precision)
        tb.write({0: data})
        res = await tb.run(prog, compare_words=(0, end))
        assert res["status"] == Status.OK, f"program {n}: {res['status'].name} at {res['error_index']}"


@cocotb.test()
async def tile_timing(dut):
    """Per-tile cost with operands resident: adding one tile to a run adds exactly its beats (no bubbles between
    tiles), and the fixed cost of a run is the fill + drain. Numbers go to TIMING_JSON when set."""
    if not os.environ.get("TIMING"):
        return
    tb = TB(dut)
    await tb.start()
    R, C = CFG.rows, CFG.cols
    tb.write({0: np.ones((4 * R, CFG.lanes), np.int64)})
    res = await tb.run([encode(Op.CONFIG, mult=1), encode(Op.LOAD, sp_addr=0, rows=4 * R, host_addr=0, host_stride=1)])
    assert res["status"] == Status.OK

    def ws(m, k):
        return [encode(Op.PRELOAD, b_addr=0, k=k, n=C),
                encode(Op.COMPUTE, dataflow=Dataflow.WS, a_addr=0, c_addr=0, m=m, n=C, k=k)]

    def os_(m, k):
        return [encode(Op.COMPUTE, dataflow=Dataflow.OS, a_addr=0, b_addr=R, c_addr=2 * R, m=m, n=C, k=k)]

    S = CFG.chain_lanes
    P = -(-R // S)      # shift beats that preload / drain R rows
    kinds = {
        "ws m=2R k=R": (lambda: ws(2 * R, R), 2 * R),
        # shorter than the next preload: its ceil(k/S) shifts (from the window's first beat)
        "ws m=R/4 k=R": (lambda: ws(max(1, R // 4), R), max(R // 4, P)),
        "os m=R k=2R": (lambda: os_(R, 2 * R), 2 * R),
        # shorter than its drain: ceil(m/S) shifts of the previous tile, from the window's first beat
        "os m=R k<R/S": (lambda: os_(R, max(1, P - 1)), P),
        "os->ws pair": (lambda: os_(R, 2 * R) + ws(2 * R, R), 2 * R + 1 + P + 2 * R),
    }
    out = {}
    for name, (tile, expect) in kinds.items():
        cycles = []
        for n in (4, 5, 4, 5):
            res = await tb.run(sum((tile() for _ in range(n)), []))
            assert res["status"] == Status.OK
            cocotb.log.info("%s x%d: %s", name, n, res)
            cycles.append(res["cycles"])
        cycles = cycles[2:]
        out[name] = {"per_tile": cycles[1] - cycles[0], "expected": expect, "run_of_4": cycles[0]}
        cocotb.log.info("%s: %s", name, out[name])
    if os.environ.get("TIMING_JSON"):
        with open(os.environ["TIMING_JSON"], "w") as f:
            json.dump(out, f, indent=1)
    for name, r in out.items():
        assert r["per_tile"] == r["expected"], f"{name}: {r}"
