"""ISA-level golden emulator: runs a command program on numpy state with exactly the hardware's semantics.

The emulator is the ``golden`` backend of the runtime: the tiler's programs run here without RTL, so a tiler bug
shows up as a wrong matrix, and the RTL must produce the same host memory, status and failing command index from
the same program.

State (all reset to zero):
- host memory: ``host_words`` words of ``4 * lanes`` bytes (numpy uint8 [words, 4*lanes], little endian; an INT32
  row's column j is bytes 4j..4j+3, an INT8 / packed-INT4 row's lane i is byte i).
- scratchpad: [sp_rows, lanes] raw bytes.  accumulator: [acc_rows, cols] signed ``acc_width``-bit values.
- the WS array: [rows, cols] raw bytes (the stationary tile after PRELOAD).
- CONFIG state: precision, rounding, shift, mult, seed, amax_slot.
- the amax registers ``amax`` (:data:`cdmqta.hw.isa.AMAX_SLOTS` ints): each STORE raises register amax_slot to
  the max |acc| of the tile it reads (lanes < cols, before requantization); :meth:`Emulator.run` (one hardware
  run) starts them at zero.

Semantics that :mod:`cdmqta.hw.isa` leaves open, fixed here (the controller must do the same):
- LOAD copies whole rows: all ``lanes`` bytes of a word into a scratchpad row; with ``to_acc`` the word's
  ``cols`` INT32 lanes, sign-extended, into an accumulator row. Host row r is ``host_addr + r * host_stride``.
- PRELOAD stores scratchpad rows ``b_addr ..`` (k rows; ceil(k/2) in INT4) lanes 0..n-1 in the array and zeroes
  the rest of the array; COMPUTE WS uses the A lanes of elements 0..k-1 only (elements >= k count as zero).
- COMPUTE writes accumulator lanes 0..n-1 of rows c_addr..c_addr+m-1; lanes >= n keep their value. The
  accumulator wraps modulo 2**acc_width (the tiler keeps K <= max_k so it never does).
- STORE INT32 writes the low 32 bits of each lane; INT8/INT4 requantize with the CONFIG parameters exactly as
  :func:`cdmqta.sw.model.requant.requantize` with origin (origin_row, origin_col) and ``transposed``; mult = 0 gives 0.
  Each output row is a full host word: lanes >= cols are written as zero.
- Checks, in this order, stop the program at the first bad command (status register + command index):
  BAD_OPCODE; BAD_FIELD (CONFIG shift > 47, STORE out = 3); NOT_BUILT (CONFIG precision INT4 without the INT4
  mode, COMPUTE in a dataflow not built, PRELOAD without WS); ZERO_SIZE (LOAD rows, PRELOAD k/n, COMPUTE m/n/k,
  STORE rows/cols); TILE_TOO_LARGE (PRELOAD k > kmax or n > cols; COMPUTE WS k > kmax, n > cols; COMPUTE OS
  m > rows, n > cols; STORE cols > cols; kmax = rows, 2*rows in INT4); ADDR_RANGE (any scratchpad, accumulator
  or host row outside its memory); then BAD_FIELD for a WS COMPUTE without weights (no PRELOAD since reset, or an
  OS COMPUTE after the last PRELOAD: OS tiles reuse the PEs' weight registers; :mod:`cdmqta.hw.controller`).
"""

import numpy as np
import torch

from cdmqta.hw.isa import (
    AMAX_SLOTS,
    SHIFT_MAX,
    Dataflow,
    IsaError,
    OutFormat,
    Precision,
    Rounding,
    Status,
    decode,
    unpack_int4,
)
from cdmqta.sw.model.requant import requantize

__all__ = ["Emulator", "EmulatorError", "cmd_name", "crosscheck"]


class EmulatorError(RuntimeError):
    """A program stopped with a non-OK status (raised by :meth:`Emulator.run` with ``check=True``)."""

    def __init__(self, status, index, word):
        self.status, self.index, self.word = Status(status), index, word
        super().__init__(f"program stopped at command {index} ({cmd_name(word)}) with status {self.status.name}")


def cmd_name(word):
    try:
        return decode(word)[0].name
    except IsaError:
        return f"opcode {word & 0xF}"


def _elements(rows_bytes, precision, k):
    """[steps, lanes] raw bytes -> [k, lanes] int64 elements along K (INT4: two per byte, low nibble first)."""
    if precision == Precision.INT8:
        return rows_bytes[:k].astype(np.int64)
    lo, hi = unpack_int4(rows_bytes)
    out = np.empty((2 * lo.shape[0],) + lo.shape[1:], np.int64)
    out[0::2], out[1::2] = lo, hi
    return out[:k]


