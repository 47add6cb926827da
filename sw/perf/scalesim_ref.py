"""SCALE-Sim (PyPI ``scalesim``) on our GEMMs, as a reference beside our cycle models.

SCALE-Sim 3.0.0 does not run under NumPy >= 2.3 (``int(max(list_of_1-element_arrays))`` in
``double_buffered_scratchpad_mem.py`` raises "only 0-dimensional arrays can be converted to Python scalars"), and
the main environment has NumPy 2.4. Its compute path needs only numpy and tqdm, so it is installed, isolated, into
a folder of its own with the one line

    pip install --no-deps --target ~/.cache/cdmqta/scalesim scalesim 'numpy<2.3' tqdm

and run in a subprocess with that folder first on PYTHONPATH (``CDMQTA_SCALESIM_DIR`` overrides the folder; a
``scalesim`` importable in the current environment with NumPy < 2.3 works too). No network at run time. Without
it, :func:`available` says why and the bench reports the column as unavailable.

What SCALE-Sim counts (v3, ``InterfaceBandwidth: CALC``, GEMM topology ``M, N, K``): per fold of the array it
replays the operand demand matrices: WS (K x N stationary, M streamed) costs ``2R + C + M - 2`` cycles per fold,
OS ``R + C + K - 2``, IS ``2R + C + N - 2`` (WS on K x M); "Total Cycles" is the sum minus one, "Stall Cycles" are
0 in CALC mode (it reports the bandwidth it would need instead). It simulates every operand address, so its run
time and memory grow with M*K + K*N (a 4096 x 320 x 2880 convolution takes ~4.5 min and 5.7 GB): the bench runs it
on the distinct shapes within an element budget (smallest first, LoRA shapes first) and reports the coverage.
Results are cached in ``~/.cache/cdmqta/scalesim_cache.json``.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading

from cdmqta.progress import SILENT

__all__ = ["INSTALL_LINE", "scalesim_dir", "available", "run_shapes", "select_shapes", "cache_path"]

INSTALL_LINE = "pip install --no-deps --target ~/.cache/cdmqta/scalesim scalesim 'numpy<2.3' tqdm"

_CFG = """[general]
run_name = cdmqta

