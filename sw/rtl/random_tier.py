"""Running the random tier (:mod:`cdmqta.sw.rtl.tb_random`) from plain Python: one Verilator build per
configuration of :data:`cdmqta.sw.runtime.randprog.RANDOM_CONFIGS`, many programs per simulation."""

import json
import os
import tempfile

from cdmqta.sw.runtime.randprog import RANDOM_CONFIGS

from . import build as rtlbuild
from .backend import build_simtop

__all__ = ["run_random"]


def run_random(name, count, seed, max_len=24, shrink=True, workdir=None, extra_env=None, simulator="verilator"):
    """Run ``count`` random programs (hypothesis seed ``seed``) on the RTL of random configuration ``name``;
    returns the summary dict of :func:`cdmqta.sw.rtl.tb_random.campaign` (``failure`` is None when every program
    agreed with the emulator). ``simulator``: "verilator" or "icarus" (four-state: an X or Z bit in any output or
    memory word read back fails the program). Raises RuntimeError if the simulation died before it reported."""
    cfg, host_words, cmd_words = RANDOM_CONFIGS[name]
    built, host_words, cmd_words = build_simtop(cfg, host_words, cmd_words, simulator=simulator)
    workdir = workdir or tempfile.mkdtemp(prefix="cdmqta-rand-")
    out = os.path.join(workdir, f"random-{name}-{seed}-{simulator}.json")
    env = {"CDMQTA_CONFIG": cfg.to_json(), "HOST_WORDS": host_words, "CMD_WORDS": cmd_words,
           "RANDPROG_COUNT": count, "RANDPROG_SEED": seed, "RANDPROG_MAX_LEN": max_len,
           "RANDPROG_SHRINK": int(shrink), "RESULTS_JSON": out, **(extra_env or {})}
    try:
        rtlbuild.run(built, "cdmqta.sw.rtl.tb_random", env=env, testcase="random_programs")
    except AssertionError as exc:
        if not os.path.exists(out):
            raise RuntimeError(f"random-program simulation of {name} failed: {exc}") from None
    with open(out) as f:
        summary = json.load(f)
    summary["name"], summary["simulator"] = name, simulator
    return summary
