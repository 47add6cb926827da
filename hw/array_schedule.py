"""Python reference of the array protocol (:mod:`cdmqta.hw.array`): tiles in, beats and predicted outputs out.

``schedule(tiles, rows, cols, lanes)`` turns a list of :class:`Tile` (dataflow, precision, A tile, B tile) into the
beat stream that enters the array, one beat per cycle from cycle 0, obeying hazard rules H1-H5, and says at
which cycle which result row leaves which output port. It is what the controller implements in hardware and
what :class:`cdmqta.hw.harness.ArrayHarness` plays. :func:`simulate` is a functional (untimed) model of the
array that executes a beat stream; :func:`gemm_tiles` / :func:`assemble` split a whole GEMM into tiles and put
the tile results back together (split-K partial sums added in Python).

Placement policy (minimal cycles for the rules): with S = ``lanes`` (the shift chain's lanes, capped at rows) the
window of tile i (its compute beats, sel_i) carries q_i = max(ceil(m_{i-1}/S) if tile i-1 is OS,
ceil(k_lanes_{i+1}/S) if tile i+1 is WS) shifts on its LAST q_i beats (never on its first beat after an OS tile,
H2); if it is too short, shift-only beats are appended. A WS first tile is preceded by its ceil(k_lanes/S) preload
beats, an OS last tile is followed by a bubble (H2) and its ceil(m/S) drain beats. Beat ``d`` and drain rows have
S*C lanes (lane s of the chain at [s*C, (s+1)*C)).
"""

from dataclasses import dataclass, field

from .config import chain_lanes
from .isa import pack_int4 as isa_pack_int4

__all__ = ["Tile", "Beat", "Output", "Schedule", "schedule", "simulate", "pack_int4", "gemm_tiles",
           "assemble", "beat_word", "BEAT_CTRL_FIELDS", "ideal_cycles", "sign_extend", "mac_reference"]

WS, OS = "ws", "os"
INT8, INT4 = "int8", "int4"
#: Control bits in the order of :data:`cdmqta.hw.pe.Control` (bit 0 upward).
BEAT_CTRL_FIELDS = ("compute", "shift", "dataflow", "precision", "sel", "first")


def _rows(x):
    x = x.tolist() if hasattr(x, "tolist") else x
    return [[int(v) for v in r] for r in x]


def pack_int4(lo, hi):
    """Two signed INT4 values as one signed 8-bit lane (:func:`cdmqta.hw.isa.pack_int4`, read as a signed byte)."""
    for v in (lo, hi):
        if not -8 <= v <= 7:
            raise ValueError(f"INT4 value {v} out of range [-8, 7]")
    return sign_extend(isa_pack_int4(lo, hi), 8)


@dataclass
class Tile:
    """C[m x n] = A[m x k] . B[k x n] in one dataflow / precision (k counts INT4 elements in INT4)."""
    dataflow: str
    precision: str
    a: list
    b: list

    def __post_init__(self):
        self.a, self.b = _rows(self.a), _rows(self.b)
        if self.dataflow not in (WS, OS) or self.precision not in (INT8, INT4):
            raise ValueError(f"bad tile dataflow/precision {self.dataflow!r}/{self.precision!r}")
        if not self.a or not self.b or len(self.a[0]) != len(self.b) or not self.b[0]:
            raise ValueError("tile A[m x k] / B[k x n] shapes do not match or are empty")
        lim = 7 if self.precision == INT4 else 127
        for mat in (self.a, self.b):
            if any(not -lim - 1 <= v <= lim for r in mat for v in r):
                raise ValueError(f"tile operand out of {self.precision} range")

    m = property(lambda self: len(self.a))
    k = property(lambda self: len(self.b))
    n = property(lambda self: len(self.b[0]))

    @property
    def k_lanes(self):
        """K steps: lanes (WS) or beats (OS) that K occupies (two INT4 elements per lane)."""
        return (self.k + 1) // 2 if self.precision == INT4 else self.k

    def a_lane(self, r, s):
        """Lane value of A[r, K step s] (packed in INT4)."""
        if self.precision == INT8:
            return self.a[r][s]
        hi = self.a[r][2 * s + 1] if 2 * s + 1 < self.k else 0
        return pack_int4(self.a[r][2 * s], hi)

    def b_lane(self, s, j):
        if self.precision == INT8:
            return self.b[s][j]
        hi = self.b[2 * s + 1][j] if 2 * s + 1 < self.k else 0
        return pack_int4(self.b[2 * s][j], hi)

    def result(self):
        return [[sum(self.a[r][t] * self.b[t][j] for t in range(self.k)) for j in range(self.n)]
                for r in range(self.m)]


