"""AMBA AXI4 and AXI4-Lite interfaces as Amaranth wiring signatures, and their AMBA port names at a top level.

:func:`axi4_signature` is the AXI4 master's view of the five channels (AW, W, B, AR, R) with ID, LEN, SIZE,
BURST, LOCK, CACHE, PROT, QOS, WSTRB, RESP and LAST; :func:`axil_signature` is the AXI4-Lite master's view
(a slave takes ``In(axil_signature(...))``, i.e. the flipped signature). Members are named exactly as in the AMBA
specification without the channel prefix of the port (``awaddr``, ``wstrb``, ``rlast``, ...).

Amaranth names the ports of a nested interface ``m_axi__awaddr``; integration tools (Vivado IP packager, Quartus
Platform Designer, FuseSoC generators, cocotbext-axi's ``AxiBus.from_prefix``) expect ``m_axi_awaddr``. A top-level
component therefore declares flat members with :func:`amba_members` (``{"m_axi_awaddr": Out(32), ...}``) and
wires them to an inner interface with :func:`connect_amba`, so that the generated Verilog has exactly the AMBA
names whatever converter entry point is used.

Clock and reset: every channel is synchronous to the design's ``clk``; ``rst`` is active high and synchronous
(Amaranth's ``sync`` domain). AMBA's ARESETn is active low: an integrator inverts it (the README says so).
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["axi4_signature", "axi4_read_signature", "axi4_write_signature", "axil_signature", "amba_members",
           "connect_amba", "Burst", "Resp",
           "ID_WIDTH", "AXIL_ADDR_WIDTH", "CACHE_DEFAULT"]

#: AXI ID width of the accelerator's master (IDs 0..15; each engine uses its own constant ID).
ID_WIDTH = 4
#: Address width of the AXI4-Lite register slave (one 4 KB page).
AXIL_ADDR_WIDTH = 12
#: AxCACHE of every burst: normal non-cacheable bufferable (0b0011), what Xilinx and Arm recommend for DMA masters.
CACHE_DEFAULT = 0b0011


class Burst:
    FIXED, INCR, WRAP = 0, 1, 2


class Resp:
    OKAY, EXOKAY, SLVERR, DECERR = 0, 1, 2, 3


def _addr_channel(ch, addr_width, id_width):
    return {f"{ch}id": Out(id_width), f"{ch}addr": Out(addr_width), f"{ch}len": Out(8), f"{ch}size": Out(3),
            f"{ch}burst": Out(2), f"{ch}lock": Out(1), f"{ch}cache": Out(4), f"{ch}prot": Out(3),
            f"{ch}qos": Out(4), f"{ch}valid": Out(1), f"{ch}ready": In(1)}


def _check_width(data_width):
    if data_width not in (8, 16, 32, 64, 128, 256, 512, 1024):
        raise ValueError(f"AXI data width must be a power of two from 8 to 1024, not {data_width!r}")


def axi4_read_signature(data_width, addr_width, id_width=ID_WIDTH):
    """The AXI4 master's AR and R channels (``Out`` = driven by the master)."""
    _check_width(data_width)
    return wiring.Signature({**_addr_channel("ar", addr_width, id_width),
                             "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1),
                             "rvalid": In(1), "rready": Out(1)})


def axi4_write_signature(data_width, addr_width, id_width=ID_WIDTH):
    """The AXI4 master's AW, W and B channels (``Out`` = driven by the master)."""
    _check_width(data_width)
    return wiring.Signature({**_addr_channel("aw", addr_width, id_width),
                             "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
                             "wvalid": Out(1), "wready": In(1),
                             "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1)})


def axi4_signature(data_width, addr_width, id_width=ID_WIDTH):
    """The AXI4 master's view of all five channels: :func:`axi4_write_signature` + :func:`axi4_read_signature`."""
    return wiring.Signature({**axi4_write_signature(data_width, addr_width, id_width).members,
                             **axi4_read_signature(data_width, addr_width, id_width).members})


def axil_signature(addr_width=AXIL_ADDR_WIDTH, data_width=32):
    """The AXI4-Lite master's view (a register slave takes ``In(axil_signature())``)."""
    return wiring.Signature({
        "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wvalid": Out(1), "wready": In(1),
        "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
        "rdata": In(data_width), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
    })


def amba_members(prefix, signature, *, flipped=False):
    """Flat top-level members ``{f"{prefix}_{name}": In/Out(width)}`` of ``signature`` (a flat signature of
    plain-width members). ``flipped``: the top is on the other side (a slave port of a master-view signature)."""
    out = {}
    for name, member in signature.members.items():
        flow = member.flow.flip() if flipped else member.flow
        out[f"{prefix}_{name}"] = flow(member.shape)
    return out


def connect_amba(m, top, prefix, inner):
    """Wire the flat members ``prefix_*`` of ``top`` to ``inner``, the same interface of a block inside the top
    (e.g. ``engine.bus``; its signature's flows are the block's: an ``Out`` member is driven by the block)."""
    for name, member in inner.signature.members.items():
        flat, sub = getattr(top, f"{prefix}_{name}"), getattr(inner, name)
        if member.flow == Out:
            m.d.comb += flat.eq(sub)
        else:
            m.d.comb += sub.eq(flat)
