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
accumulator; the multiplier is ``qmax / max|acc|`` converted by ``quantize_multiplier`` -- integers only.
With ``scaling="delayed"`` the max|acc| is instead the largest of the tensor's last ``AMAX_HISTORY`` (16) values
(times ``2**amax_margin``, margin 0 by default), so the multiplier is known before the GEMM: the engine call is
``gemm_q`` "H" / "dH" (the GEMM with requantizing STOREs, which reports this step's max|acc| from the hardware's
amax register) instead of gemm + requant; the first step of a tensor (empty history) scales as "current".
:class:`FusionGroup` (:func:`fuse_shared_inputs`) runs the H, Y0 and dA GEMMs of layers that share an input as
one GEMM each (engine-call names ``"fused<i>:H"`` / ``":Y0"`` / ``":dA"``), bit-exact with the unfused layers. LoRA's
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
    "MODES", "GEMMS", "SCALINGS", "AMAX_HISTORY", "QuantLoRALinear", "FusionGroup", "fuse_shared_inputs", "unfuse",
    "delayed_params", "add_lora", "lora_layers", "StepCapture", "capture", "reference_step",
]

MODES = ("fp32", "int8", "int8-w4")
SCALINGS = ("current", "delayed")
#: Steps of max-abs values that delayed scaling keeps per requantized tensor (as FP8 recipes' amax history).
AMAX_HISTORY = 16
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


def delayed_params(history, margin=0):
    """(mult, shift) of delayed scaling: the requantization multiplier for ``max(history) * 2**margin`` (the amax
    history of one tensor, integers), exactly :func:`cdmqta.sw.model.quant.requant_params` of that integer."""
    return requant_params(max(history) << int(margin))


def _requant_params_for(layer, kind, amax_now=None):
    """The (mult, shift) the layer uses for tensor ``kind`` ("H" / "dH") this step: from the amax history under
    delayed scaling (once it holds a value), otherwise from this step's max |acc| ``amax_now``."""
    hist = layer.amax_history[kind]
    if layer.scaling_mode == "delayed" and hist:
        return delayed_params(hist, layer.amax_margin)
    return requant_params(amax_now)


def _requant_acc(layer, kind, name, acc, rounding, seed):
    """Requantize an INT32 accumulator of tensor ``kind`` through the engine (the INT32 round trip)."""
    amax = int(acc.abs().max()) if acc.numel() else 0
    mult, shift = _requant_params_for(layer, kind, amax)
    q = layer.engine.requant(name, acc, mult, shift, 8, rounding, seed)
    layer._push_amax(kind, amax)
    return q, mult, shift


