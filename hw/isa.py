"""The command set of the accelerator: one definition that the hardware decoder and the software encoder read.

A command is 128 bits. Bits [3:0] hold the opcode; the fields of each opcode follow from bit 4 upward, LSB
first, in the order of :data:`FIELDS`. The hardware builds its ``data.StructLayout`` views from the same table
(``cdmqta.hw.controller.command_layout(op)``), so encoder and decoder cannot drift.

Memory model (see README, "ISA"):
- Host memory is word-addressed; one host word holds one array row and is ``32 * lanes`` bits wide, with
  ``lanes = max(rows, cols)``. An INT32 row uses all of it (bits [32j+31:32j] = column j). An INT8 or packed-INT4
  row uses the low ``8 * lanes`` bits (bits [8i+7:8i] = lane i); the upper bits are ignored on LOAD and written as
  zero by STORE. STORE with out=INT4 writes one sign-extended INT4 value per byte lane (software packs along K).
  STORE writes lanes 0..cols-1 of each row; lanes >= cols are written as zero.
- Scratchpad row ``a`` holds ``lanes`` 8-bit lanes. Accumulator row ``a`` holds ``cols`` lanes of ``acc_width``.
- INT4 operands are packed along K: byte = (elem[2t+1] << 4) | (elem[2t] & 0xF); an odd K is padded with a zero
  nibble. In INT4 precision ``k`` counts INT4 elements, so one lane carries two of them.

Tile semantics of COMPUTE (C[m x n] (+)= A[m x k] . B[k x n]):
- WS: PRELOAD put B (k rows at ``b_addr``, row i = B[i, 0..n-1]) in the array; COMPUTE streams A from ``a_addr``,
  m rows, row t = A[t, 0..k-1] on lanes 0..k-1 (k <= rows; <= 2*rows in INT4), n <= cols.
- OS: COMPUTE streams k steps (k/2 rounded up in INT4): scratchpad row ``a_addr + t`` = A[0..m-1, t] (m <= rows),
  row ``b_addr + t`` = B[t, 0..n-1] (n <= cols). The result stays in the array until it drains.
- Either way, the m x n result goes to accumulator rows ``c_addr .. c_addr+m-1`` (lanes 0..n-1), overwriting them
  or, with ``accumulate=1``, adding to them (split K).
- IS is WS on the transposed problem (C^T = B^T . A^T): no extra hardware, the runtime lays out the operands.
"""

import enum

import numpy as np

from cdmqta.errors import InputError

__all__ = ["Op", "Dataflow", "Precision", "Rounding", "OutFormat", "Status", "FIELDS", "CMD_BITS",
           "encode", "decode", "to_words", "from_words", "field_offsets", "IsaError",
           "MULT_BITS", "SHIFT_MAX", "SR_WEYL", "SR_SHIFTS", "SR_ROUNDS", "qmax", "pack_int4", "unpack_int4",
           "pack_k"]

CMD_BITS = 128
OPCODE_BITS = 4

# -- limits of the requantization epilogue (read by the hardware, the emulator, the tiler and the requantizer) --
#: Bits of the epilogue's fixed-point multiplier (CONFIG.mult): 1 .. 2**MULT_BITS - 1.
MULT_BITS = 16
#: Largest right shift of the epilogue (CONFIG.shift is 6 bits; 48..63 are BAD_FIELD).
SHIFT_MAX = 47
#: Stochastic-rounding hash ``sr_hash(seed, i, j)``: x = seed ^ (i mod 2**16) << 16 | (j mod 2**16), then
#: SR_ROUNDS times: x ^= x << a; x ^= x >> b; x ^= x << c (32 bit, (a, b, c) = SR_SHIFTS); x += SR_WEYL.
SR_WEYL = 0x9E3779B9
SR_SHIFTS = (13, 17, 5)
SR_ROUNDS = 3
#: The amax registers: STOREs track max |acc| (the accumulator values before requantization, lanes < cols) in
#: register CONFIG.amax_slot; all of them are cleared by ``start`` (per run) and read by the host after ``done``.
AMAX_SLOT_BITS = 5
AMAX_SLOTS = 1 << AMAX_SLOT_BITS


def qmax(bits):
    """Largest magnitude of a symmetric signed ``bits``-bit integer: 127 for INT8, 7 for INT4."""
    return (1 << (bits - 1)) - 1


# -- the INT4 operand format: two signed INT4 values per byte, low nibble first (see the module docstring) --------

def pack_int4(lo, hi):
    """Byte of two INT4 values (ints or integer arrays): ``(hi & 0xF) << 4 | (lo & 0xF)``, in 0..255."""
    return ((hi & 0xF) << 4) | (lo & 0xF)


def unpack_int4(b):
    """(low, high) sign-extended INT4 values (int64 arrays) of bytes ``b`` (any integer array, taken mod 256)."""
    b = np.asarray(b).astype(np.int64) & 0xFF
    return ((b & 0xF) ^ 8) - 8, ((b >> 4) ^ 8) - 8


