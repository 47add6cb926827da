"""Quantized LoRA training: the golden model of the accelerator's integer work.

``QuantLoRALinear`` wraps a frozen ``nn.Linear`` (W0, bias) with a LoRA adapter ``y = x.W0^T + s.(x.A^T).B^T``,
``s = alpha / rank``. In the quantized modes every GEMM of the step (README, "Quantized LoRA") is an integer GEMM with
INT32
accumulation handed to an engine (``cdmqta.sw.model.engine``), in this order, with these engine-call names:

    forward    gemm "H"      H  = Xq . Aq^T          [T x r],   K = in
               requant "H"   Hq = requant(H)          INT8, nearest, multiplier 127 / max|H|
               gemm "Y1"     Y1 = Hq . Bq^T           [T x out], K = r
               gemm "Y0"     Y0 = Xq . W0q^T          [T x out], K = in
    backward   gemm "dH"     dH = dYq . Bq            [T x r],   K = out
               requant "dH"  dHq = requant(dH)        INT8, nearest or stochastic (seeded)
               gemm "dB"     dB = dYq^T . Hq          [out x r], K = T     INT32 -> host (FP32 master B)
               gemm "dA"     dA = dHq^T . Xq          [r x in],  K = T     INT32 -> host (FP32 master A)
               gemm "dX0"    dX0 = dYq . W0q          [T x in],  K = out   (only if the input needs a gradient)
               gemm "dXlora" dXl = dHq . Aq           [T x in],  K = r     (idem)

A layer created by :func:`add_lora` prefixes the names with its module path: ``"down_blocks.0...to_k:H"``
(``name.rsplit(":", 1)[-1]`` is the GEMM). Leading dims of the input are flattened to T rows.

Quantization (``cdmqta.sw.model.quant``): symmetric max-abs, INT8, per tensor for X, A, B, dY (the paper's); the frozen
W0 is quantized once, per tensor ("int8") or per output channel ("int8-w4", INT4 values in [-7, 7]). INT4 choice:
"int8-w4" keeps X in INT8 and runs the INT4 *values* of W0 in the array's INT8 lanes (engine precision "int8");
the array's packed INT4 mode needs both operands INT4, which would put the activations in INT4 too. With a
per-channel W0 the backward GEMM dX0 cannot factor W0's scales out of its sum over ``out``, so it uses
``dY * S_w`` quantized on its own ("dYw") instead of dYq (the engine names stay the same).

Requantization of H and dH (the INT8 tensors that feed later GEMMs) is done by the engine from the INT32
accumulator; the multiplier is ``qmax / max|acc|`` converted by ``quantize_multiplier`` -- integers only. LoRA's
``alpha / r`` (and every other float scale) stays in the tensor's host-side scale: with a dynamic max-abs output
scale it cancels out of the multiplier. Floats appear only at the boundary: scales (float64, deterministic),
FP32 outputs/gradients handed back to autograd, FP32 master weights and any torch optimizer.

Stochastic rounding (``rounding="stochastic"``) applies to the gradient path (dY, dYw on the host, dH in the
epilogue), seeded from (layer seed, step counter, tensor), so a run is reproducible and replayable on hardware.
"""

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from .engine import Engine, TorchEngine
from .quant import dequantize, multiplier_value, quantize, quantize_tensor, requant_params, scale_for

__all__ = [
    "MODES", "GEMMS", "QuantLoRALinear", "add_lora", "lora_layers", "StepCapture", "capture", "reference_step",
]

MODES = ("fp32", "int8", "int8-w4")
GEMMS = ("H", "Y1", "Y0", "dH", "dB", "dA", "dX0", "dXlora")
ROUNDINGS = ("nearest", "stochastic")
# Largest reduction length whose INT8 x INT8 sum cannot overflow INT32: K * 2**14 < 2**31.
MAX_K = (1 << 17) - 1


def _seed(base, step, kind):
    """Deterministic 32-bit seed of one stochastic-rounding site (layer seed, step counter, tensor kind)."""
    return (int(base) * 0x9E3779B1 + int(step) * 0x85EBCA77 + int(kind) * 0xC2B2AE3D + 0x27D4EB2F) & 0xFFFFFFFF