def _gemm_requant(layer, kind, a, b, rounding, seed):
    """H or dH of one layer: (q, mult, shift). Current scaling (or the first delayed step): INT32 GEMM, max |acc|
    on the host, requantization as its own engine call. Delayed scaling with a history: the multiplier is known
    before the GEMM, whose STOREs requantize (``engine.gemm_q``); the amax it reports extends the history."""
    name = layer._prefix + kind
    if layer.scaling_mode == "delayed" and layer.amax_history[kind]:
        mult, shift = _requant_params_for(layer, kind)
        q, amax = layer.engine.gemm_q(name, a, b, "int8", [(b.shape[1], mult, shift, rounding, seed)])
        layer._push_amax(kind, amax[0])
        return q, mult, shift
    return _requant_acc(layer, kind, name, layer.engine.gemm(name, a, b, "int8"), rounding, seed)


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

        if layer.group is not None:
            hq, mult, shift, y0_acc = layer.group.forward_h(layer, x, xq)
        else:
            hq, mult, shift = _gemm_requant(layer, "H", xq, aq.t().contiguous(), "nearest", 0)
            y0_acc = None
        s_h = s_x * s_a / float(multiplier_value(mult, shift))
        y1_acc = eng.gemm(p + "Y1", hq, bq.t().contiguous(), "int8")
        if y0_acc is None:
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
        dhq, mult, shift = _gemm_requant(layer, "dH", dyq, bq, rounding, _seed(layer.seed, step, 2))
        s_dh = layer.scaling * s_dy * s_b / float(multiplier_value(mult, shift))

        d_x = d_a = d_b = None
        db_acc = eng.gemm(p + "dB", dyq.t().contiguous(), hq, "int8")
        if need_b:
            d_b = (db_acc * (layer.scaling * s_dy * s_h)).to(dy.dtype)
        if layer.group is not None and layer.group.defers(layer):
            layer.group.backward_da(layer, dhq, s_dh * s_x, xq, need_a, dy.dtype)   # sets lora_A.grad itself
        else:
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
    scaling   -- how H and dH get their requantization scale: "current" (default; this step's max |acc|, which
                 needs the INT32 tensor on the host) or "delayed" (the max of the last ``amax_history`` steps'
                 max |acc| values times ``2**amax_margin``, known before the GEMM, so its STOREs write INT8
                 directly; the step's max |acc| comes back from the amax register). The first delayed step of a
                 tensor, with an empty history, uses current scaling. Values above the delayed scale saturate.

    Parameters ``lora_A`` [r, in] (Kaiming-uniform, as peft) and ``lora_B`` [out, r] (zeros) are FP32 masters.
    """

    def __init__(self, base, rank, alpha=None, quant="int8", engine=None, rounding="nearest", seed=0,
                 w0_per_channel=None, name="", scaling="current", amax_history=AMAX_HISTORY, amax_margin=0):
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
        if scaling not in SCALINGS:
            raise ValueError(f"scaling={scaling!r} must be one of {', '.join(SCALINGS)}")
        for what, v, lo in (("amax_history", amax_history, 1), ("amax_margin", amax_margin, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{what}={v!r} must be an integer >= {lo}")
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
        self.scaling_mode, self.amax_history_len, self.amax_margin = scaling, amax_history, amax_margin
        #: per requantized tensor, the max |acc| of its last ``amax_history`` steps, oldest first (integers)
        self.amax_history = {"H": [], "dH": []}
        self.group = None          # a FusionGroup (fuse_shared_inputs) that runs this layer's H and dA fused
        self._probe = None         # set by fuse_shared_inputs while it finds which layers share an input
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

    def _push_amax(self, kind, amax):
        hist = self.amax_history[kind]
        hist.append(int(amax))
        del hist[:-self.amax_history_len]

    def base_weight_dequantized(self):
        """The W0 the quantized forward actually uses (float32)."""
        if self.quant == "fp32":
            return self.base.weight.detach().clone()
        return dequantize(self.w0q, self.w0_scale)

    def forward(self, x):
        if x.shape[-1] != self.in_features:
            raise ValueError(f"{self.name or 'QuantLoRALinear'}: input has {x.shape[-1]} features, "
                             f"expected {self.in_features}")
        if self._probe is not None:
            self._probe(self, x)
            return self.base(x)
        if self.quant == "fp32":
            return self.base(x) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling
        lead = x.shape[:-1]
        y = _QuantLoRAFunction.apply(x.reshape(-1, self.in_features), self.lora_A, self.lora_B, self)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"alpha={self.alpha}, quant={self.quant!r}, rounding={self.rounding!r}, scaling={self.scaling_mode!r}")


def _matches(name, target):
    return name == target or name.endswith("." + target)


def add_lora(model, target_modules, rank, alpha=None, quant="int8", engine=None, rounding="nearest", seed=0,
             w0_per_channel=None, freeze=True, scaling="current", amax_history=AMAX_HISTORY, amax_margin=0):
    """Wrap the nn.Linear modules of ``model`` named by ``target_modules`` with QuantLoRALinear, in place.

    A target matches a module whose qualified name equals it or ends with ``"." + target`` (peft's rule, e.g.
    "to_k", "attn2.to_v", "to_out.0"). Every target must match at least one module and every match must be an
    nn.Linear. All layers share one engine (default: a new TorchEngine), so the engine's log is the step's
    ordered call list; layer i gets stochastic-rounding seed ``seed + i``. With ``freeze`` every other parameter
    of the model is frozen. ``scaling``, ``amax_history``, ``amax_margin``: see :class:`QuantLoRALinear`.
    Returns the list of trainable LoRA parameters (A, B per layer, in module order).
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
        layer = QuantLoRALinear(modules[n], rank, alpha, quant, engine, rounding, seed + i, w0_per_channel, name=n,
                                scaling=scaling, amax_history=amax_history, amax_margin=amax_margin)
        setattr(parent, child, layer)
        params += [layer.lora_A, layer.lora_B]
    return params


def lora_layers(model):
    """{qualified name: QuantLoRALinear} of a model, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLoRALinear)}


def _tensor_key(x):
    return (x.data_ptr(), tuple(x.shape), tuple(x.stride()), x._version)


class FusionGroup:
    """LoRA layers that read the same input tensor (the K/V projections of every cross-attention layer on the
    text embedding): their ``H = X.A_l^T`` run as one GEMM ``X.[A_1; A_2; ...]^T``, their frozen
    ``Y0 = X.W0_l^T`` as one GEMM ``X.[W0_1; W0_2; ...]^T`` and their ``dA_l = dH_l^T.X`` as one GEMM
    ``[dH_1, dH_2, ...]^T.X``, split back per layer. Exact: the integers of each layer equal its
    unfused GEMMs' (same Xq, each layer's own Aq, dHq and requantization scale).

    Forward: the first member to run with a new input computes every member's Hq (current scaling, or any member
    without an amax history: one INT32 GEMM, then each layer's requantization of its columns; delayed scaling:
    one ``engine.gemm_q`` with a segment per layer). Backward: each member hands its dHq to the group and
    returns no gradient for A; when every member that ran forward on that input has done so, one GEMM gives
    all dA and the group adds them to each ``lora_A.grad``. (So every member's output must take part in the loss.)
    Engine-call names: ``"<group name>:H"``, ``":Y0"``, ``":dA"``; the per-layer requantizations keep theirs.
    """

    def __init__(self, layers, name="fused"):
        layers = list(layers)
        if len(layers) < 2:
            raise ValueError("a fusion group needs at least two layers")
        first = layers[0]
        for lyr in layers:
            if not isinstance(lyr, QuantLoRALinear) or lyr.quant == "fp32":
                raise ValueError("a fusion group holds quantized QuantLoRALinear layers")
            if lyr.in_features != first.in_features or lyr.engine is not first.engine:
                raise ValueError(f"{lyr.name}: fused layers need the same input size and engine")
        self.layers, self.name = layers, name
        self._key, self._fwd, self._ran, self._bwd = None, {}, set(), {}

    @property
    def engine(self):
        return self.layers[0].engine

    def forward_h(self, layer, x, xq):
        """(Hq, mult, shift, Y0) of ``layer`` on 2-D input ``x`` (quantized ``xq``); a new input runs the group's."""
        key = (_tensor_key(x), tuple(lyr.lora_A._version for lyr in self.layers))
        if key != self._key or layer in self._ran:
            self._run_forward(x, xq)
            self._key = key
        self._ran.add(layer)
        return self._fwd[layer]

    def _run_forward(self, x, xq):
        eng = self.engine
        aqs = [quantize_tensor(lyr.lora_A, 8)[0] for lyr in self.layers]
        b = torch.cat([aq.t() for aq in aqs], dim=1).contiguous()
        widths = [aq.shape[0] for aq in aqs]
        self._fwd, self._ran, self._bwd = {}, set(), {}
        self._forward_h(eng, xq, b, widths)
        y0 = eng.gemm(f"{self.name}:Y0", xq, torch.cat([lyr.w0q_t for lyr in self.layers], dim=1).contiguous(),
                      "int8")
        c0 = 0
        for lyr in self.layers:
            self._fwd[lyr] = self._fwd[lyr] + (y0[:, c0:c0 + lyr.out_features].contiguous(),)
            c0 += lyr.out_features

    def _forward_h(self, eng, xq, b, widths):
        if all(lyr.scaling_mode == "delayed" and lyr.amax_history["H"] for lyr in self.layers):
            params = [_requant_params_for(lyr, "H") for lyr in self.layers]
            q, amax = eng.gemm_q(f"{self.name}:H", xq, b, "int8",
                                 [(w, mu, sh, "nearest", 0) for w, (mu, sh) in zip(widths, params)])
            c0 = 0
            for lyr, w, (mu, sh), am in zip(self.layers, widths, params, amax):
                lyr._push_amax("H", am)
                self._fwd[lyr] = (q[:, c0:c0 + w].contiguous(), mu, sh)
                c0 += w
            return
        acc = eng.gemm(f"{self.name}:H", xq, b, "int8")
        c0 = 0
        for lyr, w in zip(self.layers, widths):
            self._fwd[lyr] = _requant_acc(lyr, "H", lyr._prefix + "H", acc[:, c0:c0 + w].contiguous(), "nearest", 0)
            c0 += w

    def defers(self, layer):
        return layer in self._ran

    def backward_da(self, layer, dhq, scale, xq, need_a, dtype):
        """Take ``layer``'s dHq (and the float scale of its dA); run the fused dA once all members reported."""
        self._bwd[layer] = (dhq, scale, need_a, dtype)
        if set(self._bwd) != self._ran:
            return
        members = [lyr for lyr in self.layers if lyr in self._bwd and self._bwd[lyr][2]]
        pending, self._bwd, self._ran = self._bwd, {}, set()
        if not members:
            return
        a = torch.cat([pending[lyr][0].t() for lyr in members], dim=0).contiguous()
        da = self.engine.gemm(f"{self.name}:dA", a, xq, "int8")
        r0 = 0
        for lyr in members:
            dhq_l, scale_l, _, dtype_l = pending[lyr]
            rows = dhq_l.shape[1]
            d_a = (da[r0:r0 + rows] * scale_l).to(dtype_l)
            r0 += rows
            prm = lyr.lora_A
            prm.grad = d_a if prm.grad is None else prm.grad + d_a


def fuse_shared_inputs(model, *args, min_layers=2, **kwargs):
    """Group the quantized LoRA layers of ``model`` that read the same input tensor, and fuse their GEMMs.

    Runs ``model(*args, **kwargs)`` once with every LoRA layer replaced by its frozen base (no engine calls,
    no gradient) to see which layers receive the same tensor, makes a :class:`FusionGroup` of every set of at
    least ``min_layers`` such layers (same input size and engine) and attaches it to its members. Returns the
    groups (``group.layers`` in module order); :func:`unfuse` detaches them.
    """
    layers = lora_layers(model)
    seen = {}

    def probe(layer, x):
        seen.setdefault(_tensor_key(x), []).append(layer)

    for lyr in layers.values():
        lyr._probe = probe
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for lyr in layers.values():
            lyr._probe = None
    order = {lyr: i for i, lyr in enumerate(layers.values())}
    groups = []
    for members in seen.values():
        members = sorted({lyr for lyr in members if lyr.quant != "fp32" and lyr.group is None}, key=order.get)
        by = {}
        for lyr in members:
            by.setdefault((lyr.in_features, id(lyr.engine)), []).append(lyr)
        for ms in by.values():
            if len(ms) >= min_layers:
                g = FusionGroup(ms, name=f"fused{len(groups)}")
                for lyr in ms:
                    lyr.group = g
                groups.append(g)
    return groups


def unfuse(model):
    """Detach every fusion group from the LoRA layers of ``model``."""
    for lyr in lora_layers(model).values():
        lyr.group = None


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
            elif r.kind == "gemm_q":
                out, amax = engine.gemm_q(r.name, t["a"], t["b"], r.precision, r.params["segments"])
                if amax != t["amax"].tolist():
                    diffs.append(f"call {idx} gemm_q {r.name}: amax {amax} != {t['amax'].tolist()}")
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
                   rounding="nearest", seed=0, steps=1, lr=0.05, scaling="current"):
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
    layer = QuantLoRALinear(base, rank, alpha, quant, engine, rounding, seed, scaling=scaling)
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
