"""The controller's scoreboard: which older commands, still in flight, touch the rows a queue head needs.

The controller (:mod:`cdmqta.hw.controller`) keeps one :class:`InFlightTable` per kind of command -- loads,
execute commands (PRELOAD / COMPUTE reading the scratchpad), computes (writing the accumulator) and stores -- holding
the exact row ranges of the last ``size`` dispatched commands of that kind. A command at the head of its queue may
start only when no OLDER command of another kind that is still in flight touches the same rows
(:func:`load_ok`, :func:`exec_ok`, :func:`store_ok`: RAW, WAR and WAW on the scratchpad, the accumulator and host
memory), so programs need no FENCE for correctness.

Sequence numbers are 16-bit and wrap; "older" compares them modulo 2**16 (:func:`wrap_lt`), which is exact while
fewer than 2**15 commands of a kind are in flight (the tables hold far fewer). A kind that completes in order is in
flight from dispatch until its completion counter passes it; execute commands release their scratchpad rows out
of order (a PRELOAD may finish reading before the COMPUTE it rides on), so their table keeps a pending bit per slot
(``in_order=False``). Dispatch waits while a table is full (:meth:`InFlightTable.room`), so a slot is never reused
while its command may still matter.
"""

from amaranth.hdl import Cat, Mux, Signal
from amaranth.lib import data

__all__ = ["Range", "HostRange", "InFlightTable", "overlap", "wrap_lt", "load_ok", "exec_ok", "store_ok"]

#: Rows ``lo .. hi-1`` of the scratchpad or the accumulator (empty when lo == hi).
Range = data.StructLayout({"lo": 16, "hi": 17})
#: Host words ``lo .. hi-1`` (a strided transfer's gaps included).
HostRange = data.StructLayout({"lo": 33, "hi": 34})


def overlap(x, y):
    """Whether two ranges share a row."""
    return (x.lo < y.hi) & (y.lo < x.hi)


def wrap_lt(x, y):
    """``x < y`` for 16-bit sequence numbers that are less than 2**15 apart."""
    d = (y - x)[:16]
    return (d != 0) & (d < (1 << 15))


def _any(terms):
    return Cat(*terms).any()


class InFlightTable:
    """The last ``size`` (a power of two) dispatched commands of one kind: per slot its 16-bit sequence number
    and the ``fields`` (name -> shape, e.g. row ranges) it touches.

    ``in_order=True``: the kind completes in order; a slot is in flight while the kind's completion counter has not
    passed its sequence number. ``in_order=False``: each slot has a pending bit, set at dispatch and cleared by
    :meth:`release`."""

    def __init__(self, name, fields, size, in_order=True):
        if size < 2 or size & (size - 1):
            raise ValueError(f"in-flight table {name}: size={size} must be a power of two >= 2")
        self.size, self.in_order = size, in_order
        self._bits = (size - 1).bit_length()
        layout = {"seq": 16, **({} if in_order else {"pending": 1}), **fields}
        self.slots = [Signal(data.StructLayout(layout), name=f"{name}_slot{j}") for j in range(size)]

    def _select(self, seq):
        """(slot, condition) pairs: the slot that sequence number ``seq`` uses."""
        return [(sl, seq[:self._bits] == j) for j, sl in enumerate(self.slots)]

    def record(self, m, seq, **values):
        """In the cycle a command is dispatched (the caller's condition): its slot takes ``seq`` and ``values``."""
        for sl, hit in self._select(seq):
            with m.If(hit):
                m.d.sync += [sl.seq.eq(seq), *(getattr(sl, k).eq(v) for k, v in values.items())]
                if not self.in_order:
                    m.d.sync += sl.pending.eq(1)

    def release(self, m, valid, seq):
        """Out-of-order tables: clear the pending bit of command ``seq`` when ``valid``. Call it before
        :meth:`record` in ``elaborate``, so that a slot recorded in the same cycle stays pending."""
        assert not self.in_order
        for sl, hit in self._select(seq):
            with m.If(valid & hit):
                m.d.sync += sl.pending.eq(0)

    def in_flight(self, sl, tag, done):
        """Slot ``sl`` holds a command older than ``tag`` (the dispatch count of this kind when the querying
        command was dispatched) that is still in flight (``done``: this kind's completion counter; unused for
        out-of-order tables)."""
        if self.in_order:
            return wrap_lt(sl.seq, tag) & ~wrap_lt(sl.seq, done)
        return sl.pending & wrap_lt(sl.seq, tag)

    def conflicts(self, tag, done, touches):
        """Any older in-flight command for which ``touches(slot)`` holds."""
        return _any([self.in_flight(sl, tag, done) & touches(sl) for sl in self.slots])

    def room(self, m, dispatched, done):
        """Whether the next command of this kind (sequence number ``dispatched``) may be dispatched."""
        if self.in_order:
            return (dispatched - done)[:16] < self.size
        free = Signal()
        for sl, hit in self._select(dispatched):
            with m.If(hit):
                m.d.comb += free.eq(~sl.pending)
        return free


# -- the rules: a command at its queue head waits for these older in-flight commands -----------------------------

def load_ok(t, le, done):
    """A LOAD (queue entry ``le``) waits for PRELOAD / COMPUTEs still reading its scratchpad rows (WAR), STOREs
    still writing its host words (RAW) and, into the accumulator, COMPUTEs and STOREs using its rows."""
    return ~(t["exec"].conflicts(le.t_exec, None, lambda sl: ~le.cmd.to_acc & (overlap(sl.r0, le.r)
                                                                                | overlap(sl.r1, le.r)))
             | t["comp"].conflicts(le.t_comp, done["comp"], lambda sl: le.cmd.to_acc & overlap(sl.c, le.r))
             | t["store"].conflicts(le.t_store, done["store_read"], lambda sl: le.cmd.to_acc & overlap(sl.r, le.r))
             | t["store"].conflicts(le.t_store, done["store"], lambda sl: overlap(sl.h, le.h)))


def exec_ok(t, ee, done):
    """A PRELOAD / COMPUTE (entry ``ee``) waits for LOADs into its scratchpad rows (RAW) or, for a COMPUTE, its
    accumulator rows (WAW), and a COMPUTE for STOREs still reading its accumulator rows (WAR)."""
    return ~(t["load"].conflicts(ee.t_load, done["load"],
                                 lambda sl: Mux(sl.to_acc, ee.cmd.compute & overlap(sl.r, ee.c),
                                                overlap(sl.r, ee.r0) | overlap(sl.r, ee.r1)))
             | t["store"].conflicts(ee.t_store, done["store_read"], lambda sl: ee.cmd.compute & overlap(sl.r, ee.c)))


def store_ok(t, se, done):
    """A STORE (entry ``se``) waits for COMPUTEs writing its accumulator rows and LOADs into them (RAW) and for
    LOADs still reading its host words (WAR)."""
    return ~(t["load"].conflicts(se.t_load, done["load"],
                                 lambda sl: (sl.to_acc & overlap(sl.r, se.r)) | overlap(sl.h, se.h))
             | t["comp"].conflicts(se.t_comp, done["comp"], lambda sl: overlap(sl.c, se.r)))
