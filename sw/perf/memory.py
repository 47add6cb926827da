"""The DRAM side of the performance models: bus bandwidth, read latency, outstanding reads, bytes per row.

One :class:`Memory` describes the memory system behind the accelerator's host port; the program-level model
(:func:`cdmqta.sw.perf.program.program_cycles`), the fast step model (:mod:`cdmqta.sw.perf.schedule`) and the
mapper (:mod:`cdmqta.sw.perf.mapper`) take it as a parameter. ``Memory()`` (bandwidth None) is the ideal memory
of today's RTL: the host port moves one word (one array row) per cycle with no latency, which is what the
program model reproduces exactly against the RTL's ``busy_cycles``. With a bandwidth B:

- the DRAM bus moves at most B bytes per cycle, shared by reads (LOADs) and writes (STOREs): a transfer that
  starts while the other unit's is under way gets what that one leaves of B until it ends, then up to B;
- reads see ``latency`` cycles from request to first data; with ``outstanding`` reads of ``burst`` bytes in
  flight the read bandwidth is at most ``outstanding * burst / latency`` (Little's law); latency is paid once
  per LOAD (the next LOAD's requests go out while the previous one's data arrive);
- the port still moves at most one row per cycle (the scratchpad / accumulator write port), so a LOAD of r
  rows takes ``max(r, ceil(bytes / B))`` cycles and a STORE likewise.

Bytes per row, what the runtime's layout really moves (one host word per array row, cdmqta.hw.isa): a scratchpad
LOAD row is ``lanes = max(R, C)`` bytes (an INT8 / packed INT4 row, the useful lanes of the word); an accumulator
LOAD row ``4 * cols`` bytes (INT32, a requantization pass); a STORE row ``4 * cols`` (INT32), ``cols`` (INT8) or
``ceil(cols / 2)`` (INT4) bytes of the command's ``cols``; a command 16 bytes (128 bits, fetched from DRAM: counted
in the traffic, its bus time is not modelled: under 0.1 % of the bytes of any SD-1.5 GEMM).

These parameters are meant to match the AXI memory interface once it is integrated: ``bandwidth`` = data bus
bytes per beat times beats per accelerator cycle, ``latency`` = read address to first read data, ``outstanding``
= the read-address FIFO depth (in-flight bursts), ``burst`` = bytes per burst. Until then the memory part of the
models is validated against the program-level model only (``scripts/validate_memory_model.py``), not the RTL.
"""

import math
from dataclasses import dataclass

from cdmqta.hw.isa import OutFormat

__all__ = ["Memory", "IDEAL", "parse_bandwidth", "load_row_bytes", "store_row_bytes", "COMMAND_BYTES",
           "compulsory_bytes", "roofline_cycles"]

COMMAND_BYTES = 16


@dataclass(frozen=True)
class Memory:
    """The memory behind the host port. ``bandwidth``: bus bytes per cycle (None: unlimited, today's ideal memory);
    ``latency``: read latency in cycles; ``outstanding``: read bursts in flight (0: no limit); ``burst``: bytes per
    burst."""

    bandwidth: float | None = None
    latency: int = 0
    outstanding: int = 0
    burst: int = 64

    def __post_init__(self):
        b = self.bandwidth
        if b is not None and (isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b)
                              or b <= 0):
            raise ValueError(f"bandwidth={b!r} must be a positive number of bytes/cycle or None (unlimited)")
        for name in ("latency", "outstanding"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name}={v!r} must be an integer >= 0")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(f"burst={self.burst!r} must be an integer >= 1")

    @property
    def ideal(self):
        """True for today's ideal memory (exactly the RTL's host port: the program model's reference case)."""
        return self.bandwidth is None and self.latency == 0 and self.outstanding == 0

    @property
    def read_bandwidth(self):
        """Bytes per cycle reads can reach: min(B, outstanding * burst / latency) (None: unlimited)."""
        lim = self.outstanding * self.burst / self.latency if self.outstanding and self.latency else None
        if self.bandwidth is None:
            return lim
        return self.bandwidth if lim is None else min(self.bandwidth, lim)

    def transfer(self, rows, nbytes, start=0, other_end=0, other_rate=0.0, read=True):
        """(cycles, bytes/cycle at its end) of a unit moving ``rows`` rows of ``nbytes`` bytes in all from cycle
        ``start`` while the other unit's transfer (the store's for a load and vice versa) uses ``other_rate``
        bytes/cycle of the bus until ``other_end``: at most one row per cycle (the port), at most what the bus has
        left (the transfer that started first keeps its rate), no faster than the (read) bandwidth. The rate
        returned is the one of its last stretch (never below what it uses at any time after it started, so a
        transfer that starts later never gets more than the bus has). The ideal memory: ``rows`` cycles."""
        bw = self.read_bandwidth if read else self.bandwidth
        if bw is None or rows == 0:
            return rows, 0.0
        port = nbytes / rows
        full = min(port, bw)
        t1 = other_end - start if other_end > start else 0
        r1 = min(port, max(0.0, bw - other_rate)) if t1 else full
        if r1 * t1 >= nbytes:
            d, rate = nbytes / r1, r1
        else:
            d, rate = t1 + (nbytes - r1 * t1) / full, full
        return max(rows, math.ceil(d - 1e-9)), rate

    def transfer_cycles(self, rows, nbytes, read=True):
        """Cycles of a transfer alone on the bus (see :meth:`transfer`)."""
        return self.transfer(rows, nbytes, read=read)[0]


IDEAL = Memory()


def parse_bandwidth(text):
    """``unlimited`` -> None; a positive number of bytes/cycle -> float. ValueError (one line) otherwise."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        v = float(text)
    else:
        s = str(text).strip().lower()
        if s in ("unlimited", "inf", "none"):
            return None
        try:
            v = float(s)
        except ValueError:
            raise ValueError(f"{text!r} is not a number of bytes/cycle or 'unlimited'") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{text!r} must be > 0 bytes/cycle (or 'unlimited')")
    return v


def load_row_bytes(config, to_acc):
    """Bytes a LOAD row moves: an INT32 accumulator row (4 * cols) or an INT8 scratchpad row (lanes)."""
    return 4 * config.cols if to_acc else config.lanes


def store_row_bytes(out, cols):
    """Bytes a STORE row of ``cols`` columns moves in format ``out`` (OutFormat)."""
    out = OutFormat(out)
    if out == OutFormat.INT32:
        return 4 * cols
    if out == OutFormat.INT8:
        return cols
    return (cols + 1) // 2


def compulsory_bytes(m, n, k, elem=1, out_bytes=1, a_elems=0):
    """Every operand read once and every result written once: (A + B) * elem + C * out_bytes."""
    return ((a_elems or m * k) + k * n) * elem + m * n * out_bytes


def roofline_cycles(m, n, k, rows, cols, compulsory, bandwidth):
    """The physical limit ``max(M*N*K / (R*C), compulsory / B)`` (compute only when B is unlimited)."""
    ideal = m * n * k / (rows * cols)
    return ideal if bandwidth is None else max(ideal, compulsory / bandwidth)
