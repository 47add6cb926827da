"""LoRA-aware fusion: GEMMs that read the same operand become one larger GEMM, where that is exact.

Two GEMMs that share their left operand, ``C_i = X . B_i`` (same X [M x K]), are one GEMM against the columns of
the concatenated right operands: ``[C_1 | C_2 | ...] = X . [B_1 | B_2 | ...]`` (N = sum n_i). Two GEMMs that share
their right operand, ``C_i = A_i . Y``, are one GEMM on the stacked left operands (M = sum m_i). Every output
element is the same dot product as before, so the integer results are identical and each block keeps its own
requantization scale (the store of each block is separate). In a LoRA training step:

- all cross-attention K/V projections read the same 77 x 768 text embedding ``c``: their adapters'
  ``H_i = c . A_i^T`` are one GEMM ``c . [A_1; A_2; ...]^T`` (N = sum r), their ``dA_i = dH_i^T . c`` one GEMM
  ``[dH_1 | dH_2 | ...]^T . c`` (M = sum r), and the frozen ``c . W_i^T`` one GEMM as well;
- with adapters on all projections, the self-attention ``to_q/to_k/to_v`` adapters share their input X the same way.

Not fused: GEMMs that only share their output (``dX = dY.W0 + dH.A``, ``Y = Y0 + s.Y1``): summing two integer
accumulators is exact only when both products carry the same scale, which quantized LoRA does not guarantee.

Rows use :class:`cdmqta.sw.perf.workloads.Gemm` operand ids (``a_id``, ``b_id``) to find the groups.
"""

from collections import OrderedDict

from .workloads import Gemm

__all__ = ["fuse", "fusion_groups"]


def fusion_groups(rows, classes=("lora", "frozen")):
    """[(kind, [indices])] of rows that can fuse: kind "n" (shared A, concatenate along N) or "m" (shared B,
    concatenate along M). A row belongs to at most one group; groups have two or more rows."""
    used = set()
    groups = []
    for kind in ("n", "m"):
        buckets = OrderedDict()
        for i, g in enumerate(rows):
            if i in used or g.cls not in classes or g.count != 1:
                continue
            if kind == "n" and g.a_id:
                key = (g.phase, g.cls, g.rank, g.a_id, g.m, g.k)
            elif kind == "m" and g.b_id:
                key = (g.phase, g.cls, g.rank, g.b_id, g.k, g.n)
            else:
                continue
            buckets.setdefault(key, []).append(i)
        for idx in buckets.values():
            if len(idx) > 1:
                groups.append((kind, idx))
                used.update(idx)
    return groups


def fuse(rows, classes=("lora", "frozen")):
    """The workload with every fusion group replaced by one GEMM (placed where the group's first member was)."""
    rows = list(rows)
    groups = fusion_groups(rows, classes)
    first = {}
    member = set()
    for kind, idx in groups:
        gs = [rows[i] for i in idx]
        g0 = gs[0]
        ids = "+".join(g.name for g in gs)
        if kind == "n":
            fused = Gemm(f"fused[{len(gs)}]:{g0.name}", g0.phase, g0.cls, g0.m, sum(g.n for g in gs), g0.k, 1, g0.rank,
                         g0.a_id, f"concat_n({'|'.join(g.b_id for g in gs)})", f"concat_n({ids})", g0.a_elems)
        else:
            fused = Gemm(f"fused[{len(gs)}]:{g0.name}", g0.phase, g0.cls, sum(g.m for g in gs), g0.n, g0.k, 1, g0.rank,
                         f"concat_m({'|'.join(g.a_id for g in gs)})", g0.b_id, f"concat_m({ids})")
        first[idx[0]] = fused
        member.update(idx)
    out = []
    for i, g in enumerate(rows):
        if i in first:
            out.append(first[i])
        elif i not in member:
            out.append(g)
    return out
