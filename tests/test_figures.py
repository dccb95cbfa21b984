"""Figures of the combined tables, checked through the matplotlib objects: panels per slice, series per
panel, markers and colours, ratio values, labels and units, legend placement, map colours and cell text."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from calibflow.config import OutputsConfig, PlotStyle
from calibflow.export import figures as F
from calibflow.export.labels import VariableLabel
from calibflow.export.publish import _plots
from calibflow.tables.rows import Row

LABELS = {"p": VariableLabel("$p$", "GeV"), "eta": VariableLabel("$\\eta$", ""), "phi": VariableLabel("$\\phi$", "rad")}
P_EDGES = [2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 30, 50, 200]
ETA_EDGES = [2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]

Bin = dict[str, tuple[float, float]]


def product(**edges: Sequence[float]) -> list[Bin]:
    """The bins of a product grid of ``edges`` per variable."""
    pairs = [[(v, (a, b)) for a, b in itertools.pairwise(e)] for v, e in edges.items()]
    return [dict(combo) for combo in itertools.product(*pairs)]


def tables(
    bins: Sequence[Bin], pairs: Sequence[tuple[str, str]] = (("data", "mc"),),
    eff: Callable[[str, Bin], float] | None = None, err: float = 0.02,
) -> tuple[list[Row], list[Row]]:
    """Efficiency and scale-factor rows (columns as in efficiencies.csv / scale_factors.csv)."""
    def default(sample: str, b: Bin) -> float:
        return 0.9 - 0.1 * (sample.startswith("data")) - 0.01 * sum(lo for lo, _ in b.values()) / 10

    eff = eff or default
    samples = sorted({s for pair in pairs for s in pair})
    bounds = [{f"{v}_{end}": x for v, (lo, hi) in b.items() for end, x in (("lo", lo), ("hi", hi))} for b in bins]
    rows = [{"sample": s, "bin": i, **bd, "efficiency": eff(s, b), "err_down": err, "err_up": err, "syst": 0.0,
             "total_down": err, "total_up": err, "fit_status": "ok"}
            for s in samples for i, (b, bd) in enumerate(zip(bins, bounds, strict=True))]
    by = {(r["sample"], r["bin"]): r for r in rows}
    sf = []
    for data, mc in pairs:
        for i, bd in enumerate(bounds):
            ratio = by[data, i]["efficiency"] / by[mc, i]["efficiency"]
            sf.append({"data": data, "mc": mc, "bin": i, **bd, "scale_factor": ratio, "err_down": 0.03, "err_up": 0.03,
                       "syst": 0.0, "total_down": 0.03, "total_up": 0.03})
    return rows, sf


def page(eff: list[Row], sf: list[Row], variable: str, others: Sequence[str], **kw) -> Figure:
    with F.figure_style(kw.get("style")):
        return F.efficiency_page(eff, sf, variable, others, F.slices(eff, others), LABELS, **kw)


def panels(fig: Figure) -> list[tuple[Axes, Axes]]:
    """(main, ratio) axes pairs of an efficiency page, in order (the header axes left out)."""
    axes = [a for a in fig.axes if a.axison]
    return list(zip(axes[::2], axes[1::2], strict=True))


def series(ax: Axes) -> list[ErrorbarContainer]:
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")) if t.get_text()]


# --- efficiency grids ---------------------------------------------------------------------------------------


def test_one_panel_per_slice_with_data_and_simulation_distinct() -> None:
    eff, sf = tables(product(p=P_EDGES, eta=ETA_EDGES))
    fig = page(eff, sf, "p", ["eta"])
    pairs = panels(fig)
    assert len(pairs) == len(ETA_EDGES) - 1
    for (ax, rax), (lo, hi) in zip(pairs, itertools.pairwise(ETA_EDGES), strict=True):
        data, sim = series(ax)
        assert data.get_label() == "data" and sim.get_label() == "mc (simulation)"
        d_line, s_line = data.lines[0], sim.lines[0]
        assert d_line.get_marker() != s_line.get_marker() and d_line.get_color() != s_line.get_color()
        assert s_line.get_markerfacecolor() == "white" and d_line.get_markerfacecolor() != "white"
        assert len(d_line.get_xdata()) == len(P_EDGES) - 1
        assert ax.get_title() == f"{lo:g} ≤ $\\eta$ < {hi:g}"
        assert ax.get_xscale() == "log" and rax.get_xscale() == "log"  # p edges are log-spaced
        assert ax.get_xlim() == pytest.approx((2, 200))
        top = max(r["efficiency"] + r["total_up"] for r in eff)
        assert 0 <= ax.get_ylim()[0] < min(r["efficiency"] for r in eff) and top < ax.get_ylim()[1] <= 1.05
        assert ax.get_legend() is None
        assert rax.get_xlabel() == "$p$ [GeV]"
    assert pairs[0][0].get_ylabel() == "efficiency" and pairs[0][1].get_ylabel() == "data/sim."
    assert pairs[1][0].get_ylabel() == ""  # only the first column carries y labels
    plt.close(fig)


def test_without_scale_factors_no_ratio_panel_and_efficiency_axis() -> None:
    """A data-only calibration: one axes per panel, labelled efficiency (not data/sim.)."""
    eff, _ = tables(product(p=P_EDGES, eta=ETA_EDGES))
    eff = [r for r in eff if r["sample"] == "data"]
    fig = page(eff, [], "p", ["eta"])
    axes = [a for a in fig.axes if a.axison]
    assert len(axes) == len(ETA_EDGES) - 1
    assert axes[0].get_ylabel() == "efficiency" and axes[0].get_xlabel() == "$p$ [GeV]"
    assert "data/sim." not in texts(fig)
    assert [c.get_label() for c in series(axes[0])] == ["data"]
    plt.close(fig)


def test_ratio_panel_shows_the_scale_factors_with_errors() -> None:
    eff, sf = tables(product(p=P_EDGES, eta=ETA_EDGES))
    sf[0]["scale_factor"] = 0.2  # far below the others: drawn at the lower edge
    fig = page(eff, sf, "p", ["eta"])
    ax, rax = panels(fig)[0]
    (ratio,) = series(rax)
    rows = sorted((r for r in sf if r["eta_lo"] == 2.0), key=lambda r: r["p_lo"])
    assert np.allclose(ratio.lines[0].get_ydata(), [r["scale_factor"] for r in rows])
    assert ratio.has_yerr and ratio.lines[0].get_color() == series(ax)[0].lines[0].get_color()
    lo, hi = rax.get_ylim()
    assert lo < 1 < hi and 1 - lo == pytest.approx(hi - 1)
    assert any(line.get_ydata()[0] == 1.0 for line in rax.get_lines())  # the line at 1
    beyond = [line for line in rax.get_lines() if line.get_gid() == "out-of-range"]
    assert len(beyond) == 1 and beyond[0].get_marker() == "v"
    assert not [line for line in panels(fig)[1][1].get_lines() if line.get_gid() == "out-of-range"]
    plt.close(fig)


def test_legend_above_the_panels_and_experiment_label() -> None:
    eff, sf = tables(product(p=P_EDGES, eta=ETA_EDGES))
    style = PlotStyle(experiment="LHCb", label="Preliminary", lumi=5.4, energy="13.6 TeV")
    fig = page(eff, sf, "p", ["eta"], style=style, title="calib")
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["data", "mc (simulation)"]
    renderer = fig.canvas.get_renderer()
    box = legend.get_window_extent(renderer)
    for ax, rax in panels(fig):
        assert not box.overlaps(ax.get_window_extent(renderer)) and not box.overlaps(rax.get_window_extent(renderer))
        assert box.y0 > ax.get_window_extent(renderer).y1
    shown = " ".join(texts(fig))
    assert "LHCb" in shown and "Preliminary" in shown and "5.4" in shown and "13.6 TeV" in shown
    assert "calib" not in shown  # the experiment label replaces the calibration name
    plt.close(fig)
    plain = page(eff, sf, "p", ["eta"], title="calib")
    assert "calib" in texts(plain) and "LHCb" not in " ".join(texts(plain))
    plt.close(plain)


def test_nested_scheme_slices_come_from_the_rows() -> None:
    """eta outer, p merged differently in each eta slice: each panel has its own p bins."""
    bins = [{"eta": (2.0, 3.5), "p": (lo, hi)} for lo, hi in itertools.pairwise([2, 6, 15, 200])]
    bins += [{"eta": (3.5, 5.0), "p": (lo, hi)} for lo, hi in itertools.pairwise([2, 4, 8, 20, 50, 200])]
    eff, sf = tables(bins)
    fig = page(eff, sf, "p", ["eta"])
    (a1, _), (a2, _) = panels(fig)
    assert [len(c.lines[0].get_xdata()) for c in series(a1)] == [3, 3]
    assert [len(c.lines[0].get_xdata()) for c in series(a2)] == [5, 5]
    x = series(a2)[0].lines[0].get_xdata()
    assert all(lo < xi < hi for xi, (lo, hi) in zip(x, itertools.pairwise([2, 4, 8, 20, 50, 200]), strict=True))
    plt.close(fig)
    by_eta = page(eff, sf, "eta", ["p"])  # the other way round: one panel per distinct p range
    assert len(panels(by_eta)) == len({(b["p"]) for b in bins})
    assert all(len(c.lines[0].get_xdata()) == 1 for a, _ in panels(by_eta) for c in series(a))
    plt.close(by_eta)


def test_one_dimensional_scheme_is_one_panel_with_linear_axis() -> None:
    eff, sf = tables(product(eta=ETA_EDGES))
    fig = page(eff, sf, "eta", [])
    ((ax, rax),) = panels(fig)
    assert ax.get_title() == "" and ax.get_xscale() == "linear" and rax.get_xlabel() == "$\\eta$"
    assert len(series(ax)) == 2
    plt.close(fig)


def test_three_dimensional_scheme_pages_and_files(tmp_path: Path) -> None:
    bins = product(p=[2, 5, 20, 200], eta=[2, 3, 4, 5], phi=[0, 1, 2, 3, 4, 5, 6])  # 3 x 6 = 18 slices of p
    eff, sf = tables(bins)
    written = F.plot_efficiency_grid(eff, sf, "p", ["eta", "phi"], str(tmp_path / "efficiency_vs_p"), LABELS,
                                     formats=("png", "pdf"))
    assert [Path(w).name for w in written] == ["efficiency_vs_p.png", "efficiency_vs_p.pdf",
                                               "efficiency_vs_p_2.png", "efficiency_vs_p_2.pdf"]
    assert all(Path(w).stat().st_size > 0 for w in written)
    key = F.slices(eff, ["eta", "phi"])[0]
    assert F.slice_text(key, LABELS) == "2 ≤ $\\eta$ < 3, 0 ≤ $\\phi$ < 1 rad"
    fig = page(eff, sf, "p", ["eta", "phi"])
    assert len(panels(fig)) == 18 and all(len(series(a)) == 2 for a, _ in panels(fig))
    plt.close(fig)


def test_at_most_four_series_per_panel(tmp_path: Path) -> None:
    pairs = [(f"data{y}", f"mc{y}") for y in (2016, 2017, 2018)]
    eff, sf = tables(product(p=[2, 5, 20, 200], eta=[2, 3.5, 5]), pairs=pairs)
    assert F.sample_groups(sorted({r["sample"] for r in eff}), pairs) == [list(p) for p in pairs]
    assert F.sample_groups(["a", "b", "c", "d"], []) == [["a", "b", "c", "d"]]
    written = _plots(str(tmp_path), ["p", "eta"], eff, sf, "calib", LABELS, OutputsConfig(plot_formats=["png"]))
    names = sorted(Path(w).name for w in written)
    assert names == sorted([f"efficiency_vs_{v}_data{y}_mc{y}.png" for v in ("p", "eta") for y in (2016, 2017, 2018)]
                           + [f"efficiency_map_{s}.png" for p in pairs for s in p]
                           + [f"scale_factor_map_data{y}.png" for y in (2016, 2017, 2018)])
    two = [r for r in eff if r["sample"] in ("data2016", "mc2016", "data2017", "mc2017")]
    fig = page(two, [r for r in sf if r["data"] in ("data2016", "data2017")], "p", ["eta"])
    ax, rax = panels(fig)[0]
    lines = [c.lines[0] for c in series(ax)]
    assert len(lines) == 4 and len({(ln.get_marker(), ln.get_color()) for ln in lines}) == 4
    assert len(series(rax)) == 2  # one ratio per data sample
    plt.close(fig)


def test_open_ended_bins_are_drawn_and_named() -> None:
    bins = [{"p": (lo, hi)} for lo, hi in itertools.pairwise([-math.inf, 2, 5, 20, 200, math.inf])]
    eff, sf = tables(bins)
    fig = page(eff, sf, "p", [])
    ((ax, _),) = panels(fig)
    lo, hi = ax.get_xlim()
    assert 0 < lo < 2 and hi > 200 and ax.get_xscale() == "log"
    x = series(ax)[0].lines[0].get_xdata()
    assert np.all(np.isfinite(x)) and len(x) == 5
    plt.close(fig)
    assert F.slice_text([("p", 50.0, math.inf), ("eta", -math.inf, 2.5)], LABELS) == "$p$ ≥ 50 GeV, $\\eta$ < 2.5"


def test_style_does_not_leak() -> None:
    before = dict(plt.rcParams)
    eff, sf = tables(product(p=P_EDGES, eta=ETA_EDGES))
    plt.close(page(eff, sf, "p", ["eta"], style=PlotStyle(experiment="CMS")))
    assert dict(plt.rcParams) == before


@pytest.mark.parametrize(("edges", "log"), [
    (P_EDGES, True), (ETA_EDGES, False), (np.geomspace(1, 1000, 7).tolist(), True), (np.linspace(0, 100, 11).tolist(), False),
    ([1, 2, 3], False), ([-1, 1, 10, 100], False), ([2, 4, 8, 16, 32, math.inf], True),
])
def test_log_spaced(edges: list[float], log: bool) -> None:
    assert F.log_spaced(edges) is log


# --- maps ---------------------------------------------------------------------------------------------------


def map_of(rows: list[Row], value: str, **kw) -> Figure:
    with F.figure_style(kw.get("style")):
        return F.map_figure(rows, "p", "eta", value, LABELS, **kw)


def cell_texts(fig: Figure) -> list:
    return [t for t in fig.axes[0].texts if t.get_text()]


def test_scale_factor_map_diverging_and_centred_on_one() -> None:
    _, sf = tables(product(p=P_EDGES, eta=ETA_EDGES))
    fig = map_of(sf, "scale_factor", colorbar_label=F.SF_LABEL)
    ax, cax = fig.axes
    (coll,) = ax.collections
    assert coll.get_cmap().name.startswith("RdBu_r")
    assert coll.norm(1.0) == pytest.approx(0.5)
    assert coll.norm.vmin < min(r["scale_factor"] for r in sf) and coll.norm.vmax > 1
    assert cax.get_ylabel() == "data/simulation scale factor"
    assert ax.get_xlabel() == "$p$ [GeV]" and ax.get_ylabel() == "$\\eta$"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "linear"
    assert len(coll.get_paths()) == len(sf)
    plt.close(fig)


def test_map_text_printed_where_it_fits_and_inside_its_cell() -> None:
    """Wide cells get ``value ± total``, the narrow low-p cells none, and no text leaves its cell."""
    bins = product(p=[2, 2.1, 2.2, 2.3, 50, 200], eta=[2, 3.5, 5])
    _, sf = tables(bins)
    fig = map_of(sf, "scale_factor")
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    shown = {(round(t.get_position()[0], 6), round(t.get_position()[1], 6)): t for t in cell_texts(fig)}
    for r in sf:
        centre = (round(math.sqrt(r["p_lo"] * r["p_hi"]), 6), round(0.5 * (r["eta_lo"] + r["eta_hi"]), 6))
        text = shown.get(centre)
        if r["p_lo"] >= 50 or r["p_lo"] == 2.3:
            assert text is not None, r
            assert text.get_text().replace("\n", " ") == f"{r['scale_factor']:.3f} ± 0.030"
            (x0, y0), (x1, y1) = ax.transData.transform([(r["p_lo"], r["eta_lo"]), (r["p_hi"], r["eta_hi"])])
            box = text.get_window_extent(renderer)
            assert x0 <= box.x0 and box.x1 <= x1 and y0 <= box.y0 and box.y1 <= y1
        else:
            assert text is None, r  # 2.0-2.3: a few points wide on a log axis up to 200
    plt.close(fig)


def test_efficiency_maps_share_a_sequential_range(tmp_path: Path) -> None:
    eff, _ = tables(product(p=P_EDGES, eta=ETA_EDGES), eff=lambda s, b: 0.5 + 0.3 * (s == "mc") + b["eta"][0] / 50)
    lo, hi = F.efficiency_range(eff)
    assert lo == pytest.approx(0.5) and hi == pytest.approx(0.9)
    fig = map_of([r for r in eff if r["sample"] == "data"], "efficiency", vrange=(lo, hi),
                 colorbar_label="efficiency, data")
    (coll,) = fig.axes[0].collections
    assert coll.get_cmap().name.startswith("viridis") and (coll.norm.vmin, coll.norm.vmax) == (lo, hi)
    assert fig.axes[1].get_ylabel() == "efficiency, data"
    plt.close(fig)


def test_missing_values_are_grey_without_text() -> None:
    _, sf = tables(product(p=[2, 50, 200], eta=[2, 3.5, 5]))
    sf[0]["scale_factor"] = float("nan")
    fig = map_of(sf, "scale_factor")
    (coll,) = fig.axes[0].collections
    assert np.ma.is_masked(coll.get_array()[0]) and len(cell_texts(fig)) == len(sf) - 1
    plt.close(fig)


@pytest.mark.parametrize(("value", "down", "up", "text"), [
    (0.95234, 0.0234, 0.0234, ("0.952", "± 0.023")),
    (0.95234, 0.021, 0.025, ("0.952", "+0.025 −0.021")),
    (0.87, 0.12, 0.12, ("0.87", "± 0.12")),
    (1.0, 0.0, 0.058, ("1.000", "+0.058 −0.000")),
    (0.9, 0.0, 0.0, ("0.900", "± 0.000")),
    (0.6596, 0.0098, 0.0098, ("0.660", "± 0.010")),  # at most three decimals
])
def test_value_text(value: float, down: float, up: float, text: tuple[str, str]) -> None:
    assert F.value_text(value, down, up) == text


# --- files --------------------------------------------------------------------------------------------------


def test_plots_write_every_format_and_return_the_files(tmp_path: Path) -> None:
    eff, sf = tables(product(p=P_EDGES, eta=ETA_EDGES))
    written = _plots(str(tmp_path), ["p", "eta"], eff, sf, "calib", LABELS, OutputsConfig())
    names = sorted(Path(w).relative_to(tmp_path).as_posix() for w in written)
    stems = ["efficiency_vs_p", "efficiency_vs_eta", "efficiency_map_data", "efficiency_map_mc", "scale_factor_map_data"]
    assert names == sorted(f"plots/{s}.{ext}" for s in stems for ext in ("png", "pdf"))
    assert all(Path(w).stat().st_size > 1000 for w in written)
    assert Path(written[0]).read_bytes()[:4] == b"\x89PNG" and Path(written[1]).read_bytes()[:4] == b"%PDF"


def test_map_labels_name_the_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, str] = {}

    def record(fig: Figure, path: str, formats: Sequence[str] = ("png",)) -> list[str]:
        if "map" in Path(path).name:
            seen[Path(path).name] = fig.axes[1].get_ylabel()  # the colour bar
        plt.close(fig)
        return []

    monkeypatch.setattr(F, "save_figure", record)
    pairs = [("data2017", "mc2017"), ("data2018", "mc2018")]
    eff, sf = tables(product(p=[2, 5, 20, 200], eta=[2, 3.5, 5]), pairs=pairs)
    _plots(str(tmp_path), ["p", "eta"], eff, sf, "calib", LABELS, OutputsConfig())
    assert seen == {
        "efficiency_map_data2017": "efficiency: data2017", "efficiency_map_data2018": "efficiency: data2018",
        "efficiency_map_mc2017": "efficiency: mc2017 (simulation)",
        "efficiency_map_mc2018": "efficiency: mc2018 (simulation)",
        "scale_factor_map_data2017": "data/simulation scale factor (data2017/mc2017)",
        "scale_factor_map_data2018": "data/simulation scale factor (data2018/mc2018)",
    }


def test_roc_in_every_format(tmp_path: Path) -> None:
    points = [{"bin": "inclusive", "working_point": wp, "eff_signal": s, "eff_background": b, "err_signal_down": 0.01,
               "err_signal_up": 0.01, "err_background_down": 0.01, "err_background_up": 0.01}
              for wp, s, b in (("loose", 0.95, 0.3), ("tight", 0.8, 0.1))]
    written = F.plot_roc(points, str(tmp_path / "roc"), "cut scan", PlotStyle(experiment="CMS"), ("png", "pdf"))
    assert [Path(w).name for w in written] == ["roc.png", "roc.pdf"]
