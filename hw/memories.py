"""On-chip memories: the banked scratchpad (operands) and the accumulator memory (accumulate-on-write).

Both are built from ``amaranth.lib.memory`` and split into banks (bank = low address bits, so consecutive rows
fall in different banks and each bank is a BRAM-sized block). Every scratchpad bank has one write port and
``read_ports`` read ports (2 + shift lanes in the accelerator: streamed A, streamed B in OS, one per WS preload
lane; yosys replicates a bank per extra read port), every accumulator bank one write port, two read ports and its own
read-modify-write pipeline.

Scratchpad (``sp_rows`` rows of ``lanes`` 8-bit lanes):
    write: ``w_en``, ``w_addr``, ``w_data`` -- written at the end of the cycle.
    read port p < read_ports: ``r[p]`` (:func:`read_port_signature`): ``r[p].en``, ``r[p].addr`` at cycle t ->
    ``r[p].data`` valid at cycle t+1 (held while ``r[p].en`` is low). A read of the row written in the same cycle
    returns the old row.

Accumulator memory (``acc_rows`` rows of ``cols`` lanes of ``acc_width`` bits), write side = a read-modify-write
pipeline so that a partial sum can be added to what is stored (split K):
    execute write (priority, never stalls): ``ex_valid``, ``ex_addr``, ``ex_data``, ``ex_mask`` (lanes to write),
    ``ex_accumulate`` (add to the stored row instead of overwriting); with ``ex_ports=2`` a second request
    ``ex1_valid`` / ``ex1_addr`` / ``ex1_data`` in the same cycle (same mask / accumulate, another bank).
    load write (overwrite, all lanes): ``ld_valid``, ``ld_addr``, ``ld_data``; accepted when ``ld_ready`` (= no
    execute write on any port in this cycle) -- a valid/ready port, payload held until accepted.
    A request accepted at cycle t reads its row at t and writes ``mask ? (accumulate ? old + data : data) : old``
    at the end of cycle t+1. The read is transparent to the pipeline's own write, so back-to-back requests to the
    same row (t, t+1) see each other's result: accumulate-on-write is exact at one request per cycle.
    ``busy`` is high while a write is in flight (reads of the store port see every write once ``busy`` is low).
    store read: ``r`` (:func:`read_port_signature`): ``r.en``, ``r.addr`` at t -> ``r.data`` at t+1.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Scratchpad", "AccumulatorMemory", "read_port_signature"]


def read_port_signature(addr_width, data_width):
    """A synchronous read port from the reader's side: ``en``, ``addr`` at cycle t -> ``data`` at cycle t+1."""
    return wiring.Signature({"en": Out(1), "addr": Out(addr_width), "data": In(data_width)})


def _bank_bits(banks):
    return (banks - 1).bit_length()


class Scratchpad(wiring.Component):
    """Banked operand memory; see the module docstring for ports and latency."""

    def __init__(self, *, rows, lanes, banks, read_ports=2):
        if rows % banks:
            raise ValueError(f"scratchpad rows={rows} must be a multiple of banks={banks}")
        self._rows, self._lanes, self._banks, self._np = rows, lanes, banks, read_ports
        aw = max(1, (rows - 1).bit_length())
        n = read_ports
        super().__init__({
            "w_en": In(1), "w_addr": In(aw), "w_data": In(8 * lanes),
            "r": In(read_port_signature(aw, 8 * lanes)).array(n),
        })

    def elaborate(self, platform):
        m = Module()
        bb = _bank_bits(self._banks)
        depth = self._rows // self._banks
        n = self._np
        rsel = [Signal(max(1, bb), name=f"rsel{p}") for p in range(n)]
        rports = [[] for _ in range(n)]
        for b in range(self._banks):
            mem = memory.Memory(shape=8 * self._lanes, depth=depth, init=[])
            m.submodules[f"bank{b}"] = mem
            wp = mem.write_port()
            bank_of_w = self.w_addr[:bb] == b if bb else True
            m.d.comb += [wp.addr.eq(self.w_addr[bb:]), wp.data.eq(self.w_data), wp.en.eq(self.w_en & bank_of_w)]
            for p in range(n):
                rp = mem.read_port()
                bank_of_r = self.r[p].addr[:bb] == b if bb else True
                m.d.comb += [rp.addr.eq(self.r[p].addr[bb:]), rp.en.eq(self.r[p].en & bank_of_r)]
                rports[p].append(rp)
        for p in range(n):
            if bb:
                with m.If(self.r[p].en):
                    m.d.sync += rsel[p].eq(self.r[p].addr[:bb])
                with m.Switch(rsel[p]):
                    for b in range(self._banks):
                        with m.Case(b):
                            m.d.comb += self.r[p].data.eq(rports[p][b].data)
            else:
                m.d.comb += self.r[p].data.eq(rports[p][0].data)
        return m


