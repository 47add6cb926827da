"""Workload extraction: every GEMM of one LoRA training step of a diffusers U-Net, read off the model itself.

How the rows are recorded (:func:`record_unet`):
- the U-Net is built from its config (random weights, no download), by default on PyTorch's ``meta`` device so
  only shapes are computed; forward hooks on every ``nn.Linear`` / ``nn.Conv2d`` record the forward GEMM
  (convolutions as im2col GEMMs: M = H_out*W_out, N = C_out, K = C_in*kh*kw/groups), and
  ``F.scaled_dot_product_attention`` is wrapped to record the attention matmuls per head
  (``S = Q.K^T``: M = L_q, N = L_k, K = d; ``O = P.V``: M = L_q, N = d, K = L_k; count = batch*heads);
- LoRA adapters (trainable, everything else frozen) are inserted at the placement's linears *before* the trace,
  so the hooks see which inputs require a gradient. The backward rows are exactly the GEMMs autograd runs for a
  frozen U-Net: an activation gradient only where the input requires one (none for ``conv_in`` on the noisy
  latent, none for the time-embedding branch, none towards the frozen text embedding of the cross-attention
  K/V projections, none for layers before the first adapter), and no frozen weight gradient. Per linear/conv:
  ``dX = dY.W`` (M = T, N = in, K = out; stride-1 convolutions as the transposed convolution, M = H*W, N = C_in,
  K = C_out*kh*kw; strided ones as ``dcols = dY.W``, N = C_in*kh*kw, K = C_out, then col2im). Per attention head: ``dP
  = dO.V^T``, ``dV = P^T.dO``, ``dQ = dS.K``, ``dK = dS^T.Q``,
  each only where needed;
- per adapted linear the LoRA GEMMs (:func:`cdmqta.sw.perf.workloads.lora_gemms`): ``H = X.A^T`` (T, r, in), ``Y1 =
H.B^T`` (T, out, r),
  ``dH = dY.B`` (T, r, out), ``dB = dY^T.H`` (out, r, T), ``dA = dH^T.X`` (r, in, T) and, where the input needs a
  gradient, ``dXl = dH.A`` (T, in, r), which accumulates into the frozen ``dX = dY.W0`` (same ``c_id``). ``Y0`` and
  ``dY.W0`` are the frozen layer's own rows.

:func:`verify` checks the totals against PyTorch's own FLOP counter on a real (CPU) run; ``verif/test_workloads.py``
does that on a small U-Net. ``python scripts/extract_workloads.py`` writes the shipped CSV files.
"""

import math

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .workloads import PLACEMENTS, RANKS, SD15_CONFIG, TEXT_ID, Gemm, lora_gemms, merge

__all__ = ["build_unet", "record_unet", "build_workload", "verify"]


class _LoRALinear(nn.Module):
    """A float LoRA-wrapped linear: the trace only needs the adapter's GEMM shapes and which inputs need grads."""

    def __init__(self, base, rank):
        super().__init__()
        self.base = base
        dev = base.weight.device
        self.lora_A = nn.Linear(base.in_features, rank, bias=False, device=dev)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False, device=dev)
        self.scale = 1.0 / rank
        if dev.type != "meta":
            with torch.no_grad():
                self.lora_B.weight.normal_(0, 0.02)   # nonzero so every gradient path is exercised

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scale


def _adapt(unet, placement, rank=4):
    """Insert LoRA adapters at the placement (in place); returns the adapted linears' names."""
    suffixes = PLACEMENTS[placement]
    targets = [name for name, _ in unet.named_modules()
               if any(name.endswith(s) for s in suffixes) and ".transformer_blocks." in name]
    for p in unet.parameters():
        p.requires_grad_(False)
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = unet.get_submodule(parent_name)
        base = getattr(parent, child) if child != "0" else parent[0]
        wrapped = _LoRALinear(base, rank)
        if child == "0":
            parent[0] = wrapped
        else:
            setattr(parent, child, wrapped)
    return targets


def build_unet(config, device="meta"):

    with torch.device(device):
        unet = UNet2DConditionModel(**config)
    return unet