class Emulator:
    """Executes command programs on one accelerator configuration (a :class:`cdmqta.hw.QTAConfig`)."""

    def __init__(self, config, host_words=None, host=None):
        self.config = config
        self.lanes = config.lanes
        if host is None:
            if host_words is None:
                raise ValueError("Emulator needs host_words (or a host memory array)")
            host = np.zeros((host_words, 4 * self.lanes), np.uint8)
        if host.dtype != np.uint8 or host.ndim != 2 or host.shape[1] != 4 * self.lanes:
            raise ValueError(f"host memory must be uint8 [words, {4 * self.lanes}], got {host.dtype} {host.shape}")
        if host.shape[0] > (1 << config.host_addr_width):
            raise ValueError(f"host memory of {host.shape[0]} words exceeds host_addr_width={config.host_addr_width}")
        self.host = host
        self.reset()

    def reset(self):
        c = self.config
        self.sp = np.zeros((c.sp_rows, self.lanes), np.int8)
        self.acc = np.zeros((c.acc_rows, c.cols), np.int64)
        self.array = np.zeros((c.rows, c.cols), np.int8)
        self.weights_valid = False
        self.precision, self.rounding, self.shift, self.mult, self.seed = Precision.INT8, Rounding.NEAREST_EVEN, 0, 0, 0
        self.amax_slot, self.amax = 0, [0] * AMAX_SLOTS
        self.status, self.bad_index = Status.OK, None
        self.counters = {"commands": 0, "macs": 0, "computes": 0, "loaded_rows": 0, "stored_rows": 0}

    # -- running -------------------------------------------------------------------------------------------------

    def run(self, program, check=False):
        """Run a list of 128-bit commands; returns the status (and sets ``bad_index`` on an error). Like a
        hardware run, it starts with the amax registers at zero."""
        self.amax = [0] * AMAX_SLOTS
        for index, word in enumerate(program):
            status = self.step(word)
            if status != Status.OK:
                self.status, self.bad_index = status, index
                if check:
                    raise EmulatorError(status, index, word)
                return status
        return Status.OK

    def step(self, word):
        try:
            op, f = decode(int(word))
        except IsaError:
            return Status.BAD_OPCODE
        self.counters["commands"] += 1
        return getattr(self, f"_{op.name.lower()}")(f)

    # -- helpers -------------------------------------------------------------------------------------------------

    def _kmax(self):
        return self.config.rows * (2 if self.precision == Precision.INT4 else 1)

    def _steps(self, k):
        return (k + 1) // 2 if self.precision == Precision.INT4 else k

    def _host_ok(self, addr, rows, stride):
        return addr + (rows - 1) * stride < self.host.shape[0]

    def _wrap(self, x):
        w = self.config.acc_width
        return ((x + (1 << (w - 1))) & ((1 << w) - 1)) - (1 << (w - 1))

    # -- commands ------------------------------------------------------------------------------------------------

    def _nop(self, f):
        return Status.OK

    def _fence(self, f):
        return Status.OK

    def _config(self, f):
        if f["shift"] > SHIFT_MAX:
            return Status.BAD_FIELD
        if f["precision"] == Precision.INT4 and not self.config.int4:
            return Status.NOT_BUILT
        self.precision, self.rounding = Precision(f["precision"]), Rounding(f["rounding"])
        self.shift, self.mult, self.seed, self.amax_slot = f["shift"], f["mult"], f["seed"], f["amax_slot"]
        return Status.OK

    def _load(self, f):
        rows, sp, host, stride = f["rows"], f["sp_addr"], f["host_addr"], f["host_stride"]
        if rows == 0:
            return Status.ZERO_SIZE
        depth = self.config.acc_rows if f["to_acc"] else self.config.sp_rows
        if sp + rows > depth or not self._host_ok(host, rows, stride):
            return Status.ADDR_RANGE
        words = self.host[host + stride * np.arange(rows)]
        if f["to_acc"]:
            cols = self.config.cols
            self.acc[sp:sp + rows] = words[:, :4 * cols].copy().view("<i4").astype(np.int64)
        else:
            self.sp[sp:sp + rows] = words[:, :self.lanes].view(np.int8)
        self.counters["loaded_rows"] += rows
        return Status.OK

    def _preload(self, f):
        b, k, n = f["b_addr"], f["k"], f["n"]
        if "ws" not in self.config.dataflows:
            return Status.NOT_BUILT
        if k == 0 or n == 0:
            return Status.ZERO_SIZE
        if k > self._kmax() or n > self.config.cols:
            return Status.TILE_TOO_LARGE
        steps = self._steps(k)
        if b + steps > self.config.sp_rows:
            return Status.ADDR_RANGE
        self.array[:] = 0
        self.weights_valid = True
        self.array[:steps, :n] = self.sp[b:b + steps, :n]
        if self.precision == Precision.INT4 and k % 2:
            # the odd K's padding nibble: the array holds only elements 0..k-1
            self.array[steps - 1, :n] = (
                (self.array[steps - 1, :n].astype(np.int64) & 0xF).astype(np.uint8).view(np.int8)
            )
        return Status.OK

    def _compute(self, f):
        df, m, n, k = f["dataflow"], f["m"], f["n"], f["k"]
        a, bb, c = f["a_addr"], f["b_addr"], f["c_addr"]
        cfg = self.config
        if Dataflow(df).name.lower() not in cfg.dataflows:
            return Status.NOT_BUILT
        if m == 0 or n == 0 or k == 0:
            return Status.ZERO_SIZE
        steps = self._steps(k)
        if df == Dataflow.WS:
            if k > self._kmax() or n > cfg.cols:
                return Status.TILE_TOO_LARGE
            if a + m > cfg.sp_rows or c + m > cfg.acc_rows:
                return Status.ADDR_RANGE
            if not self.weights_valid:
                return Status.BAD_FIELD
            lanes_used = steps
            a_rows = self.sp[a:a + m, :lanes_used]                       # [m, steps] bytes
            a_el = _elements(a_rows.T, self.precision, k)                # [k, m]
            w_el = _elements(self.array[:steps, :n], self.precision, k)  # [k, n]
            tile = a_el.T @ w_el
        else:
            if m > cfg.rows or n > cfg.cols:
                return Status.TILE_TOO_LARGE
            if a + steps > cfg.sp_rows or bb + steps > cfg.sp_rows or c + m > cfg.acc_rows:
                return Status.ADDR_RANGE
            a_el = _elements(self.sp[a:a + steps, :m], self.precision, k)   # [k, m]
            b_el = _elements(self.sp[bb:bb + steps, :n], self.precision, k)  # [k, n]
            tile = a_el.T @ b_el
            self.weights_valid = False
        if f["accumulate"]:
            tile = tile + self.acc[c:c + m, :n]
        self.acc[c:c + m, :n] = self._wrap(tile)
        self.counters["macs"] += m * n * k
        self.counters["computes"] += 1
        return Status.OK

    def _store(self, f):
        out, rows, cols = f["out"], f["rows"], f["cols"]
        acc_addr, host, stride = f["acc_addr"], f["host_addr"], f["host_stride"]
        cfg = self.config
        if out > OutFormat.INT4:
            return Status.BAD_FIELD
        if rows == 0 or cols == 0:
            return Status.ZERO_SIZE
        if cols > cfg.cols:
            return Status.TILE_TOO_LARGE
        if acc_addr + rows > cfg.acc_rows or not self._host_ok(host, rows, stride):
            return Status.ADDR_RANGE
        tile = self.acc[acc_addr:acc_addr + rows, :cols]
        self.amax[self.amax_slot] = max(self.amax[self.amax_slot], int(np.abs(tile).max()))
        words = np.zeros((rows, 4 * self.lanes), np.uint8)
        if out == OutFormat.INT32:
            words[:, :4 * cols] = tile.astype(np.int32).astype("<i4").view(np.uint8).reshape(rows, 4 * cols)
        else:
            q = self._requant(tile, bits=8 if out == OutFormat.INT8 else 4,
                              origin=(f["origin_row"], f["origin_col"]), transposed=bool(f["transposed"]))
            words[:, :cols] = q.astype(np.int8).view(np.uint8)
        self.host[host + stride * np.arange(rows)] = words
        self.counters["stored_rows"] += rows
        return Status.OK

    def _requant(self, tile, bits, origin, transposed):
        if self.mult == 0:
            return np.zeros(tile.shape, np.int8)
        rounding = "stochastic" if self.rounding == Rounding.STOCHASTIC else "nearest"
        q = requantize(torch.from_numpy(np.ascontiguousarray(tile)), self.mult, self.shift, bits=bits,
                       rounding=rounding, seed=self.seed, origin=origin, transposed=transposed)
        return q.numpy()


