"""One configuration of a generated accelerator, read by the hardware generators and by the software.

``cdmqta generate`` writes it as ``config.json`` beside the Verilog, so a runtime can never drift from the
hardware it drives. Every field is validated at construction; a bad value raises :class:`ConfigError` naming the
field, the value and the allowed range.
"""

import dataclasses
import json
import math
from dataclasses import dataclass

from cdmqta.errors import InputError

__all__ = ["QTAConfig", "ConfigError", "DATAFLOWS", "PRECISIONS", "PRESETS", "chain_lanes"]

DATAFLOWS = ("ws", "os")
PRECISIONS = ("int8", "int4")


class ConfigError(InputError):
    """An invalid configuration value (the message names field, value and allowed range)."""


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}={value!r} must be an integer in [{lo}, {hi}]")
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range: allowed [{lo}, {hi}]")


def chain_lanes(shift_lanes, rows):
    """Rows a shift beat moves on an array of ``rows`` rows whose chain has ``shift_lanes`` lanes (capped at rows)."""
    return max(1, min(shift_lanes, rows))


def _is_pow2(x):
    return x > 0 and (x & (x - 1)) == 0


@dataclass(frozen=True)
class QTAConfig:
    """A generated accelerator.

    rows, cols       -- PE array shape (R x C); rectangular allowed, 1..128 each.
    int4             -- build the INT4 mode: each 8-bit lane carries two signed INT4 values and a MAC computes
                        a0*b0 + a1*b1 per cycle (twice the K throughput). INT8 is always built.
    max_k            -- the largest reduction length K that the accumulator must hold without overflow
                        (one accumulation chain, split-K included); used to derive ``acc_width``.
    acc_width        -- accumulator width in bits; 0 means derive it from ``max_k`` (the smallest width that
                        holds max_k products of -128*-128 plus sign), at least 32 so INT32 stores are exact.
    dataflows        -- dataflows built into the array: any non-empty subset of ("ws", "os").
    sp_rows          -- scratchpad depth in rows; a row holds max(rows, cols) 8-bit lanes.
    sp_banks         -- scratchpad banks (power of two, divides sp_rows).
    acc_rows         -- accumulator memory depth in rows; a row holds ``cols`` acc_width-bit lanes.
    acc_banks        -- accumulator banks (power of two, divides acc_rows).
    host_addr_width  -- address width of the host memory port (in units of host words).
    shift_lanes      -- rows the stationary registers' shift chain moves per cycle (1 or 2; capped at ``rows``,
                        see :attr:`chain_lanes`): WS weights preload and OS results drain ``shift_lanes`` rows per
                        cycle, so a tile whose stream is shorter than the array is tall (attention head
                        dimension 40 on 64 rows) still hides its preload / drain. 2 costs one extra acc_width
                        register per PE (the chain skips a row), a fourth scratchpad read port and a second
                        accumulator write port.
    queue_depth      -- depth of each of the controller's three unit queues (load, execute, store), 2..64.
    in_flight        -- commands of one kind the scoreboard tracks in flight (a power of two, 2..64); dispatch
                        waits while that many are in flight.
    bus_width        -- data width in bits of the AXI4 master ``m_axi_*`` (a power of two, 32..512; default 128,
                        see README "System interface"). The ideal-memory SimTop does not use it.
    bus_addr_width   -- address width in bits of the AXI4 master (32..64).
    max_reads        -- read bursts the AXI read engines keep in flight (1..32).
    """

    rows: int = 8
    cols: int = 8
    int4: bool = True
    max_k: int = 65536
    acc_width: int = 0
    dataflows: tuple = ("ws", "os")
    sp_rows: int = 4096
    sp_banks: int = 4
    acc_rows: int = 1024
    acc_banks: int = 2
    host_addr_width: int = 24
    shift_lanes: int = 2
    queue_depth: int = 8
    in_flight: int = 16
    bus_width: int = 128
    bus_addr_width: int = 32
    max_reads: int = 4

    def __post_init__(self):
        _check_int("rows", self.rows, 1, 128)
        _check_int("cols", self.cols, 1, 128)
        if not isinstance(self.int4, bool):
            raise ConfigError(f"int4={self.int4!r} must be true or false")
        _check_int("max_k", self.max_k, 1, 1 << 24)
        dataflows = tuple(self.dataflows) if not isinstance(self.dataflows, str) else (self.dataflows,)
        if not dataflows or any(d not in DATAFLOWS for d in dataflows) or len(set(dataflows)) != len(dataflows):
            raise ConfigError(f"dataflows={self.dataflows!r} must be a non-empty subset of {DATAFLOWS}")
        object.__setattr__(self, "dataflows", tuple(d for d in DATAFLOWS if d in dataflows))
        needed = self.required_acc_width(self.max_k)
        if self.acc_width == 0:
            object.__setattr__(self, "acc_width", max(32, needed))
        else:
            _check_int("acc_width", self.acc_width, max(32, needed), 40)
        _check_int("sp_rows", self.sp_rows, 16, 1 << 16)
        _check_int("acc_rows", self.acc_rows, 16, 1 << 16)
        for name, banks, depth in (
            ("sp_banks", self.sp_banks, self.sp_rows),
            ("acc_banks", self.acc_banks, self.acc_rows),
        ):
            _check_int(name, banks, 1, 64)
            if not _is_pow2(banks) or depth % banks:
                raise ConfigError(f"{name}={banks} must be a power of two that divides the depth ({depth})")
        _check_int("host_addr_width", self.host_addr_width, 8, 32)
        _check_int("shift_lanes", self.shift_lanes, 1, 2)
        _check_int("queue_depth", self.queue_depth, 2, 64)
        _check_int("in_flight", self.in_flight, 2, 64)
        if not _is_pow2(self.in_flight):
            raise ConfigError(f"in_flight={self.in_flight} must be a power of two")
        _check_int("bus_width", self.bus_width, 32, 512)
        if not _is_pow2(self.bus_width):
            raise ConfigError(f"bus_width={self.bus_width} must be a power of two in [32, 512]")
        _check_int("bus_addr_width", self.bus_addr_width, 32, 64)
        _check_int("max_reads", self.max_reads, 1, 32)

    @staticmethod
    def required_acc_width(max_k):
        """Bits that hold the sum of ``max_k`` INT8 products (worst case (-128)*(-128) = 2**14) with a sign."""
        return math.ceil(math.log2(max_k * (1 << 14) + 1)) + 1

    @property
    def lanes(self):
        """8-bit lanes per scratchpad row: one row feeds either side of the array."""
        return max(self.rows, self.cols)

    @property
    def chain_lanes(self):
        """Rows the shift chain moves per shift beat: ``min(shift_lanes, rows)``."""
        return chain_lanes(self.shift_lanes, self.rows)

    @property
    def bus_bytes(self):
        """Bytes per beat of the AXI4 master."""
        return self.bus_width // 8

    @property
    def macs(self):
        return self.rows * self.cols

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["dataflows"] = list(self.dataflows)
        return d

    def to_json(self, path=None):
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown configuration field(s): {', '.join(unknown)}")
        d = dict(d)
        if "dataflows" in d:
            d["dataflows"] = tuple(d["dataflows"])
        return cls(**d)

    @classmethod
    def from_json(cls, path_or_text):
        text = path_or_text
        if not str(path_or_text).lstrip().startswith("{"):
            with open(path_or_text) as f:
                text = f.read()
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config JSON is malformed: {exc}") from None
        if not isinstance(d, dict):
            raise ConfigError("config JSON must be an object")
        return cls.from_dict(d)


#: Named configurations shared by the RTL regression, the validation scripts and the benchmarks (one home for
#: them): the default 8x8; a non-square 8x4 with small memories (operands beyond its 512-row scratchpad are
#: reloaded); a 7x5 with odd rows (two shift-chain lanes of unequal length) and one accumulator bank of odd depth;
#: a 5x3 with a one-lane shift chain.
PRESETS = {
    "8x8": QTAConfig(rows=8, cols=8),
    "8x4": QTAConfig(rows=8, cols=4, sp_rows=512, sp_banks=2, acc_rows=256, acc_banks=2, host_addr_width=16),
    "7x5": QTAConfig(rows=7, cols=5, sp_rows=512, sp_banks=2, acc_rows=255, acc_banks=1, host_addr_width=16),
    "5x3s1": QTAConfig(rows=5, cols=3, sp_rows=256, sp_banks=2, acc_rows=128, acc_banks=2, host_addr_width=16,
                       shift_lanes=1),
}

