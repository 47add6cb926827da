"""Symmetric max-abs quantization (INT8, INT4) and the float-scale -> (multiplier, shift) conversion.

The paper's scheme: ``S = max|x| / (2**(b-1) - 1)``, ``q = round(x / S)`` clamped to ``+-(2**(b-1) - 1)``, no zero
point. Scales are per tensor (the paper's) or per channel (one scale per index along ``dim``).

Host-side quantization of float tensors (inputs X, incoming gradients dY, LoRA weights A/B, frozen W0) is
computed in float64: ``x / S`` is one correctly rounded IEEE division, so the integers are reproducible on any
machine (and equal a Python-float reference). Rounding is nearest-even, or stochastic: ``q = floor(x / S + u)``
with ``u = sr_hash(seed, i, j) / 2**32`` -- the same counter-based hash as the hardware epilogue
(:func:`cdmqta.sw.model.requant.sr_hash`), keyed by the element's coordinates in the tensor's 2-D view ``[-1, last]``.

Requantizing an INT32 accumulator (a tensor that feeds a later GEMM) is integer work and belongs to the engine
(:func:`cdmqta.sw.model.requant.requantize`); :func:`requant_params` derives its (mult, shift) from the accumulator's
integer max-abs alone, and :func:`quantize_multiplier` turns any positive scale into the epilogue's 16-bit
multiplier and shift.
"""

import math
from fractions import Fraction

import torch

from cdmqta.hw.isa import MULT_BITS, SHIFT_MAX, qmax

from .requant import sr_hash

__all__ = [
    "BITS", "qmax", "absmax", "scale_for", "quantize", "quantize_tensor", "dequantize",
    "quantize_multiplier", "multiplier_value", "requant_params",
]

BITS = {"int8": 8, "int4": 4}


def _bits(bits):
    bits = BITS.get(bits, bits)
    if bits not in (4, 8):
        raise ValueError(f"bits={bits!r} must be 8 or 4 (or 'int8'/'int4')")
    return bits


def _channel_dims(x, dim):
    if dim is None:
        return None
    dim = dim % x.dim() if x.dim() else 0
    return tuple(d for d in range(x.dim()) if d != dim)


def absmax(x, dim=None):
    """max|x| over the whole tensor (dim=None) or per channel along ``dim`` (kept as a broadcastable shape)."""
    dims = _channel_dims(x, dim)
    if dims is None:
        return x.detach().abs().max()
    if not dims:
        return x.detach().abs()
    return x.detach().abs().amax(dim=dims, keepdim=True)


def scale_for(x, bits=8, dim=None):
    """Symmetric max-abs scale ``max|x| / qmax(bits)``, computed in float64; an all-zero tensor/channel gets 1.

    Per tensor (dim=None): a Python float. Per channel: a float64 tensor of x's shape with ``dim`` kept and
    every other dimension 1 (broadcastable). Raises ValueError if x holds inf/nan.
    """
    bits = _bits(bits)
    if not x.dtype.is_floating_point:
        raise ValueError("scale_for takes a float tensor")
    amax = absmax(x, dim)
    if dim is None:
        amax = float(amax) if x.numel() else 0.0
        if not math.isfinite(amax):
            raise ValueError("cannot quantize a tensor with inf/nan values")
        return amax / qmax(bits) if amax > 0 else 1.0
    amax = amax.to(torch.float64)
    if not bool(torch.isfinite(amax).all()):
        raise ValueError("cannot quantize a tensor with inf/nan values")
    return torch.where(amax > 0, amax / qmax(bits), torch.ones_like(amax))


def quantize(x, scale, bits=8, rounding="nearest", seed=0, check=True):
    """Integers (int8 tensor) of float ``x`` at ``scale`` (float or broadcastable tensor), clamped symmetric.

    nearest: round half to even of ``x / scale``; stochastic: ``floor(x / scale + sr_hash(seed, i, j) / 2**32)``
    with (i, j) the coordinates in the 2-D view ``x.reshape(-1, x.shape[-1])``. ``check=False`` skips the
    argument checks (for callers whose scale comes from :func:`scale_for`).
    """
    bits = _bits(bits)
    if check:
        if rounding not in ("nearest", "stochastic"):
            raise ValueError(f"rounding={rounding!r} must be 'nearest' or 'stochastic'")
        if not x.dtype.is_floating_point:
            raise ValueError("quantize takes a float tensor")
        st = torch.as_tensor(scale, dtype=torch.float64)
        if bool((st <= 0).any()) or not bool(torch.isfinite(st).all()):
            raise ValueError("quantization scale must be positive and finite")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("cannot quantize a tensor with inf/nan values")
    v = x.detach().to(torch.float64) / scale
    if rounding == "nearest":
        q = torch.round(v)  # round half to even
    else:
        shape = v.shape
        cols = shape[-1] if v.dim() else 1
        v2 = v.reshape(-1, cols)
        i = torch.arange(v2.shape[0], dtype=torch.int64).view(-1, 1)
        j = torch.arange(cols, dtype=torch.int64).view(1, -1)
        u = sr_hash(seed, i, j).to(torch.float64) * 2.0 ** -32
        q = torch.floor(v2 + u).reshape(shape)
    lim = qmax(bits)
    return q.clamp_(-lim, lim).to(torch.int8)


