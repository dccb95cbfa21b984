"""Markdown/LaTeX grids and ROOT histograms of the tables, on product, nested, 1-D, 3-D and 4-D schemes: the
ROOT files are read back with uproot and every cell compared with the CSV rows; the text grids are parsed
back; the LaTeX is compiled when pdflatex is there."""

from __future__ import annotations

import logging
import math
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import uproot

from calibflow.binning.scheme import BinningScheme, Node
from calibflow.config import OutputsConfig, Variation
from calibflow.export.grid import cell_bins, decimals, union_edges
from calibflow.export.labels import VariableLabel
from calibflow.export.publish import export_tables
from calibflow.export.root import ROOT_NOTE, root_latex
from calibflow.export.text import cell, latex_text
from calibflow.tables.rows import Row, efficiency_rows, read_csv, scale_factor_rows, write_csv
from calibflow.tables.systematics import Runs, combine

SOURCES = [Variation(name="sigmodel", vary={"fit": {"signal": "gauss"}}),
           Variation(name="massrange", up={"mass": {"bins": 90}}, down={"mass": {"bins": 110}})]
LABELS = {"pt": VariableLabel(r"$p_\mathrm{T}$", "GeV"), "abseta": VariableLabel(r"$|\eta|$", ""),
          "phi": VariableLabel(r"$\phi$", "rad"), "ntracks": VariableLabel(r"$N_\mathrm{tracks}$", "")}
SAMPLES = ("data_2024", "mc_sim")
NO_PLOTS = OutputsConfig(plots=False, correctionlib=False)


def _tables(scheme: BinningScheme, sources: Sequence[Variation], seed: int = 1) -> tuple[list[Row], list[Row]]:
    """Efficiency and scale-factor rows of two samples with asymmetric errors and systematic columns."""
    rng = np.random.default_rng(seed)
    results = {(s, i): {"method": "count", "n_pass": 90, "n_fail": 10, "efficiency": rng.uniform(0.5, 0.95),
                        "err_down": rng.uniform(0.01, 0.03), "err_up": rng.uniform(0.01, 0.03), "status": "ok"}
               for s in SAMPLES for i in range(len(scheme))}
    eff = efficiency_rows(scheme, results)

    def shifted(rows: list[Row], key: str, scale: float) -> list[Row]:
        return [{**r, key: r[key] + scale * rng.uniform(0.001, 0.01)} for r in rows]

    varied = {"sigmodel": shifted(eff, "efficiency", 1), "massrangeUp": shifted(eff, "efficiency", 1),
              "massrangeDown": shifted(eff, "efficiency", -1)}
    eff = combine(eff, Runs({k: v for k, v in varied.items() if sources}, sources, "quadrature_max"), "efficiency",
                  ["sample", "bin"])
    sf_nominal = scale_factor_rows(eff, SAMPLES[0], SAMPLES[1])
    sf_varied = {k: scale_factor_rows(v, SAMPLES[0], SAMPLES[1]) for k, v in varied.items()}
    sf = combine(sf_nominal, Runs(sf_varied if sources else {}, sources, "quadrature_max"), "scale_factor",
                 ["data", "mc", "bin"])
    return eff, sf


def _export(tmp_path: Path, scheme: BinningScheme, sources: Sequence[Variation] = SOURCES,
            outputs: OutputsConfig = NO_PLOTS) -> tuple[list[str], list[Row], list[Row]]:
    eff, sf = _tables(scheme, sources)
    write_csv(tmp_path / "efficiencies.csv", eff)
    write_csv(tmp_path / "scale_factors.csv", sf)
    written = export_tables(str(tmp_path), scheme, "calib_50%", outputs, sources,
                            {v: LABELS[v] for v in scheme.variables})
    # compare with the rows as a reader of the CSV files sees them
    return written, read_csv(tmp_path / "efficiencies.csv"), read_csv(tmp_path / "scale_factors.csv")


def _tables_by_name(eff: list[Row], sf: list[Row]) -> dict[str, tuple[str, list[Row]]]:
    out = {f"eff_{s}": ("efficiency", [r for r in eff if r["sample"] == s]) for s in SAMPLES}
    out[f"sf_{SAMPLES[0]}"] = ("scale_factor", sf)
    return out


