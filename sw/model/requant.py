"""Integer requantization: the exact semantics of the hardware epilogue, as a reference in PyTorch.

Every integer that the RTL epilogue produces must equal :func:`requantize` on the same inputs, bit for bit.

    p = acc * mult                                  (acc: signed, |acc| < 2**(acc_width-1); mult: 1..65535)
    nearest-even:  q = round_half_to_even(p / 2**shift)
    stochastic:    q = floor((p + r) / 2**shift),   r = (h * 2**shift) >> 32,  h = sr_hash(seed, i, j)
    q = clamp(q, -(2**(bits-1) - 1), 2**(bits-1) - 1)      (symmetric: INT8 [-127, 127], INT4 [-7, 7])

``shift`` is 0..47 (the 6-bit field's values 48..63 are flagged BAD_FIELD by the hardware). (i, j) are the element's
coordinates in the logical output matrix, so stochastic rounding does
not depend on how the runtime tiles a GEMM: the store command carries the tile's origin (and whether it stores a
transposed tile). ``sr_hash`` is a counter-based xorshift32 generator (an LFSR over GF(2) with an added Weyl
constant between rounds, so that it is not linear in the coordinates): cheap in hardware (XORs, shifts, three
32-bit adders per lane), reproducible anywhere.
"""

import torch

from cdmqta.hw.isa import MULT_BITS, SHIFT_MAX, SR_ROUNDS, SR_SHIFTS, SR_WEYL, qmax

__all__ = ["sr_hash", "requantize"]

MASK32 = 0xFFFFFFFF


def _xorshift32(x):
    a, b, c = SR_SHIFTS
    x = x ^ ((x << a) & MASK32)
    x = x ^ (x >> b)
    x = x ^ ((x << c) & MASK32)
    return x


def sr_hash(seed, i, j):
    """32-bit pseudo-random value of element (i, j) under ``seed``; i, j are int64 tensors (broadcast).

    x = seed ^ ((i mod 2**16) << 16 | (j mod 2**16)); SR_ROUNDS (3) times: x = xorshift32(x); x = (x + SR_WEYL)
    mod 2**32 (constants in :mod:`cdmqta.hw.isa`).
    """
    i = torch.as_tensor(i, dtype=torch.int64)
    j = torch.as_tensor(j, dtype=torch.int64)
    x = (int(seed) & MASK32) ^ (((i & 0xFFFF) << 16) | (j & 0xFFFF))
    for _ in range(SR_ROUNDS):
        x = _xorshift32(x)
        x = (x + SR_WEYL) & MASK32
    return x


def _floor_shift(p, shift):
    # Arithmetic right shift floors for negative values too (torch >> on int64 is arithmetic).
    return p >> shift


def requantize(acc, mult, shift, bits=8, rounding="nearest", seed=0, origin=(0, 0), transposed=False):
    """Requantize an INT32 accumulator tile exactly as the hardware epilogue does.

    acc        -- integer tensor [rows, cols] (any integer dtype; computed in int64).
    mult       -- fixed-point multiplier, 1..65535.  shift -- right shift, 0..47.
    bits       -- 8 or 4 (symmetric saturation to +-(2**(bits-1)-1)).
    rounding   -- "nearest" (round half to even) or "stochastic" (counter-based, see module doc).
    origin     -- logical (row, col) of acc[0, 0]; with ``transposed`` acc holds a tile of C^T, i.e. acc[r, c]
                  is C[origin[1] + c, origin[0] + r] (the hash then uses C's coordinates).
    Returns an int8 tensor (INT4 results are int8 values in [-7, 7]).
    """
    if not 1 <= int(mult) < (1 << MULT_BITS):
        raise ValueError(f"mult={mult} out of range: allowed [1, {(1 << MULT_BITS) - 1}]")
    if not 0 <= int(shift) <= SHIFT_MAX:
        raise ValueError(f"shift={shift} out of range: allowed [0, {SHIFT_MAX}]")
    if bits not in (4, 8):
        raise ValueError(f"bits={bits} must be 8 or 4")
    if rounding not in ("nearest", "stochastic"):
        raise ValueError(f"rounding={rounding!r} must be 'nearest' or 'stochastic'")
    acc = torch.as_tensor(acc)
    if acc.dtype.is_floating_point:
        raise ValueError("requantize takes an integer tensor")
    p = acc.to(torch.int64) * int(mult)
    shift = int(shift)
    if shift == 0:
        q = p
    elif rounding == "nearest":
        q = _floor_shift(p, shift)
        rem = p - (q << shift)
        half = 1 << (shift - 1)
        q = q + ((rem > half) | ((rem == half) & ((q & 1) == 1))).to(torch.int64)
    else:
        rows, cols = p.shape[-2], p.shape[-1]
        r_idx = torch.arange(rows, dtype=torch.int64).view(-1, 1) + int(origin[0])
        c_idx = torch.arange(cols, dtype=torch.int64).view(1, -1) + int(origin[1])
        i, j = (c_idx, r_idx) if transposed else (r_idx, c_idx)
        h = sr_hash(seed, i, j)
        # r = (h * 2**shift) >> 32, uniform in [0, 2**shift) (< 2**47); |p| < 2**(40+16): no int64 overflow.
        r = (h << shift) >> 32 if shift <= 31 else h << (shift - 32)
        q = _floor_shift(p + r, shift)
    lim = qmax(bits)
    return q.clamp(-lim, lim).to(torch.int8)
