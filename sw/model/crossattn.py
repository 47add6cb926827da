"""A small cross-attention stack with K/V LoRA: the check that fused LoRA GEMMs equal the unfused golden model.

``CrossAttnStack(layers, dim, ctx_dim)`` is ``layers`` blocks ``h = h + attn(h, c)`` (one head, softmax) whose
``to_k`` / ``to_v`` all read the same context ``c`` (a text embedding), as in Stable Diffusion's U-Net.
:func:`crossattn_steps` trains its K/V LoRA layers a few SGD steps on an engine, fused (the layers sharing ``c``
in one :class:`cdmqta.sw.model.lora.FusionGroup`) or not, and :func:`compare_fused` checks a fused run against
an unfused one layer by layer: every per-layer engine call (Y1, dH, dB, ... and their requantizations), the
fused H / Y0 / dA GEMMs split per layer against each layer's own, the amax histories, outputs, gradients and
parameters after the steps -- all bit for bit.
"""

import torch
from torch import nn

from .engine import TorchEngine
from .lora import add_lora, capture, fuse_shared_inputs, lora_layers

__all__ = ["CrossAttnStack", "crossattn_steps", "compare_fused"]


class _CrossAttn(nn.Module):
    def __init__(self, dim, ctx_dim):
        super().__init__()
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(ctx_dim, dim, bias=False)
        self.to_v = nn.Linear(ctx_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, h, c):
        q, k, v = self.to_q(h), self.to_k(c), self.to_v(c)
        p = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        return h + self.to_out(p @ v)


class CrossAttnStack(nn.Module):
    """``layers`` cross-attention blocks on hidden states h [T, dim] with context c [Tc, ctx_dim]."""

    def __init__(self, layers=2, dim=16, ctx_dim=24):
        super().__init__()
        self.blocks = nn.ModuleList(_CrossAttn(dim, ctx_dim) for _ in range(layers))

    def forward(self, h, c):
        for blk in self.blocks:
            h = blk(h, c)
        return h


def crossattn_steps(engine=None, *, layers=2, tokens=12, ctx_tokens=10, dim=16, ctx_dim=24, rank=4,
                    scaling="delayed", fused=True, steps=2, seed=0, lr=0.05, rounding="nearest"):
    """K/V LoRA (int8) of a :class:`CrossAttnStack` trained ``steps`` SGD steps on ``engine`` (loss sum(y * g)).

    Returns {"capture", "layers" ({name: QuantLoRALinear}), "groups", "y", "grads", "params", "amax"
    ({name: {"H": [...], "dH": [...]}})}; everything is deterministic in ``seed``.
    """
    gen = torch.Generator().manual_seed(seed)
    model = CrossAttnStack(layers, dim, ctx_dim)
    with torch.no_grad():
        for prm in model.parameters():
            prm.copy_(torch.randn(prm.shape, generator=gen) / prm.shape[-1] ** 0.5)
    engine = engine if engine is not None else TorchEngine()
    add_lora(model, ["to_k", "to_v"], rank=rank, alpha=rank, quant="int8", engine=engine, rounding=rounding,
             seed=seed, scaling=scaling)
    lyrs = lora_layers(model)
    with torch.no_grad():
        for lyr in lyrs.values():
            lyr.lora_A.copy_(torch.randn(lyr.lora_A.shape, generator=gen) / lyr.in_features ** 0.5)
            lyr.lora_B.copy_(torch.randn(lyr.lora_B.shape, generator=gen) / rank ** 0.5)
    h = torch.randn(tokens, dim, generator=gen)
    c = torch.randn(ctx_tokens, ctx_dim, generator=gen)
    g = torch.randn(tokens, dim, generator=gen)
    groups = fuse_shared_inputs(model, h, c) if fused else []
    params = [p for lyr in lyrs.values() for p in (lyr.lora_A, lyr.lora_B)]
    opt = torch.optim.SGD(params, lr=lr)
    with capture(engine) as cap:
        for _ in range(steps):
            opt.zero_grad()
            y = model(h, c)
            (y * g).sum().backward()
            opt.step()
    return {
        "capture": cap, "layers": lyrs, "groups": groups, "y": y.detach(),
        "grads": {n: (lyr.lora_A.grad.clone(), lyr.lora_B.grad.clone()) for n, lyr in lyrs.items()},
        "params": {n: (lyr.lora_A.detach().clone(), lyr.lora_B.detach().clone()) for n, lyr in lyrs.items()},
        "amax": {n: {k: list(v) for k, v in lyr.amax_history.items()} for n, lyr in lyrs.items()},
    }