def _scale(scale, factor, dtype):
    """``scale * factor`` as a Python float (per tensor) or a ``dtype`` tensor (per channel)."""
    if isinstance(scale, torch.Tensor):
        return (scale * factor).to(dtype)
    return float(scale) * factor


class _QuantLoRAFunction(torch.autograd.Function):
    """Forward and backward of one quantized LoRA linear layer on 2-D input [T, in]; see the module doc."""

    @staticmethod
    def forward(ctx, x, lora_a, lora_b, layer):
        eng, p = layer.engine, layer._prefix
        t = x.shape[0]
        if max(t, layer.in_features, layer.out_features) > MAX_K:
            raise ValueError(f"{layer.name or 'QuantLoRALinear'}: a GEMM reduction length exceeds {MAX_K} "
                             f"(T={t}, in={layer.in_features}, out={layer.out_features}): INT32 could overflow")
        step = layer._step
        layer._step += 1
        xq, s_x = quantize_tensor(x, 8)
        aq, s_a = quantize_tensor(lora_a, 8)
        bq, s_b = quantize_tensor(lora_b, 8)
        s_x, s_a, s_b = float(s_x), float(s_a), float(s_b)

        h_acc = eng.gemm(p + "H", xq, aq.t().contiguous(), "int8")
        mult, shift = requant_params(h_acc.abs().max())
        hq = eng.requant(p + "H", h_acc, mult, shift, 8, "nearest", 0)
        s_h = s_x * s_a / float(multiplier_value(mult, shift))
        y1_acc = eng.gemm(p + "Y1", hq, bq.t().contiguous(), "int8")
        y0_acc = eng.gemm(p + "Y0", xq, layer.w0q_t, "int8")

        # dequantize on the host: int32 * float scale promotes straight to the float dtype (no int64/float64 copies)
        y = (y0_acc * _scale(layer.w0_scale_row, s_x, x.dtype)).to(x.dtype)
        y.add_(y1_acc, alpha=layer.scaling * s_h * s_b)
        if layer.base.bias is not None:
            y = y + layer.base.bias
        ctx.layer = layer
        ctx.step = step
        ctx.scales = (s_x, s_a, s_b, s_h)
        ctx.save_for_backward(xq, aq, bq, hq)
        return y

    @staticmethod
    def backward(ctx, dy):
        layer = ctx.layer
        eng, p = layer.engine, layer._prefix
        xq, aq, bq, hq = ctx.saved_tensors
        s_x, s_a, s_b, s_h = ctx.scales
        rounding, step = layer.rounding, ctx.step
        need_x, need_a, need_b = ctx.needs_input_grad[:3]

        dyq, s_dy = quantize_tensor(dy, 8, rounding=rounding, seed=_seed(layer.seed, step, 1))
        s_dy = float(s_dy)
        dh_acc = eng.gemm(p + "dH", dyq, bq, "int8")
        mult, shift = requant_params(dh_acc.abs().max())
        dhq = eng.requant(p + "dH", dh_acc, mult, shift, 8, rounding, _seed(layer.seed, step, 2))
        s_dh = layer.scaling * s_dy * s_b / float(multiplier_value(mult, shift))

        d_x = d_a = d_b = None
        db_acc = eng.gemm(p + "dB", dyq.t().contiguous(), hq, "int8")
        if need_b:
            d_b = (db_acc * (layer.scaling * s_dy * s_h)).to(dy.dtype)
        da_acc = eng.gemm(p + "dA", dhq.t().contiguous(), xq, "int8")
        if need_a:
            d_a = (da_acc * (s_dh * s_x)).to(dy.dtype)
        if need_x:
            if layer.w0_per_channel:
                dyw = dy.to(torch.float64) * layer.w0_scale_row  # per-channel W0 scales move onto dY
                dywq, s_dyw = quantize_tensor(dyw, 8, rounding=rounding, seed=_seed(layer.seed, step, 3))
                s_dyw = float(s_dyw)
            else:
                dywq, s_dyw = dyq, s_dy * float(layer.w0_scale)
            dx0_acc = eng.gemm(p + "dX0", dywq, layer.w0q, "int8")
            dxl_acc = eng.gemm(p + "dXlora", dhq, aq, "int8")
            d_x = (dx0_acc * s_dyw).to(dy.dtype)
            d_x.add_(dxl_acc, alpha=s_dh * s_a)
        return d_x, d_a, d_b, None


class QuantLoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a LoRA adapter whose GEMMs run as integer GEMMs on an engine.

    base      -- the nn.Linear to wrap (its weight and bias are frozen).
    rank      -- LoRA rank r, 1 <= r <= min(in_features, out_features).   alpha -- scale numerator (default r).
    quant     -- "fp32" (plain float LoRA, equal to peft's), "int8" or "int8-w4" (see the module doc).
    engine    -- a ``cdmqta.sw.model.engine.Engine`` (default: a new TorchEngine); unused in "fp32".
    rounding  -- "nearest" or "stochastic" for the gradient path.   seed -- stochastic-rounding seed.
    w0_per_channel -- per-output-channel W0 scales (default: False for "int8", True for "int8-w4").
    name      -- prefix of the engine-call names ("" -> plain "H", "Y1", ...).

    Parameters ``lora_A`` [r, in] (Kaiming-uniform, as peft) and ``lora_B`` [out, r] (zeros) are FP32 masters.
    """

    def __init__(self, base, rank, alpha=None, quant="int8", engine=None, rounding="nearest", seed=0,
                 w0_per_channel=None, name=""):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"QuantLoRALinear wraps nn.Linear, got {type(base).__name__}")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank={rank!r} must be a positive integer")
        if rank > min(base.in_features, base.out_features):
            raise ValueError(f"rank={rank} exceeds min(in_features={base.in_features}, "
                             f"out_features={base.out_features}) of {name or 'the layer'}")
        if quant not in MODES:
            raise ValueError(f"quant={quant!r} must be one of {', '.join(MODES)}")
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding={rounding!r} must be one of {', '.join(ROUNDINGS)}")
        alpha = rank if alpha is None else alpha
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not alpha > 0:
            raise ValueError(f"alpha={alpha!r} must be a positive number")
        if engine is not None and not isinstance(engine, Engine):
            raise TypeError(f"engine must be a cdmqta.sw.model.engine.Engine, got {type(engine).__name__}")
        self.base = base
        for prm in base.parameters():
            prm.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        self.quant, self.rounding, self.seed, self.name = quant, rounding, int(seed), name
        self._prefix = f"{name}:" if name else ""
        self.engine = engine if engine is not None else TorchEngine()
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=5 ** 0.5)
        self._step = 0
        self.w0_per_channel = (quant == "int8-w4") if w0_per_channel is None else bool(w0_per_channel)
        if quant != "fp32":
            self.refresh_base()

    def refresh_base(self):
        """(Re)quantize the frozen W0 (call after changing ``base.weight``)."""
        bits = 4 if self.quant == "int8-w4" else 8
        dim = 0 if self.w0_per_channel else None
        w = self.base.weight.detach()
        s = scale_for(w, bits, dim)
        self.w0q = quantize(w, s, bits)                      # [out, in] int8 (INT4 values for int8-w4)
        self.w0q_t = self.w0q.t().contiguous()               # [in, out], operand b of Y0
        self.w0_scale = s                                    # 0-d or [out, 1] float64
        self.w0_scale_row = s.reshape(1, -1) if dim is not None else s

    def base_weight_dequantized(self):
        """The W0 the quantized forward actually uses (float32)."""
        if self.quant == "fp32":
            return self.base.weight.detach().clone()
        return dequantize(self.w0q, self.w0_scale)

    def forward(self, x):
        if x.shape[-1] != self.in_features:
            raise ValueError(f"{self.name or 'QuantLoRALinear'}: input has {x.shape[-1]} features, "
                             f"expected {self.in_features}")
        if self.quant == "fp32":
            return self.base(x) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling
        lead = x.shape[:-1]
        y = _QuantLoRAFunction.apply(x.reshape(-1, self.in_features), self.lora_A, self.lora_B, self)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"alpha={self.alpha}, quant={self.quant!r}, rounding={self.rounding!r}")


def _matches(name, target):
    return name == target or name.endswith("." + target)


def add_lora(model, target_modules, rank, alpha=None, quant="int8", engine=None, rounding="nearest", seed=0,
             w0_per_channel=None, freeze=True):
    """Wrap the nn.Linear modules of ``model`` named by ``target_modules`` with QuantLoRALinear, in place.

    A target matches a module whose qualified name equals it or ends with ``"." + target`` (peft's rule, e.g.
    "to_k", "attn2.to_v", "to_out.0"). Every target must match at least one module and every match must be an
    nn.Linear. All layers share one engine (default: a new TorchEngine), so the engine's log is the step's
    ordered call list; layer i gets stochastic-rounding seed ``seed + i``. With ``freeze`` every other parameter
    of the model is frozen. Returns the list of trainable LoRA parameters (A, B per layer, in module order).
    """
    if isinstance(target_modules, str):
        target_modules = [target_modules]
    target_modules = list(target_modules)
    if not target_modules:
        raise ValueError("target_modules is empty")
    if quant not in MODES:
        raise ValueError(f"quant={quant!r} must be one of {', '.join(MODES)}")
    names = [n for n, _ in model.named_modules() if n]
    modules = dict(model.named_modules())
    for t in target_modules:
        if not any(_matches(n, t) for n in names):
            raise ValueError(f"target module {t!r} matches no module of {type(model).__name__}")
    chosen = [n for n in names if any(_matches(n, t) for t in target_modules)]
    for n in chosen:
        if isinstance(modules[n], QuantLoRALinear):
            raise ValueError(f"module {n!r} already has a LoRA adapter")
        if not isinstance(modules[n], nn.Linear):
            raise TypeError(f"target module {n!r} is a {type(modules[n]).__name__}, not an nn.Linear")
    if freeze:
        for prm in model.parameters():
            prm.requires_grad_(False)
    engine = engine if engine is not None else TorchEngine()
    params = []
    for i, n in enumerate(chosen):
        parent_name, _, child = n.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        layer = QuantLoRALinear(modules[n], rank, alpha, quant, engine, rounding, seed + i, w0_per_channel, name=n)
        setattr(parent, child, layer)
        params += [layer.lora_A, layer.lora_B]
    return params


def lora_layers(model):
    """{qualified name: QuantLoRALinear} of a model, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLoRALinear)}


