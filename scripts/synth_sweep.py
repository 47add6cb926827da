#!/usr/bin/env python3
"""Resource and Fmax sweep of the systolic array over array sizes and precisions (ECP5-85F by default).

    python scripts/synth_sweep.py --sizes 2,4,8,16 --precisions int8,int4 --out build/synth_sweep
    python scripts/synth_sweep.py --sizes 8 --precisions int8 --seeds 1,2,3,4   # placement spread of one size

Runs ``cdmqta.synth.flow.synthesize_config`` once per (size, precision, seed), one after the other (the tools are
single-threaded; sequential runs keep a shared machine usable), and writes after every run:

* ``sweep.json``  -- list of result dicts (see ``cdmqta synth --json``), failed runs with an ``error`` key,
* ``sweep.md``    -- markdown table: size, precision, seed, LUT, FF, DSP, DSP/MAC, BRAM, Fmax, critical path
                     (with several seeds, also a summary: min / median / max Fmax per size and precision),
* ``sweep.png``   -- Fmax and LUT / DSP vs array size, one line per precision.

"int8" builds the array without the INT4 mode (``int4=False``), "int4" with it (the INT8+INT4 array).
"""

import argparse
import json
import os
import sys
import time
from statistics import median

import matplotlib
import matplotlib.pyplot as plt

from cdmqta.hw.config import QTAConfig
from cdmqta.synth.flow import ToolRunError, synthesize_config


def _parse_list(text, kind, allowed=None):
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"--{kind} is empty")
    if allowed is not None:
        bad = [t for t in items if t not in allowed]
        if bad:
            raise ValueError(f"--{kind} {','.join(bad)}: choose from {', '.join(allowed)}")
    return items


def _size(text):
    rows, _, cols = text.lower().partition("x")
    try:
        r = int(rows)
        c = int(cols) if cols else r
    except ValueError:
        raise ValueError(f"bad size {text!r} (use N or RxC)") from None
    return r, c


