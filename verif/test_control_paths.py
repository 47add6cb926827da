"""Control paths and malformed input on the RTL (verif/tb_control.py), each with its documented outcome.

Reset during a run, start while busy, zero-length runs, runs past the command memory, every field of every opcode
out of range, bits above the fields, and the watchdog, on the random tier's 4x4 SimTop (one small Verilator
build, shared with verif/test_random_programs.py).
"""

from pathlib import Path

import pytest

from cdmqta.sw.rtl import build as rtlbuild
from cdmqta.sw.rtl.backend import build_simtop
from cdmqta.sw.runtime.randprog import RANDOM_CONFIGS

HERE = Path(__file__).resolve().parent
CASES = ["zero_length_run", "start_while_busy_is_ignored", "reset_during_run", "run_past_the_command_memory",
         "malformed_commands", "unused_bits_are_ignored", "watchdog_fires"]


@pytest.mark.rtl
def test_control_paths_and_malformed_commands():
    cfg, host_words, cmd_words = RANDOM_CONFIGS["r4x4"]
    built, host_words, cmd_words = build_simtop(cfg, host_words, cmd_words)
    env = {"CDMQTA_CONFIG": cfg.to_json(), "HOST_WORDS": host_words, "CMD_WORDS": cmd_words}
    rtlbuild.run(built, "tb_control", env=env, testcase=CASES, python_path=[HERE])