def _centre_index(h: object, row: Row, variables: Sequence[str]) -> tuple[int, ...]:
    """Index of the histogram cell holding the centre of the row's bin."""
    return tuple(int(np.searchsorted(h.axis(i).edges(), 0.5 * (row[f"{v}_lo"] + row[f"{v}_hi"])) - 1)
                 for i, v in enumerate(variables))


def _check_root(path: Path, scheme: BinningScheme, eff: list[Row], sf: list[Row], kind: str) -> None:
    """Every histogram of every table equals the rows: nominal ± max total, _stat, _syst, source Up/Down."""
    variables = list(scheme.variables)
    with uproot.open(path) as f:
        for name, (value, rows) in _tables_by_name(eff, sf).items():
            h = f[name]
            assert h.classname == kind
            for i, v in enumerate(variables):
                assert h.axis(i).edges().tolist() == union_edges(scheme)[i].tolist()
                assert h.axis(i).member("fTitle") == root_latex(LABELS[v].axis)
            assert h.title == (f"{name[4:]} efficiency" if name.startswith("eff") else f"{SAMPLES[0]}/{SAMPLES[1]} scale factor")
            for r in rows:
                idx = _centre_index(h, r, variables)
                assert h.values()[idx] == pytest.approx(r[value], rel=1e-12)
                assert h.errors()[idx] == pytest.approx(max(r["total_down"], r["total_up"]), rel=1e-12)
                assert f[f"{name}_stat"].values()[idx] == pytest.approx(r[value], rel=1e-12)
                assert f[f"{name}_stat"].errors()[idx] == pytest.approx(max(r["err_down"], r["err_up"]), rel=1e-12)
                assert f[f"{name}_syst"].errors()[idx] == pytest.approx(r["syst"], rel=1e-12)
                for key in ("sigmodelUp", "sigmodelDown", "massrangeUp", "massrangeDown"):
                    assert f[f"{name}_{key}"].values()[idx] == pytest.approx(r[key], rel=1e-12)
                    assert f[f"{name}_{key}"].errors()[idx] == 0
            assert f[f"{name}_massrangeUp"].title.endswith(", massrange up")
            assert f[f"{name}_syst"].title.endswith(", syst. uncertainty")


CELL = re.compile(r"^(?P<v>[\d.]+) (?:± (?P<s>[\d.]+)|\+(?P<u>[\d.]+)/-(?P<d>[\d.]+))(?: ± (?P<y>[\d.]+))?$")


def _markdown_grids(text: str) -> dict[str, list[list[list[str]]]]:
    """Per ``## `` section its grids, each a list of rows of cells (header first, separator dropped)."""
    out: dict[str, list[list[list[str]]]] = {}
    section, grid = "", None
    for line in text.splitlines():
        if line.startswith("## "):
            section, grid = line[3:], None
            out[section] = []
        elif line.startswith("|") and section:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if grid is None:
                grid = []
                out[section].append(grid)
            if not all(set(c) <= {"-"} for c in cells):
                grid.append(cells)
        else:
            grid = None
    return out


def _check_cell(text: str, row: Row, value: str, digits: int, with_syst: bool = True) -> None:
    m = CELL.match(text)
    assert m, text
    assert float(m["v"]) == pytest.approx(row[value], abs=0.51 * 10**-digits)
    if m["s"] is not None:
        assert float(m["s"]) == pytest.approx(row["err_up"], abs=0.51 * 10**-digits)
        assert round(row["err_up"], digits) == pytest.approx(round(row["err_down"], digits))
    else:
        assert float(m["u"]) == pytest.approx(row["err_up"], abs=0.51 * 10**-digits)
        assert float(m["d"]) == pytest.approx(row["err_down"], abs=0.51 * 10**-digits)
    assert (m["y"] is not None) == with_syst
    if with_syst:
        assert float(m["y"]) == pytest.approx(row["syst"], abs=0.51 * 10**-digits)


def _compile(tmp_path: Path) -> None:
    """Compile tables.tex inside a minimal document when pdflatex is installed."""
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed")
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{graphicx}\n\\begin{document}\n"
                                      "\\input{tables.tex}\n\\end{document}\n")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 0


def _latex_rows(tex: str) -> list[list[str]]:
    """Body rows of every tabular as lists of cells, ``\\multicolumn{k}`` expanded to k cells."""
    rows = []
    for line in tex.splitlines():
        if line.startswith("$[") and line.endswith(r"\\"):
            cells = []
            for c in line[:-2].split(" & "):
                m = re.match(r"\\multicolumn\{(\d+)\}\{c\}\{(.*)\}$", c.strip())
                cells += [m[2]] * int(m[1]) if m else [c.strip()]
            rows.append(cells)
    return rows


