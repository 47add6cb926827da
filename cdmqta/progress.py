"""What a long step is doing, told on stderr while it runs: one line per step with its elapsed time, a bar (tqdm)
where the amount of work is known.

Silent under ``--quiet`` and when stderr is not a terminal, so that logs, pipes and tests get the results only::

    progress = Reporter(quiet=args.quiet)
    with progress.step("building with Verilator"):       # "building with Verilator ... 37 s", ticking each second,
        build()                                           # then "building with Verilator: done in 81.2 s"
    for g in progress.bar(gemms, desc="modeling", unit="GEMM"):
        ...

Code that runs a long step takes an optional reporter (``progress=None`` means silent: :data:`SILENT`), so that
a library call stays quiet unless a command line asks for reports.
"""

import contextlib
import shutil
import sys
import threading
import time

__all__ = ["Reporter", "SILENT"]


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):     # no isatty, or a closed stream
        return False


class Reporter:
    """Progress reports on ``stream`` (default stderr); ``enabled`` is False under ``quiet`` or when the stream
    is not a terminal, and then nothing is written."""

    def __init__(self, quiet=False, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.enabled = not quiet and _is_terminal(self.stream)

    def _write(self, text):
        self.stream.write(text)
        self.stream.flush()

    def note(self, text):
        """One line (e.g. where a log is)."""
        if self.enabled:
            self._write(text + "\n")

    @contextlib.contextmanager
    def step(self, text):
        """``text ...`` with the elapsed seconds updated in place while the block runs, then ``text: done in
        12.3 s`` (or ``failed after``) on its own line. No other output should be written inside the block."""
        if not self.enabled:
            yield
            return
        t0 = time.monotonic()
        stop = threading.Event()

        def tick():
            while not stop.wait(1.0):
                self._write(f"\r\033[K{text} ... {time.monotonic() - t0:.0f} s")

        self._write(f"{text} ...")
        ticker = threading.Thread(target=tick, name="progress", daemon=True)
        ticker.start()
        ok = False
        try:
            yield
            ok = True
        finally:
            stop.set()
            ticker.join()
            self._write(f"\r\033[K{text}: {'done in' if ok else 'failed after'} {time.monotonic() - t0:.1f} s\n")

    def bar(self, iterable=None, *, total=None, desc=None, unit="it"):
        """A tqdm bar over ``iterable`` (or ``total`` steps, advanced with ``.update(n)``); a no-op bar when
        disabled."""
        from tqdm import tqdm  # 30 ms to import: only commands that run a long step need it, not ``--help``

        # the size from shutil, which falls back to 80 x 24 where a terminal reports 0 x 0 (a pty nobody sized):
        # tqdm's own probe would then hide the bar
        size = shutil.get_terminal_size()
        return tqdm(iterable, total=total, desc=desc, unit=unit, file=self.stream, disable=not self.enabled,
                    ncols=size.columns, nrows=size.lines, mininterval=0.25)


#: The reporter of library calls that were given none: writes nothing.
SILENT = Reporter(quiet=True)