def record_unet(config=None, placement="kv", batch=1, latent=None, tokens=77, device="meta", unet=None):
    """Trace one training step of the U-Net with LoRA at ``placement`` and return (frozen+attention rows, adapted
    linears) where adapted linears is a list of dicts (name, T, in, out, input_needs_grad, a_id) from which
    :func:`lora_gemms` makes the rank-dependent rows."""

    config = dict(SD15_CONFIG if config is None else config)
    if placement not in PLACEMENTS:
        raise ValueError(f"placement={placement!r} must be one of {sorted(PLACEMENTS)}")
    latent = config.get("sample_size", 64) if latent is None else latent
    if unet is None:
        unet = build_unet(config, device)
    else:
        device = next(unet.parameters()).device.type
    adapted = set(_adapt(unet, placement))

    fwd, bwd, lora_sites = [], [], []
    names = {m: n for n, m in unet.named_modules()}
    current_attn = [None]
    # ids of tensors: the text embedding is one tensor; every other activation is named by its producer.
    tensor_ids = {}

    def tid(t, default):
        # first sight names the tensor; the reference is kept so its id() cannot be reused during the trace
        if id(t) not in tensor_ids:
            tensor_ids[id(t)] = (t, default)
        return tensor_ids[id(t)][1]

    def linear_hook(mod, inputs, output):
        x = inputs[0]
        name = names[mod]
        if isinstance(mod, nn.Conv2d):
            n_out, c_in = mod.out_channels, mod.in_channels // mod.groups
            kh, kw = mod.kernel_size
            t = output.shape[-1] * output.shape[-2]
            count = x.shape[0] * mod.groups
            m, n, k = t, n_out, c_in * kh * kw
            # the im2col matrix A is a view of the input feature map (per instance: C_in * H_in * W_in elements)
            a_elems = c_in * x.shape[-1] * x.shape[-2] if (kh * kw > 1 or mod.stride != (1, 1)) else 0
            t_in = x.shape[-1] * x.shape[-2]
            if mod.stride == (1, 1) and t_in == t:
                # dX as the transposed convolution: im2col of dY (a view of C_out*H*W) times W rearranged:
                # M = H_in*W_in, N = C_in, K = C_out*kh*kw (same MACs as the forward; no col2im scatter)
                bm, bn, bk = t_in, c_in, n_out * kh * kw
                dx_a_elems = n_out * t if kh * kw > 1 else 0
            else:
                # strided: dcols = dY . W (M = H_out*W_out, N = C_in*kh*kw, K = C_out), then col2im (scatter-add)
                bm, bn, bk = t, c_in * kh * kw, n_out
                dx_a_elems = 0
        else:
            t = math.prod(x.shape[:-1])
            count = 1
            m, n, k = t, mod.out_features, mod.in_features
            bm, bn, bk = t, mod.in_features, mod.out_features
            a_elems = dx_a_elems = 0
        a_id = tid(x, f"{name}.x")
        tid(output, f"{name}.y")
        base_name = name[:-len(".base")] if name.endswith(".base") else name
        if name.endswith(".lora_A") or name.endswith(".lora_B"):
            return   # adapter GEMMs are generated per rank by lora_gemms()
        fwd.append(Gemm(base_name, "fwd", "frozen", m, n, k, count, 0, a_id, f"{base_name}.W^T", f"{base_name}.y",
                        a_elems))
        if x.requires_grad:
            bwd.append(Gemm(f"{base_name}.dX", "bwd", "frozen", bm, bn, bk, count, 0,
                            f"{base_name}.dY", f"{base_name}.W", f"{base_name}.dX", dx_a_elems))
        if base_name in adapted:
            lora_sites.append(dict(name=base_name, t=m * count, d_in=k, d_out=n, input_grad=bool(x.requires_grad),
                                   a_id=a_id))

    orig_sdpa = F.scaled_dot_product_attention

    def sdpa(q, k, v, *args, **kwargs):
        b, h, lq, d = q.shape
        lk = k.shape[-2]
        dv = v.shape[-1]
        name = current_attn[0] or "attention"
        cnt = b * h
        fwd.append(Gemm(f"{name}.QK^T", "fwd", "attention", lq, lk, d, cnt, 0, f"{name}.Q", f"{name}.K^T", f"{name}.S"))
        fwd.append(Gemm(f"{name}.PV", "fwd", "attention", lq, dv, lk, cnt, 0, f"{name}.P", f"{name}.V", f"{name}.O"))
        if q.requires_grad or k.requires_grad:
            bwd.append(
                Gemm(f"{name}.dP", "bwd", "attention", lq, lk, dv, cnt, 0, f"{name}.dO", f"{name}.V^T", f"{name}.dP")
            )
        if v.requires_grad:
            bwd.append(
                Gemm(f"{name}.dV", "bwd", "attention", lk, dv, lq, cnt, 0, f"{name}.P^T", f"{name}.dO", f"{name}.dV")
            )
        if q.requires_grad:
            bwd.append(
                Gemm(f"{name}.dQ", "bwd", "attention", lq, d, lk, cnt, 0, f"{name}.dS", f"{name}.K", f"{name}.dQ")
            )
        if k.requires_grad:
            bwd.append(
                Gemm(f"{name}.dK", "bwd", "attention", lk, d, lq, cnt, 0, f"{name}.dS^T", f"{name}.Q", f"{name}.dK")
            )
        return orig_sdpa(q, k, v, *args, **kwargs)

    def attn_pre(mod, args):
        current_attn[0] = names[mod]

    handles = []
    for mod in unet.modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            handles.append(mod.register_forward_hook(linear_hook))
        elif isinstance(mod, Attention):
            handles.append(mod.register_forward_pre_hook(attn_pre))

    sample = torch.zeros(batch, config.get("in_channels", 4), latent, latent, device=device)
    text = torch.zeros(batch, tokens, config["cross_attention_dim"], device=device)
    tid(text, TEXT_ID)
    F.scaled_dot_product_attention = sdpa
    try:
        with torch.enable_grad():
            unet(sample, torch.tensor([10] * batch, device=device), encoder_hidden_states=text)
    finally:
        F.scaled_dot_product_attention = orig_sdpa
        for h in handles:
            h.remove()
    # the backward runs in reverse order of the forward
    return fwd + bwd[::-1], lora_sites