@dataclass
class Beat:
    a: list
    b: list
    d: list
    compute: int = 0
    shift: int = 0
    dataflow: int = 0
    precision: int = 0
    sel: int = 0
    first: int = 0


@dataclass
class Output:
    """Result row ``row`` of tile ``tile`` leaves ``port`` ('ws' or 'drain') at ``cycle``; ``index`` is its
    position among all rows of that port (the harness captures each port's rows in order); ``lane`` is the drain
    lane that carries it (0 on the ws port)."""
    port: str
    cycle: int
    index: int
    tile: int
    row: int
    lane: int = 0


@dataclass
class Schedule:
    rows: int
    cols: int
    latency: int
    tiles: list
    lanes: int = 1
    beats: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    n_ws: int = 0       # rows the ws port emits in total
    n_drain: int = 0    # rows the drain port emits in total (results and junk)

    @property
    def cycles(self):
        """Cycles from the first beat until the last output row has appeared (inclusive)."""
        return len(self.beats) + self.latency

    def results(self, ws_rows, drain_rows):
        """Tile results (m x n lists) from each port's captured rows (in order; C lanes per ws row, lanes * C per
        drain row)."""
        out = [[None] * t.m for t in self.tiles]
        for o in self.outputs:
            src = ws_rows if o.port == WS else drain_rows
            lo = o.lane * self.cols
            out[o.tile][o.row] = [int(v) for v in src[o.index][lo: lo + self.tiles[o.tile].n]]
        return out