class StepCapture:
    """Every engine call of a region (``records``: GemmRecord list) with its integer tensors (``tensors``).

    ``compare(other)`` lists the differences to another capture (call sequence, shapes, parameters, every
    integer bit); ``replay(engine)`` re-issues each call with the captured inputs on another engine and lists
    where its outputs differ. Empty lists mean bit-exact agreement.
    """

    def __init__(self, records=None, tensors=None):
        self.records = list(records or [])
        self.tensors = list(tensors or [])

    def __len__(self):
        return len(self.records)

    def calls(self):
        return [(r.kind, r.name) for r in self.records]

    @staticmethod
    def _key(r):
        return (r.kind, r.name, r.m, r.n, r.k, r.precision, tuple(sorted(r.params.items())))

    def compare(self, other):
        diffs = []
        if len(self.records) != len(other.records):
            diffs.append(f"call count {len(self.records)} != {len(other.records)}")
        for idx, (ra, rb) in enumerate(zip(self.records, other.records)):
            if self._key(ra) != self._key(rb):
                diffs.append(f"call {idx}: {ra!r} {ra.params} != {rb!r} {rb.params}")
                continue
            if idx < len(self.tensors) and idx < len(other.tensors):
                for key, ta in self.tensors[idx].items():
                    tb = other.tensors[idx].get(key)
                    if tb is None or ta.shape != tb.shape or not torch.equal(ta.to(torch.int64), tb.to(torch.int64)):
                        n_bad = (
                            "shape"
                            if tb is None or ta.shape != tb.shape
                            else int((ta.to(torch.int64) != tb.to(torch.int64)).sum())
                        )
                        diffs.append(f"call {idx} {ra.kind} {ra.name}: tensor {key!r} differs ({n_bad} elements)")
        return diffs

    def replay(self, engine):
        """Run every captured call again on ``engine`` and return the list of output mismatches."""
        diffs = []
        for idx, (r, t) in enumerate(zip(self.records, self.tensors)):
            if r.kind == "gemm":
                out = engine.gemm(r.name, t["a"], t["b"], r.precision)
            else:
                out = engine.requant(r.name, t["acc"], **r.params)
            if out.shape != t["out"].shape or not torch.equal(out.to(torch.int64), t["out"].to(torch.int64)):
                diffs.append(f"call {idx} {r.kind} {r.name}: output differs")
        return diffs


