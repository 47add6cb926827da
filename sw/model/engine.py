"""The engine interface: how the quantized LoRA model hands its integer work to an executor.

The golden model (``cdmqta.sw.model.lora``) never multiplies integer matrices itself: it calls an engine, which sees
each GEMM with its name and operands, and each requantization with its epilogue parameters. The default
:class:`TorchEngine` computes exactly in PyTorch; the runtime's ``golden`` (ISA emulator) and ``rtl`` (Verilator)
backends implement the same two methods, so a training step can run on the RTL and be compared bit for bit.

Contract (all integer, exact):
- ``gemm(name, a, b, precision)``: a is [M, K], b is [K, N], integer tensors whose values fit the precision
  (INT8: -128..127; INT4: -8..7). Returns C = a @ b as an int32 tensor [M, N] (INT32 accumulation; the caller
  keeps K small enough that it cannot overflow, see ``QTAConfig.max_k``).
- ``requant(name, acc, mult, shift, bits, rounding, seed)``: returns ``cdmqta.sw.model.requant.requantize(...)`` of the
  int32 tensor ``acc`` (origin (0, 0), not transposed), as int8.
- ``gemm_q(name, a, b, precision, segments)``: the GEMM with requantization fused into its STOREs (the scale is
  known before it runs, delayed scaling) and the amax register read back. ``segments`` is a list of
  ``(cols, mult, shift, rounding, seed)`` that split C's N columns left to right (one segment = one tensor; a fused
  GEMM of several LoRA layers has one per layer). Returns ``(q, amax)``: q [M, N] int8 with
  ``q[:, seg] = requantize(C[:, seg], mult, shift, 8, rounding, seed)`` in the segment's own coordinates (column 0
  = the segment's first column), and ``amax`` a list of ``max |C[:, seg]|`` (ints, the INT32 values before
  requantization) per segment.

Capture: with ``engine.capture = True`` every call also appends its integer tensors to ``engine.tensors`` (one
dict per entry of ``engine.log``: gemm -> {"a", "b", "out"}, requant -> {"acc", "out"}, gemm_q -> {"a", "b",
"out", "amax"}), so that a step run on one
backend can be compared with, or replayed on, another (see ``cdmqta.sw.model.lora.StepCapture``). Subclasses only
implement ``_gemm`` and ``_requant``; logging and capture live in the base class.
"""

import torch

from .requant import requantize

__all__ = ["Engine", "TorchEngine", "GemmRecord", "check_operand", "check_segments", "requant_segments"]

_RANGES = {"int8": (-128, 127), "int4": (-8, 7)}


class GemmRecord:
    """What an engine saw: one GEMM or requantization, for logging and for replay on another backend."""

    __slots__ = ("kind", "name", "m", "n", "k", "precision", "params")

    def __init__(self, kind, name, m, n, k, precision=None, params=None):
        self.kind, self.name, self.m, self.n, self.k = kind, name, m, n, k
        self.precision, self.params = precision, params or {}

    def __repr__(self):
        return f"GemmRecord({self.kind} {self.name} m={self.m} n={self.n} k={self.k} {self.precision or ''})"


def check_operand(name, x, precision):
    if precision not in _RANGES:
        raise ValueError(f"{name}: precision={precision!r} must be one of {sorted(_RANGES)}")
    if x.dtype.is_floating_point:
        raise ValueError(f"{name}: operand must be an integer tensor, got {x.dtype}")
    lo, hi = _RANGES[precision]
    if x.dtype == torch.int8 and precision == "int8":
        return  # every int8 value is in range
    if x.numel():
        xmin, xmax = (int(v) for v in torch.aminmax(x))
        if xmin < lo or xmax > hi:
            raise ValueError(f"{name}: operand values [{xmin}, {xmax}] exceed {precision} [{lo}, {hi}]")


def check_segments(name, segments, n):
    """Normalise ``gemm_q`` segments to a tuple of (cols, mult, shift, rounding, seed); they must cover N exactly."""
    out = []
    for seg in segments:
        cols, mult, shift, rounding, seed = seg
        if int(cols) < 1:
            raise ValueError(f"{name}: segment of {cols} columns")
        if rounding not in ("nearest", "stochastic"):
            raise ValueError(f"{name}: segment rounding={rounding!r} must be 'nearest' or 'stochastic'")
        out.append((int(cols), int(mult), int(shift), rounding, int(seed)))
    if sum(c for c, *_ in out) != n:
        raise ValueError(f"{name}: segments cover {sum(c for c, *_ in out)} columns, the GEMM has N={n}")
    return tuple(out)


