"""The register map of the AXI4-Lite slave: ONE table (:data:`REGISTERS`) from which everything else is made.

From :data:`REGISTERS` come
- the hardware decoder, :class:`RegisterFile` (an AXI4-Lite slave, 32-bit registers at 4-byte offsets);
- the driver-side view, :class:`Registers` / :class:`AsyncRegisters` (field encode / decode over any ``read32`` /
  ``write32`` functions, e.g. cocotbext-axi's ``AxiLiteMaster`` or ``/dev/mem``);
- the README's register table, :func:`markdown_table`;
- the C header ``cdmqta_regs.h`` that ``cdmqta generate`` writes beside the Verilog, :func:`c_header` (offsets,
  field shifts and masks, error codes and the built configuration, like Gemmini's ``gemmini_params.h``).

Field access: ``RO`` (read-only: a hardware value, or a constant of the build), ``RW`` (stored; reads back),
``WO`` (write 1 to pulse for one cycle; reads 0), ``W1C`` (set by hardware, cleared by writing 1). A 64-bit
register (``width=64``) is two words, LO at ``offset`` and HI at ``offset + 4``; reading LO latches HI, so
software reads LO then HI and gets one consistent 64-bit value. Unmapped offsets read 0 and ignore writes (OKAY).
Writes honour WSTRB.

Software refuses hardware it was not built for by comparing ``CONFIG_HASH`` with :func:`config_hash` of its
``config.json`` (the first 32 bits, big-endian, of the file's SHA-256).
"""

import hashlib
from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from cdmqta.errors import InputError

from .axi import AXIL_ADDR_WIDTH, amba_members, axil_signature, connect_amba
from .isa import Status

__all__ = ["Field", "Reg", "REGISTERS", "VERSION", "MAGIC", "BUS_ERROR_READ", "BUS_ERROR_WRITE", "ERROR_CODES",
           "config_hash", "build_constants", "reg", "encode", "decode", "words", "Registers", "AsyncRegisters",
           "RegisterFile", "RegsHarness", "markdown_table", "c_header", "RegisterError"]

#: ID register: "QTA" and the register-map version.
MAGIC = 0x515441
VERSION = 1
#: STATUS.error codes beyond :class:`cdmqta.hw.isa.Status` (0..6): an AXI SLVERR / DECERR response.
BUS_ERROR_READ = 8       # on a read: the command fetch or a LOAD
BUS_ERROR_WRITE = 9      # on a write: a STORE
ERROR_CODES = {**{s.name: int(s) for s in Status}, "BUS_ERROR_READ": BUS_ERROR_READ,
               "BUS_ERROR_WRITE": BUS_ERROR_WRITE}


class RegisterError(InputError):
    """An unknown register or field, or a value that does not fit its field."""


@dataclass(frozen=True)
class Field:
    name: str
    lsb: int
    width: int
    access: str          # RO, RW, WO, W1C
    doc: str
    reset: int = 0
    const: str = None    # RO fields that are constants of the build: the key in build_constants()


@dataclass(frozen=True)
class Reg:
    name: str
    offset: int
    access: str          # RO, RW, W1C, WO (the register's, for the table; the fields' decide)
    fields: tuple
    doc: str
    width: int = 32      # 64: a LO / HI pair (see the module docstring)


def _f(name, lsb, width, access, doc, **kw):
    return Field(name, lsb, width, access, doc, **kw)


