"""Coverage of the RTL suites: Verilator line and toggle coverage per block, and ISA functional coverage.

Builds the random tier's SimTop (``--config``, default r4x4) with ``--coverage-line --coverage-toggle``, runs on it
the random-program tier (``--programs`` hypothesis programs, :mod:`cdmqta.sw.rtl.tb_random`) and the control-path
and malformed-input testbench (``verif/tb_control.py``), and summarizes Verilator's ``coverage.dat`` per block
(controller, scoreboard tables, execute unit, array, memories, load / store units, epilogue; a block is a module of
the generated Verilog with its sub-modules). The functional bins (opcode x dataflow x precision x accumulate, store
form x transposed x rounding, load target x stride, hazard kinds, statuses: :func:`cdmqta.sw.runtime.randprog.
functional_bins`) are counted from the same programs and, if present, from the campaign summary
(``results/verif_campaign.json``). Writes ``--out`` (JSON) and the same stem with ``.md`` (tables for the README).

    python scripts/verif_coverage.py                  # -> results/verif_coverage.json, results/verif_coverage.md
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from cdmqta.sw.runtime.randprog import RANDOM_CONFIGS, all_bins

ROOT = Path(__file__).resolve().parents[1]
CONTROL_CASES = "zero_length_run,start_while_busy_is_ignored,reset_during_run,run_past_the_command_memory," \
                "malformed_commands,unused_bits_are_ignored,watchdog_fires"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="r4x4", choices=sorted(RANDOM_CONFIGS), help="random configuration")
    p.add_argument("--programs", type=int, default=400, help="random programs to run (default 400)")
    p.add_argument("--seed", type=int, default=5, help="hypothesis seed (default 5)")
    p.add_argument("--campaign", default=str(ROOT / "results" / "verif_campaign.json"),
                   help="campaign summary whose functional bins are reported too (skipped if missing)")
    p.add_argument("--out", default=str(ROOT / "results" / "verif_coverage.json"), help="summary JSON")
    p.add_argument("--reuse", metavar="DIR", help="summarize the coverage.dat files and random.json of an earlier "
                   "run's work folder (printed by that run) instead of simulating again")
    a = p.parse_args(argv)
    if not Path(a.out).resolve().parent.is_dir():
        p.error(f"--out {a.out}: {Path(a.out).resolve().parent} does not exist")
    return a


def block_of(module):
    """The block a Verilog module belongs to: ``simtop.accel.array.pe_0_1.mac`` -> ``array``."""
    parts = module.split(".")
    if len(parts) < 3 or parts[1] != "accel":
        return "simtop (host / command memories, feeder)" if parts[0] == "simtop" else module
    return parts[2]


def parse_coverage(paths):
    """{(type, module, point key): count} summed over Verilator ``coverage.dat`` files."""
    points = defaultdict(int)
    for path in paths:
        for line in Path(path).read_text(errors="replace").splitlines():
            if not line.startswith("C '"):
                continue
            body, count = line[3:].rsplit("' ", 1)
            kv = dict(item.split("\x02", 1) for item in body.split("\x01") if "\x02" in item)
            page = kv.get("page", "")
            kind, _, module = page.partition("/")
            points[(kind.replace("v_", ""), module.lstrip("\\"), body)] += int(count)
    return points


def _signal(body):
    """(signal name, named?) of a toggle point: yosys intermediates (``$123``, Verilator ``__024``) are unnamed."""
    kv = dict(item.split("\x02", 1) for item in body.split("\x01") if "\x02" in item)
    name = kv.get("o", "?").rsplit(":", 1)[0].split("[")[0]
    return name, not name.startswith("__024") and "dump_module" not in name


def summarize(points):
    """Per block: line and toggle points / hit, toggle of named signals only (the Amaranth signals, not yosys'
    intermediates), and the named signals with a bit that never toggled."""
    blocks = defaultdict(lambda: {"line": [0, 0], "toggle": [0, 0], "toggle_named": [0, 0]})
    unhit = defaultdict(set)
    for (kind, module, body), count in points.items():
        if kind not in ("line", "toggle"):
            continue
        kinds = [kind]
        if kind == "toggle":
            name, named = _signal(body)
            if named:
                kinds.append("toggle_named")
                if count == 0:
                    unhit[block_of(module)].add(name)
        for k in kinds:
            b = blocks[block_of(module)][k]
            b[0] += 1
            b[1] += int(count > 0)
    out = {}
    for name, b in sorted(blocks.items()):
        out[name] = {k: {"points": v[0], "hit": v[1], "percent": round(100 * v[1] / v[0], 1) if v[0] else None}
                     for k, v in b.items()}
        out[name]["named_signals_not_toggled"] = sorted(unhit[name])
    tot = {k: [sum(blocks[n][k][0] for n in blocks), sum(blocks[n][k][1] for n in blocks)]
           for k in ("line", "toggle", "toggle_named")}
    out["total"] = {k: {"points": v[0], "hit": v[1], "percent": round(100 * v[1] / v[0], 1) if v[0] else None}
                    for k, v in tot.items()}
    return out


def functional(bins_counts, cfg):
    want = {"|".join(map(str, b)) for b in all_bins(cfg)}
    hit = {b for b, c in bins_counts.items() if c}
    return {"bins_total": len(want), "bins_hit": len(want & hit), "missing": sorted(want - hit)}


def main(argv=None):
    args = parse_args(argv)

    from cdmqta.hw.top import SimTop
    from cdmqta.sw.rtl import build as rtlbuild

    cfg, host_words, cmd_words = RANDOM_CONFIGS[args.config]
    if args.reuse:
        work = args.reuse
        dats = sorted(Path(work).glob("coverage-*.dat"))
        return report(args, cfg, dats, os.path.join(work, "random.json"))
    build_args = [*rtlbuild.VERILATOR_DEFAULT_ARGS, "--coverage-line", "--coverage-toggle"]
    built = rtlbuild.build(lambda: SimTop(cfg, host_words=host_words, cmd_words=cmd_words), "simtop",
                           build_args=build_args, design_key=f"SimTop|{cfg.to_json()}|{host_words}|{cmd_words}|cov")
    work = tempfile.mkdtemp(prefix="cdmqta-cov-")
    rand_json = os.path.join(work, "random.json")
    env = {"CDMQTA_CONFIG": cfg.to_json(), "HOST_WORDS": host_words, "CMD_WORDS": cmd_words,
           "RANDPROG_COUNT": args.programs, "RANDPROG_SEED": args.seed, "RESULTS_JSON": rand_json}
    dats = []
    print(f"work folder: {work}")
    res = rtlbuild.run(built, "cdmqta.sw.rtl.tb_random", env=env, testcase="random_programs")
    dats.append(Path(res).parent / "coverage.dat")
    res = rtlbuild.run(built, "tb_control", env=env, testcase=CONTROL_CASES.split(","),
                       python_path=[ROOT / "verif"])
    dats.append(Path(res).parent / "coverage.dat")
    missing = [str(d) for d in dats if not d.exists()]
    if missing:
        print(f"error: no coverage.dat from {missing}", file=sys.stderr)
        return 1
    for i, d in enumerate(dats):
        shutil.copy(d, os.path.join(work, f"coverage-{i}.dat"))
    return report(args, cfg, dats, rand_json)


def report(args, cfg, dats, rand_json):
    code = summarize(parse_coverage(dats))
    with open(rand_json) as f:
        rand = json.load(f)
    data = {"command": "python scripts/verif_coverage.py " + " ".join(sys.argv[1:]), "config": args.config,
            "programs": rand["programs_run"], "seed": args.seed, "code": code,
            "functional_this_run": functional(rand["bins"], cfg)}
    if Path(args.campaign).exists():
        camp = json.loads(Path(args.campaign).read_text())
        data["functional_campaign"] = {
            name: {**functional(c["bins"], RANDOM_CONFIGS[name][0]), "programs": c["programs"]}
            for name, c in camp["per_config"].items()}
    Path(args.out).write_text(json.dumps(data, indent=1))
    md = ["| block | line points | line hit | toggle bits | toggle hit | named-signal toggle bits | hit |",
          "|---|---:|---:|---:|---:|---:|---:|"]
    for name, b in code.items():
        md.append(f"| {name} | {b['line']['points']} | {b['line']['percent']} % | {b['toggle']['points']} | "
                  f"{b['toggle']['percent']} % | {b['toggle_named']['points']} | {b['toggle_named']['percent']} % |")
    md += ["", "| functional bins | hit / total | not hit |", "|---|---:|---|"]
    f = data["functional_this_run"]
    md.append(f"| {args.config}, {data['programs']} random programs | {f['bins_hit']} / {f['bins_total']} |"
              f" {', '.join(x.replace('|', ':') for x in f['missing']) or '—'} |")
    for name, f in data.get("functional_campaign", {}).items():
        md.append(f"| campaign {name}, {f['programs']} programs | {f['bins_hit']} / {f['bins_total']} | "
                  f"{', '.join(x.replace('|', ':') for x in f['missing']) or '—'} |")
    Path(args.out).with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
