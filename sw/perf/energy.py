"""Energy model: per-action energies from a published table (sw/perf/data/energy_45nm.json, Horowitz ISSCC 2014, 45 nm)
times the actions a design performs for a workload.

Counted per GEMM (from :mod:`cdmqta.sw.perf`'s tiling and reuse model):
- MACs by precision: INT8 design = INT8 multiply + INT32 add per MAC (0.2 + 0.1 pJ); FP16 design = FP16 multiply
  + FP32 add (1.1 + 0.9 pJ). Only real MACs count (idle PEs are clock-gated).
- Scratchpad: operand bytes read into the array (A once per N block, B once per M chunk or M block: the reuse the
  dataflow gives) plus the bytes written into it from DRAM; accumulator: read-modify-write per K pass (WS: one pass
  per K block of R rows; OS: one per K chunk, the rest accumulates inside the PEs) plus the read for the store.
  One 64-bit access of a 32 KB SRAM bank = 20 pJ.
- DRAM: operand and result bytes of the reuse model, 1.3 nJ per 64 bits (the low end of Horowitz's 1.3-2.6 nJ).
Element sizes: INT8 operands 1 byte (results stored as INT8, LoRA weight gradients as INT32); FP16 operands 2
bytes (results FP16, weight gradients FP32); accumulators 4 bytes in both.
Not counted: clock tree, control, leakage (both designs would add energy proportional to their cycles, which
favours the faster design), the host optimizer.
"""

import json
import os

__all__ = ["load_table", "mac_energy_pj", "gemm_energy", "DESIGN_PRECISION"]

DESIGN_PRECISION = {"ours": "int8", "ws_overlap": "int8", "fixed_ws": "fp16"}
_MAC = {"int8": ("int8_mult", "int32_add"), "fp16": ("fp16_mult", "fp32_add"), "int4": ("int8_mult", "int32_add")}


def default_table_path():
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "energy_45nm.json")


def load_table(path=None):
    """The energy table as a dict; raises ValueError if a value is missing or not positive."""
    path = path or default_table_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"energy table not found: {path}")
    with open(path) as f:
        t = json.load(f)
    for section, keys in (("ops", ("int8_add", "int32_add", "int8_mult", "fp16_add", "fp32_add", "fp16_mult",
                                   "fp32_mult")), ("memory_per_64bit", ("sram_32kb", "dram_low"))):
        for k in keys:
            v = t.get(section, {}).get(k)
            if not isinstance(v, (int, float)) or v <= 0:
                raise ValueError(f"{path}: {section}.{k}={v!r} must be a positive number (pJ)")
    if not t.get("source"):
        raise ValueError(f"{path}: the table must cite its source")
    return t


def mac_energy_pj(precision, table):
    try:
        mult, add = _MAC[precision]
    except KeyError:
        raise ValueError(f"precision={precision!r} must be one of {sorted(_MAC)}") from None
    return table["ops"][mult] + table["ops"][add]


def gemm_energy(macs, cost, precision, table):
    """{compute_pj, sram_pj, dram_pj, total_pj} of ``macs`` MACs whose traffic is ``cost`` (a perf.GemmCost of the
    same instances, bytes already multiplied by the count)."""
    sram64 = table["memory_per_64bit"]["sram_32kb"]
    dram64 = table["memory_per_64bit"]["dram_low"]
    compute = macs * mac_energy_pj(precision, table)
    sram = (cost["sram_bytes"] + cost["acc_bytes"]) / 8 * sram64
    dram = cost["dram_bytes"] / 8 * dram64
    return {"compute_pj": compute, "sram_pj": sram, "dram_pj": dram, "total_pj": compute + sram + dram}
