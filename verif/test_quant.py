"""Quantizers, requantization and the multiplier conversion against brute-force Python-int / Fraction references."""

import math
import random
from fractions import Fraction

import pytest
import torch

from cdmqta.sw.model.quant import (
    dequantize,
    multiplier_value,
    quantize,
    quantize_multiplier,
    quantize_tensor,
    requant_params,
    scale_for,
)
from cdmqta.sw.model.requant import requantize

MASK32 = 0xFFFFFFFF


def py_sr_hash(seed, i, j):
    x = (seed & MASK32) ^ (((i & 0xFFFF) << 16) | (j & 0xFFFF))
    for _ in range(3):
        x ^= (x << 13) & MASK32
        x ^= x >> 17
        x ^= (x << 5) & MASK32
        x = (x + 0x9E3779B9) & MASK32
    return x


def py_requant(acc, mult, shift, bits, rounding, seed, i, j):
    lim = (1 << (bits - 1)) - 1
    p = acc * mult
    if rounding == "nearest":
        q = round(Fraction(p, 1 << shift))  # Fraction rounds half to even
    else:
        r = (py_sr_hash(seed, i, j) << shift) >> 32
        q = (p + r) // (1 << shift)
    return max(-lim, min(lim, q))


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_requantize_matches_python_ints(bits, rounding):
    rng = random.Random(bits * 10 + (rounding == "stochastic"))
    for trial in range(12):
        rows, cols = rng.randint(1, 7), rng.randint(1, 9)
        shift = [0, 1, 2, 15, 16, 31, 32, 33, 40, 47][trial % 10]
        mult = rng.choice([1, 2, 3, 32768, 65535, rng.randint(1, 65535)])
        span = 1 << rng.choice([4, 12, 20, 31])
        acc = [[rng.randint(-span, span - 1) for _ in range(cols)] for _ in range(rows)]
        if shift and mult == 1 and shift < 31:  # an exact tie: acc / 2**shift = 2.5
            acc[0][0] = 5 << (shift - 1)
        seed = rng.getrandbits(32)
        got = requantize(torch.tensor(acc, dtype=torch.int32), mult, shift, bits, rounding, seed)
        want = [
            [py_requant(acc[i][j], mult, shift, bits, rounding, seed, i, j) for j in range(cols)] for i in range(rows)
        ]
        assert got.tolist() == want, (mult, shift)


def test_requantize_ties_to_even():
    acc = torch.tensor([[1, 3, 5, -1, -3, -5, 2, -2]], dtype=torch.int32)  # x / 2 = +-0.5, +-1.5, +-2.5, +-1
    assert requantize(acc, 1, 1).tolist() == [[0, 2, 2, 0, -2, -2, 1, -1]]


@pytest.mark.parametrize("bits", [8, 4])
def test_quantize_nearest_matches_python_floats(bits):
    gen = torch.Generator().manual_seed(bits)
    x = torch.randn(13, 17, generator=gen) * 3
    x[0, 0] = 0.0
    q, s = quantize_tensor(x, bits)
    lim = (1 << (bits - 1)) - 1
    assert float(s) == float(x.abs().max()) / lim
    want = [[max(-lim, min(lim, round(float(v) / float(s)))) for v in row] for row in x.tolist()]
    assert q.tolist() == want
    assert int(q.abs().max()) == lim  # the max-abs element lands on the largest code
    # round trip: error at most half a step
    err = (dequantize(q, s) - x).abs().max()
    assert float(err) <= float(s) / 2 * (1 + 1e-6)


def test_quantize_ties_and_per_channel():
    x = torch.tensor([[0.5, 1.5, 2.5, -0.5, -2.5, 127.0]])
    assert quantize(x, 1.0).tolist() == [[0, 2, 2, 0, -2, 127]]
    w = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [-7.0, 3.5, 1.0]])
    q, s = quantize_tensor(w, 4, dim=0)
    assert s.shape == (3, 1) and s.dtype == torch.float64
    assert s.flatten().tolist() == [2.0 / 7, 1.0, 1.0]  # zero channel gets scale 1
    assert q.tolist() == [[round(3.5), -7, round(1.75)], [0, 0, 0], [-7, round(3.5), 1]]