def build_workload(placement, ranks=RANKS, config=None, **kw):
    base, sites = record_unet(config, placement, **kw)
    rows = merge(base)
    for r in ranks:
        rows += lora_gemms(sites, r)
    return rows


def verify(config, placement, rank=4, batch=1, latent=None, tokens=77):
    """Run the U-Net with LoRA for real on the CPU under PyTorch's FLOP counter and return
    {phase: (flop_counter_macs, recorded_macs)}. Attention runs through the plain (bmm) processor so the counter
    sees exactly the matmuls autograd executes."""

    torch.manual_seed(0)
    cfg = dict(config)
    latent = cfg.get("sample_size", 8) if latent is None else latent
    unet = build_unet(cfg, "cpu")
    base, sites = record_unet(cfg, placement, batch, latent, tokens, unet=unet)
    rows = base + lora_gemms(sites, rank)
    # re-adapt with the requested rank: record_unet used rank 4 for the trace (shapes do not depend on it)
    for _n, mod in unet.named_modules():
        if hasattr(mod, "lora_A"):
            mod.lora_A = torch.nn.Linear(mod.base.in_features, rank, bias=False)
            mod.lora_B = torch.nn.Linear(rank, mod.base.out_features, bias=False)
            mod.scale = 1.0 / rank
    unet.set_attn_processor(AttnProcessor())
    sample = torch.randn(batch, cfg.get("in_channels", 4), latent, latent)
    text = torch.randn(batch, tokens, cfg["cross_attention_dim"])
    with FlopCounterMode(display=False) as fc:
        out = unet(sample, torch.tensor([10] * batch), encoder_hidden_states=text).sample
    f_fwd = fc.get_total_flops()
    loss = out.float().pow(2).mean()
    with FlopCounterMode(display=False) as fc:
        loss.backward()
    f_bwd = fc.get_total_flops()
    rec = {p: sum(g.macs for g in rows if g.phase == p) for p in ("fwd", "bwd")}
    return {"fwd": (f_fwd // 2, rec["fwd"]), "bwd": (f_bwd // 2, rec["bwd"])}