[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSramSzkB: {sram_kb}
FilterSramSzkB: {sram_kb}
OfmapSramSzkB: {sram_kb}
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Dataflow : {dataflow}
Bandwidth : 10
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""

# verbose: SCALE-Sim prints "Total cycles: ..." as each layer (GEMM) finishes, which drives the progress bar
_RUNNER = """
import sys
from scalesim.scale_sim import scalesim
s = scalesim(save_disk_space=True, verbose=True, config=sys.argv[1], topology=sys.argv[2], layout=sys.argv[3],
             input_type_gemm=True)
s.run_scale(top_path=sys.argv[4])
"""

_CHECK = "import numpy, scalesim.scale_sim; v = tuple(int(x) for x in numpy.__version__.split('.')[:2]); " \
         "print(numpy.__version__); sys.exit(0 if v < (2, 3) else 3)"


def scalesim_dir():
    return os.environ.get("CDMQTA_SCALESIM_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "cdmqta", "scalesim"
    )


def cache_path():
    return os.path.join(os.path.expanduser("~"), ".cache", "cdmqta", "scalesim_cache.json")


def _env(path):
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = path + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def available():
    """(True, PYTHONPATH entry or "") if SCALE-Sim can run, else (False, one-line reason with the install line)."""
    candidates = []
    d = scalesim_dir()
    if os.path.isdir(os.path.join(d, "scalesim")):
        candidates.append(d)
    candidates.append("")
    reason = f"SCALE-Sim not installed (install it with: {INSTALL_LINE})"
    for path in candidates:
        try:
            p = subprocess.run([sys.executable, "-c", "import sys; " + _CHECK], env=_env(path), capture_output=True,
                               text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = f"SCALE-Sim check failed: {exc}"
            continue
        if p.returncode == 0:
            return True, path
        if p.returncode == 3:
            reason = (f"SCALE-Sim found but NumPy {p.stdout.strip()} >= 2.3 breaks it; install it isolated with: "
                      f"{INSTALL_LINE}")
    return False, reason


def _load_cache():
    try:
        with open(cache_path()) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _save_cache(cache):
    os.makedirs(os.path.dirname(cache_path()), exist_ok=True)
    tmp = cache_path() + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cache, f)
    os.replace(tmp, cache_path())


def _key(rows, cols, dataflow, m, n, k):
    return f"{rows}x{cols}:{dataflow}:{m},{n},{k}"


def select_shapes(gemms, budget_elems=2_000_000, first_classes=("lora",)):
    """Distinct (m, n, k) shapes to simulate: those of ``first_classes`` first, then the rest, each group smallest
    first, while the summed operand elements (m*k + k*n + m*n) stay within ``budget_elems``."""
    seen, order = set(), []
    for pri in (0, 1):
        group = sorted({(g.m, g.n, g.k) for g in gemms if (g.cls in first_classes) == (pri == 0)},
                       key=lambda s: (s[0] * s[2] + s[2] * s[1] + s[0] * s[1], s))
        order += [s for s in group if s not in seen]
        seen.update(group)
    out, used = [], 0
    for m, n, k in order:
        e = m * k + k * n + m * n
        if used + e > budget_elems:
            continue
        out.append((m, n, k))
        used += e
    return out


def _run_scalesim(argv, env, cwd, timeout, bar):
    """Run the SCALE-Sim runner, advancing ``bar`` by one per GEMM it finishes; returns (exit status, its last
    error or output lines). RuntimeError after ``timeout`` seconds."""
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(argv, env=dict(env, PYTHONUNBUFFERED="1"), cwd=cwd, stdout=subprocess.PIPE,
                                stderr=errors, stdin=subprocess.DEVNULL, text=True)
        timed_out = threading.Event()

        def kill():
            timed_out.set()
            proc.kill()

        killer = threading.Timer(timeout, kill)
        killer.start()
        tail = []
        try:
            for line in proc.stdout:
                if line.startswith("Total cycles:"):
                    bar.update(1)
                tail = (tail + [line.rstrip()])[-5:]
            proc.wait()
        finally:
            killer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if timed_out.is_set():
            raise RuntimeError(f"SCALE-Sim did not finish within {timeout} s")
        errors.seek(0)
        return proc.returncode, (errors.read().strip().splitlines() or tail)


def run_shapes(shapes, rows, cols, dataflow="ws", timeout=600, path=None, progress=None):
    """{(m, n, k): {total_cycles, stall_cycles, overall_util, mapping_efficiency, compute_util}} from SCALE-Sim's
    COMPUTE_REPORT.csv (cached). Raises RuntimeError if SCALE-Sim fails. ``progress``: a
    :class:`cdmqta.progress.Reporter` that shows a bar of the GEMMs SCALE-Sim runs (None: silent)."""
    if dataflow not in ("ws", "os", "is"):
        raise ValueError(f"dataflow={dataflow!r} must be ws, os or is")
    cache = _load_cache()
    todo = [s for s in dict.fromkeys(shapes) if _key(rows, cols, dataflow, *s) not in cache]
    if todo:
        if path is None:
            ok, path = available()
            if not ok:
                raise RuntimeError(path)
        with tempfile.TemporaryDirectory(prefix="cdmqta_scalesim_") as tmp:
            cfg = os.path.join(tmp, "arch.cfg")
            with open(cfg, "w") as f:
                f.write(_CFG.format(rows=rows, cols=cols, dataflow=dataflow, sram_kb=65536))
            topo = os.path.join(tmp, "gemms.csv")
            with open(topo, "w") as f:
                f.write("Layer, M, N, K,\n")
                for i, (m, n, k) in enumerate(todo):
                    f.write(f"g{i}, {m}, {n}, {k},\n")
            layout = os.path.join(tmp, "layout.csv")
            with open(layout, "w") as f:
                f.write("Layer name, a, b, c, d, e, f, g,\n")
            out = os.path.join(tmp, "out")
            progress = SILENT if progress is None else progress
            with progress.bar(total=len(todo), desc=f"SCALE-Sim {dataflow.upper()} on {rows}x{cols}",
                              unit="GEMM") as bar:
                returncode, tail = _run_scalesim([sys.executable, "-c", _RUNNER, cfg, topo, layout, out],
                                                 _env(path), tmp, timeout, bar)
            report = os.path.join(out, "cdmqta", "COMPUTE_REPORT.csv")
            if returncode != 0 or not os.path.isfile(report):
                raise RuntimeError(f"SCALE-Sim failed: {(tail or ['no output'])[-1]}")
            with open(report) as f:
                lines = [ln.strip() for ln in f if ln.strip()][1:]
            if len(lines) != len(todo):
                raise RuntimeError(f"SCALE-Sim reported {len(lines)} layers for {len(todo)} GEMMs")
            for s, ln in zip(todo, lines):
                v = [x.strip() for x in ln.split(",")]
                cache[_key(rows, cols, dataflow, *s)] = {
                    "total_cycles": int(float(v[2])), "stall_cycles": int(float(v[3])),
                    "overall_util": float(v[4]) / 100, "mapping_efficiency": float(v[5]) / 100,
                    "compute_util": float(v[6]) / 100, "total_cycles_incl_prefetch": int(float(v[1]))}
        _save_cache(cache)
    return {s: cache[_key(rows, cols, dataflow, *s)] for s in shapes}
