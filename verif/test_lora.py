"""The quantized LoRA golden model: agreement with peft (fp32), with fp32 gradients (int8, int8-w4), exact
engine-call sequence, determinism, capture/replay, bad arguments."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from cdmqta.sw.model.engine import TorchEngine
from cdmqta.sw.model.lora import GEMMS, QuantLoRALinear, add_lora, capture, lora_layers, reference_step
from cdmqta.sw.model.quant import quantize_tensor


class Block(nn.Module):
    def __init__(self, d=24, ctx=16):
        super().__init__()
        self.to_q = nn.Linear(d, d, bias=False)
        self.to_k = nn.Linear(ctx, d, bias=False)
        self.to_v = nn.Linear(ctx, d)
        self.to_out = nn.Sequential(nn.Linear(d, d), nn.Dropout(0.0))
        self.norm = nn.LayerNorm(d)

    def forward(self, x, c):
        q, k, v = self.to_q(self.norm(x)), self.to_k(c), self.to_v(c)
        att = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -1)
        return x + self.to_out(att @ v)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block()])
        self.conv = nn.Conv1d(2, 2, 1)

    def forward(self, x, c):
        for b in self.blocks:
            x = b(x, c)
        return x


TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def _data(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(3, 10, 24, generator=gen),
        torch.randn(3, 5, 16, generator=gen),
        torch.randn(3, 10, 24, generator=gen),
    )


def _net(seed=0):
    torch.manual_seed(seed)
    return Net()


def test_fp32_matches_peft():

    base = _net()
    ours = copy.deepcopy(base)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0)
    ref = get_peft_model(copy.deepcopy(base), cfg)
    params = add_lora(ours, TARGETS, rank=4, alpha=8, quant="fp32")
    assert len(params) == 2 * 4 * 2
    layers = lora_layers(ours)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, layer in layers.items():
            peft_mod = ref.base_model.model.get_submodule(name)
            layer.lora_A.copy_(peft_mod.lora_A["default"].weight)
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen) * 0.1)
            peft_mod.lora_B["default"].weight.copy_(layer.lora_B)
    x, c, g = _data()
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y_ours, y_ref = ours(x1, c), ref(x2, c)
    torch.testing.assert_close(y_ours, y_ref, rtol=1e-5, atol=1e-6)
    (y_ours * g).sum().backward()
    (y_ref * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-6)
    for name, layer in layers.items():
        peft_mod = ref.base_model.model.get_submodule(name)
        torch.testing.assert_close(layer.lora_A.grad, peft_mod.lora_A["default"].weight.grad, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(layer.lora_B.grad, peft_mod.lora_B["default"].weight.grad, rtol=1e-5, atol=1e-6)
    # only LoRA parameters are trainable
    assert {id(p) for p in ours.parameters() if p.requires_grad} == {id(p) for p in params}


def _cos(a, b):
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def _grads(quant, rounding="nearest", engine=None):
    net = _net(1)
    params = add_lora(net, TARGETS, rank=4, alpha=8, quant=quant, engine=engine, rounding=rounding, seed=11)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in params[1::2]:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)  # non-zero B: every gradient is non-trivial
    x, c, g = _data(2)
    x = x.requires_grad_(True)
    y = net(x, c)
    (y * g).sum().backward()
    return y.detach(), [p.grad.clone() for p in params], x.grad.clone()


#: The README's claims (Results, "Quantized LoRA fine-tuning quality"): cosine similarity to fp32 of every A/B
#: gradient (``grad``) and of the output and the input gradient (``out``).
@pytest.mark.parametrize("quant,rounding,grad,out", [
    ("int8", "nearest", 0.9993, 0.9999), ("int8", "stochastic", 0.9993, 0.9999), ("int8-w4", "nearest", 0.982, 0.9995)])
def test_quantized_gradients_close_to_fp32(quant, rounding, grad, out):
    y_f, g_f, dx_f = _grads("fp32")
    y_q, g_q, dx_q = _grads(quant, rounding)
    sims = [_cos(a, b) for a, b in zip(g_f, g_q)]
    print(f"\n{quant}/{rounding}: y cos {_cos(y_f, y_q):.5f}, dX cos {_cos(dx_f, dx_q):.5f}, "
          f"A/B grad cos min {min(sims):.5f} mean {sum(sims) / len(sims):.5f}")
    assert _cos(y_f, y_q) >= out
    assert _cos(dx_f, dx_q) >= out
    assert min(sims) >= grad, sims


def test_engine_calls_and_determinism():
    eng1, eng2 = TorchEngine(), TorchEngine()
    with capture(eng1) as cap1:
        y1, g1, dx1 = _grads("int8", "stochastic", eng1)
    with capture(eng2) as cap2:
        y2, g2, dx2 = _grads("int8", "stochastic", eng2)
    assert cap1.compare(cap2) == []
    assert torch.equal(y1, y2) and torch.equal(dx1, dx2) and all(torch.equal(a, b) for a, b in zip(g1, g2))
    assert cap1.replay(TorchEngine()) == []
    # forward of 8 layers (4 calls each), then backward in reverse layer order (6 calls each, + dX on all:
    # x requires grad, so every layer's input needs a gradient except to_k/to_v whose input c does not)
    kinds = [n.rsplit(":", 1)[1] for _, n in cap1.calls()]
    assert set(kinds) == set(GEMMS)
    fwd = cap1.calls()[:32]
    assert [k for k, _ in fwd[:4]] == ["gemm", "requant", "gemm", "gemm"]
    assert [n.rsplit(":", 1)[1] for _, n in fwd[:4]] == ["H", "H", "Y1", "Y0"]
    assert fwd[0][1] == "blocks.0.to_q:H"
    back = [n for _, n in cap1.calls()[32:]]
    assert back[:8] == [f"blocks.1.to_out.0:{g}" for g in ("dH", "dH", "dB", "dA", "dX0", "dXlora")] + \
        ["blocks.1.to_v:dH", "blocks.1.to_v:dH"]
    assert not any(n.startswith(("blocks.0.to_k:dX", "blocks.0.to_v:dX")) for n in back)


def test_requantized_tensors_are_engine_outputs():
    out = reference_step(quant="int8-w4", rounding="stochastic", steps=2, seed=3)
    cap = out["capture"]
    calls = cap.calls()
    assert len(calls) == 20
    layer = out["layer"]
    assert int(layer.w0q.abs().max()) <= 7
    for idx, (kind, name) in enumerate(calls):
        t = cap.tensors[idx]
        if kind == "requant":
            # the next GEMM consuming the requantized tensor receives exactly the engine's int8 output
            assert t["out"].dtype == torch.int8 and int(t["out"].abs().max()) == 127
        if name == "Y1":
            assert torch.equal(t["a"], cap.tensors[idx - 1]["out"])
        if name == "dB":
            assert torch.equal(t["b"], cap.tensors[idx - 5]["out"])  # Hq of the same step
        if name == "dA":
            assert torch.equal(t["a"], cap.tensors[idx - 2]["out"].t())
        if kind == "gemm":
            assert t["out"].dtype == torch.int32
            assert torch.equal(t["out"].long(), t["a"].long() @ t["b"].long())
    again = reference_step(quant="int8-w4", rounding="stochastic", steps=2, seed=3)
    assert cap.compare(again["capture"]) == []
    assert torch.equal(out["params"]["A"], again["params"]["A"])
    other = reference_step(quant="int8-w4", rounding="stochastic", steps=2, seed=4)
    assert cap.compare(other["capture"]) != []


def test_host_scales_and_dequantization():
    torch.manual_seed(0)
    base = nn.Linear(20, 12)
    layer = QuantLoRALinear(base, 3, alpha=6, quant="int8")
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(7, 20)
    y = layer(x)
    xq, sx = quantize_tensor(x, 8)
    wq, sw = quantize_tensor(base.weight, 8)
    y0 = (xq.double() @ wq.double().t()) * float(sx) * float(sw) + base.bias.double()
    # the LoRA branch: float reference of the dequantized operands, within INT8 error
    aq, sa = quantize_tensor(layer.lora_A, 8)
    bq, sb = quantize_tensor(layer.lora_B, 8)
    h = (xq.double() @ aq.double().t()) * float(sx) * float(sa)
    y1 = h @ (bq.double() * float(sb)).t() * 2.0
    ref = y0 + y1
    err = float((y.detach().double() - ref).abs().max() / ref.abs().max())
    assert err < 0.02, err


def test_bad_arguments():
    lin = nn.Linear(8, 6)
    with pytest.raises(ValueError, match="rank"):
        QuantLoRALinear(lin, 0)
    with pytest.raises(ValueError, match="exceeds"):
        QuantLoRALinear(lin, 7)
    with pytest.raises(ValueError, match="quant"):
        QuantLoRALinear(lin, 2, quant="int3")
    with pytest.raises(ValueError, match="rounding"):
        QuantLoRALinear(lin, 2, rounding="up")
    with pytest.raises(TypeError, match="nn.Linear"):
        QuantLoRALinear(nn.Conv1d(2, 2, 1), 1)
    with pytest.raises(TypeError, match="engine"):
        QuantLoRALinear(lin, 2, engine=object())
    with pytest.raises(ValueError, match="matches no module"):
        add_lora(_net(), ["to_z"], rank=2)
    with pytest.raises(TypeError, match="not an nn.Linear"):
        add_lora(_net(), ["conv"], rank=1)
    with pytest.raises(ValueError, match="exceeds"):
        add_lora(_net(), ["to_k"], rank=20)
    with pytest.raises(ValueError, match="quant"):
        add_lora(_net(), ["to_k"], rank=2, quant="fp16")
    with pytest.raises(ValueError, match="empty"):
        add_lora(_net(), [], rank=2)
    net = _net()
    add_lora(net, ["to_k"], rank=2)
    with pytest.raises(ValueError, match="already"):
        add_lora(net, ["to_k"], rank=2)
    with pytest.raises(ValueError, match="features"):
        QuantLoRALinear(lin, 2)(torch.ones(3, 5))
