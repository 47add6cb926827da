"""GEMM workloads of one LoRA training step of a diffusers U-Net, read off the model itself.

A workload is a list of :class:`Gemm` rows, ``C[m x n] = A[m x k] . B[k x n]`` repeated ``count`` times, each with
its phase (``fwd``/``bwd``), its class (``frozen``: the U-Net's own linears and convolutions; ``attention``: the
per-head ``Q.K^T`` and ``P.V`` matmuls and their backward; ``lora``: the adapter GEMMs) and the ids of its three
operands (``a_id``, ``b_id``, ``c_id``), so that :mod:`cdmqta.sw.perf.fusion` can see which GEMMs share an operand.

The rows of the Stable Diffusion 1.5 step ship as CSV files in ``data/`` (``sd15-lora-kv.csv``,
``sd15-lora-all.csv``); :mod:`cdmqta.sw.perf.extract` records them from diffusers' ``UNet2DConditionModel``
(``python scripts/extract_workloads.py``). Per adapted linear the LoRA GEMMs (:func:`lora_gemms`):
``H = X.A^T`` (T, r, in), ``Y1 = H.B^T`` (T, out, r), ``dH = dY.B`` (T, r, out), ``dB = dY^T.H`` (out, r, T),
``dA = dH^T.X`` (r, in, T) and, where the input needs a gradient, ``dXl = dH.A`` (T, in, r), which accumulates into
the frozen ``dX = dY.W0`` (same ``c_id``). ``Y0`` and ``dY.W0`` are the frozen layer's own rows.
"""

import csv
import dataclasses
import os
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["Gemm", "SD15_CONFIG", "TINY_CONFIG", "PLACEMENTS", "RANKS", "WORKLOADS", "TEXT_ID", "lora_gemms", "merge",
           "save_csv", "load_csv", "load_workload", "available_ranks", "summarize", "data_dir", "macs"]

RANKS = (4, 8, 16, 32, 64, 128)

# The published Stable Diffusion 1.5 U-Net config (runwayml/stable-diffusion-v1-5, unet/config.json), written here
# so nothing is downloaded.
SD15_CONFIG = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    only_cross_attention=False,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=768,
    attention_head_dim=8,
    dual_cross_attention=False,
    use_linear_projection=False,
    upcast_attention=False,
)

# A small U-Net of the same structure for fast tests.
TINY_CONFIG = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(32, 64),
    layers_per_block=1,
    norm_num_groups=8,
    cross_attention_dim=24,
    attention_head_dim=4,
)