def quantize_tensor(x, bits=8, dim=None, rounding="nearest", seed=0):
    """(q, scale): max-abs scale per tensor (dim=None: scale is a Python float) or per channel along dim."""
    if rounding not in ("nearest", "stochastic"):
        raise ValueError(f"rounding={rounding!r} must be 'nearest' or 'stochastic'")
    s = scale_for(x, bits, dim)
    return quantize(x, s, bits, rounding, seed, check=False), s


def dequantize(q, scale):
    """Float32 values ``q * scale`` (scale: float or broadcastable tensor)."""
    return (q.to(torch.float64) * torch.as_tensor(scale, dtype=torch.float64)).to(torch.float32)


def quantize_multiplier(scale):
    """(mult, shift) with ``mult * 2**-shift`` the nearest representable value to ``scale`` > 0.

    mult is 1..65535 (16 bit) and normalized to [2**15, 2**16) whenever the shift range allows, shift is 0..47,
    exactly the epilogue's fields. ``scale`` may be a float, int or Fraction; the rounding (half to even) is
    exact rational arithmetic, so the result is reproducible.

    Error bound:
    - 2**-32 <= scale < 65535.5 (normalized): ``|mult * 2**-shift - scale| <= 2**(e-16) <= scale * 2**-16``
      with e = floor(log2(scale)) (half an ulp of a 16-bit mantissa), i.e. relative error at most 2**-16;
    - scale < 2**-32: shift clamps to 47, absolute error at most 2**-47 (mult >= 1, so the smallest nonzero
      value 2**-47 stands in for anything below it: with |acc| < 2**40 that still requantizes to 0 under
      nearest rounding);
    - scale >= 65535.5: (65535, 0), the largest multiplier (any nonzero accumulator saturates anyway).
    """
    if isinstance(scale, torch.Tensor):
        scale = scale.item()
    try:
        f = Fraction(scale)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"scale={scale!r} must be a positive finite number") from None
    if f <= 0:
        raise ValueError(f"scale={scale!r} must be positive")
    # e = floor(log2 f), exactly.
    e = f.numerator.bit_length() - f.denominator.bit_length()
    if Fraction(2) ** e > f:
        e -= 1
    top = 1 << MULT_BITS
    shift = (MULT_BITS - 1) - e
    shift = min(max(shift, 0), SHIFT_MAX)
    mult = round(f * (1 << shift))  # Fraction.__round__: half to even
    if mult >= top:
        if shift > 0 and mult == top:
            mult, shift = top >> 1, shift - 1
        else:
            mult = top - 1
    return max(int(mult), 1), int(shift)


def multiplier_value(mult, shift):
    """Exact rational value ``mult * 2**-shift`` of an epilogue multiplier."""
    return Fraction(int(mult), 1 << int(shift))


def requant_params(acc_amax, bits=8):
    """(mult, shift) mapping an accumulator whose max |value| is ``acc_amax`` onto the full INT8/INT4 range.

    The dynamic max-abs scale of the requantized tensor is ``S_out = S_in * acc_amax / qmax``, so the epilogue
    multiplier ``S_in / S_out = qmax / acc_amax`` depends only on the integer ``acc_amax``: no float decides it.
    An all-zero accumulator gets (1, 0). The effective output scale is ``S_in / multiplier_value(mult, shift)``.
    """
    bits = _bits(bits)
    acc_amax = int(acc_amax)
    if acc_amax < 0:
        raise ValueError("acc_amax must be >= 0")
    if acc_amax == 0:
        return 1, 0
    return quantize_multiplier(Fraction(qmax(bits), acc_amax))
