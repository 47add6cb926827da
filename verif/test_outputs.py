"""Output paths are checked before the work (cdmqta.paths): every sub-command that writes files fails in one line
(exit 2) on a path it cannot write, before it starts; the check itself writes nothing."""

import os

import pytest

from cdmqta import paths
from cdmqta.cli import main as cli_main
from cdmqta.errors import UsageError


def test_writable_paths_pass_and_stay_untouched(tmp_path):
    existing = tmp_path / "old.json"
    existing.write_text("keep")
    stamp = os.stat(existing).st_mtime_ns
    paths.check_outputs(files={"--json": str(tmp_path / "new.json"), "--plot": None, "--out": "-",
                               "--old": existing},
                        dirs={"-o": str(tmp_path / "a" / "b"), "--workdir": str(tmp_path)})
    assert existing.read_text() == "keep" and os.stat(existing).st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]     # nothing created, not even a/


@pytest.mark.parametrize("kind, make, needle", [
    ("file", lambda t: t / "missing" / "x.json", "missing does not exist"),
    ("file", lambda t: t, "is a directory, expected a file name"),
    ("file", lambda t: t / "f.txt" / "x.json", "f.txt is not a directory"),
    ("dir", lambda t: t / "f.txt", "f.txt is not a directory"),
    ("dir", lambda t: t / "f.txt" / "sub", "f.txt is not a directory"),
])
def test_unwritable_paths_name_option_and_path(tmp_path, kind, make, needle):
    (tmp_path / "f.txt").write_text("")
    path = make(tmp_path)
    check = paths.check_output_file if kind == "file" else paths.check_output_dir
    with pytest.raises(UsageError) as info:
        check("--x", str(path))
    assert str(info.value).startswith(f"--x {path}: ") and needle in str(info.value)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc (not writable even by root)")
def test_a_directory_that_takes_no_files():
    with pytest.raises(UsageError, match=r"--json /proc/out\.json: cannot write in /proc"):
        paths.check_output_file("--json", "/proc/out.json")
    with pytest.raises(UsageError, match=r"-o /proc/build: cannot write in /proc"):
        paths.check_output_dir("-o", "/proc/build")


def _forbid(monkeypatch, module, name):
    """Replace the sub-command's work with a function that fails the test if it is called."""
    import importlib

    def started(*args, **kwargs):
        raise AssertionError(f"{module}.{name} started before the output path was checked")
    monkeypatch.setattr(importlib.import_module(module), name, started)


BAD = "/no/such/dir/out"


@pytest.mark.parametrize("argv, option, work", [
    (["bench", "--json", BAD + ".json"], "--json", ("cdmqta.sw.apps.bench", "run_bench")),
    (["bench", "--plot", BAD + ".png"], "--plot", ("cdmqta.sw.apps.bench", "run_bench")),
    (["demo", "--json", BAD + ".json"], "--json", ("cdmqta.sw.apps.demo", "run_demo")),
    (["demo", "--backend", "golden", "--json", BAD + ".json"], "--json", ("cdmqta.sw.apps.demo", "run_demo")),
    (["finetune", "--quick", "--json", BAD + ".json"], "--json", ("cdmqta.sw.apps.diffusion_study", "run_study")),
    (["finetune", "--quick", "--markdown", BAD + ".md"], "--markdown",
     ("cdmqta.sw.apps.diffusion_study", "run_study")),
    (["generate", "-o", "/proc/build"], "-o", ("cdmqta.hw.generate", "generate")),
    (["synth", "--rows", "1", "--cols", "1", "--json", BAD + ".json"], "--json",
     ("cdmqta.synth.flow", "synthesize_config")),
    (["synth", "--rows", "1", "--cols", "1", "--workdir", "/proc/synth"], "--workdir",
     ("cdmqta.synth.flow", "synthesize_config")),
    (["synth", "--board", "icebreaker", "--rows", "1", "--cols", "1", "--workdir", "/proc/synth"], "--workdir",
     ("cdmqta.synth.boards", "build_bitstream")),
])
def test_every_subcommand_checks_its_outputs_first(argv, option, work, monkeypatch, capsys):
    if "/proc/" in " ".join(argv) and not os.path.isdir("/proc/self"):
        pytest.skip("needs Linux /proc")
    _forbid(monkeypatch, *work)
    rc = cli_main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    path = argv[argv.index(option) + 1]
    assert rc == 2 and len(err) == 1, captured.err
    assert err[0].startswith(f"cdmqta {argv[0]}: error: {option} {path}: "), err
    assert captured.out == ""             # the demo's first line comes after the check, too
