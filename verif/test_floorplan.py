"""The ECP5-85F DSP floorplan of the array (cdmqta.synth.floorplan): layout rules and the netlist rewrite.
(test_synth.py checks on a real nextpnr run that the sites are accepted and used.)"""

import json

import pytest

from cdmqta.synth.floorplan import ECP5_85F_DSP, apply_bel_constraints, array_sites


def _xy(bel):
    x, y, name = bel.split("/")
    return int(x[1:]), int(y[1:]), name


def test_8x8_bands_of_three_rows_column_per_block():
    sites = array_sites(8, 8)
    assert len(sites) == 64 and len(set(sites.values())) == 64
    # rows 0-2 on DSP row Y10, 3-5 on Y34, 6-7 on Y58
    assert [_xy(sites[(i, 0)])[1] for i in range(8)] == [10, 10, 10, 34, 34, 34, 58, 58]
    assert sites[(0, 0)] == "X4/Y10/MULT18_0" and sites[(1, 0)] == "X5/Y10/MULT18_1"
    assert sites[(2, 0)] == "X8/Y10/MULT18_4" and sites[(3, 7)] == "X69/Y34/MULT18_0"
    # vertical neighbours share a block (x within 4 columns) in a band; horizontal ones are one block apart
    for i in range(8):
        for j in range(7):
            assert _xy(sites[(i, j + 1)])[0] - _xy(sites[(i, j)])[0] in (9, 11)


@pytest.mark.parametrize("rows, cols, bands", [(1, 1, 1), (2, 2, 1), (4, 4, 2), (5, 3, 2), (7, 13, 3), (9, 13, 3)])
def test_shapes_that_fit(rows, cols, bands):
    sites = array_sites(rows, cols)
    assert set(sites) == {(i, j) for i in range(rows) for j in range(cols)}
    assert len(set(sites.values())) == rows * cols
    ys = [_xy(sites[(i, 0)])[1] for i in range(rows)]
    assert ys == sorted(ys) and len(set(ys)) == bands
    # bands differ by at most one row
    counts = [ys.count(y) for y in sorted(set(ys))]
    assert max(counts) - min(counts) <= 1 and max(counts) <= 3
    grid_sites = {f"X{x + dx}/Y{y}/{n}" for y in ECP5_85F_DSP["rows"] for x in ECP5_85F_DSP["blocks"]
                  for dx, n in ECP5_85F_DSP["sites"]}
    assert len(grid_sites) == 156 and set(sites.values()) <= grid_sites


@pytest.mark.parametrize("rows, cols", [(10, 2), (2, 14), (16, 16)])
def test_shapes_that_do_not_fit_get_none(rows, cols):
    assert array_sites(rows, cols) is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="rows and cols"):
        array_sites(0, 4)
    with pytest.raises(ValueError, match="band_rows=5"):
        array_sites(4, 4, band_rows=5)


def _netlist(tmp_path, names, mult_type="MULT18X18D"):
    cells = {n: {"type": mult_type, "attributes": {}} for n in names}
    cells["dut.other"] = {"type": "TRELLIS_FF", "attributes": {}}
    path = tmp_path / "top.json"
    path.write_text(json.dumps({"modules": {"top": {"attributes": {"top": "00000000000000000000000000000001"},
                                                    "cells": cells}}}))
    return path


def test_apply_rewrites_only_pe_multipliers(tmp_path):
    names = [f"dut.pe_{i}_{j}.mac.mult" for i in range(2) for j in range(3)]
    path = _netlist(tmp_path, names)
    plan = apply_bel_constraints(str(path), "ecp5-85f")
    assert plan.startswith("2x3 PE multipliers")
    cells = json.loads(path.read_text())["modules"]["top"]["cells"]
    sites = array_sites(2, 3)
    assert all(cells[f"dut.pe_{i}_{j}.mac.mult"]["attributes"]["BEL"] == sites[(i, j)]
               for i in range(2) for j in range(3))
    assert "BEL" not in cells["dut.other"]["attributes"]


@pytest.mark.parametrize("names, target", [
    (["dut.pe_0_0.mac.mult", "dut.pe_1_1.mac.mult"], "ecp5-85f"),     # not a full array
    (["dut.pe_0_0.mac.mult"], "ice40-up5k"),                          # no grid for the target
    ([], "ecp5-85f"),                                                  # no DSP instances (generic multipliers)
])
def test_apply_leaves_netlist_alone(tmp_path, names, target):
    path = _netlist(tmp_path, names)
    before = path.read_text()
    assert apply_bel_constraints(str(path), target) is None
    assert path.read_text() == before