def schedule(tiles, rows, cols, lanes=2):
    """The beat stream and predicted outputs of ``tiles`` on an R x C array whose shift chain has ``lanes`` lanes
    (``QTAConfig.shift_lanes``; capped at ``rows``), see the module docstring."""
    from .array import array_latency

    R, C = rows, cols
    S = chain_lanes(lanes, R)
    tiles = list(tiles)
    for t in tiles:
        if t.n > C:
            raise ValueError(f"tile n={t.n} exceeds cols={C}")
        if t.dataflow == WS and t.k_lanes > R:
            raise ValueError(f"WS tile k={t.k} ({t.precision}) exceeds rows={R}")
        if t.dataflow == OS and t.m > R:
            raise ValueError(f"OS tile m={t.m} exceeds rows={R}")
    s = Schedule(R, C, array_latency(R, C), tiles, S)
    beats = s.beats
    zero_r, zero_c, zero_d = [0] * R, [0] * C, [0] * (S * C)

    def weights(t):  # the d lanes of its ceil(k_lanes / S) preload shifts, in shift order
        P = -(-t.k_lanes // S)
        return [[t.b_lane(S * (P - 1 - p) + u, j) if j < t.n and S * (P - 1 - p) + u < t.k_lanes else 0
                 for u in range(S) for j in range(C)] for p in range(P)]

    def drains(i, t):  # per drain shift: the (tile, row, lane) it yields
        return [[(i, t.m - 1 - S * v - u, u) for u in range(S) if t.m - 1 - S * v - u >= 0]
                for v in range(-(-t.m // S))]

    def window(i, sel, compute_beats, drain, preload):
        """Append the beats of one window: compute beats (list of Beat with compute=1) + shifts."""
        q = max(len(drain), len(preload))
        h = 1 if (beats and beats[-1].compute and beats[-1].dataflow == 1 and beats[-1].sel != sel) else 0
        ws = list(compute_beats)
        if q > len(ws) - h:
            ws += [Beat(zero_r, zero_c, zero_d, sel=sel) for _ in range(q - max(len(ws) - h, 0))]
            if h and not compute_beats:
                ws.insert(0, Beat(zero_r, zero_c, zero_d, sel=sel))  # bubble (H2)
        first_shift = len(ws) - q
        for p in range(q):
            bt = ws[first_shift + p]
            bt.shift = 1
            pre = p - (q - len(preload))
            bt.d = preload[pre] if pre >= 0 else zero_d
            if p < len(drain):
                for tile_i, row, lane in drain[p]:
                    s.outputs.append(Output("drain", len(beats) + first_shift + p + s.latency, None, tile_i, row,
                                            lane))
        for x, bt in enumerate(ws):   # by position: equal beats (equal A rows) are still different rows
            if bt.compute and bt.dataflow == 0:
                s.outputs.append(Output(WS, len(beats) + x + s.latency, None, i, bt._row))
        beats.extend(ws)

    n = len(tiles)
    # window -1: preload of tile 0 if WS
    if n and tiles[0].dataflow == WS:
        window(-1, 1, [], [], weights(tiles[0]))
    for i, t in enumerate(tiles):
        sel = i % 2
        comp = []
        if t.dataflow == WS:
            for r in range(t.m):
                a = [t.a_lane(r, x) if x < t.k_lanes else 0 for x in range(R)]
                bt = Beat(a, zero_c, zero_d, compute=1, dataflow=0, precision=int(t.precision == INT4), sel=sel)
                bt._row = r
                comp.append(bt)
        else:
            for step in range(t.k_lanes):
                a = [0] * R
                for r in range(t.m):
                    a[R - t.m + r] = t.a_lane(r, step)
                b = [t.b_lane(step, j) if j < t.n else 0 for j in range(C)]
                comp.append(Beat(a, b, zero_d, compute=1, dataflow=1, precision=int(t.precision == INT4),
                                 sel=sel, first=int(step == 0)))
        prev = tiles[i - 1] if i else None
        drain = drains(i - 1, prev) if prev is not None and prev.dataflow == OS else []
        nxt = tiles[i + 1] if i + 1 < n else None
        preload = weights(nxt) if nxt is not None and nxt.dataflow == WS else []
        window(i, sel, comp, drain, preload)
    if n and tiles[-1].dataflow == OS:
        last = tiles[-1]
        window(n, n % 2, [], drains(n - 1, last), [])

    # port indices: each port emits one row per beat of its kind, in beat order
    ws_cycles = [c + s.latency for c, bt in enumerate(beats) if bt.compute and bt.dataflow == 0]
    dr_cycles = [c + s.latency for c, bt in enumerate(beats) if bt.shift]
    s.n_ws, s.n_drain = len(ws_cycles), len(dr_cycles)
    ws_idx = {c: x for x, c in enumerate(ws_cycles)}
    dr_idx = {c: x for x, c in enumerate(dr_cycles)}
    for o in s.outputs:
        o.index = ws_idx[o.cycle] if o.port == WS else dr_idx[o.cycle]
    s.outputs.sort(key=lambda o: (o.cycle, o.port, o.lane))
    for bt in beats:
        bt.__dict__.pop("_row", None)
    check(beats, R, C)
    return s


def check(beats, rows, cols):
    """Raise ValueError if a beat stream breaks H2 (shift right after an OS compute beat of the other sel)."""
    for c in range(1, len(beats)):
        p, bt = beats[c - 1], beats[c]
        if bt.shift and p.compute and p.dataflow == 1 and p.sel != bt.sel:
            raise ValueError(f"hazard H2 at beat {c}: shift right after an OS compute beat of the other sel")


def sign_extend(v, bits):
    """``v`` mod 2**bits read as a signed ``bits``-bit number."""
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def mac_reference(a, b, int4):
    """What one MAC adds for lanes ``a``, ``b`` (signed bytes): ``a*b`` (INT8) or ``a_lo*b_lo + a_hi*b_hi`` (INT4)."""
    if not int4:
        return a * b
    return sign_extend(a, 4) * sign_extend(b, 4) + sign_extend(a >> 4, 4) * sign_extend(b >> 4, 4)


def simulate(beats, rows, cols, acc_width=32, lanes=2):
    """Functional model of the array: (ws_rows, drain_rows), each port's rows in order (C ints per ws row,
    S * C per drain row: lane u = the old shadow row R-1-u)."""
    R, C = rows, cols
    S = chain_lanes(lanes, R)
    c = [[[0] * C for _ in range(R)] for _ in range(2)]
    ws_rows, drain_rows = [], []
    for bt in beats:
        cur, shadow = c[bt.sel], c[1 - bt.sel]
        if bt.compute and bt.dataflow == 0:
            ws_rows.append(
                [
                    sign_extend(
                        sum(mac_reference(bt.a[i], sign_extend(cur[i][j], 8), bt.precision) for i in range(R)),
                        acc_width,
                    )
                    for j in range(C)
                ]
            )
        elif bt.compute:
            for i in range(R):
                for j in range(C):
                    base = 0 if bt.first else cur[i][j]
                    cur[i][j] = sign_extend(base + mac_reference(bt.a[i], bt.b[j], bt.precision), acc_width)
        if bt.shift:
            drain_rows.append([v for u in range(S) for v in shadow[R - 1 - u]])
            for i in range(R - 1, S - 1, -1):
                shadow[i] = list(shadow[i - S])
            for u in range(S):
                shadow[u] = [int(v) for v in bt.d[u * C:(u + 1) * C]]
    return ws_rows, drain_rows


def beat_word(bt, rows, cols):
    """A beat as the harness's beat-memory word: ctrl bits [0:6] (BEAT_CTRL_FIELDS order), then a (8*rows),
    b (8*cols), d (8*lanes*cols: as many as the beat has), lane 0 lowest (the ``data.StructLayout`` of
    :class:`ArrayHarness`)."""
    w = 0
    for x, name in enumerate(BEAT_CTRL_FIELDS):
        w |= (getattr(bt, name) & 1) << x
    pos = len(BEAT_CTRL_FIELDS)
    for lanes, n in ((bt.a, rows), (bt.b, cols), (bt.d, len(bt.d))):
        for v in lanes[:n]:
            w |= (v & 0xFF) << pos
            pos += 8
    return w


def gemm_tiles(a, b, rows, cols, dataflow, precision=INT8):
    """Split C = A . B into tiles (WS: k x n stationary, M streamed; OS: m x n stationary, K streamed).

    Returns (tiles, places): places[x] = (row0, col0) of tile x's result in C (WS split-K tiles add up)."""
    a, b = _rows(a), _rows(b)
    M, K, N = len(a), len(b), len(b[0])
    tiles, places = [], []
    if dataflow == WS:
        kt = rows * (2 if precision == INT4 else 1)
        for n0 in range(0, N, cols):
            for k0 in range(0, K, kt):
                at = [r[k0:k0 + kt] for r in a]
                bt = [r[n0:n0 + cols] for r in b[k0:k0 + kt]]
                tiles.append(Tile(WS, precision, at, bt))
                places.append((0, n0))
    else:
        for m0 in range(0, M, rows):
            for n0 in range(0, N, cols):
                tiles.append(Tile(OS, precision, a[m0:m0 + rows], [r[n0:n0 + cols] for r in b]))
                places.append((m0, n0))
    return tiles, places


def assemble(results, places, m, n):
    """Add tile results (from :meth:`Schedule.results`) into an m x n list of ints."""
    c = [[0] * n for _ in range(m)]
    for res, (r0, c0) in zip(results, places):
        for r, row in enumerate(res):
            for j, v in enumerate(row):
                c[r0 + r][c0 + j] += v
    return c


def ideal_cycles(m, n, k, rows, cols, precision=INT8):
    """M*N*K / (R*C) MAC-array cycles (K halved in INT4: two products per MAC per cycle)."""
    k_eff = (k + 1) // 2 if precision == INT4 else k
    return m * n * k_eff / (rows * cols)