@contextlib.contextmanager
def capture(engine):
    """``with capture(engine) as cap: ...`` -> cap (a StepCapture) holds every engine call made inside."""
    cap = StepCapture()
    old = getattr(engine, "capture", False)
    start_log, start_t = len(engine.log), len(getattr(engine, "tensors", []))
    engine.capture = True
    try:
        yield cap
    finally:
        engine.capture = old
        cap.records = engine.log[start_log:]
        cap.tensors = engine.tensors[start_t:]
        if not old:  # don't keep tensors alive in the engine after the capture
            del engine.tensors[start_t:]


def reference_step(engine=None, *, tokens=16, in_features=32, out_features=24, rank=4, alpha=8, quant="int8",
                   rounding="nearest", seed=0, steps=1, lr=0.05):
    """Deterministic LoRA training steps of one layer, everything integer captured: the RTL's end-to-end check.

    Builds (from ``seed``) a random nn.Linear, a QuantLoRALinear with a non-zero B (so every GEMM is non-trivial),
    an input X [tokens, in] that requires a gradient (so dX0/dXlora run) and a fixed output gradient; runs
    ``steps`` SGD steps (loss = sum(Y * G)). Returns {"capture": StepCapture, "y": last output, "grads": {A, B, X}
    of the last step, "params": {A, B} after the steps, "layer": the layer}. Two runs with engines that agree
    bit for bit give equal captures (``capture.compare``) and equal float results.
    """
    if quant == "fp32":
        raise ValueError("reference_step needs a quantized mode (int8 or int8-w4)")
    gen = torch.Generator().manual_seed(seed)
    base = nn.Linear(in_features, out_features)
    with torch.no_grad():
        base.weight.copy_(torch.randn(out_features, in_features, generator=gen) / in_features ** 0.5)
        base.bias.copy_(torch.randn(out_features, generator=gen) * 0.1)
    engine = engine if engine is not None else TorchEngine()
    layer = QuantLoRALinear(base, rank, alpha, quant, engine, rounding, seed)
    with torch.no_grad():
        layer.lora_A.copy_(torch.randn(rank, in_features, generator=gen) / in_features ** 0.5)
        layer.lora_B.copy_(torch.randn(out_features, rank, generator=gen) / rank ** 0.5)
    x = torch.randn(tokens, in_features, generator=gen).requires_grad_(True)
    g = torch.randn(tokens, out_features, generator=gen)
    opt = torch.optim.SGD([layer.lora_A, layer.lora_B], lr=lr)
    with capture(engine) as cap:
        for _ in range(steps):
            opt.zero_grad()
            x.grad = None
            y = layer(x)
            (y * g).sum().backward()
            opt.step()
    return {
        "capture": cap, "y": y.detach(), "layer": layer,
        "grads": {"A": layer.lora_A.grad.clone(), "B": layer.lora_B.grad.clone(), "X": x.grad.clone()},
        "params": {"A": layer.lora_A.detach().clone(), "B": layer.lora_B.detach().clone()},
    }