def pack_k(x, precision, axis):
    """Bytes (uint8) of an integer array along K = ``axis``: INT8 as is (mod 256), INT4 two per byte (element 2t in
    the low nibble of byte t, an odd K padded with a zero nibble). ``precision``: "int8"/"int4" or
    :class:`Precision`."""
    x = np.asarray(x, dtype=np.int64)
    if precision in ("int8", Precision.INT8):
        return (x & 0xFF).astype(np.uint8)
    x = np.moveaxis(x, axis, 0)
    if x.shape[0] % 2:
        x = np.concatenate([x, np.zeros((1,) + x.shape[1:], np.int64)])
    return np.moveaxis(pack_int4(x[0::2], x[1::2]).astype(np.uint8), 0, axis)


class IsaError(InputError):
    """A command that cannot be encoded (unknown opcode, unknown field, value out of its field's range)."""


class Op(enum.IntEnum):
    NOP = 0
    CONFIG = 1     # set dataflow-independent state: precision, requantization multiplier/shift, rounding, seed
    LOAD = 2       # host memory -> scratchpad (INT8/packed INT4 rows) or -> accumulator (INT32 rows)
    PRELOAD = 3    # WS: load B tile (k rows from the scratchpad) into the array's shadow weight buffer
    COMPUTE = 4    # run one tile in the given dataflow into the accumulator (overwrite or accumulate)
    STORE = 5      # accumulator -> epilogue (INT32 pass-through or requantize to INT8/INT4) -> host memory
    FENCE = 6      # wait until every earlier command has completed


class Dataflow(enum.IntEnum):
    WS = 0
    OS = 1


class Precision(enum.IntEnum):
    INT8 = 0
    INT4 = 1


class Rounding(enum.IntEnum):
    NEAREST_EVEN = 0
    STOCHASTIC = 1


class OutFormat(enum.IntEnum):
    INT32 = 0
    INT8 = 1
    INT4 = 2


class Status(enum.IntEnum):
    """Error codes of the status register (0 = no error). The controller stops at the first bad command."""
    OK = 0
    BAD_OPCODE = 1
    ADDR_RANGE = 2        # a scratchpad, accumulator or host address range outside the memory
    TILE_TOO_LARGE = 3    # k/m/n larger than the array can hold spatially
    ZERO_SIZE = 4         # a tile or transfer with a zero dimension
    NOT_BUILT = 5         # dataflow or precision that this configuration did not build
    BAD_FIELD = 6         # a field value outside its legal set (e.g. out format 3)


# Field tables, LSB first after the opcode. (name, width)
FIELDS = {
    Op.NOP: [],
    Op.CONFIG: [("precision", 1), ("rounding", 1), ("shift", 6), ("mult", 16), ("seed", 32),
                ("amax_slot", AMAX_SLOT_BITS)],
    Op.LOAD: [("to_acc", 1), ("sp_addr", 16), ("rows", 16), ("host_addr", 32), ("host_stride", 16)],
    Op.PRELOAD: [("b_addr", 16), ("k", 16), ("n", 8)],
    Op.COMPUTE: [("dataflow", 1), ("accumulate", 1), ("a_addr", 16), ("b_addr", 16), ("c_addr", 16),
                 ("m", 16), ("n", 8), ("k", 16)],
    Op.STORE: [("out", 2), ("transposed", 1), ("acc_addr", 16), ("rows", 16), ("cols", 8),
               ("host_addr", 32), ("host_stride", 16), ("origin_row", 16), ("origin_col", 16)],
    Op.FENCE: [],
}

for _op, _fields in FIELDS.items():
    assert OPCODE_BITS + sum(w for _, w in _fields) <= CMD_BITS, _op


def field_offsets(op):
    """{name: (lsb, width)} of an opcode's fields within the 128-bit command."""
    out, pos = {}, OPCODE_BITS
    for name, width in FIELDS[Op(op)]:
        out[name] = (pos, width)
        pos += width
    return out


def encode(op, **fields):
    """Encode one command as a 128-bit integer. Unset fields are 0; every value is range-checked."""
    try:
        op = Op(op)
    except ValueError:
        raise IsaError(f"unknown opcode {op!r}") from None
    offsets = field_offsets(op)
    unknown = sorted(set(fields) - set(offsets))
    if unknown:
        raise IsaError(f"{op.name} has no field(s) {', '.join(unknown)}; fields: {', '.join(offsets)}")
    word = int(op)
    for name, value in fields.items():
        lsb, width = offsets[name]
        value = int(value)
        if not 0 <= value < (1 << width):
            raise IsaError(f"{op.name}.{name}={value} does not fit in {width} bits (0..{(1 << width) - 1})")
        word |= value << lsb
    return word


def decode(word):
    """(Op, {field: value}) of a 128-bit command; raises IsaError for an unknown opcode."""
    code = word & ((1 << OPCODE_BITS) - 1)
    try:
        op = Op(code)
    except ValueError:
        raise IsaError(f"unknown opcode {code}") from None
    return op, {name: (word >> lsb) & ((1 << width) - 1) for name, (lsb, width) in field_offsets(op).items()}


def to_words(word):
    """A 128-bit command as four little-endian 32-bit words (the order the command port takes them)."""
    return [(word >> (32 * i)) & 0xFFFFFFFF for i in range(CMD_BITS // 32)]


def from_words(words):
    return sum((w & 0xFFFFFFFF) << (32 * i) for i, w in enumerate(words))