def crosscheck(emulator, program, after, status, error_index, region=None, amax=None):
    """How a hardware run of ``program`` disagrees with the emulator (an empty list when it agrees).

    ``emulator`` holds the state the hardware started from (its host image = the hardware's before the run, and
    its scratchpad / accumulator / CONFIG state if earlier programs ran on both); it runs ``program`` and must stop
    with the same ``status`` and ``error_index`` (None when OK) and leave the same host words as ``after`` (the
    hardware's host image) over ``region`` = (first word, words), by default the whole memory; with ``amax`` (the
    hardware's amax registers after the run) those must equal the emulator's too."""
    emulator.status, emulator.bad_index = Status.OK, None
    em_status = emulator.run(program)
    diffs = []
    if em_status != status:
        diffs.append(f"status: hardware {Status(status).name}, emulator {Status(em_status).name}")
    if (emulator.bad_index if em_status != Status.OK else None) != error_index:
        diffs.append(f"error index: hardware {error_index}, emulator {emulator.bad_index}")
    if amax is not None and list(amax) != emulator.amax:
        diffs.append(f"amax registers: hardware {list(amax)}, emulator {emulator.amax}")
    lo, n = (0, len(after)) if region is None else region
    bad = np.flatnonzero((emulator.host[lo:lo + n] != np.asarray(after)[lo:lo + n]).any(axis=1)) + lo
    if bad.size:
        diffs.append(f"host words differ from the emulator at {bad[:8].tolist()} (of {bad.size})")
    return diffs