REGISTERS = (
    Reg("ID", 0x000, "RO", (_f("version", 0, 8, "RO", "register-map version", const="version"),
                            _f("magic", 8, 24, "RO", "0x515441 (\"QTA\")", const="magic")),
        "identification"),
    Reg("CONFIG", 0x004, "RO", (_f("rows", 0, 8, "RO", "array rows R", const="rows"),
                                _f("cols", 8, 8, "RO", "array columns C", const="cols"),
                                _f("int4", 16, 1, "RO", "INT4 mode built", const="int4"),
                                _f("ws", 17, 1, "RO", "weight-stationary dataflow built", const="ws"),
                                _f("os", 18, 1, "RO", "output-stationary dataflow built", const="os"),
                                _f("shift_lanes", 19, 2, "RO", "shift-chain lanes", const="shift_lanes")),
        "the built array"),
    Reg("BUS", 0x008, "RO", (_f("bus_bytes", 0, 8, "RO", "AXI4 data width in bytes", const="bus_bytes"),
                             _f("max_reads", 8, 8, "RO", "read bursts in flight", const="max_reads"),
                             _f("addr_width", 16, 8, "RO", "AXI4 address width in bits", const="addr_width"),
                             _f("lanes", 24, 8, "RO", "scratchpad lanes max(R, C)", const="lanes")),
        "the built system interface"),
    Reg("CONFIG_HASH", 0x00C, "RO", (_f("hash", 0, 32, "RO", "first 32 bits of SHA-256(config.json)",
                                        const="config_hash"),),
        "identifies the exact configuration the hardware was built from"),
    Reg("CTRL", 0x010, "RW", (_f("start", 0, 1, "WO", "write 1: run CMD_COUNT commands from CMD_BASE"),
                              _f("soft_reset", 1, 1, "WO", "write 1: abort and return to idle"),
                              _f("irq_enable", 2, 1, "RW", "drive the interrupt output from IRQ_STATUS")),
        "control"),
    Reg("STATUS", 0x014, "RO", (_f("busy", 0, 1, "RO", "a run is in progress"),
                                _f("done", 1, 1, "RO", "the last run finished (all write responses returned)"),
                                _f("error", 4, 4, "RO", "0 = OK, else the error code (ERROR_CODES)")),
        "state of the last run"),
    Reg("ERROR_INDEX", 0x018, "RO", (_f("index", 0, 32, "RO", "0-based index of the failing command"),),
        "valid when STATUS.error != 0"),
    Reg("IRQ_STATUS", 0x01C, "W1C", (_f("done", 0, 1, "W1C", "a run finished"),
                                     _f("error", 1, 1, "W1C", "a run finished with an error")),
        "interrupt causes; the interrupt output is high while (done or error) and CTRL.irq_enable"),
    Reg("CMD_BASE_LO", 0x020, "RW", (_f("addr", 0, 32, "RW", "byte address of the command buffer, bits 31:0"),),
        "command buffer base (16-byte commands, little-endian)"),
    Reg("CMD_BASE_HI", 0x024, "RW", (_f("addr", 0, 32, "RW", "bits 63:32 (ignored above the bus address width)"),),
        "command buffer base, high word"),
    Reg("CMD_COUNT", 0x028, "RW", (_f("count", 0, 32, "RW", "commands in the buffer"),), "command buffer length"),
    Reg("BUSY_CYCLES", 0x040, "RO", (_f("value", 0, 64, "RO", "cycles from start to done"),),
        "performance counter (64-bit)", width=64),
    Reg("MACS", 0x048, "RO", (_f("value", 0, 64, "RO", "m*n*k of the dispatched COMPUTEs"),),
        "performance counter (64-bit)", width=64),
    Reg("STALL_CYCLES", 0x050, "RO", (_f("value", 0, 64, "RO", "execute cycles waiting for a load or store"),),
        "performance counter (64-bit)", width=64),
    Reg("COMPUTE_CYCLES", 0x058, "RO", (_f("value", 0, 64, "RO", "compute beats streamed into the array"),),
        "performance counter (64-bit)", width=64),
)


