"""DSP floorplan of the systolic array on the ECP5-85F: every PE's MULT18X18D gets a fixed DSP site, in the
array's own order, before nextpnr places the rest of the design around them.

Why: left to itself, nextpnr's placer scatters the 64 multipliers of an 8x8 array over the chip's three DSP rows
(PE(0, 0) on one row, its neighbour PE(0, 2) on another, 20 columns apart), and every PE's ~230 LUTs follow their
DSP, so neighbouring PEs' registers end up far apart and every critical path is 70-90 % routing. With the DSPs in
array order, the fabric of each PE sits next to its neighbours' and the placement wirelength drops by a quarter.

The ECP5-85F (LFE5U-85F) has its 156 MULT18X18D in three rows (tile rows Y10, Y34 and Y58), each of 13 blocks of 9
tile columns starting at X4, 13, 22, 31, 40, 49, 58, 69, 78, 87, 96, 105, 114, with four multipliers per block
(``MULT18_0`` at x, ``MULT18_1`` at x+1, ``MULT18_4`` at x+4, ``MULT18_5`` at x+5). These are nextpnr's BEL
names (``X<x>/Y<y>/<bel>``), as its placer reports them in a placed netlist.

Layout (:func:`array_sites`): the array's rows are split into ``bands`` of at most ``band_rows`` consecutive rows
(as even as possible, one band per DSP row, top to bottom); inside a band, column j takes block j and the band's
rows take the block's sites in order, so vertical neighbours (psum, shift chain, B, control: the wide PE-to-PE
signals) share a block and horizontal neighbours (the 8-bit A lane) are one block apart. Three rows per block
(band_rows = 3: an 8x8 array uses all three DSP rows) leave a fourth of the sites, and of the fabric around
them, free: on the 8x8 this placed 129 MHz where four rows per block (two DSP rows) placed 121 MHz.
Arrays that do not fit this layout (more columns than blocks, or more than three bands) get no floorplan.
"""

import json
import re

from cdmqta.errors import InputError

__all__ = ["ECP5_85F_DSP", "array_sites", "apply_bel_constraints", "pe_multipliers"]

ECP5_85F_DSP = {
    "rows": (10, 34, 58),
    "blocks": (4, 13, 22, 31, 40, 49, 58, 69, 78, 87, 96, 105, 114),
    "sites": ((0, "MULT18_0"), (1, "MULT18_1"), (4, "MULT18_4"), (5, "MULT18_5")),
}

#: DSP grids per nextpnr target (see synth.flow.TARGETS); targets without one get no floorplan.
DSP_GRIDS = {"ecp5-85f": ECP5_85F_DSP}


def array_sites(rows, cols, grid=ECP5_85F_DSP, band_rows=3):
    """{(i, j): BEL name} for an R x C array on ``grid``, or None if the array does not fit the layout."""
    if rows < 1 or cols < 1:
        raise InputError(f"array {rows}x{cols}: rows and cols must be >= 1")
    per_block = len(grid["sites"])
    if not 1 <= band_rows <= per_block:
        raise InputError(f"band_rows={band_rows}: expected 1..{per_block}")
    n_bands = -(-rows // band_rows)
    if n_bands > len(grid["rows"]) or cols > len(grid["blocks"]):
        return None
    # bands as even as possible: the first (rows mod n_bands) bands one row taller
    base, extra = divmod(rows, n_bands)
    sites = {}
    i = 0
    for band in range(n_bands):
        y = grid["rows"][band]
        for k in range(base + (band < extra)):
            dx, bel = grid["sites"][k]
            for j in range(cols):
                sites[(i, j)] = f"X{grid['blocks'][j] + dx}/Y{y}/{bel}"
            i += 1
    return sites


_PE_MULT = re.compile(r"(?:^|\.)pe_(\d+)_(\d+)\.mac\.mult$")


def pe_multipliers(cells):
    """{(i, j): cell name} of the PE multipliers (MULT18X18D instances named ``...pe_<i>_<j>.mac.mult``) in a
    yosys JSON module's ``cells``."""
    found = {}
    for name, cell in cells.items():
        mo = _PE_MULT.search(name)
        if mo and cell.get("type") == "MULT18X18D":
            found[(int(mo[1]), int(mo[2]))] = name
    return found


def apply_bel_constraints(netlist_path, target, band_rows=3):
    """Pin the PE multipliers of the yosys netlist at ``netlist_path`` (JSON, rewritten in place) to their DSP
    sites (nextpnr honours a cell's ``BEL`` attribute). Returns a short description of the floorplan, or None
    if there is none for this target or array (the netlist is then left as it is)."""
    grid = DSP_GRIDS.get(target)
    if grid is None:
        return None
    with open(netlist_path) as f:
        netlist = json.load(f)
    tops = [m for m in netlist["modules"].values() if int(str(m.get("attributes", {}).get("top", "0")), 2)]
    if len(tops) != 1:
        return None
    cells = tops[0]["cells"]
    mults = pe_multipliers(cells)
    if not mults:
        return None
    rows = 1 + max(i for i, _ in mults)
    cols = 1 + max(j for _, j in mults)
    if len(mults) != rows * cols:
        return None
    sites = array_sites(rows, cols, grid, band_rows)
    if sites is None:
        return None
    for ij, name in mults.items():
        cells[name].setdefault("attributes", {})["BEL"] = sites[ij]
    with open(netlist_path, "w") as f:
        json.dump(netlist, f)
    n_bands = len({s.split("/")[1] for s in sites.values()})
    return f"{rows}x{cols} PE multipliers in array order, {n_bands} DSP row(s), <= {band_rows} rows per block"