class AccumulatorMemory(wiring.Component):
    """Accumulator rows with a read-modify-write write path; see the module docstring.

    ``ex_ports`` (1 or 2) execute write ports: with 2, ``ex1_*`` is a second request in the same cycle (the
    second drain lane of the shift chain) that shares ``ex_mask`` / ``ex_accumulate`` with port 0 and must address
    a different bank (rows r and r - 1: consecutive rows always do). Each bank has its own read-modify-write
    pipeline; with 2 ports the memory has at least 2 banks (``banks`` is raised to 2, the depth rounded up).
    """

    def __init__(self, *, rows, cols, acc_width, banks, ex_ports=1):
        if rows % banks:
            raise ValueError(f"accumulator rows={rows} must be a multiple of banks={banks}")
        if ex_ports not in (1, 2):
            raise ValueError(f"ex_ports={ex_ports} must be 1 or 2")
        self._rows, self._cols, self._aw = rows, cols, acc_width
        self._banks = max(banks, ex_ports)
        self._np = ex_ports
        aw = max(1, (rows - 1).bit_length())
        row = data.ArrayLayout(signed(acc_width), cols)
        sig = {
            "ex_valid": In(1), "ex_addr": In(aw), "ex_data": In(row), "ex_mask": In(cols),
            "ex_accumulate": In(1),
            "ld_valid": In(1), "ld_ready": Out(1), "ld_addr": In(aw), "ld_data": In(row),
            "busy": Out(1),
            "r": In(read_port_signature(aw, row)),
        }
        if ex_ports == 2:
            sig.update({"ex1_valid": In(1), "ex1_addr": In(aw), "ex1_data": In(row)})
        super().__init__(sig)

    def elaborate(self, platform):
        m = Module()
        bb = _bank_bits(self._banks)
        depth = -(-self._rows // self._banks)
        row = data.ArrayLayout(signed(self._aw), self._cols)
        in_bank = (lambda a, b: a[:bb] == b) if bb else (lambda a, b: 1)
        ports = [(self.ex_valid, self.ex_addr, self.ex_data)]
        if self._np == 2:
            ports.append((self.ex1_valid, self.ex1_addr, self.ex1_data))
        m.d.comb += self.ld_ready.eq(~Cat(*(v for v, _, _ in ports)).any())

        r_sel = Signal(max(1, bb))
        with m.If(self.r.en):
            m.d.sync += r_sel.eq(self.r.addr[:bb] if bb else 0)
        busy = []
        for b in range(self._banks):
            # Stage 0: this bank's request (execute ports first, then the load port), read its row.
            req_valid, req_addr = Signal(name=f"req_valid{b}"), Signal.like(self.ex_addr, name=f"req_addr{b}")
            req_data, req_mask, req_acc = Signal(row, name=f"req_data{b}"), Signal(self._cols), Signal()
            for k, (valid, addr, dat) in enumerate(ports):
                with (m.Elif if k else m.If)(valid & in_bank(addr, b)):
                    m.d.comb += [req_valid.eq(1), req_addr.eq(addr), req_data.eq(dat),
                                 req_mask.eq(self.ex_mask), req_acc.eq(self.ex_accumulate)]
            with m.Elif(self.ld_ready):
                m.d.comb += [req_valid.eq(self.ld_valid & in_bank(self.ld_addr, b)), req_addr.eq(self.ld_addr),
                             req_data.eq(self.ld_data), req_mask.eq(-1), req_acc.eq(0)]

            # Stage 1: combine with the stored row and write.
            s1_valid, s1_addr = Signal(name=f"s1_valid{b}"), Signal.like(self.ex_addr, name=f"s1_addr{b}")
            s1_data, s1_mask, s1_acc = Signal(row, name=f"s1_data{b}"), Signal(self._cols), Signal()
            m.d.sync += [s1_valid.eq(req_valid), s1_addr.eq(req_addr), s1_data.eq(req_data), s1_mask.eq(req_mask),
                         s1_acc.eq(req_acc)]
            busy.append(s1_valid)

            mem = memory.Memory(shape=row, depth=depth, init=[])
            m.submodules[f"bank{b}"] = mem
            wp = mem.write_port()
            rmw = mem.read_port(transparent_for=(wp,))
            st = mem.read_port()
            old, new = Signal(row, name=f"old{b}"), Signal(row, name=f"new{b}")
            m.d.comb += [
                rmw.addr.eq(req_addr[bb:]), rmw.en.eq(req_valid),
                wp.addr.eq(s1_addr[bb:]), wp.data.eq(new), wp.en.eq(s1_valid),
                st.addr.eq(self.r.addr[bb:]), st.en.eq(self.r.en & in_bank(self.r.addr, b)),
                old.eq(rmw.data),
            ]
            with m.If(r_sel == b):
                m.d.comb += self.r.data.eq(st.data)
            for c in range(self._cols):
                summed = Mux(s1_acc, old[c] + s1_data[c], s1_data[c])
                m.d.comb += new[c].eq(Mux(s1_mask[c], summed, old[c]))
        m.d.comb += self.busy.eq(Cat(*busy).any())
        return m
