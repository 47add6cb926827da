"""cocotb-side driver of :class:`cdmqta.hw.top.SimTop`: host memory in bulk, command programs, status, counters.

Used by the RTL testbenches (``verif/tb_accel.py``) and by the runtime's RTL backend. Everything heavy happens
in the simulator: memories are filled and read through VPI (one call per word, no clock edges) and a run waits
for the ``done`` edge, so Python never runs per cycle.

    from cdmqta.sw.rtl_driver import AccelDriver
    drv = AccelDriver(dut, config, host_words=4096, cmd_words=1024)
    await drv.reset()                                 # starts the clock (10 ns) unless start_clock=False
    drv.write_host(0, a_rows, kind="int8")            # rows: int array [rows, <= lanes]
    res = await drv.run([isa.encode(...), ...])       # -> {"status", "error_index", "cycles", counters...}
    c = drv.read_host(100, 16, kind="int32")          # -> np.int64 array [16, lanes]

Host word formats (see :mod:`cdmqta.hw.isa`): ``int8`` rows fill byte lanes 0.. of the word's low 8*lanes bits
(packed INT4 operands are int8 bytes too); ``int32`` rows fill 32-bit lanes 0..; ``raw`` words are Python ints.
"""

import numpy as np

__all__ = ["AccelDriver", "pack_rows", "unpack_words", "KINDS"]

KINDS = ("int8", "int32", "raw")


def pack_rows(rows, kind, lanes):
    """Host words (Python ints) of an integer array [rows, <= lanes] in format ``kind``."""
    if kind == "raw":
        return [int(w) for w in rows]
    a = np.asarray(rows)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] > lanes:
        raise ValueError(f"host rows must be a 2-D array with at most lanes={lanes} columns, got shape {a.shape}")
    if kind == "int8":
        if a.size and (a.min() < -128 or a.max() > 127):
            raise ValueError("int8 host rows out of range [-128, 127]")
        b = np.zeros((a.shape[0], lanes), np.uint8)
        b[:, :a.shape[1]] = a.astype(np.int64).astype(np.int8).view(np.uint8)
        step = 8
    elif kind == "int32":
        if a.size and (a.min() < -(1 << 31) or a.max() >= (1 << 31)):
            raise ValueError("int32 host rows out of range")
        b = np.zeros((a.shape[0], lanes), np.uint32)
        b[:, :a.shape[1]] = a.astype(np.int64).astype(np.int32).view(np.uint32)
        step = 32
    else:
        raise ValueError(f"kind={kind!r} must be one of {KINDS}")
    return [sum(int(v) << (step * i) for i, v in enumerate(r)) for r in b.tolist()]


def unpack_words(words, kind, lanes):
    """Inverse of :func:`pack_rows`: int64 array [len(words), lanes] (``raw``: the ints)."""
    if kind == "raw":
        return list(words)
    step = {"int8": 8, "int32": 32}.get(kind)
    if step is None:
        raise ValueError(f"kind={kind!r} must be one of {KINDS}")
    mask, sign = (1 << step) - 1, 1 << (step - 1)
    out = np.zeros((len(words), lanes), np.int64)
    for r, w in enumerate(words):
        for i in range(lanes):
            v = (w >> (step * i)) & mask
            out[r, i] = v - (1 << step) if v & sign else v
    return out


class AccelDriver:
    """Drives a SimTop instance ``dut`` built from ``config`` (a :class:`cdmqta.hw.config.QTAConfig`).

    ``host_words`` / ``cmd_words`` must be the sizes the SimTop was generated with (for range checks here).
    """

    def __init__(self, dut, config, host_words, cmd_words, clock_ns=10):
        self.dut, self.config = dut, config
        self.lanes = config.lanes
        self.host_words, self.cmd_words = host_words, cmd_words
        self.clock_ns = clock_ns
        self._clock = None

    async def reset(self, start_clock=True, cycles=3):
        """Start the clock (unless the testbench runs its own) and hold ``rst`` for ``cycles`` cycles."""
        from cocotb.clock import Clock
        from cocotb.triggers import ClockCycles, RisingEdge

        dut = self.dut
        if start_clock and self._clock is None:
            self._clock = Clock(dut.clk, self.clock_ns, unit="ns")
            self._clock.start()
        dut.start.value = 0
        dut.n_cmds.value = 0
        dut.cmd_we.value = 0
        dut.cmd_waddr.value = 0
        dut.cmd_wdata.value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, cycles)
        dut.rst.value = 0
        await RisingEdge(dut.clk)

    # -- host memory --------------------------------------------------------------------------------------

    def _check_range(self, addr, count):
        if addr < 0 or addr + count > self.host_words:
            raise ValueError(f"host words {addr}..{addr + count - 1} outside the host memory (0..{self.host_words - 1})")

    def write_host(self, word_addr, rows, kind="int8"):
        """Write rows (int array [rows, <= lanes], or ints for ``raw``) at host word ``word_addr`` onward."""
        words = pack_rows(rows, kind, self.lanes)
        self._check_range(word_addr, len(words))
        mem = self.dut.host_mem
        for i, w in enumerate(words):
            mem[word_addr + i].value = w

    def read_host(self, word_addr, count, kind="int32"):
        """Read ``count`` host words from ``word_addr`` as an int64 array [count, lanes] (``raw``: ints)."""
        self._check_range(word_addr, count)
        mem = self.dut.host_mem
        return unpack_words([int(mem[word_addr + i].value) for i in range(count)], kind, self.lanes)

    def clear_host(self, word_addr=0, count=None):
        count = self.host_words - word_addr if count is None else count
        self._check_range(word_addr, count)
        mem = self.dut.host_mem
        for i in range(count):
            mem[word_addr + i].value = 0

    # -- running --------------------------------------------------------------------------------------------

    async def run(self, program, timeout_cycles=None):
        """Load ``program`` (128-bit ints) into the command memory, start it and wait for ``done``.

        Returns {"status": hw.isa.Status, "error_index": int or None, "cycles": busy cycles, "macs",
        "stall_cycles", "compute_cycles"}. Raises TimeoutError if ``done`` does not rise in time (default
        timeout: 1000 + 100 cycles per command + 4 per host word, generous).
        """
        from cocotb.triggers import First, RisingEdge, Timer

        from ..hw.isa import Status

        program = [int(w) for w in program]
        if len(program) > self.cmd_words:
            raise ValueError(f"program of {len(program)} commands exceeds the command memory ({self.cmd_words})")
        dut = self.dut
        mem = dut.cmd_mem
        for i, w in enumerate(program):
            mem[i].value = w
        await RisingEdge(dut.clk)
        dut.n_cmds.value = len(program)
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        await RisingEdge(dut.clk)
        if timeout_cycles is None:
            timeout_cycles = 1000 + 100 * len(program) + 4 * self.host_words + 70000
        if not int(dut.done.value):
            done = RisingEdge(dut.done)
            res = await First(done, Timer(timeout_cycles * self.clock_ns, unit="ns"))
            if res is not done:
                raise TimeoutError(f"the accelerator did not finish within {timeout_cycles} cycles")
        await RisingEdge(dut.clk)
        status = Status(int(dut.status.value))
        return {
            "status": status,
            "error_index": int(dut.error_index.value) if status != Status.OK else None,
            "cycles": int(dut.busy_cycles.value),
            "macs": int(dut.macs.value),
            "stall_cycles": int(dut.stall_cycles.value),
            "compute_cycles": int(dut.compute_cycles.value),
        }
