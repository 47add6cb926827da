"""Runtime backends: engines that run every GEMM and requantization as a command program.

``TiledEngine`` implements :class:`cdmqta.sw.model.engine.Engine` on top of the tiler: ``_gemm`` maps the GEMM
(:func:`cdmqta.sw.runtime.tiler.plan_gemm`), writes the operands into a host-memory image, executes the program and
reads
C back as int32; ``_requant`` loads the INT32 rows into the accumulator and STOREs them through the requantization
epilogue (:func:`cdmqta.sw.runtime.tiler.plan_requant`). Subclasses only say how a program executes:

- :class:`GoldenBackend` -- the ISA emulator (:mod:`cdmqta.sw.runtime.emulator`), cycles from the tiler's cost model;
- ``RtlBackend`` (:mod:`cdmqta.sw.rtl.backend`) -- the generated Verilog on Verilator through cocotb, cycles from
  the hardware's counters.

Every call appends a :class:`GemmStat` to ``engine.stats`` (dataflow, cycles, utilization = ideal / cycles, and,
with ``compare=True``, ``bit_exact`` against :class:`cdmqta.sw.model.engine.TorchEngine` on the same inputs).
"""

from dataclasses import asdict, dataclass

import torch

from cdmqta.hw.isa import AMAX_SLOTS, Status
from cdmqta.sw.model.engine import Engine, TorchEngine, check_operand, requant_segments

from .emulator import Emulator
from .hostmem import new_image
from .tiler import Epilogue, GemmSpec, plan_gemm, plan_requant

__all__ = ["GemmStat", "TiledEngine", "GoldenBackend", "ProgramError"]


class ProgramError(RuntimeError):
    """A program that the accelerator (or the emulator) stopped with a non-OK status."""


@dataclass
class GemmStat:
    kind: str               # "gemm" or "requant"
    name: str
    m: int
    n: int
    k: int
    precision: str
    dataflow: str           # ws / os / is, or "requant"
    cycles: int
    ideal: float
    utilization: float
    bit_exact: object       # True / False, or None without compare
    commands: int
    est_cycles: int         # the tiler's cost model
    order: str = ""         # the plan's loop order and chunk (see cdmqta.sw.runtime.tiler.Plan)
    chunk: int = 0
    program: list = None    # the program as hex words, when the engine's ``record_programs`` is set

    def to_dict(self):
        return asdict(self)


