"""The architecture is checked, not hoped for: the import contracts of pyproject.toml (import-linter), ruff, and
the command line's start-up (sub-commands are imported only when chosen)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*argv, cwd=ROOT):
    return subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=600)


def test_import_contracts_kept():
    """lint-imports on the package: every contract of [tool.importlinter] in pyproject.toml is kept."""
    p = _run("lint-imports")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert " 0 broken" in p.stdout, p.stdout[-2000:]


def test_import_contracts_catch_a_forbidden_import(tmp_path):
    """A forbidden import (the golden model importing the runtime) makes lint-imports fail: run on a copy of the
    package tree with one such import added."""
    ignore = shutil.ignore_patterns("__pycache__", "*.csv")
    for name in ("cdmqta", "hw", "sw", "synth"):        # cdmqta/{hw,sw,synth} are relative links: they follow
        shutil.copytree(ROOT / name, tmp_path / name, symlinks=True, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    engine = tmp_path / "sw" / "model" / "engine.py"
    engine.write_text(engine.read_text() + "\nfrom cdmqta.sw.runtime import tiler  # noqa: E402,F401\n")
    p = subprocess.run(["lint-imports"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert p.returncode != 0
    assert "BROKEN" in p.stdout and "cdmqta.sw.model.engine -> cdmqta.sw.runtime" in p.stdout, p.stdout[-3000:]


def test_ruff_clean():
    p = _run(sys.executable, "-m", "ruff", "check", ".")
    assert p.returncode == 0, p.stdout[-4000:]


@pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"]])
def test_help_imports_no_heavy_module(argv):
    """``cdmqta --help`` imports no sub-command; ``cdmqta generate --help`` no torch and no simulator."""
    code = ("import sys, cdmqta.cli\n"
            "try:\n    cdmqta.cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'cocotb', 'diffusers', 'cdmqta.sw', 'cdmqta.synth') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    p = _run(sys.executable, "-c", code, *argv)
    assert p.returncode == 0, p.stderr
    assert "HEAVY []" in p.stdout, p.stdout[-500:]


def test_internal_error_keeps_its_traceback(monkeypatch, capsys):
    """Only input errors become one-line exit-2 messages: a bug in a sub-command propagates with its traceback."""
    from cdmqta import cli
    from cdmqta.hw import generate

    def broken(args):
        raise KeyError("a bug")
    monkeypatch.setattr(generate, "main", broken)
    with pytest.raises(KeyError):
        cli.main(["generate", "-o", "unused"])
