"""cocotb-side driver of :class:`cdmqta.hw.top.SimTop`: host memory in bulk, command programs, status, counters.

Used by the RTL testbenches (``verif/tb_accel.py``) and by the runtime's RTL backend. Everything heavy happens
in the simulator: memories are filled and read through VPI (one call per word, no clock edges) and a run waits
for the ``done`` edge, so Python never runs per cycle.

    from cdmqta.sw.rtl.driver import AccelDriver
    drv = AccelDriver(dut, config, host_words=4096, cmd_words=1024)
    await drv.reset()                                 # starts the clock (10 ns) unless start_clock=False
    drv.write_host(0, a_rows, kind="int8")            # rows: int array [rows, <= lanes]
    res = await drv.run([isa.encode(...), ...])       # -> {"status", "error_index", "cycles", counters...}
    c = drv.read_host(100, 16, kind="int32")          # -> np.int64 array [16, lanes]

Host word formats: :mod:`cdmqta.sw.runtime.hostmem` (``int8``, ``int32``, ``raw``).
"""

from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, ReadOnly, RisingEdge, Timer

from cdmqta.hw.isa import AMAX_SLOTS, Status
from cdmqta.sw.runtime.hostmem import pack_rows, unpack_words

__all__ = ["AccelDriver"]


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
            raise ValueError(
                f"host words {addr}..{addr + count - 1} outside the host memory (0..{self.host_words - 1})"
            )

    def write_words(self, word_addr, words):
        """Write host words (Python ints) at ``word_addr`` onward (one VPI call per word, no clock edge)."""
        words = list(words)
        self._check_range(word_addr, len(words))
        mem = self.dut.host_mem
        for i, w in enumerate(words):
            mem[word_addr + i].value = int(w)

    def read_words(self, word_addr, count):
        """``count`` host words from ``word_addr`` as Python ints."""
        self._check_range(word_addr, count)
        mem = self.dut.host_mem
        return [int(mem[word_addr + i].value) for i in range(count)]

    def write_host(self, word_addr, rows, kind="int8"):
        """Write rows (int array [rows, <= lanes], or ints for ``raw``) at host word ``word_addr`` onward."""
        self.write_words(word_addr, pack_rows(rows, kind, self.lanes))

    def read_host(self, word_addr, count, kind="int32"):
        """Read ``count`` host words from ``word_addr`` as an int64 array [count, lanes] (``raw``: ints)."""
        return unpack_words(self.read_words(word_addr, count), kind, self.lanes)

    def clear_host(self, word_addr=0, count=None):
        count = self.host_words - word_addr if count is None else count
        self.write_words(word_addr, [0] * count)

    # -- running --------------------------------------------------------------------------------------------

    async def run(self, program, timeout_cycles=None):
        """Load ``program`` (128-bit ints) into the command memory, start it and wait for ``done``.

        Returns {"status": hw.isa.Status, "error_index": int or None, "cycles": busy cycles, "macs",
        "stall_cycles", "compute_cycles", "amax": the amax registers (list of AMAX_SLOTS ints)}.
        Raises TimeoutError if ``done`` does not rise in time (default
        timeout: 1000 + 100 cycles per command + 4 per host word, generous).
        """
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
        # Read ``done`` once the time step has settled: right after a clock edge a four-state simulator (Icarus)
        # may still show the old value, and a RisingEdge(done) awaited after the edge it happened on never fires.
        await ReadOnly()
        if not int(dut.done.value):
            done = RisingEdge(dut.done)
            res = await First(done, Timer(timeout_cycles * self.clock_ns, unit="ns"))
            if res is not done:
                raise TimeoutError(f"the accelerator did not finish within {timeout_cycles} cycles")
        await RisingEdge(dut.clk)
        status = Status(int(dut.status.value))
        amax_bits = int(dut.amax.value)
        aw = self.config.acc_width
        return {
            "amax": [(amax_bits >> (aw * s)) & ((1 << aw) - 1) for s in range(AMAX_SLOTS)],
            "status": status,
            "error_index": int(dut.error_index.value) if status != Status.OK else None,
            "cycles": int(dut.busy_cycles.value),
            "macs": int(dut.macs.value),
            "stall_cycles": int(dut.stall_cycles.value),
            "compute_cycles": int(dut.compute_cycles.value),
        }
