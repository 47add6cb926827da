"""Output paths are checked before the work, not after: every sub-command calls :func:`check_outputs` on the files
and directories it will write, right after its other options are checked, so that a path that cannot be written
fails in a second with one line (:class:`cdmqta.errors.UsageError`, exit status 2) instead of after the run.

The check writes nothing the command would not: a file that exists is opened for appending (its content and time
stamps stay), a new one is probed with an anonymous temporary file in its directory, and a directory that does
not exist yet is not created (the command creates it when it writes), only its nearest existing parent probed.
"""

import os
import tempfile

from cdmqta.errors import UsageError

__all__ = ["check_outputs", "check_output_file", "check_output_dir"]


def _probe_dir(option, path, directory):
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write in {directory} ({exc.strerror or exc})") from None


def check_output_file(option, path):
    """Raise UsageError (naming ``option`` and ``path``) unless ``path`` can be written as a file. ``None`` (the
    option not given) and ``-`` (stdout) pass."""
    if path is None or path == "-":
        return
    path = os.fspath(path)
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a directory, expected a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        what = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise UsageError(f"{option} {path}: {parent} {what}")
    if os.path.exists(path):
        try:
            open(path, "a").close()
        except OSError as exc:
            raise UsageError(f"{option} {path}: cannot write ({exc.strerror or exc})") from None
    else:
        _probe_dir(option, path, parent)


def check_output_dir(option, path):
    """Raise UsageError unless ``path`` is a writable directory or one that can be created (its nearest existing
    parent is a writable directory). ``None`` passes."""
    if path is None:
        return
    path = os.fspath(path)
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UsageError(f"{option} {path}: {probe} is not a directory")
    _probe_dir(option, path, probe)


def check_outputs(files=None, dirs=None):
    """:func:`check_output_file` on every ``option: path`` of ``files``, :func:`check_output_dir` on every one of
    ``dirs``."""
    for option, path in (files or {}).items():
        check_output_file(option, path)
    for option, path in (dirs or {}).items():
        check_output_dir(option, path)
