"""The report page: its content on a small real run (read back against the tables it summarises), its
building blocks, and the demo's page in a real headless browser (Debian's chromium through selenium)."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import shutil
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from calibflow import __version__
from calibflow.export.report import (
    PULLS_PNG,
    SECTIONS,
    Section,
    Table,
    Variable,
    count_text,
    decimals_for,
    plain_label,
    pull_stats,
    render_markdown,
    source_sizes,
    status_kind,
    value_table,
)
from calibflow.plan import Plan
from calibflow.tables.assemble import cutflow_rows
from calibflow.tables.fitstatus import fit_status_counts
from calibflow.tables.rows import read_csv
from tasks.cli import main

from .conftest import DEMO, small_demo_dict

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TAG_VARIATION = "tag_PT > 1.5 and tag_isMuon == 1"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Plan, Path]:
    """A small calibration with a fit-model source (refits data) and a tag-selection source (new cut flow)."""
    d = small_demo_dict()
    d["name"] = "report_demo"
    d["systematics"] = {"sources": [
        {"name": "sigmodel", "vary": {"fit": {"signal": "gauss", "parameters": {"n": None}}}},
        {"name": "tagsel", "vary": {"selection": {"tag": TAG_VARIATION}}},
    ]}
    tmp = tmp_path_factory.mktemp("report")
    (tmp / "c.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    assert main(["run", str(tmp / "c.yaml"), "--workers", "2", "--result-dir", str(tmp / "res")]) == 0
    return Plan.create(tmp / "c.yaml", tmp / "res"), tmp / "res" / "report_demo"


def _section(page: str, sid: str) -> str:
    """The HTML of section ``sid``."""
    start = page.index(f'<section id="{sid}">')
    return page[start : page.index("</section>", start)]


def _text(fragment: str) -> str:
    """Visible text of an HTML fragment (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", " ", fragment))


def test_every_section_in_order_in_html_and_markdown(run: tuple[Plan, Path]) -> None:
    _, work = run
    page, md = (work / "report.html").read_text(), (work / "report.md").read_text()
    positions = [page.index(f'<section id="{sid}">') for sid in SECTIONS]
    assert positions == sorted(positions)
    md_positions = [md.index(f'<a id="{sid}"></a>\n\n## {title}\n') for sid, title in SECTIONS.items()]
    assert md_positions == sorted(md_positions)
    assert "<script" not in page and "http://" not in page and "https://" not in page  # self-contained
    for sid in SECTIONS:
        assert 'class="verdict' in _section(page, sid)


def test_summary_names_version_config_hash_and_flagged_fits(run: tuple[Plan, Path]) -> None:
    plan, work = run
    summary = _text(_section((work / "report.html").read_text(), "summary"))
    assert __version__ in summary
    assert hashlib.sha256(Path(plan.config_path).read_bytes()).hexdigest() in summary
    counts = fit_status_counts(plan)
    flagged = sum(c.flagged + c.low_statistics for c in counts)
    assert f"{flagged} flagged or low statistics, 0 failed of {sum(c.bins for c in counts)}" in summary
    assert "sigmodel, tagsel" in summary and "6 bins in" in summary
    for sid in SECTIONS.keys() - {"summary", "outputs"}:  # the verdict of every section, linked
        assert f'href="#{sid}"' in _section((work / "report.html").read_text(), "summary")


def test_config_is_the_exact_file(run: tuple[Plan, Path]) -> None:
    plan, work = run
    config = _section((work / "report.html").read_text(), "config")
    assert html.escape(Path(plan.config_path).read_text()) in config
    assert Path(plan.config_path).read_text().rstrip("\n") in (work / "report.md").read_text()


def test_cutflow_per_sample_and_per_selection_variant(run: tuple[Plan, Path]) -> None:
    plan, work = run
    cutflow = _text(_section((work / "report.html").read_text(), "cutflow"))
    for sample in ("data", "mc"):
        nominal = cutflow_rows(plan, sample)
        varied = cutflow_rows(plan.with_variant("tagsel"), sample)
        assert nominal[0]["entries"] == varied[0]["entries"] and nominal[1]["entries"] > varied[1]["entries"]
        for rows in (nominal, varied):
            for r in rows:
                assert count_text(r["entries"]) in cutflow, (sample, r)
    assert "entries (nominal)" in cutflow and "entries (tagsel)" in cutflow
    assert "share a column (nominal: nominal, sigmodel)" in cutflow
    csv = read_csv(work / "cutflow_data.csv")
    verdict = _text(re.search(r'<p class="verdict[^"]*">(.*?)</p>', _section((work / "report.html").read_text(),
                                                                              "cutflow")).group(1))
    assert (f"data: {count_text(csv[0]['entries'])} candidates read → {count_text(csv[1]['entries'])} after "
            f"{csv[1]['stage']} ({100 * csv[1]['efficiency']:.1f} %)") in verdict
    tagsel = cutflow_rows(plan.with_variant("tagsel"), "data")[-1]["entries"]
    assert f"data, tagsel selection: {count_text(tagsel)} candidates left" in verdict


def test_fits_counted_per_sample_and_variant(run: tuple[Plan, Path]) -> None:
    plan, work = run
    fits = _text(_section((work / "report.html").read_text(), "fits"))
    counts = fit_status_counts(plan)
    assert {(c.variant, c.sample) for c in counts} == {("nominal", "data"), ("nominal", "mc"), ("sigmodel", "data"),
                                                      ("tagsel", "data"), ("tagsel", "mc")}
    ok = sum(c.ok for c in counts)
    assert f"{sum(c.bins for c in counts)} measurements in 3 variant(s): {ok} ok, " in fits
    flagged = [r for r in read_csv(work / "efficiencies.csv") if r["fit_status"] != "ok"]
    for r in flagged:
        assert r["fit_status"] in fits


def test_efficiency_and_scale_factor_grids_with_stat_and_syst(run: tuple[Plan, Path]) -> None:
    _, work = run
    page = (work / "report.html").read_text()
    eff, sf = read_csv(work / "efficiencies.csv"), read_csv(work / "scale_factors.csv")
    for sid, rows, value in (("efficiencies", eff, "efficiency"), ("scale-factors", sf, "scale_factor")):
        section = _section(page, sid)
        assert section.count('<table class="grid">') == len({r.get("sample", r.get("data")) for r in rows})
        d = decimals_for(r[k] for r in rows for k in ("err_down", "err_up"))
        for r in rows:
            assert f"<b>{r[value]:.{d}f}</b>" in section
            assert f"±{r['syst']:.{d}f} syst" in section
    assert 'src="plots/' in _section(page, "efficiencies")
    assert "scale_factor" in _section(page, "scale-factors")  # the map is in its own section


def test_uncertainties_name_the_largest_source_and_where(run: tuple[Plan, Path]) -> None:
    _, work = run
    sf = read_csv(work / "scale_factors.csv")
    delta = {src: np.array([max(abs(r[f"{src}Up"] - r["scale_factor"]), abs(r[f"{src}Down"] - r["scale_factor"]))
                            for r in sf]) for src in ("sigmodel", "tagsel")}
    largest = max(delta, key=lambda s: delta[s].max())
    where = sf[int(delta[largest].argmax())]
    section = _text(_section((work / "report.html").read_text(), "uncertainties"))
    verdict = section.split("largest systematic: ")[1]
    assert verdict.startswith(f"{largest}, up to ") and "on the scale factor data/mc at " in verdict
    assert f"p ∈ [{where['p_lo']:g}, {where['p_hi']:g}) GeV, η ∈ [{where['eta_lo']:g}, " in verdict
    assert f") (bin {where['bin']})" in verdict
    sizes = source_sizes(sf, "scale_factor", ["sigmodel", "tagsel"])
    assert [s.source for s in sizes] == sorted(delta, key=lambda s: -delta[s].max())
    assert sizes[0].median == pytest.approx(float(np.median(delta[largest])))


def test_closure_pulls_histogram_and_verdict(run: tuple[Plan, Path]) -> None:
    _, work = run
    rows = read_csv(work / "closure.csv")
    section = _text(_section((work / "report.html").read_text(), "closure"))
    for quantity, sample in {(r["quantity"], r["sample"]) for r in rows}:
        pulls = [r["pull"] for r in rows if (r["quantity"], r["sample"]) == (quantity, sample)]
        label = f"{quantity.replace('_', ' ')} {sample}"
        expect = f"{label}: pulls mean {np.mean(pulls):+.2f}, width {np.std(pulls, ddof=1):.2f} over {len(pulls)} bins"
        assert expect in section
    png = work / PULLS_PNG
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert PULLS_PNG in json.loads((work / "manifest.json").read_text())["files"]
    assert f'src="{PULLS_PNG}"' in (work / "report.html").read_text()


def test_inputs_and_published_files(run: tuple[Plan, Path]) -> None:
    plan, work = run
    page = (work / "report.html").read_text()
    inputs = _text(_section(page, "inputs"))
    for sample in ("data", "mc"):
        for path in plan.input_files(sample):
            assert os.path.relpath(path, plan.workdir) in inputs
    assert "3 input file(s) (data 2, mc 1), none left out" in inputs
    outputs = _section(page, "outputs")
    for f in json.loads((work / "manifest.json").read_text())["files"]:
        if f not in ("report.md", "report.html") and (not f.startswith("gallery/") or f.endswith("index.html")):
            assert f'href="{f}"' in outputs, f  # every file but the galleries' figures


def test_fits_link_each_gallery_relative_to_the_report(run: tuple[Plan, Path]) -> None:
    _, work = run
    fits = _section((work / "report.html").read_text(), "fits")
    links = re.findall(r'<a href="([^"]+)">gallery</a>', fits)
    assert links == ["gallery/nominal/data/index.html", "gallery/sigmodel/data/index.html",
                     "gallery/tagsel/data/index.html"]  # fitted samples only, each variant's own fits
    assert all((work / link).is_file() for link in links)


# ---------------------------------------------------------------- building blocks ----------------------------


def test_pull_verdicts() -> None:
    rng = np.random.default_rng(1)
    assert pull_stats("unit", rng.normal(0, 1, 400)).consistent
    assert pull_stats("shifted", rng.normal(0.5, 1, 400)).verdict.startswith("biased (mean +")
    assert pull_stats("narrow", rng.normal(0, 0.5, 400)).verdict == "uncertainties overestimated"
    assert pull_stats("wide", rng.normal(0, 2, 400)).verdict == "uncertainties underestimated"
    s = pull_stats("nan", [0.1, float("nan"), -0.1])
    assert len(s.pulls) == 2 and s.mean == pytest.approx(0.0) and s.width == pytest.approx(statistics.stdev([0.1, -0.1]))


def _row(b: int, p: tuple[float, float], eta: tuple[float, float], value: float, **extra: float) -> dict:
    return {"sample": "data", "bin": b, "p_lo": p[0], "p_hi": p[1], "eta_lo": eta[0], "eta_hi": eta[1],
            "efficiency": value, "err_down": 0.01, "err_up": 0.02, "syst": 0.005, "fit_status": "ok", **extra}


VARS = [Variable("p", "p", "GeV"), Variable("eta", "η", "")]


def test_value_table_is_a_grid_only_for_a_full_grid() -> None:
    grid = [_row(i, p, e, 0.5 + i / 100) for i, (p, e) in enumerate((p, e) for p in ((2, 5), (5, 10), (10, 20))
                                                                        for e in ((2, 3), (3, 5)))]
    grid[1]["fit_status"] = "at_limit:sigma"
    t = value_table(grid, "efficiency", VARS)
    assert t.css == "grid" and len(t.rows) == 3 and t.header[1:] == ["[2, 3)", "[3, 5)"]  # eta: fewer bins, columns
    assert t.rows[0][2].css == "flag" and t.rows[0][1].css == ""
    nested = [_row(0, (2, 5), (2, 3), 0.5), _row(1, (2, 5), (3, 5), 0.6), _row(2, (5, 20), (2, 4), 0.7)]
    flat = value_table(nested, "efficiency", VARS)
    assert flat.css == "" and len(flat.rows) == 3 and flat.rows[2][1:3] == ["[5, 20)", "[2, 4)"]


def test_source_sizes_largest_first_with_the_bin() -> None:
    rows = [_row(i, (i, i + 1), (2, 5), 1.0, aUp=1.0 + 0.01 * i, aDown=1.0 - 0.01 * i, bUp=1.05, bDown=0.99)
            for i in range(4)]
    sizes = source_sizes(rows, "efficiency", ["a", "b", "missing"])
    assert [s.source for s in sizes] == ["b", "a"]
    assert sizes[0].largest == pytest.approx(0.05) and sizes[1].where["bin"] == 3
    assert sizes[1].median == pytest.approx(0.015) and sizes[1].over_stat == pytest.approx(0.75)


def test_labels_statuses_and_decimals() -> None:
    assert plain_label(r"$p_\mathrm{T}$") == "pT" and plain_label(r"$|\eta|$") == "|η|"
    assert status_kind("ok") == "ok" and status_kind("ok|ok") == "ok"
    assert status_kind("at_limit:sigma,chi2") == "flag" and status_kind("ok|chi2") == "flag"
    assert status_kind("low_statistics,chi2") == "low" and status_kind("ok", float("nan")) == "fail"
    assert decimals_for([0.021, 0.019]) == 3 and decimals_for([0.0012]) == 4 and decimals_for([]) == 3


def test_markdown_table_escapes_pipes() -> None:
    md = render_markdown("t", "", [Section("summary", "v", blocks=[Table(["a"], [["x|y"]])])])
    assert "| x\\|y |" in md


# ---------------------------------------------------------------- the demo's page in a browser ---------------


@pytest.fixture
def browser() -> Iterator[object]:
    """Headless chromium driven by chromedriver (both Debian's; selenium-manager never downloads)."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(f"{CHROMIUM} and {CHROMEDRIVER} are needed (Debian packages chromium, chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")
    profile = tempfile.mkdtemp(prefix="calibflow-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1280,1600", "--hide-scrollbars"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver, path: Path, height: int | None = None) -> None:
    """PNG of the page 1280 px wide: its top ``height`` px, or all of it."""
    full = driver.execute_script("return document.documentElement.scrollHeight")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": 1280, "height": min(height or full, full), "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))


def test_demo_report_in_a_browser(demo_run: Path, browser) -> None:
    browser.get((demo_run / "report.html").as_uri())
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []
    ids = browser.execute_script("return [...document.querySelectorAll('section')].map(s => s.id)")
    assert ids == list(SECTIONS)
    images = browser.execute_script(
        "return [...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
    assert len(images) >= 3 and any(src == PULLS_PNG for src, _, _ in images)
    assert [src for src, complete, width in images if not (complete and width > 0)] == []
    links = browser.execute_script("return [...document.links].map(a => a.getAttribute('href'))")
    local = [h for h in links if not h.startswith("#")]
    assert [h for h in local if not (demo_run / h).exists()] == []  # every link reaches a file
    targets = {h[1:] for h in links if h.startswith("#")}
    assert targets <= set(ids)
    verdicts = dict(zip(SECTIONS, browser.execute_script(
        "return [...document.querySelectorAll('.verdict')].map(p => p.innerText)"), strict=True))
    counts = fit_status_counts(Plan.create(DEMO, demo_run.parent))  # the four questions, answered on the page
    assert (f"{sum(c.ok for c in counts)} ok, {sum(c.flagged for c in counts)} flagged" in verdicts["fits"]
            and f"{sum(c.low_statistics for c in counts)} low statistics, 0 failed" in verdicts["fits"])
    assert verdicts["cutflow"].startswith(f"data: {count_text(600_000)} candidates read → ")
    assert verdicts["uncertainties"].startswith("largest systematic: sigmodel, up to ")
    assert verdicts["closure"].count("pulls mean") == 3
    screenshot(browser, demo_run / "report_screenshot.png")
    screenshot(browser, demo_run / "report_screenshot_top.png", height=1600)
    assert (demo_run / "report_screenshot.png").stat().st_size > 50_000
    for width in (1280, 900, 700):  # a laptop's half screen: wide grids scroll in their box, the page never sideways
        browser.set_window_size(width, 1600)
        page = browser.execute_script("const d = document.documentElement; return [d.scrollWidth, d.clientWidth]")
        assert page[0] <= page[1], f"the report is {page[0]} px wide in a {page[1]} px window"


def test_report_grids_and_decimals_come_from_export_grid() -> None:
    """The report lays tables out and picks decimals with :mod:`calibflow.export.grid`, as the exported grids."""
    from calibflow.export.grid import decimals, interval, row_grid, significant_places

    assert significant_places([0.021, 0.019, float("nan"), 0.0, -1.0], 2) == 3 and significant_places([], 2) is None
    assert significant_places([12.0], 2) == 0 and significant_places([0.004], 1) == 3
    for errors in ([0.021, 0.019], [0.0012], [0.3, 0.2, 0.5], [2e-7]):
        rows = [{"err_down": e, "err_up": e, "syst": 0.0} for e in errors]
        assert decimals_for(errors) == max(2, min(6, significant_places(errors, 2)))
        assert decimals(rows) == min(6, max(1, significant_places(errors, 2)))
    cells = [_row(i, p, e, 0.5) for i, (p, e) in enumerate((p, e) for p in ((2, 5), (5, 10)) for e in ((2, 3), (3, 4), (4, 5)))]
    grid = row_grid(cells, ["p", "eta"])
    assert grid is not None and (grid.row_var, grid.col_var) == ("eta", "p")  # more intervals go down
    assert grid.row_ranges == [(2, 3), (3, 4), (4, 5)] and grid.at[(3, 4), (5, 10)]["bin"] == 4
    assert row_grid(cells[:-1], ["p", "eta"]) is None and row_grid(cells, ["p"]) is None
    t = value_table(cells, "efficiency", VARS)
    assert t.header == ["η \\ p [GeV]", interval(2, 5), interval(5, 10)] and len(t.rows) == 3
    assert VARS[0].range_text(2, 5) == f"p ∈ {interval(2, 5)} GeV"