def _check_table(regs):
    seen = {}
    for r in regs:
        for w in range(r.width // 32):
            off = r.offset + 4 * w
            assert off % 4 == 0 and off not in seen, (r.name, off)
            seen[off] = r.name
        used = 0
        for f in r.fields:
            assert f.access in ("RO", "RW", "WO", "W1C"), f
            mask = ((1 << f.width) - 1) << f.lsb
            assert not used & mask and f.lsb + f.width <= r.width, (r.name, f.name)
            used |= mask


_check_table(REGISTERS)
_BY_NAME = {r.name: r for r in REGISTERS}


def config_hash(config):
    """32-bit identity of a configuration: the first 4 bytes (big-endian) of SHA-256 of its ``config.json`` text."""
    return int.from_bytes(hashlib.sha256(config.to_json().encode()).digest()[:4], "big")


def build_constants(config):
    """Values of the constant fields for ``config`` (:class:`cdmqta.hw.config.QTAConfig`)."""
    return {"version": VERSION, "magic": MAGIC, "rows": config.rows, "cols": config.cols, "int4": int(config.int4),
            "ws": int("ws" in config.dataflows), "os": int("os" in config.dataflows),
            "shift_lanes": config.shift_lanes, "bus_bytes": config.bus_bytes, "max_reads": config.max_reads,
            "addr_width": config.bus_addr_width, "lanes": config.lanes, "config_hash": config_hash(config)}


# -- driver-side view ----------------------------------------------------------------------------------------

def reg(name):
    try:
        return _BY_NAME[name.upper()]
    except KeyError:
        raise RegisterError(f"no register {name!r}; registers: {', '.join(_BY_NAME)}") from None


def encode(name, **fields):
    """The register value with ``fields`` set (others 0); every value is range-checked."""
    r, value = reg(name), 0
    by = {f.name: f for f in r.fields}
    for k, v in fields.items():
        if k not in by:
            raise RegisterError(f"{r.name} has no field {k!r}; fields: {', '.join(by)}")
        f = by[k]
        if not 0 <= int(v) < (1 << f.width):
            raise RegisterError(f"{r.name}.{k}={v} does not fit in {f.width} bits")
        value |= int(v) << f.lsb
    return value


def decode(name, value):
    """{field: value} of a register value."""
    return {f.name: (value >> f.lsb) & ((1 << f.width) - 1) for f in reg(name).fields}


def words(name):
    """Byte offsets of the register's 32-bit words (LO first)."""
    r = reg(name)
    return [r.offset + 4 * i for i in range(r.width // 32)]


class Registers:
    """Register access over ``read32(offset) -> int`` and ``write32(offset, value)`` (synchronous)."""

    def __init__(self, read32, write32):
        self._r, self._w = read32, write32

    def read(self, name):
        """The register's value (64-bit registers: LO then HI)."""
        return sum(self._r(off) << (32 * i) for i, off in enumerate(words(name)))

    def fields(self, name):
        return decode(name, self.read(name))

    def write(self, name, value=None, **fields):
        value = encode(name, **fields) if value is None else value
        for i, off in enumerate(words(name)):
            self._w(off, (value >> (32 * i)) & 0xFFFFFFFF)


class AsyncRegisters:
    """As :class:`Registers` with ``async`` read32 / write32 (e.g. cocotbext-axi's AxiLiteMaster)."""

    def __init__(self, read32, write32):
        self._r, self._w = read32, write32

    async def read(self, name):
        value = 0
        for i, off in enumerate(words(name)):
            value |= (await self._r(off)) << (32 * i)
        return value

    async def fields(self, name):
        return decode(name, await self.read(name))

    async def write(self, name, value=None, **fields):
        value = encode(name, **fields) if value is None else value
        for i, off in enumerate(words(name)):
            await self._w(off, (value >> (32 * i)) & 0xFFFFFFFF)


# -- documentation and the C header ------------------------------------------------------------------------------

def markdown_table(regs=REGISTERS):
    """The README's register table."""
    lines = ["| offset | register | access | fields (bits: name access) | description |", "|---|---|---|---|---|"]
    for r in regs:
        fields = "; ".join(f"[{f.lsb + f.width - 1}:{f.lsb}] {f.name} {f.access}" if f.width > 1 else
                           f"[{f.lsb}] {f.name} {f.access}" for f in r.fields)
        off = f"`0x{r.offset:03X}`" + (f", `0x{r.offset + 4:03X}`" if r.width == 64 else "")
        doc = r.doc + "".join(f"; {f.name}: {f.doc}" for f in r.fields if f.doc)
        lines.append(f"| {off} | `{r.name}` | {r.access} | {fields} | {doc} |")
    return "\n".join(lines) + "\n"


def c_header(config, regs=REGISTERS):
    """``cdmqta_regs.h`` for ``config``: register offsets, field shifts / masks, error codes, built constants."""
    out = ["/* cdmqta_regs.h -- generated by `cdmqta generate` from cdmqta.hw.regs.REGISTERS; do not edit. */",
           "#ifndef CDMQTA_REGS_H", "#define CDMQTA_REGS_H", "", "/* Register byte offsets from the AXI4-Lite base. */"]
    for r in regs:
        if r.width == 64:
            out += [f"#define CDMQTA_REG_{r.name}_LO 0x{r.offset:03X}u", f"#define CDMQTA_REG_{r.name}_HI "
                    f"0x{r.offset + 4:03X}u  /* read _LO first: it latches _HI */"]
        else:
            out.append(f"#define CDMQTA_REG_{r.name} 0x{r.offset:03X}u")
    out += ["", "/* Fields: value = (reg & MASK) >> SHIFT. */"]
    for r in regs:
        if r.width == 64:
            continue
        for f in r.fields:
            p = f"CDMQTA_{r.name}_{f.name.upper()}"
            out += [f"#define {p}_SHIFT {f.lsb}u", f"#define {p}_MASK 0x{((1 << f.width) - 1) << f.lsb:08X}u"]
    out += ["", "/* STATUS.error codes. */"]
    out += [f"#define CDMQTA_ERROR_{k} {v}u" for k, v in ERROR_CODES.items()]
    out += ["", "/* The configuration this hardware was built from (compare with the CONFIG / BUS / CONFIG_HASH "
            "registers). */"]
    for k, v in build_constants(config).items():
        out.append(f"#define CDMQTA_BUILT_{k.upper()} 0x{v:X}u")
    out += [f"#define CDMQTA_BUILT_SP_ROWS {config.sp_rows}u", f"#define CDMQTA_BUILT_ACC_ROWS {config.acc_rows}u",
            f"#define CDMQTA_BUILT_ACC_WIDTH {config.acc_width}u", "", "#endif /* CDMQTA_REGS_H */", ""]
    return "\n".join(out)


# -- the hardware decoder ------------------------------------------------------------------------------------------

def _port(r, f):
    return f"{r.name.lower()}_{f.name}"


class RegisterFile(wiring.Component):
    """The AXI4-Lite register slave of :data:`REGISTERS` for ``config``.

    Members: ``axil`` In(:func:`~cdmqta.hw.axi.axil_signature`); per field (``<reg>_<field>``, lower case): RO
    (not constant) In(width), RW Out(width) (the stored value), WO Out(1) (a one-cycle pulse, the cycle after the
    write), W1C In(width) ``<reg>_<field>_set`` (pulses that set bits) and Out(width) ``<reg>_<field>`` (the
    status); a 64-bit RO register is one In(64) ``<reg>_value``.

    Timing: a write takes effect (and its B response is offered) the cycle after both AW and W have been
    accepted; a read answers the cycle after AR. One access of each kind at a time.
    """

    def __init__(self, config, regs=REGISTERS):
        self._regs, self._consts = regs, build_constants(config)
        members = {"axil": In(axil_signature())}
        for r in regs:
            for f in r.fields:
                if f.access == "RO" and f.const is None:
                    members[_port(r, f)] = In(f.width)
                elif f.access in ("RW", "WO"):
                    members[_port(r, f)] = Out(f.width, init=f.reset)
                elif f.access == "W1C":
                    members[_port(r, f)] = Out(f.width)
                    members[_port(r, f) + "_set"] = In(f.width)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        bus = self.axil

        # Write: AW and W are taken independently, the register written once both are in.
        aw_full, w_full = Signal(), Signal()
        aw_addr, w_data, w_strb = Signal(AXIL_ADDR_WIDTH), Signal(32), Signal(4)
        m.d.comb += [bus.awready.eq(~aw_full), bus.wready.eq(~w_full)]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [aw_full.eq(1), aw_addr.eq(bus.awaddr)]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [w_full.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        do_write = aw_full & w_full & ~bus.bvalid
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)
        with m.If(do_write):
            m.d.sync += [bus.bvalid.eq(1), aw_full.eq(0), w_full.eq(0)]
        m.d.comb += bus.bresp.eq(0)
        bitmask = Cat(*[w_strb[i].replicate(8) for i in range(4)])
        wmask = Signal(32)
        m.d.comb += wmask.eq(w_data & bitmask)
        w_index = aw_addr[2:]

        # Read: one word per AR, LO words of 64-bit registers latch their HI word.
        m.d.comb += [bus.arready.eq(~bus.rvalid), bus.rresp.eq(0)]
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        ar_fire = bus.arvalid & bus.arready
        r_index = bus.araddr[2:]
        rdata = Signal(32)

        for r in self._regs:
            word = r.offset >> 2
            if r.width == 64:
                value = getattr(self, f"{r.name.lower()}_value")
                hi = Signal(32, name=f"{r.name.lower()}_hi_latch")
                with m.If(ar_fire & (r_index == word)):
                    m.d.sync += hi.eq(value[32:])
                with m.If(r_index == word):
                    m.d.comb += rdata.eq(value[:32])
                with m.If(r_index == word + 1):
                    m.d.comb += rdata.eq(hi)
                continue
            parts = []
            for f in r.fields:
                sl = slice(f.lsb, f.lsb + f.width)
                if f.access == "RO":
                    v = Const(self._consts[f.const], f.width) if f.const else getattr(self, _port(r, f))
                    parts.append((f, v))
                elif f.access == "RW":
                    store = getattr(self, _port(r, f))
                    with m.If(do_write & (w_index == word)):
                        m.d.sync += store.eq((store & ~bitmask[sl]) | wmask[sl])
                    parts.append((f, store))
                elif f.access == "WO":
                    pulse = getattr(self, _port(r, f))
                    m.d.sync += pulse.eq(0)
                    with m.If(do_write & (w_index == word)):
                        m.d.sync += pulse.eq(wmask[sl])
                elif f.access == "W1C":
                    status, setp = getattr(self, _port(r, f)), getattr(self, _port(r, f) + "_set")
                    clear = Signal(f.width, name=f"{_port(r, f)}_clear")
                    with m.If(do_write & (w_index == word)):
                        m.d.comb += clear.eq(wmask[sl])
                    m.d.sync += status.eq((status & ~clear) | setp)
                    parts.append((f, status))
            value = Signal(32, name=f"{r.name.lower()}_rd")
            for f, v in parts:
                m.d.comb += value[f.lsb:f.lsb + f.width].eq(v)
            with m.If(r_index == word):
                m.d.comb += rdata.eq(value)
        with m.If(ar_fire):
            m.d.sync += [bus.rvalid.eq(1), bus.rdata.eq(rdata)]
        return m


class RegsHarness(wiring.Component):
    """Test top: :class:`RegisterFile` with its bus as ``s_axil_*`` ports; every hardware-side member of the
    register file is a port of the same name."""

    def __init__(self, config):
        self._rf = RegisterFile(config)
        hw = {k: v for k, v in self._rf.signature.members.items() if k != "axil"}
        super().__init__({**amba_members("s_axil", axil_signature(), flipped=True), **hw})

    def elaborate(self, platform):
        m = Module()
        rf = m.submodules.regs = self._rf
        connect_amba(m, self, "s_axil", rf.axil)
        for name, member in rf.signature.members.items():
            if name == "axil":
                continue
            outer, inner = getattr(self, name), getattr(rf, name)
            m.d.comb += outer.eq(inner) if member.flow == Out else inner.eq(outer)
        return m