def _gemm_shape(name, a, b, precision):
    """(m, n, k) of the GEMM ``a @ b`` after checking both operands (2-D, matching K, in ``precision``'s range)."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"{name}: cannot multiply {tuple(a.shape)} by {tuple(b.shape)}")
    check_operand(f"{name}.a", a, precision)
    check_operand(f"{name}.b", b, precision)
    return a.shape[0], b.shape[1], a.shape[1]


class Engine:
    """Base class: records every call in ``self.log``; subclasses implement ``_gemm`` and ``_requant``."""

    def __init__(self):
        self.log = []
        self.capture = False
        self.tensors = []

    def reset(self):
        """Forget the log and the captured tensors."""
        self.log = []
        self.tensors = []

    def gemm(self, name, a, b, precision="int8"):
        m, n, k = _gemm_shape(name, a, b, precision)
        self.log.append(GemmRecord("gemm", name, m, n, k, precision))
        out = self._gemm(name, a, b, precision)
        assert out.dtype == torch.int32 and tuple(out.shape) == (m, n), (name, out.dtype, out.shape)
        if getattr(self, "capture", False):
            self.__dict__.setdefault("tensors", []).append(
                {"a": a.detach().clone(), "b": b.detach().clone(), "out": out.clone()}
            )
        return out

    def requant(self, name, acc, mult, shift, bits=8, rounding="nearest", seed=0):
        params = dict(mult=int(mult), shift=int(shift), bits=int(bits), rounding=rounding, seed=int(seed))
        self.log.append(GemmRecord("requant", name, acc.shape[0], acc.shape[1], 0, None, params))
        out = self._requant(name, acc, **params)
        if getattr(self, "capture", False):
            self.__dict__.setdefault("tensors", []).append({"acc": acc.detach().clone(), "out": out.clone()})
        return out

    def gemm_q(self, name, a, b, precision, segments):
        m, n, k = _gemm_shape(name, a, b, precision)
        segments = check_segments(name, segments, n)
        self.log.append(GemmRecord("gemm_q", name, m, n, k, precision, {"segments": segments}))
        q, amax = self._gemm_q(name, a, b, precision, segments)
        amax = [int(v) for v in amax]
        assert q.dtype == torch.int8 and tuple(q.shape) == (m, n) and len(amax) == len(segments), (name, q.shape)
        if getattr(self, "capture", False):
            self.__dict__.setdefault("tensors", []).append(
                {"a": a.detach().clone(), "b": b.detach().clone(), "out": q.clone(),
                 "amax": torch.tensor(amax, dtype=torch.int64)})
        return q, amax

    def _gemm(self, name, a, b, precision):
        raise NotImplementedError

    def _gemm_q(self, name, a, b, precision, segments):
        """Default: the INT32 GEMM, then each segment requantized and its max |value| taken (exact)."""
        return requant_segments(self._gemm(name, a, b, precision), segments, self._requant, name)

    def _requant(self, name, acc, mult, shift, bits, rounding, seed):
        raise NotImplementedError


def requant_segments(acc, segments, requant, name=""):
    """(q, amax) of ``gemm_q`` from the INT32 product ``acc`` (see the module doc); ``requant`` is an engine's
    ``_requant(name, acc, mult, shift, bits, rounding, seed)``."""
    parts, amax, c0 = [], [], 0
    for cols, mult, shift, rounding, seed in segments:
        seg = acc[:, c0:c0 + cols]
        amax.append(int(seg.abs().max()) if seg.numel() else 0)
        parts.append(requant(name, seg.contiguous(), mult, shift, 8, rounding, seed))
        c0 += cols
    return torch.cat(parts, dim=1), amax


class TorchEngine(Engine):
    """Exact integer execution in PyTorch through float matmuls of integer-valued tensors.

    Every partial sum of K products of 8-bit integers is an integer of magnitude <= K * 2**14, so float32 (24-bit
    mantissa) is exact whatever the summation order while K <= 2**10, float64 while K <= 2**38. The int32
    result range is checked by the caller (K * 2**14 < 2**31).
    """

    FLOAT32_MAX_K = 1 << 10

    def _gemm(self, name, a, b, precision):
        # float32 only at full precision ("medium"/"high" may use bf16/TF32 kernels).
        fast = a.shape[1] <= self.FLOAT32_MAX_K and torch.get_float32_matmul_precision() == "highest"
        dtype = torch.float32 if fast else torch.float64
        return (a.to(dtype) @ b.to(dtype)).to(torch.int32)

    def _requant(self, name, acc, mult, shift, bits, rounding, seed):
        return requantize(acc, mult, shift, bits=bits, rounding=rounding, seed=seed)