# --- product 2-D scheme -----------------------------------------------------------------------------------

PRODUCT = BinningScheme.product([("pt", [10, 20, 50, 200]), ("abseta", [0.0, 0.8, 1.5, 2.4])])


def test_product_root_histograms_equal_rows(tmp_path: Path) -> None:
    written, eff, sf = _export(tmp_path, PRODUCT)
    assert str(tmp_path / "corrections.root") in written and str(tmp_path / ROOT_NOTE) in written
    _check_root(tmp_path / "corrections.root", PRODUCT, eff, sf, "TH2D")
    with uproot.open(tmp_path / "corrections.root") as f:
        assert f["sf_data_2024"].axis(0).member("fTitle") == "p_{T} [GeV]"
        assert f["sf_data_2024"].axis(1).member("fTitle") == "|#eta|"
        assert f["sf_data_2024"].member("fZaxis").member("fTitle") == "scale factor"
        assert f["eff_mc_sim"].member("fZaxis").member("fTitle") == "efficiency"
        assert len(f.keys(cycle=False)) == 3 * (3 + 4)  # 3 tables x (nominal, stat, syst, 2 sources x Up/Down)
    note = (tmp_path / ROOT_NOTE).read_text()
    assert "a product binning" in note and "sf_data_2024_massrangeDown  TH2D" in note
    assert "max(total_down, total_up)" in note


