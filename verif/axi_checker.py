"""An AXI4 protocol checker for cocotb testbenches: samples every channel of an ``m_axi_*`` master each cycle.

Rules checked on every transfer (the checker raises ``AssertionError`` at the first violation):
- every channel (AW, W, AR from the master; R, B from the slave): once VALID is high it stays high until READY,
  and the payload does not change meanwhile;
- AR / AW: BURST = INCR, SIZE = the full bus width, LEN <= 255, the address aligned to the bus width, the burst
  does not cross a 4 KB boundary;
- W: the beats of the n-th write burst are as many as the n-th AW's LEN + 1, WLAST exactly on the last one
  (W may run ahead of AW);
- R: the RID has an outstanding AR; beats per burst = LEN + 1 with RLAST on the last; B: the BID has a write
  burst whose last W beat and AW were both seen;
- :meth:`AxiChecker.idle` (at the end of a test): nothing outstanding.
Counts of bursts, beats and stall cycles are in :attr:`stats`.
"""

from collections import defaultdict, deque

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge

CHANNELS = {
    "aw": ("awid", "awaddr", "awlen", "awsize", "awburst", "awlock", "awcache", "awprot", "awqos"),
    "w": ("wdata", "wstrb", "wlast"),
    "b": ("bid", "bresp"),
    "ar": ("arid", "araddr", "arlen", "arsize", "arburst", "arlock", "arcache", "arprot", "arqos"),
    "r": ("rid", "rdata", "rresp", "rlast"),
}


class AxiChecker:
    def __init__(self, dut, prefix="m_axi", clk=None):
        self.dut, self.prefix = dut, prefix
        self.clk = clk if clk is not None else dut.clk
        self.sig = {ch: {n: getattr(dut, f"{prefix}_{n}") for n in names} for ch, names in CHANNELS.items()}
        self.vr = {ch: (getattr(dut, f"{prefix}_{ch}valid"), getattr(dut, f"{prefix}_{ch}ready")) for ch in CHANNELS}
        self.bus_bytes = len(getattr(dut, f"{prefix}_wstrb"))
        self.size = self.bus_bytes.bit_length() - 1
        self.prev = {ch: None for ch in CHANNELS}
        self.reads = defaultdict(deque)       # arid -> beats of each outstanding burst
        self.r_beat = defaultdict(int)
        self.aw_lens = deque()                # AW bursts whose W beats are not complete (in order)
        self.w_lens = deque()                 # completed W bursts whose AW has not been seen
        self.w_count = 0
        self.aw_ids = deque()                 # ids of AW bursts, in order
        self.w_done = 0                       # W bursts completed
        self.writes = defaultdict(int)        # bid -> bursts whose AW and last W were both seen
        self.aw_seen = 0
        self.stats = defaultdict(int)
        self.cycle = 0
        self.error = None
        self._task = None

    def start(self):
        self._task = cocotb.start_soon(self._run())
        return self

    def _fail(self, msg):
        self.error = f"cycle {self.cycle}: {msg}"
        raise AssertionError(f"AXI protocol: {self.error}")

    async def _run(self):
        while True:
            await RisingEdge(self.clk)
            await ReadOnly()
            self.cycle += 1
            if int(self.dut.rst.value):
                continue
            self._sample()

    def _sample(self):
        for ch in CHANNELS:
            v, r = (int(s.value) for s in self.vr[ch])
            payload = tuple(int(s.value) for s in self.sig[ch].values()) if v else None
            prev = self.prev[ch]
            if prev is not None:
                if not v:
                    self._fail(f"{ch.upper()}VALID dropped before {ch.upper()}READY")
                if payload != prev:
                    diff = [n for n, a, b in zip(self.sig[ch], prev, payload) if a != b]
                    self._fail(f"{ch.upper()} payload changed while waiting for READY: {diff}")
            if v and r:
                self._transfer(ch, dict(zip(self.sig[ch], payload)))
                self.prev[ch] = None
            else:
                self.prev[ch] = payload if v else None
                if v:
                    self.stats[f"{ch}_wait"] += 1

    def _check_addr(self, ch, p):
        addr, beats = p[f"{ch}addr"], p[f"{ch}len"] + 1
        if p[f"{ch}burst"] != 1:
            self._fail(f"{ch.upper()}BURST={p[f'{ch}burst']} (INCR expected)")
        if p[f"{ch}size"] != self.size:
            self._fail(f"{ch.upper()}SIZE={p[f'{ch}size']} (bus width 2**{self.size} bytes expected)")
        if addr % self.bus_bytes:
            self._fail(f"{ch.upper()}ADDR={addr:#x} not aligned to the bus width")
        if (addr % 4096) + beats * self.bus_bytes > 4096:
            self._fail(f"{ch.upper()} burst {addr:#x} + {beats} beats crosses a 4 KB boundary")
        self.stats[f"{ch}_bursts"] += 1
        self.stats[f"{ch}_max_len"] = max(self.stats[f"{ch}_max_len"], beats)
        return beats

    def _transfer(self, ch, p):
        self.stats[f"{ch}_beats"] += 1
        if ch == "ar":
            self.reads[p["arid"]].append(self._check_addr("ar", p))
        elif ch == "r":
            q = self.reads[p["rid"]]
            if not q:
                self._fail(f"R beat with RID={p['rid']} and no outstanding AR of that ID")
            self.r_beat[p["rid"]] += 1
            last = self.r_beat[p["rid"]] == q[0]
            if bool(p["rlast"]) != last:
                self._fail(f"RLAST={p['rlast']} on beat {self.r_beat[p['rid']]} of a {q[0]}-beat burst")
            if last:
                q.popleft()
                self.r_beat[p["rid"]] = 0
        elif ch == "aw":
            self.aw_lens.append(self._check_addr("aw", p))
            self.aw_ids.append(p["awid"])
            self._match_w()
        elif ch == "w":
            self.w_count += 1
            if p["wlast"]:
                self.w_lens.append(self.w_count)
                self.w_count = 0
                self._match_w()
            elif self.aw_lens and len(self.w_lens) < len(self.aw_lens) and \
                    self.w_count >= self.aw_lens[len(self.w_lens)]:
                self._fail(f"no WLAST on beat {self.w_count} of a {self.aw_lens[len(self.w_lens)]}-beat burst")
        elif ch == "b":
            if self.writes[p["bid"]] == 0:
                self._fail(f"B response with BID={p['bid']} and no completed write burst of that ID")
            self.writes[p["bid"]] -= 1

    def _match_w(self):
        while self.aw_lens and self.w_lens:
            a, w = self.aw_lens.popleft(), self.w_lens.popleft()
            if a != w:
                self._fail(f"W burst of {w} beats for an AW of {a} beats")
            self.writes[self.aw_ids.popleft()] += 1

    def idle(self):
        """Assert that nothing is outstanding (every read burst returned, every write burst responded)."""
        if self.error:
            raise AssertionError(self.error)
        busy = {k: list(v) for k, v in self.reads.items() if v}
        assert not busy, f"read bursts outstanding: {busy}"
        assert not self.aw_lens and not self.w_lens and self.w_count == 0, "write bursts incomplete"
        assert not any(self.writes.values()), f"B responses missing: {dict(self.writes)}"