# LoRA placements: which linears of each attention module carry an adapter.
PLACEMENTS = {
    "kv": ("attn2.to_k", "attn2.to_v"),
    "all": tuple(f"{a}.{p}" for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out.0")),
}
WORKLOADS = {"sd15-lora-kv": "kv", "sd15-lora-all": "all"}

FIELDS = ("name", "phase", "cls", "rank", "m", "n", "k", "count", "a_id", "b_id", "c_id", "a_elems")
TEXT_ID = "text_emb"


@dataclass(frozen=True)
class Gemm:
    """C[m x n] (+)= A[m x k] . B[k x n], ``count`` identical instances. ``rank`` is 0 for rows that do not depend
    on the LoRA rank. ``a_id``/``b_id``/``c_id`` name the operand tensors (equal ids = the same tensor).
    ``a_elems`` is the number of distinct elements of A in memory when A is an im2col view (a convolution's input
    feature map, C_in*H_in*W_in), 0 when A is a plain m x k matrix; the DRAM model reads it instead of m*k."""

    name: str
    phase: str
    cls: str
    m: int
    n: int
    k: int
    count: int = 1
    rank: int = 0
    a_id: str = ""
    b_id: str = ""
    c_id: str = ""
    a_elems: int = 0

    def __post_init__(self):
        for f in ("m", "n", "k", "count"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"GEMM {self.name!r}: {f}={v!r} must be a positive integer")
        if isinstance(self.a_elems, bool) or not isinstance(self.a_elems, int) or self.a_elems < 0:
            raise ValueError(f"GEMM {self.name!r}: a_elems={self.a_elems!r} must be a non-negative integer")
        if self.phase not in ("fwd", "bwd"):
            raise ValueError(f"GEMM {self.name!r}: phase={self.phase!r} must be fwd or bwd")
        if self.cls not in ("frozen", "attention", "lora"):
            raise ValueError(f"GEMM {self.name!r}: cls={self.cls!r} must be frozen, attention or lora")

    @property
    def macs(self):
        return self.m * self.n * self.k * self.count

    def replace(self, **kw):
        return dataclasses.replace(self, **kw)


def macs(gemms):
    return sum(g.macs for g in gemms)


def data_dir():
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def lora_gemms(sites, rank):
    """The rank-``rank`` adapter GEMMs of the adapted linears recorded by :func:`record_unet`."""
    rows = []
    fwd, bwd = [], []
    r = rank
    for s in sites:
        n, t, din, dout, x = s["name"], s["t"], s["d_in"], s["d_out"], s["a_id"]
        fwd.append(Gemm(f"{n}.H", "fwd", "lora", t, r, din, 1, r, x, f"{n}.A^T", f"{n}.H"))
        fwd.append(Gemm(f"{n}.Y1", "fwd", "lora", t, dout, r, 1, r, f"{n}.H", f"{n}.B^T", f"{n}.y"))
        b = [Gemm(f"{n}.dH", "bwd", "lora", t, r, dout, 1, r, f"{n}.dY", f"{n}.B", f"{n}.dH"),
             Gemm(f"{n}.dB", "bwd", "lora", dout, r, t, 1, r, f"{n}.dY^T", f"{n}.H", f"{n}.dB"),
             Gemm(f"{n}.dA", "bwd", "lora", r, din, t, 1, r, f"{n}.dH^T", x, f"{n}.dA")]
        if s["input_grad"]:
            b.append(Gemm(f"{n}.dXl", "bwd", "lora", t, din, r, 1, r, f"{n}.dH", f"{n}.A", f"{n}.dX"))
        bwd.append(b)
    rows = fwd + [g for b in bwd[::-1] for g in b]
    return rows


def merge(rows):
    """Merge rows identical in everything but the count (keeps first-seen order)."""
    out = OrderedDict()
    for g in rows:
        key = g.replace(count=1)
        if key in out:
            out[key] = out[key].replace(count=out[key].count + g.count)
        else:
            out[key] = g
    return list(out.values())


# ---------------------------------------------------------------------------------------------------------------
# CSV


def save_csv(rows, path, header_comment=None):
    with open(path, "w", newline="") as f:
        if header_comment:
            for line in header_comment.splitlines():
                f.write(f"# {line}\n")
        w = csv.writer(f)
        w.writerow(FIELDS)
        for g in rows:
            w.writerow([getattr(g, c) for c in FIELDS])


def load_csv(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"workload CSV not found: {path}")
    rows = []
    with open(path, newline="") as f:
        lines = [ln for ln in f if not ln.startswith("#")]
    reader = csv.DictReader(lines)
    need = {"m", "n", "k"}
    if reader.fieldnames is None or not need <= set(reader.fieldnames):
        raise ValueError(f"{path}: a workload CSV needs at least the columns m, n, k (has {reader.fieldnames})")
    for i, d in enumerate(reader, start=2):
        try:
            rows.append(Gemm(
                name=d.get("name") or f"gemm{i - 1}", phase=d.get("phase") or "fwd", cls=d.get("cls") or "frozen",
                m=int(d["m"]), n=int(d["n"]), k=int(d["k"]), count=int(d.get("count") or 1),
                rank=int(d.get("rank") or 0), a_id=d.get("a_id") or "", b_id=d.get("b_id") or "",
                c_id=d.get("c_id") or "", a_elems=int(d.get("a_elems") or 0)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: row {i}: {exc}") from None
    if not rows:
        raise ValueError(f"{path}: no GEMM rows")
    return rows


def load_workload(workload, rank=None):
    """Rows of a named workload (``sd15-lora-kv``/``sd15-lora-all``) or a CSV path; with ``rank``, only the rows of
    that rank (and the rank-independent ones). Raises ValueError/FileNotFoundError for bad input."""
    if workload in WORKLOADS:
        path = os.path.join(data_dir(), f"{workload}.csv")
    elif workload.endswith(".csv") or os.sep in workload:
        path = workload
    else:
        raise ValueError(f"unknown workload {workload!r}: use one of {', '.join(WORKLOADS)} or a CSV path")
    rows = load_csv(path)
    if rank is not None:
        ranks = available_ranks(rows)
        if ranks and rank not in ranks:
            raise ValueError(f"rank {rank} is not in workload {workload!r} (ranks: {', '.join(map(str, ranks))})")
        rows = [g for g in rows if g.rank in (0, rank)]
    return rows


def available_ranks(rows):
    return sorted({g.rank for g in rows if g.rank})


def summarize(rows):
    """{(phase, cls): (gemms, distinct rows, macs)} plus totals."""
    out = {}
    for g in rows:
        key = (g.phase, g.cls)
        c, d, mac = out.get(key, (0, 0, 0))
        out[key] = (c + g.count, d + 1, mac + g.macs)
    return dict(sorted(out.items()))
