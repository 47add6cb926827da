"""The whole accelerator on Icarus Verilog (four-state) as well as Verilator, agreeing with each other.

A subset of the random tier (:mod:`cdmqta.sw.rtl.tb_random`) and of the control-path testbench (verif/tb_control.py)
runs on an Icarus build of the random tier's 4x4 SimTop. Every output and every memory word read back is checked
for X / Z bits (an X is a failure naming the word), every program is compared with the ISA emulator over the whole
state, and the per-program state digests of Icarus and Verilator (same hypothesis seed, so the same programs) must
be identical. Needs ``iverilog``: skipped without it, failed without it under CI.
"""

from pathlib import Path

import pytest

from cdmqta.sw.rtl import build as rtlbuild
from cdmqta.sw.rtl.backend import build_simtop
from cdmqta.sw.runtime.randprog import RANDOM_CONFIGS

HERE = Path(__file__).resolve().parent
PROGRAMS, SEED = 12, 23


@pytest.mark.rtl
def test_random_programs_icarus_agrees_with_verilator(icarus):
    from cdmqta.sw.rtl.random_tier import run_random
    ica = run_random("r4x4", PROGRAMS, SEED, simulator="icarus", shrink=False)
    assert ica["failure"] is None, f"{ica['failure']['listing']}\n{ica['failure']['diffs']}"
    ver = run_random("r4x4", PROGRAMS, SEED, simulator="verilator", shrink=False)
    assert ver["failure"] is None
    assert len(ica["digests"]) == len(ver["digests"]) == PROGRAMS
    assert ica["digests"] == ver["digests"], [i for i, (a, b) in enumerate(zip(ica["digests"], ver["digests"]))
                                              if a != b]


@pytest.mark.rtl
def test_control_paths_icarus(icarus):
    cfg, host_words, cmd_words = RANDOM_CONFIGS["r4x4"]
    built, host_words, cmd_words = build_simtop(cfg, host_words, cmd_words, simulator="icarus")
    env = {"CDMQTA_CONFIG": cfg.to_json(), "HOST_WORDS": host_words, "CMD_WORDS": cmd_words}
    rtlbuild.run(built, "tb_control", env=env, python_path=[HERE],
                 testcase=["zero_length_run", "reset_during_run", "malformed_commands"])
