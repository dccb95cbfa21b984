"""A data-only calibration (no simulation sample) with two methods and their product, through the task graph:
efficiencies only — no scale-factor table, export, figure or report section anywhere, and the report says
why — and a cut flow of each method's own selection, published beside its tables and shown in the report."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pytest
import uproot

from calibflow.export.report import count_text
from calibflow.plan import Plan
from calibflow.tables.rows import read_csv
from calibflow.tables.write import no_scale_factors
from tasks import ExportTables
from tasks.runner import build

from .conftest import small_demo_dict

TIGHT_TAG = "tag_PT > 1.5 and tag_isMuon == 1"
WHY = "no simulation sample (role: mc) to compare the data with (a data-only calibration)"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Plan, Path]:
    """The small demo without its simulation; method ``tight`` changes the tag selection, ``score`` only the
    pass criterion (the nominal selection), and ``both`` is their product."""
    import yaml

    d = small_demo_dict()
    d["name"] = "data_only"
    del d["samples"]["mc"], d["toy"]["samples"]["mc"]
    d["methods"] = {"tight": {"selection": {"tag": TIGHT_TAG}}, "score": {"pass": "probe_score > 0.4"}}
    d["products"] = {"both": ["tight", "score"]}
    tmp = tmp_path_factory.mktemp("data_only")
    (tmp / "c.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    plan = Plan.create(tmp / "c.yaml", tmp / "res")
    report = build(plan, [ExportTables(config=plan.config_path, result_dir=plan.result_dir)], workers=2)
    assert report.ok, report.failed
    return plan, Path(plan.workdir)


def _section(page: str, sid: str) -> str:
    start = page.index(f'<section id="{sid}">')
    return html.unescape(re.sub(r"<[^>]+>", " ", page[start : page.index("</section>", start)]))


def test_no_scale_factors_anywhere_and_the_reason(run: tuple[Plan, Path]) -> None:
    plan, out = run
    assert no_scale_factors(plan.config) == WHY
    # efficiencies in every folder: nominal, each method, the product
    for folder in (out, out / "methods" / "tight", out / "methods" / "score", out / "methods" / "both"):
        assert {r["sample"] for r in read_csv(folder / "efficiencies.csv")} == {"data"}, folder
        assert (folder / "tables.md").exists() and (folder / "plots" / "efficiency_vs_p.png").exists(), folder
    # no scale factors: not published, not in the per-variant or combined tables, no export of them
    assert sorted(out.rglob("scale_factors.csv")) == []
    assert sorted(out.rglob("corrections.json")) == []
    assert sorted(out.rglob("scale_factor_map_*")) == []
    page, md = (out / "report.html").read_text(), (out / "report.md").read_text()
    assert 'id="scale-factors"' not in page and 'id="scale-factors"' not in md
    assert 'id="efficiencies"' in page and 'id="uncertainties"' in page
    eff = _section(page, "efficiencies")
    assert f"no scale factors: {WHY}" in eff and "No scale factors" in eff
    summary = _section(page, "summary")
    assert f"none: {WHY}" in summary and f"no scale factors: {WHY}" in summary
    assert f"no scale factors: {WHY}" in md


def test_each_method_publishes_the_cut_flow_of_its_selection(run: tuple[Plan, Path]) -> None:
    plan, out = run
    nominal = read_csv(out / "cutflow_data.csv")
    tight = read_csv(out / "methods" / "tight" / "cutflow_data.csv")
    score = read_csv(out / "methods" / "score" / "cutflow_data.csv")
    assert score == nominal  # same selection, another pass criterion
    assert not (out / "methods" / "both" / "cutflow_data.csv").exists()  # a product has no selection of its own
    # the tight tag selection counted independently on the toy inputs
    n_read = n_tag = 0
    for path in plan.input_files("data"):
        with uproot.open(path) as f:
            a = f["DecayTree"].arrays(["tag_PT", "tag_isMuon"], library="np")
        n_read += len(a["tag_PT"])
        n_tag += int(np.count_nonzero((a["tag_PT"] > 1.5) & (a["tag_isMuon"] == 1)))
    assert [(r["stage"], r["unit"]) for r in tight] == [(r["stage"], r["unit"]) for r in nominal]
    assert tight[0]["entries"] == nominal[0]["entries"] == n_read
    assert tight[1]["stage"] == "tag" and tight[1]["entries"] == n_tag < nominal[1]["entries"]
    assert tight[1]["efficiency"] == pytest.approx(n_tag / n_read)
    manifest = (out / "manifest.json").read_text()
    assert "methods/tight/cutflow_data.csv" in manifest and "methods/score/cutflow_data.csv" in manifest
    # the report: a column group for the tight selection, the method sharing the nominal one named, the files
    page = (out / "report.html").read_text()
    cutflow = _section(page, "cutflow")
    assert "entries (nominal)" in cutflow and "entries (method=tight)" in cutflow
    assert "share a column (nominal: nominal, method=score)" in cutflow
    assert f"data, method=tight selection: {count_text(tight[-1]['entries'])} candidates left" in cutflow
    for rel in ("cutflow_data.csv", "methods/tight/cutflow_data.csv", "methods/score/cutflow_data.csv"):
        assert f'href="{rel}"' in page and (out / rel).exists(), rel


def test_the_reason_names_what_is_missing() -> None:
    from calibflow.config import parse_config

    d = small_demo_dict()
    assert no_scale_factors(parse_config(d)) == ""  # data and its simulation
    d["samples"]["mc2"] = dict(d["samples"]["mc"])
    d["toy"]["samples"]["mc2"] = d["toy"]["samples"]["mc"]
    assert no_scale_factors(parse_config(d)).startswith("several simulation samples (mc, mc2) and no reference")
    d["reference"] = "mc2"
    assert no_scale_factors(parse_config(d)) == ""
    d = small_demo_dict()
    del d["samples"]["data"], d["toy"]["samples"]["data"]
    assert no_scale_factors(parse_config(d)) == "no data sample (role: data) to compare with the simulation"