def test_quantize_stochastic_reference_and_unbiased():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(64, 64, generator=gen) * 10 - 5
    q = quantize(x, 0.25, 8, "stochastic", seed=1234)
    want = [[max(-127, min(127, math.floor(float(v) / 0.25 + py_sr_hash(1234, i, j) * 2.0 ** -32)))
             for j, v in enumerate(row)] for i, row in enumerate(x.tolist())]
    assert q.tolist() == want
    assert torch.equal(q, quantize(x, 0.25, 8, "stochastic", seed=1234))
    assert not torch.equal(q, quantize(x, 0.25, 8, "stochastic", seed=1235))
    # unbiased: a constant 0.3 steps rounds up about 30 % of the time
    c = torch.full((128, 128), 0.3)
    frac = float(quantize(c, 1.0, 8, "stochastic", seed=7).float().mean())
    assert abs(frac - 0.3) < 0.02, frac


def test_quantize_multiplier_error_bound():
    rng = random.Random(5)
    scales = [2.0 ** e for e in range(-32, 16)] + [rng.uniform(0, 1) * 2.0 ** rng.randint(-32, 15) for _ in range(500)]
    scales += [1.0, 0.999999, 127 / 3, 127 / 2 ** 31, 65535.0, 65535.4, Fraction(127, 1000003)]
    for s in scales:
        if s < 2.0 ** -32:
            continue
        mult, shift = quantize_multiplier(s)
        assert 1 << 15 <= mult < 1 << 16 and 0 <= shift <= 47, (s, mult, shift)
        err = abs(multiplier_value(mult, shift) - Fraction(s))
        assert err <= Fraction(s) / 2 ** 16, (s, mult, shift)
        # nearest: no neighbouring mantissa is closer
        for m2 in (mult - 1, mult + 1):
            assert abs(Fraction(m2, 1 << shift) - Fraction(s)) >= err
    assert quantize_multiplier(0.5) == (1 << 15, 16)
    assert quantize_multiplier(65535.7) == (65535, 0)
    assert quantize_multiplier(1e9) == (65535, 0)
    m, sh = quantize_multiplier(2.0 ** -40)
    assert sh == 47 and m == 128
    assert quantize_multiplier(1e-30) == (1, 47)
    assert abs(multiplier_value(*quantize_multiplier(3e-15)) - Fraction(3e-15)) <= Fraction(1, 2 ** 47)
    # rounding up to 2**16 renormalizes
    assert quantize_multiplier(Fraction(2 ** 17 - 1, 2 ** 17)) == (1 << 15, 15)
    for bad in (0, -1.0, float("nan"), float("inf"), "x"):
        with pytest.raises(ValueError):
            quantize_multiplier(bad)


def test_requant_params_map_max_to_qmax():
    rng = random.Random(9)
    for amax in [1, 2, 127, 128, 1000, 2 ** 20 + 7, 2 ** 31 - 1] + [rng.randint(1, 2 ** 31 - 1) for _ in range(50)]:
        for bits in (8, 4):
            lim = (1 << (bits - 1)) - 1
            mult, shift = requant_params(amax, bits)
            acc = torch.tensor([[amax, -amax, amax // 2]], dtype=torch.int64)
            q = requantize(acc, mult, shift, bits)
            assert q[0, 0] == lim and q[0, 1] == -lim, (amax, bits, q)
            assert abs(int(q[0, 2]) - amax // 2 * lim / amax) <= 0.5 + 1e-3
    assert requant_params(0) == (1, 0)


def test_bad_quant_arguments():
    x = torch.ones(2, 2)
    with pytest.raises(ValueError, match="bits"):
        quantize_tensor(x, 5)
    with pytest.raises(ValueError, match="rounding"):
        quantize(x, 1.0, 8, "up")
    with pytest.raises(ValueError, match="scale"):
        quantize(x, 0.0)
    with pytest.raises(ValueError, match="inf/nan"):
        quantize(torch.tensor([float("nan")]), 1.0)
    with pytest.raises(ValueError, match="float"):
        scale_for(torch.ones(2, dtype=torch.int32))