class TiledEngine(Engine):
    """Engine that runs each call as a tiled command program; subclasses implement :meth:`execute`.

    config    -- the accelerator's :class:`cdmqta.hw.QTAConfig`.
    dataflow  -- None (the tiler chooses per GEMM), "ws" / "os" / "is" for all GEMMs, or {gemm name: dataflow}
                 (the name's part after the last ":" also matches, e.g. {"dA": "ws"}).
    compare   -- also run each call on a TorchEngine and record ``bit_exact``.
    cost      -- cost model passed to the tiler (default: :func:`cdmqta.sw.perf.program.program_cycles`).
    """

    cycles_source = "model"

    def __init__(self, config, dataflow=None, compare=True, cost=None, host_words=None):
        super().__init__()
        self.config = config
        self.dataflow = dataflow
        self.compare = compare
        self.cost = cost
        self.host_words = host_words
        self.stats = []
        self.record_programs = False
        self._reference = TorchEngine()
        self._plans = {}
        self.last_amax = None       # the amax registers after the last GEMM / requantization program

    # -- what subclasses implement --------------------------------------------------------------------------

    def execute(self, plan, host):
        """Run ``plan.program`` on host memory image ``host`` (uint8 [words, 4*lanes], modified in place, at least
        the result region); return {"status", "error_index", "cycles", "amax"} (``amax``: the amax registers
        after the program, :data:`cdmqta.hw.isa.AMAX_SLOTS` ints)."""
        raise NotImplementedError

    # -- engine methods -------------------------------------------------------------------------------------

    def _dataflow_for(self, name):
        d = self.dataflow
        if d is None or isinstance(d, str):
            return d
        if name in d:
            return d[name]
        return d.get(name.rsplit(":", 1)[-1])

    def _host_image(self, plan, kind, name):
        if self.host_words is not None and plan.host_end > self.host_words:
            raise ProgramError(f"{kind} {name}: needs {plan.host_end} host words, the memory has {self.host_words}")
        return new_image(plan.host_end, self.config.lanes)

    def _gemm(self, name, a, b, precision, epilogue=None):
        m, k = a.shape
        n = b.shape[1]
        dataflow = self._dataflow_for(name)
        epilogue = epilogue or Epilogue()
        key = (m, n, k, precision, dataflow, epilogue)
        plan = self._plans.get(key)      # a training step repeats its shapes every step: plan once
        if plan is None:
            plan = self._plans[key] = plan_gemm(GemmSpec(m, n, k, precision, epilogue, name=name), self.config,
                                                dataflow=dataflow, cost=self.cost, max_host_words=self.host_words)
        host = self._host_image(plan, "gemm", name)
        plan.pack_host(a.cpu().numpy(), b.cpu().numpy(), host)
        res = self._checked(plan, host, name)
        out = torch.from_numpy(plan.read_result(host))
        self.last_amax = [int(v) for v in res["amax"]]
        exact = None
        if self.compare:
            ref = self._reference._gemm(name, a, b, precision)
            if epilogue.segments:
                ref, ref_amax = requant_segments(ref, epilogue.segments, self._reference._requant, name)
                if self.last_amax[:len(ref_amax)] != ref_amax:
                    exact = False
            elif epilogue.out != "int32":
                ref = self._reference._requant(name, ref, epilogue.mult, epilogue.shift, int(epilogue.out[3:]),
                                               epilogue.rounding, epilogue.seed)
            exact = torch.equal(out, ref) if exact is None else exact
        cycles = int(res["cycles"])
        program = [f"{int(w):032x}" for w in plan.program] if self.record_programs else None
        self.stats.append(GemmStat("gemm", name, m, n, k, precision, plan.dataflow, cycles, plan.ideal,
                                   plan.ideal / cycles if cycles else 0.0, exact, len(plan.program), plan.est_cycles,
                                   plan.order, plan.chunk, program))
        return out

    def gemm_requant(self, name, a, b, precision="int8", mult=1, shift=0, bits=8, rounding="nearest", seed=0):
        """A GEMM whose STOREs requantize (the epilogue fused into the GEMM): equals
        ``requantize(a @ b, mult, shift, bits, rounding, seed)`` in C's coordinates whatever the mapping."""
        if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
            raise ValueError(f"{name}: cannot multiply {tuple(a.shape)} by {tuple(b.shape)}")
        check_operand(f"{name}.a", a, precision)
        check_operand(f"{name}.b", b, precision)
        ep = Epilogue(out=f"int{bits}", mult=mult, shift=shift, rounding=rounding, seed=seed)
        return self._gemm(name, a, b, precision, ep)

    def _gemm_q(self, name, a, b, precision, segments):
        """One GEMM whose STOREs requantize each segment of columns (one CONFIG and amax register per segment);
        more segments than amax registers run as several GEMMs of at most :data:`AMAX_SLOTS` segments."""
        if len(segments) > AMAX_SLOTS:
            outs, amax, c0 = [], [], 0
            for i in range(0, len(segments), AMAX_SLOTS):
                part = segments[i:i + AMAX_SLOTS]
                cols = sum(s[0] for s in part)
                q, am = self._gemm_q(name, a, b[:, c0:c0 + cols].contiguous(), precision, part)
                outs.append(q)
                amax += am
                c0 += cols
            return torch.cat(outs, dim=1), amax
        ep = Epilogue(out="int8", segments=tuple(tuple(s) for s in segments))
        out = self._gemm(name, a, b, precision, ep)
        return out, self.last_amax[:len(segments)]

    def _requant(self, name, acc, mult, shift, bits, rounding, seed):
        m, n = acc.shape
        ep = Epilogue(out="int8" if bits == 8 else "int4", mult=mult, shift=shift, rounding=rounding, seed=seed)
        plan = plan_requant(m, n, ep, self.config, cost=self.cost)
        host = self._host_image(plan, "requant", name)
        plan.pack_host(acc.cpu().numpy(), host)
        res = self._checked(plan, host, name)
        self.last_amax = [int(v) for v in res["amax"]]
        out = torch.from_numpy(plan.read_result(host))
        exact = None
        if self.compare:
            exact = torch.equal(out, self._reference._requant(name, acc, mult, shift, bits, rounding, seed))
        cycles = int(res["cycles"])
        self.stats.append(GemmStat("requant", name, m, n, 0, f"int{bits}", "requant", cycles, 0.0, 0.0, exact,
                                   len(plan.program), plan.est_cycles))
        return out

    def _checked(self, plan, host, name):
        res = self.execute(plan, host)
        if res["status"] != Status.OK:
            raise ProgramError(f"{name}: the program stopped at command {res['error_index']} with status "
                               f"{Status(res['status']).name}")
        return res

    # -- reporting ------------------------------------------------------------------------------------------

    @property
    def all_bit_exact(self):
        return all(s.bit_exact is not False for s in self.stats)

    def table(self):
        """Per-call lines: name, shape, dataflow, cycles, utilization, bit-exact."""
        lines = [f"{'call':24s} {'M':>5s} {'N':>5s} {'K':>5s} {'dataflow':>8s} {'cycles':>8s} {'util':>6s}  bit-exact"]
        for s in self.stats:
            util = f"{s.utilization:6.3f}" if s.kind == "gemm" else "     -"
            exact = {True: "yes", False: "NO", None: "-"}[s.bit_exact]
            k = str(s.k) if s.kind == "gemm" else "-"
            lines.append(f"{s.kind + ' ' + s.name:24s} {s.m:5d} {s.n:5d} {k:>5s} {s.dataflow:>8s} {s.cycles:8d} "
                         f"{util}  {exact}")
        return "\n".join(lines)


class GoldenBackend(TiledEngine):
    """The ISA emulator as an engine: the tiler's programs run on :class:`cdmqta.sw.runtime.emulator.Emulator`."""

    cycles_source = "model"

    def execute(self, plan, host):
        em = Emulator(self.config, host=host)
        status = em.run(plan.program)
        return {"status": status, "error_index": em.bad_index, "cycles": plan.est_cycles, "amax": list(em.amax)}