def _calls(cap):
    return list(zip(cap.records, cap.tensors))


def compare_fused(fused, unfused):
    """Differences (list of strings; empty = bit-exact) between a fused and an unfused :func:`crossattn_steps`."""
    diffs = []
    groups = fused["groups"]
    if not groups:
        diffs.append("the fused run has no fusion group")
    members = {lyr.name: g for g in groups for lyr in g.layers}
    fused_kinds = ("H", "Y0", "dA")
    # 1. per-layer calls other than the fused ones, in order, record and tensors
    per_layer = {}
    for run, key in ((fused, "f"), (unfused, "u")):
        for rec, t in _calls(run["capture"]):
            lname, _, kind = rec.name.rpartition(":")
            per_layer.setdefault((lname, key), []).append((rec, t))
    for name in unfused["layers"]:
        fu = [(r, t) for r, t in per_layer.get((name, "f"), [])]
        un = [(r, t) for r, t in per_layer.get((name, "u"), [])
              if not (name in members and (r.name.endswith(":dA") or r.name.endswith(":Y0")))
              and not (name in members and r.kind in ("gemm", "gemm_q") and r.name.endswith(":H"))]
        if len(fu) != len(un):
            diffs.append(f"{name}: {len(fu)} per-layer calls fused, {len(un)} unfused")
        for (ra, ta), (rb, tb) in zip(fu, un):
            if (ra.kind, ra.name, ra.m, ra.n, ra.k, ra.params) != (rb.kind, rb.name, rb.m, rb.n, rb.k, rb.params):
                diffs.append(f"{name}: call {ra!r} != {rb!r}")
            elif any(not torch.equal(ta[k].to(torch.int64), tb[k].to(torch.int64)) for k in ta):
                diffs.append(f"{name}: {ra.kind} {ra.name} tensors differ")
    # 2. fused H / dA outputs split per layer against each layer's own GEMM
    for g in groups:
        for kind in fused_kinds:
            outs = [t for r, t in _calls(fused["capture"]) if r.name == f"{g.name}:{kind}"]
            own = {lyr.name: [t for r, t in _calls(unfused["capture"])
                              if r.name == f"{lyr.name}:{kind}" and r.kind in ("gemm", "gemm_q")]
                   for lyr in g.layers}
            for step, t in enumerate(outs):
                parts = [own[lyr.name][step]["out"] if step < len(own[lyr.name]) else None for lyr in g.layers]
                if any(p is None for p in parts):
                    diffs.append(f"{g.name}:{kind} step {step}: a layer has no unfused {kind}")
                    continue
                ref = torch.cat(parts, dim=0 if kind == "dA" else 1)
                if ref.shape != t["out"].shape or not torch.equal(ref.to(torch.int64), t["out"].to(torch.int64)):
                    diffs.append(f"{g.name}:{kind} step {step}: fused output differs from the layers' own")
                if "amax" in t:
                    ref_amax = [int(own[lyr.name][step]["amax"][0]) if "amax" in own[lyr.name][step]
                                else int(own[lyr.name][step]["out"].abs().max()) for lyr in g.layers]
                    if t["amax"].tolist() != ref_amax:
                        diffs.append(f"{g.name}:{kind} step {step}: amax {t['amax'].tolist()} != {ref_amax}")
    # 3. histories, outputs, gradients, parameters
    if fused["amax"] != unfused["amax"]:
        diffs.append("amax histories differ")
    if not torch.equal(fused["y"], unfused["y"]):
        diffs.append("outputs differ")
    for what in ("grads", "params"):
        for name, (a, b) in unfused[what].items():
            fa, fb = fused[what][name]
            if not (torch.equal(a, fa) and torch.equal(b, fb)):
                diffs.append(f"{name}: {what} differ")
    return diffs
