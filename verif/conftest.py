"""Shared build fixtures of the regression.

The accelerator configurations the RTL tests run are the package's presets (:data:`cdmqta.hw.config.PRESETS`:
8x8, 8x4, 7x5, 5x3s1), shared with the validation scripts so that one Verilator build serves both; tests
parametrize over their names. Fixtures:

- ``accel_build``: ``accel_build(name) -> (config, Build, host_words, cmd_words)``, the cached Verilator model of a
  preset's SimTop;
- ``tb_dir``: this directory, where the cocotb testbenches (``tb_*.py``) live;
- ``icarus``: for tests that need Icarus Verilog (:func:`require_icarus`): they skip where ``iverilog`` / ``vvp``
  are missing, but FAIL when the environment variable ``CI`` is set (CI must run the second simulator).

Verilator builds are cached by content under ``$CDMQTA_BUILD_DIR`` (default ``~/.cache/cdmqta/sim``) and shared by
pytest-xdist workers through a file lock (:mod:`cdmqta.sw.rtl.build`), so every distinct design is built once per
machine.
"""

import functools
import os
from pathlib import Path

import pytest

from cdmqta.hw.config import PRESETS
from cdmqta.sw.rtl import build as rtlbuild
from cdmqta.sw.rtl.backend import build_simtop

TB_DIR = Path(__file__).resolve().parent


@functools.cache
def _build_accel(name):
    cfg = PRESETS[name]
    built, host_words, cmd_words = build_simtop(cfg)
    return cfg, built, host_words, cmd_words


@pytest.fixture
def accel_build():
    return _build_accel


@pytest.fixture
def tb_dir():
    return TB_DIR


def require_icarus(have=None):
    """Skip the calling test when Icarus is missing -- or fail it when ``$CI`` is set."""
    have = rtlbuild.have_icarus() if have is None else have
    if not have:
        msg = "iverilog/vvp not on PATH"
        if os.environ.get("CI"):
            pytest.fail(f"{msg}, and CI is set: the Icarus tests must run in CI (apt-get install iverilog)")
        pytest.skip(msg)


@pytest.fixture
def icarus():
    require_icarus()