def markdown_table(results):
    head = ("| size | precision | seed | LUT | FF | DSP | DSP/MAC | LUT mult. | BRAM | Fmax (MHz) | critical path |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
    lines = []
    for r in results:
        size = f"{r['rows']}x{r['cols']}"
        prec = r["precision"]
        if "error" in r:
            lines.append(f"| {size} | {prec} | {r.get('seed', '-')} | - | - | - | - | - | - | - | "
                         f"failed: {r['error'][:80]} |")
            continue
        cp = r.get("critical_path") or {}
        path = f"`{cp.get('from')}` -> `{cp.get('to')}` ({cp.get('delay_ns', 0):.2f} ns)" if cp else "-"
        lines.append(f"| {size} | {prec} | {r.get('seed', '-')} | {r['lut']} | {r['ff']} | {r['dsp']} | "
                     f"{r['dsp_per_mac']:.2f} | "
                     f"{r.get('lut_multipliers', 0)} | {r['bram']} | {r['fmax_mhz']:.1f} | {path} |")
    return head + "\n".join(lines) + "\n" + seed_summary(results)


def seed_summary(results):
    """Min / median / max Fmax over seeds per (size, precision), when some size ran with more than one seed."""
    groups = {}
    for r in results:
        if "error" not in r:
            groups.setdefault((r["rows"], r["cols"], r["precision"]), []).append(r["fmax_mhz"])
    if all(len(v) < 2 for v in groups.values()):
        return ""
    out = ["", "| size | precision | seeds | Fmax min | median | max (MHz) |", "|---|---|---:|---:|---:|---:|"]
    for (rows, cols, prec), fs in groups.items():
        out.append(f"| {rows}x{cols} | {prec} | {len(fs)} | {min(fs):.1f} | {median(fs):.1f} | {max(fs):.1f} |")
    return "\n".join(out) + "\n"


def plot(results, path):
    matplotlib.use("Agg")

    ok = [r for r in results if "error" not in r]
    if not ok:
        return
    fig, (ax_f, ax_r) = plt.subplots(1, 2, figsize=(10, 4))
    for ax in (ax_f, ax_r):
        ax.set_xscale("log", base=2)
        ax.minorticks_off()
    for prec, marker, color in (("int8", "o", "tab:blue"), ("int4", "s", "tab:orange")):
        by_size = {}
        for r in ok:
            if r["precision"] == prec:
                by_size.setdefault(r["macs"], []).append(r)
        if not by_size:
            continue
        macs = sorted(by_size)
        rs = [by_size[x][0] for x in macs]
        labels = [f"{r['rows']}x{r['cols']}" for r in rs]
        # several seeds of one size: the median, with the min..max range as an error bar
        fs = [[r["fmax_mhz"] for r in by_size[x]] for x in macs]
        med = [median(f) for f in fs]
        ax_f.errorbar(macs, med, yerr=[[m - min(f) for m, f in zip(med, fs)], [max(f) - m for m, f in zip(med, fs)]],
                      marker=marker, color=color, label=prec, capsize=3)
        ax_r.plot(macs, [r["lut"] for r in rs], marker=marker, color=color, label=f"LUT ({prec})")
        ax_r.plot(macs, [r["dsp"] for r in rs], marker=marker, color=color, linestyle="--", label=f"DSP ({prec})")
        ax_f.set_xticks(macs, labels)
        ax_r.set_xticks(macs, labels)
    for ax in (ax_f, ax_r):
        ax.set_xlabel("array size (rows x cols)")
        ax.grid(True, alpha=0.3)
        ax.legend()
    ax_f.set_ylabel("Fmax (MHz)")
    ax_r.set_ylabel("count")
    ax_r.set_yscale("log")
    target = ok[0]["target"]
    ax_f.set_title(f"Fmax on {target}")
    ax_r.set_title(f"LUT and DSP on {target}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    from cdmqta.synth.flow import (
        DSP_MODES,
        FLOORPLANS,
        ROUTERS,
        TARGETS,
        stop_tools_on_sigterm,
    )

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="2,4,8,16", help="comma-separated N (NxN) or RxC sizes (default: 2,4,8,16)")
    p.add_argument("--precisions", default="int8,int4",
                   help="comma-separated: int8 (array without INT4 mode), int4 (with it); default: int8,int4")
    p.add_argument("--target", default="ecp5-85f", help=f"one of {', '.join(TARGETS)} (default: ecp5-85f)")
    p.add_argument("--top", default="array", choices=("array", "accel"), help="what to synthesize (default: array)")
    p.add_argument("--freq", type=float, default=None, help="nextpnr clock constraint in MHz (default: target's)")
    p.add_argument("--seeds", default="1",
                   help="comma-separated nextpnr placement seeds, one run per seed (default: 1)")
    p.add_argument("--dsp", default="auto", choices=DSP_MODES,
                   help="multipliers (see cdmqta synth --dsp; default auto = MULT18X18D instances on ECP5)")
    p.add_argument("--router", default="auto", choices=ROUTERS,
                   help="nextpnr router (see cdmqta synth --router; default auto = router2 on ECP5)")
    p.add_argument("--floorplan", default="auto", choices=FLOORPLANS,
                   help="DSP floorplan (see cdmqta synth --floorplan; default auto = PE multipliers in array order)")
    p.add_argument("--out", default="build/synth_sweep", help="output directory (default: build/synth_sweep)")
    args = p.parse_args(argv)

    try:
        if args.target not in TARGETS:
            raise ValueError(f"unknown target {args.target!r}: choose one of {', '.join(TARGETS)}")
        sizes = [_size(s) for s in _parse_list(args.sizes, "sizes")]
        precisions = _parse_list(args.precisions, "precisions", ("int8", "int4"))
        seeds = _parse_list(args.seeds, "seeds")
        if not all(s.isdigit() for s in seeds):
            raise ValueError(f"--seeds {args.seeds!r}: seeds are non-negative integers")
        seeds = [int(s) for s in seeds]
        for rows, cols in sizes:
            QTAConfig(rows=rows, cols=cols)
    except ValueError as exc:
        p.error(str(exc))
    os.makedirs(args.out, exist_ok=True)
    with stop_tools_on_sigterm():
        return _sweep(args, sizes, precisions, seeds)


def _sweep(args, sizes, precisions, seeds):

    results = []
    t0 = time.monotonic()
    for rows, cols in sizes:
        for prec in precisions:
            for seed in seeds:
                tag = f"{rows}x{cols}_{prec}" + (f"_s{seed}" if len(seeds) > 1 else "")
                print(f"=== {tag} ({time.monotonic() - t0:.0f}s elapsed)", file=sys.stderr, flush=True)
                config = QTAConfig(rows=rows, cols=cols, int4=(prec == "int4"))
                try:
                    r = synthesize_config(config, top=args.top, target=args.target, freq_mhz=args.freq, seed=seed,
                                          dsp=args.dsp, router=args.router, floorplan=args.floorplan,
                                          workdir=os.path.join(args.out, "work", tag))
                except ToolRunError as exc:
                    r = {"rows": rows, "cols": cols, "macs": rows * cols, "target": args.target,
                         "error": f"{exc.stage}: " + " / ".join(exc.lines[-3:])}
                    print(f"    failed: {r['error']}", file=sys.stderr)
                r["precision"] = prec
                r["seed"] = seed
                r.pop("utilization", None)
                results.append(r)
                with open(os.path.join(args.out, "sweep.json"), "w") as f:
                    json.dump(results, f, indent=2, sort_keys=True)
                    f.write("\n")
                with open(os.path.join(args.out, "sweep.md"), "w") as f:
                    f.write(markdown_table(results))
                plot(results, os.path.join(args.out, "sweep.png"))
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