def test_product_markdown_grid_is_labelled_and_equals_rows(tmp_path: Path) -> None:
    _, eff, sf = _export(tmp_path, PRODUCT)
    md = (tmp_path / "tables.md").read_text()
    assert md.startswith("# calib_50%")
    assert r"$p_\mathrm{T}$ [GeV] (rows) and $|\eta|$ (columns)" in md
    assert "value +stat/-stat ± syst" in md and "sigmodel, massrange" in md
    grids = _markdown_grids(md)
    assert list(grids) == ["data_2024 efficiency", "mc_sim efficiency", "data_2024/mc_sim scale factor"]
    for (title, [grid]), (_, (value, rows)) in zip(grids.items(), _tables_by_name(eff, sf).items(), strict=True):
        assert grid[0] == [r"$p_\mathrm{T}$ [GeV] \ $\|\eta\|$", "[0, 0.8)", "[0.8, 1.5)", "[1.5, 2.4)"], title
        assert [g[0] for g in grid[1:]] == ["[10, 20)", "[20, 50)", "[50, 200)"]
        digits = decimals(rows)
        for r in rows:
            _check_cell(grid[1 + r["bin"] // 3][1 + r["bin"] % 3], r, value, digits)


def test_product_latex_escapes_and_compiles(tmp_path: Path) -> None:
    _, _, sf = _export(tmp_path, PRODUCT)
    tex = (tmp_path / "tables.tex").read_text()
    assert tex.count(r"\begin{tabular}") == 3 and tex.count(r"\begin{table}") == 3
    assert r"\caption{data\_2024/mc\_sim scale factor in bins of $p_\mathrm{T}$ [GeV] (rows) and $|\eta|$" in tex
    assert r"\multicolumn{3}{c}{$|\eta|$}" in tex and r"$\pm$ syst" in tex
    captions = [line for line in tex.splitlines() if line.startswith(r"\caption")]
    assert ["data and simulation combined" in c for c in captions] == [False, False, True]
    assert "calib_50%" in tex.splitlines()[0]  # only in the comment line
    body = _latex_rows(tex)
    assert len(body) == 9 and all(len(r) == 4 for r in body)
    r0 = next(r for r in sf if r["bin"] == 0)
    d = decimals(sf)
    v, up, down, s = (f"{r0[k]:.{d}f}" for k in ("scale_factor", "err_up", "err_down", "syst"))
    expected = f"${v} \\pm {up} \\pm {s}$" if up == down else f"${v}^{{+{up}}}_{{-{down}}} \\pm {s}$"
    assert body[6][1] == expected
    _compile(tmp_path)


def test_no_sources_no_syst_in_cells_and_no_variation_histograms(tmp_path: Path) -> None:
    _, _, sf = _export(tmp_path, PRODUCT, sources=[])
    md = (tmp_path / "tables.md").read_text()
    assert "no systematic sources" in md and "± syst" not in md
    grid = _markdown_grids(md)["data_2024/mc_sim scale factor"][0]
    for r in sf:
        _check_cell(grid[1 + r["bin"] // 3][1 + r["bin"] % 3], r, "scale_factor", decimals(sf), with_syst=False)
    with uproot.open(tmp_path / "corrections.root") as f:
        assert sorted(f.keys(cycle=False)) == sorted(f"{t}{s}" for t in ("eff_data_2024", "eff_mc_sim", "sf_data_2024")
                                                     for s in ("", "_stat", "_syst"))
        assert np.all(f["sf_data_2024_syst"].errors() == 0)


def test_outputs_switch_formats_off(tmp_path: Path) -> None:
    written, _, _ = _export(tmp_path, PRODUCT, outputs=OutputsConfig(plots=False, correctionlib=False, root=False,
                                                                      latex=False))
    assert [Path(p).name for p in written] == ["tables.md"]
    assert not (tmp_path / "corrections.root").exists() and not (tmp_path / ROOT_NOTE).exists()


# --- nested scheme (as binning.optimise makes) -------------------------------------------------------------

NESTED = BinningScheme(Node("pt", (10.0, 20.0, 50.0), (Node("abseta", (0.0, 0.8, 1.5, 2.4)),
                                                      Node("abseta", (0.0, 1.2, 2.4)))))


def test_nested_union_grid() -> None:
    edges = union_edges(NESTED)
    assert [e.tolist() for e in edges] == [[10, 20, 50], [0, 0.8, 1.2, 1.5, 2.4]]
    assert cell_bins(NESTED, edges).tolist() == [[0, 1, 1, 2], [3, 3, 4, 4]]


def test_nested_root_cells_hold_their_bin(tmp_path: Path) -> None:
    _, eff, sf = _export(tmp_path, NESTED)
    _check_root(tmp_path / "corrections.root", NESTED, eff, sf, "TH2D")
    with uproot.open(tmp_path / "corrections.root") as f:
        values = f["sf_data_2024"].values()
    by_bin = {r["bin"]: r["scale_factor"] for r in sf}
    expected = [[by_bin[b] for b in line] for line in cell_bins(NESTED, union_edges(NESTED)).tolist()]
    np.testing.assert_allclose(values, expected, rtol=1e-12)
    assert "a nested binning" in (tmp_path / ROOT_NOTE).read_text()


def test_nested_text_grids_mark_merged_cells(tmp_path: Path) -> None:
    _, eff, _ = _export(tmp_path, NESTED)
    md = (tmp_path / "tables.md").read_text()
    assert "Nested binning" in md and "—" not in md
    grid = _markdown_grids(md)["data_2024 efficiency"][0]
    assert grid[0][1:] == ["[0, 0.8)", "[0.8, 1.2)", "[1.2, 1.5)", "[1.5, 2.4)"]
    assert [row[1:].count("←") for row in grid[1:]] == [1, 2]
    assert grid[1][3] == "←" and grid[2][2] == "←" and grid[2][4] == "←"
    rows = [r for r in eff if r["sample"] == "data_2024"]
    _check_cell(grid[2][3], rows[4], "efficiency", decimals(rows))
    tex = (tmp_path / "tables.tex").read_text()
    assert [len(r) for r in _latex_rows(tex)] == [5, 5] * 3
    assert tex.count(r"\multicolumn{2}{c}{$") == 3 * 3  # bins 1, 3 and 4 of every table
    _compile(tmp_path)


def test_cell_outside_every_bin_is_empty(tmp_path: Path) -> None:
    scheme = BinningScheme(Node("pt", (10.0, 20.0, 50.0), (Node("abseta", (0.0, 1.2, 2.4)),
                                                          Node("abseta", (0.0, 1.2)))))
    _, _, sf = _export(tmp_path, scheme)
    grid = _markdown_grids((tmp_path / "tables.md").read_text())["data_2024/mc_sim scale factor"][0]
    assert grid[2][2] == "—" and "—: a cell without a bin or value" in (tmp_path / "tables.md").read_text()
    assert "--" in _latex_rows((tmp_path / "tables.tex").read_text())[-1]
    with uproot.open(tmp_path / "corrections.root") as f:
        h = f["sf_data_2024"]
        assert h.values()[1, 1] == 0 and h.errors()[1, 1] == 0
        assert h.values()[1, 0] == pytest.approx(sf[2]["scale_factor"], rel=1e-12)
    assert "cells outside every bin are 0" in (tmp_path / ROOT_NOTE).read_text()


# --- 1-D, 3-D and 4-D schemes ------------------------------------------------------------------------------


def test_one_dimensional_gives_th1d_and_a_column(tmp_path: Path) -> None:
    scheme = BinningScheme.product([("pt", [10, 20, 50, 200])])
    _, eff, sf = _export(tmp_path, scheme)
    _check_root(tmp_path / "corrections.root", scheme, eff, sf, "TH1D")
    with uproot.open(tmp_path / "corrections.root") as f:
        assert f["eff_mc_sim"].member("fYaxis").member("fTitle") == "efficiency"
    grid = _markdown_grids((tmp_path / "tables.md").read_text())["data_2024/mc_sim scale factor"][0]
    assert grid[0] == [r"$p_\mathrm{T}$ [GeV]", "scale factor"] and len(grid) == 4
    for r in sf:
        _check_cell(grid[1 + r["bin"]][1], r, "scale_factor", decimals(sf))
    _compile(tmp_path)


THREE_D = BinningScheme.product([("pt", [10, 20, 50]), ("abseta", [0.0, 1.2, 2.4]), ("phi", [-3.2, 0.0, 3.2])])


def test_three_dimensional_gives_th3d(tmp_path: Path) -> None:
    _, eff, sf = _export(tmp_path, THREE_D)
    _check_root(tmp_path / "corrections.root", THREE_D, eff, sf, "TH3D")
    with uproot.open(tmp_path / "corrections.root") as f:
        assert f["sf_data_2024"].axis(2).member("fTitle") == "#phi [rad]"


def test_three_dimensional_text_has_a_grid_per_slice(tmp_path: Path) -> None:
    _, _, sf = _export(tmp_path, THREE_D)
    md = (tmp_path / "tables.md").read_text()
    assert "one grid per interval of $\\phi$ [rad]" in md
    assert md.count("### $\\phi$ [rad] ∈ [-3.2, 0)") == 3 and md.count("### $\\phi$ [rad] ∈ [0, 3.2)") == 3
    grids = _markdown_grids(md)["data_2024/mc_sim scale factor"]
    assert len(grids) == 2
    for r in sf:
        i, j, k = r["bin"] // 4, (r["bin"] // 2) % 2, r["bin"] % 2
        _check_cell(grids[k][1 + i][1 + j], r, "scale_factor", decimals(sf))
    tex = (tmp_path / "tables.tex").read_text()
    assert tex.count(r"\begin{table}") == 6 and r", $\phi$ [rad] $\in [0, 3.2)$" in tex
    _compile(tmp_path)


def test_four_dimensional_root_not_written_and_says_why(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    scheme = BinningScheme.product([("pt", [10, 50]), ("abseta", [0.0, 2.4]), ("phi", [-3.2, 3.2]),
                                    ("ntracks", [0, 10, 100])])
    with caplog.at_level(logging.WARNING):
        written, _, _ = _export(tmp_path, scheme)
    assert not (tmp_path / "corrections.root").exists()
    assert str(tmp_path / ROOT_NOTE) in written
    note = (tmp_path / ROOT_NOTE).read_text()
    assert "corrections.root not written" in note and "4 variables" in note and "at most 3 axes" in note
    assert any("corrections.root not written" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "tables.md").read_text().count("### ") == 3 * 2


# --- helpers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("latex", "root"), [
    (r"$p_\mathrm{T}$ [GeV]", "p_{T} [GeV]"), (r"$\eta$", "#eta"), (r"$|\eta|$", "|#eta|"),
    (r"$\cos\theta$", "cos#theta"), (r"$N_\mathrm{tracks}$", "N_{tracks}"),
    (r"$m(\mu^+\mu^-)$ [MeV]", "m(#mu^{+}#mu^{-}) [MeV]"), (r"GeV/$c^2$", "GeV/c^{2}"),
    (r"$\mathbf{x}_\mu$", "#bf{x}_{#mu}"), ("probe_P", "probe_P"),
])
def test_root_latex(latex: str, root: str) -> None:
    assert root_latex(latex) == root
    assert "\\" not in root_latex(latex) and "$" not in root_latex(latex)


def test_latex_text_escapes_outside_math_only() -> None:
    assert latex_text(r"kaon_data & 5% $p_\mathrm{T}$ #1") == r"kaon\_data \& 5\% $p_\mathrm{T}$ \#1"
    assert latex_text("cost $5") == r"cost \$5"


def test_cell_formats() -> None:
    assert cell(0.95, 0.02, 0.01, 0.004, 3, latex=True) == r"$0.950^{+0.010}_{-0.020} \pm 0.004$"
    assert cell(0.95, 0.02, 0.01, 0.004, 3, latex=False) == "0.950 +0.010/-0.020 ± 0.004"
    assert cell(0.95, 0.0101, 0.0099, None, 3, latex=False) == "0.950 ± 0.010"
    assert cell(float("nan"), 0.01, 0.01, 0.0, 3, latex=False) == "n/a"


def test_decimals_follow_median_errors() -> None:
    rows = [{"err_down": e, "err_up": e, "syst": 0.0} for e in (0.0213, 0.011, 0.015, 1e-7)]
    assert decimals(rows) == 3  # median stat 0.013, one tiny error does not matter
    assert decimals([{**r, "syst": 0.0008} for r in rows]) == 4  # the systematic needs a fourth
    assert decimals([{"err_down": 0.0, "err_up": 0.0}]) == 4


def test_bin_without_a_row_is_empty(tmp_path: Path) -> None:
    eff, sf = _tables(PRODUCT, SOURCES)
    write_csv(tmp_path / "efficiencies.csv", eff)
    write_csv(tmp_path / "scale_factors.csv", [r for r in sf if r["bin"] != 4])
    export_tables(str(tmp_path), PRODUCT, "c", NO_PLOTS, SOURCES, LABELS)
    md = (tmp_path / "tables.md").read_text()
    grids = _markdown_grids(md)
    assert grids["data_2024/mc_sim scale factor"][0][2][2] == "—" and "—: a cell without a bin or value" in md
    assert "—" not in str(grids["data_2024 efficiency"])
    with uproot.open(tmp_path / "corrections.root") as f:
        assert f["sf_data_2024"].values()[1, 1] == 0 and f["sf_data_2024"].values()[1, 2] == pytest.approx(
            sf[5]["scale_factor"], rel=1e-12)


# --- per-bin statistical nuisances in corrections.json (issue 20) ---------------------------------------------

PER_BIN = {"stat_data_bin{k}_up": ("stat_data_up", 1), "stat_data_bin{k}_down": ("stat_data_down", -1),
           "stat_mc_bin{k}_up": ("stat_mc_up", 1), "stat_mc_bin{k}_down": ("stat_mc_down", -1)}
ONLY_CORRECTIONS = {"plots": False, "root": False, "markdown": False, "latex": False}


def _evaluator(tmp_path: Path, name: str = "calib_50%") -> object:
    import correctionlib

    return correctionlib.CorrectionSet.from_file(str(tmp_path / "corrections.json"))[name]


def _centres(rows: Sequence[Row], variables: Sequence[str]) -> np.ndarray:
    return np.array([[0.5 * (r[f"{v}_lo"] + r[f"{v}_hi"]) for v in variables] for r in rows])


@pytest.mark.parametrize("scheme", [PRODUCT, NESTED], ids=["product", "nested"])
@pytest.mark.parametrize("stat", ["per_bin", "both"])
def test_per_bin_stat_moves_only_its_bin(tmp_path: Path, scheme: BinningScheme, stat: str) -> None:
    """correctionlib's evaluator: every stat_<data|mc>_bin<k>_<up|down> is nominal ± that error in bin k and
    nominal in every other bin; the merged categories stay (statUp/Down with ``both`` only); a misspelt name is
    an error, not a silent nominal."""
    _, _, sf = _export(tmp_path, scheme, outputs=OutputsConfig(**ONLY_CORRECTIONS, correctionlib={"stat": stat}))
    ev = _evaluator(tmp_path)
    x = _centres(sf, scheme.variables)
    nominal = np.array([r["scale_factor"] for r in sf])
    assert np.allclose(ev.evaluate(*x.T, "nominal"), nominal)
    assert np.allclose(ev.evaluate(*x.T, "up"), nominal + np.array([r["total_up"] for r in sf]))
    assert np.allclose(ev.evaluate(*x.T, "sigmodelDown"), [r["sigmodelDown"] for r in sf])
    for r in sf:
        for template, (col, sign) in PER_BIN.items():
            expected = nominal.copy()
            expected[[s["bin"] == r["bin"] for s in sf]] += sign * r[col]
            assert np.allclose(ev.evaluate(*x.T, template.format(k=r["bin"])), expected), (template, r["bin"])
    if stat == "both":
        assert np.allclose(ev.evaluate(*x.T, "statUp"), nominal + np.array([r["err_up"] for r in sf]))
    with pytest.raises(Exception, match="Index not available"):
        ev.evaluate(*x[0], "statUp" if stat == "per_bin" else "stat_data_bin_up")
    with pytest.raises(Exception, match="Index not available"):
        ev.evaluate(*x[0], f"stat_data_bin{len(sf)}_up")


def test_merged_stat_has_no_per_bin_categories(tmp_path: Path) -> None:
    _export(tmp_path, PRODUCT, outputs=OutputsConfig(**ONLY_CORRECTIONS))
    ev = _evaluator(tmp_path)
    assert "stat_data_bin" not in ev.inputs[-1].description
    with pytest.raises(Exception, match="Index not available"):
        ev.evaluate(15.0, 0.5, "stat_data_bin0_up")


def test_per_bin_json_stays_compact_for_a_thousand_bins(tmp_path: Path) -> None:
    """1000 bins: the per-bin form grows linearly with the bins (a full binning per category would be ~4000 times
    the merged content, ~0.2 GB); sizes as written are in docs/tables.md."""
    sizes = {}
    for n_pt in (40, 80):
        scheme = BinningScheme.product([("pt", list(np.linspace(10, 200, n_pt + 1))), ("abseta", list(np.linspace(0, 2.5, 26)))])
        for stat in ("merged", "per_bin") if n_pt == 40 else ("per_bin",):
            folder = tmp_path / f"{n_pt}_{stat}"
            folder.mkdir()
            _export(folder, scheme, outputs=OutputsConfig(**ONLY_CORRECTIONS, correctionlib={"stat": stat}))
            sizes[len(scheme), stat] = (folder / "corrections.json").stat().st_size
    assert sizes[1000, "per_bin"] < 2.5e6 and sizes[1000, "per_bin"] < 3.5 * sizes[1000, "merged"]
    assert sizes[2000, "per_bin"] < 2.1 * sizes[1000, "per_bin"]
    ev = _evaluator(tmp_path / "40_per_bin")
    assert ev.evaluate(15.0, 1.0, "stat_mc_bin999_up") == ev.evaluate(15.0, 1.0, "nominal")


def test_per_bin_with_missing_unity_and_products(tmp_path: Path) -> None:
    """A bin without a scale factor (outputs.missing: unity) holds 1, its own per-bin ups 2 and downs 0; a table
    without the data and simulation parts of the error (a product of methods) keeps the merged form and says so."""
    from calibflow.export.correctionlib import build_correction, write_correction_set

    scheme = BinningScheme.product([("pt", [10, 20, 50])])
    per_bin = {t: {0: 1.0 + sign * 0.1, 1: math.nan} for t, (_, sign) in PER_BIN.items()}
    corr = build_correction("c", scheme, {"nominal": {0: 1.0, 1: math.nan}}, missing="unity", per_bin=per_bin)
    write_correction_set(tmp_path / "corrections.json", [corr])
    ev = _evaluator(tmp_path, "c")
    assert [ev.evaluate(x, "stat_mc_bin1_up") for x in (15.0, 30.0)] == [1.0, 2.0]
    assert [ev.evaluate(x, "stat_data_bin1_down") for x in (15.0, 30.0)] == [1.0, 0.0]
    assert [ev.evaluate(x, "stat_data_bin0_up") for x in (15.0, 30.0)] == [1.1, 1.0]
    eff, sf = _tables(PRODUCT, SOURCES)
    write_csv(tmp_path / "efficiencies.csv", eff)
    write_csv(tmp_path / "scale_factors.csv", [{k: v for k, v in r.items() if not k.startswith("stat_")} for r in sf])
    export_tables(str(tmp_path), PRODUCT, "prod", OutputsConfig(**ONLY_CORRECTIONS, correctionlib={"stat": "per_bin"}),
                  SOURCES)
    ev = _evaluator(tmp_path, "prod")
    assert "no per-bin parts" in ev.description
    assert ev.evaluate(15.0, 0.5, "statUp") == pytest.approx(sf[0]["scale_factor"] + sf[0]["err_up"])
