"""The run summary: per variant and sample, the bins by result status (ok, flagged by reason, low statistics,
failed) and the fit gallery, printed by ``calibflow run`` after the closing line."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from calibflow.io.jsonio import read_record, write_record
from calibflow.plan import Plan
from calibflow.tables.fitstatus import (
    LOW_STATISTICS,
    StatusCounts,
    count_statuses,
    fit_status_counts,
    flag_reasons,
    result_status,
)

from .conftest import demo_dict, tiny_demo_dict


def test_flag_reasons_drop_the_details() -> None:
    assert flag_reasons("at_limit:alpha,minos_failed") == ["at_limit", "minos_failed"]
    assert flag_reasons("chi2") == ["chi2"]
    assert flag_reasons("low_statistics,at_limit:sigma") == ["low_statistics", "at_limit"]


def test_counts_group_flagged_bins_by_reason() -> None:
    statuses = ["ok", "ok", "chi2", "at_limit:sigma,chi2", "low_statistics", "low_statistics,chi2", None,
                "empty_bin", "ok"]
    c = count_statuses("nominal", "data", statuses)
    assert (c.ok, c.flagged, c.low_statistics, c.failed, c.bins) == (3, 3, 2, 1, 9)
    assert c.reasons == {"chi2": 2, "at_limit": 1, "empty_bin": 1}  # a bin flagged twice counts under both
    # reasons by count, then by name
    assert c.line() == "3 ok, 3 flagged (2 chi2, 1 at_limit, 1 empty_bin), 2 low statistics, 1 failed"
    assert count_statuses("", "mc", ["ok"] * 4).line() == "4 ok, 0 flagged, 0 low statistics, 0 failed"


def test_status_of_a_result_file(tmp_path: Path) -> None:
    write_record(tmp_path / "a.json", {"efficiency": 0.5, "status": "at_limit:sigma"})
    (tmp_path / "b.json").write_text("{not json")
    (tmp_path / "c.json").write_text("[1, 2]")
    (tmp_path / "d.json").write_text(json.dumps({"efficiency": 0.5, "status": "ok"}))  # no digest: not trusted
    assert result_status(str(tmp_path / "a.json")) == "at_limit:sigma"
    assert result_status(str(tmp_path / "b.json")) == result_status(str(tmp_path / "c.json")) == "unreadable"
    assert result_status(str(tmp_path / "d.json")) == "unreadable"
    assert result_status(str(tmp_path / "missing.json")) is None


def test_low_statistics_is_the_status_the_fits_write() -> None:
    from calibflow.fit import measure

    assert getattr(measure, "LOW_STATISTICS", LOW_STATISTICS) == LOW_STATISTICS


def _set_statuses(plan: Plan, sample: str, statuses: list[str | None]) -> None:
    """Give the bins of ``sample`` these statuses (None: remove the result)."""
    for path, status in zip(plan.fit_paths(sample, plan.bin_keys()), statuses, strict=True):
        if status is None:
            os.remove(path)
            continue
        write_record(path, {**read_record(path), "status": status})


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Plan, list[StatusCounts]]:
    """A tiny calibration with a fit-model systematic (data refitted, simulation shared), built once; its
    counts as built; then its results given known statuses, one removed, and a gallery index for the data."""
    import yaml

    from tasks import ExportTables
    from tasks.runner import build

    tmp = tmp_path_factory.mktemp("summary")
    d = tiny_demo_dict()
    d["systematics"] = demo_dict()["systematics"]
    d["fit"]["plots"] = "none"
    cfg = tmp / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    plan = Plan.create(cfg, tmp / "res")
    report = build(plan, [ExportTables(config=plan.config_path, result_dir=plan.result_dir)], 1)
    assert report.ok, report.failed
    first = fit_status_counts(plan)
    _set_statuses(plan, "data", ["ok", "at_limit:sigma,chi2"])
    _set_statuses(plan, "mc", [LOW_STATISTICS, "ok"])
    _set_statuses(plan.with_variant("sigmodel"), "data", ["minos_failed", None])
    gallery = Path(plan.gallery_dir("data"), "index.html")
    gallery.parent.mkdir(parents=True, exist_ok=True)
    gallery.touch()
    return cfg, plan, first


def test_counts_of_a_complete_run(built: tuple[Path, Plan, list[StatusCounts]]) -> None:
    *_, first = built
    # the systematic refits the data; its simulation results are the nominal ones and are not counted twice
    assert [(c.variant, c.sample, c.bins) for c in first] == [("nominal", "data", 2), ("nominal", "mc", 2),
                                                              ("sigmodel", "data", 2)]
    assert all(c.failed == 0 for c in first)
    assert [c.ok for c in first][1] == 2  # counted simulation


def test_counts_per_variant_and_sample(built: tuple[Path, Plan, list[StatusCounts]]) -> None:
    _, plan, _ = built
    gallery = Path(plan.gallery_dir("data"), "index.html")
    counts = {(c.variant, c.sample): c for c in fit_status_counts(plan)}
    assert counts["nominal", "data"].line() == "1 ok, 1 flagged (1 at_limit, 1 chi2), 0 low statistics, 0 failed"
    assert counts["nominal", "mc"].line() == "1 ok, 0 flagged, 1 low statistics, 0 failed"
    assert counts["sigmodel", "data"].line() == "0 ok, 1 flagged (1 minos_failed), 0 low statistics, 1 failed"
    assert counts["nominal", "data"].gallery == str(gallery)
    for (v, s), c in counts.items():  # a gallery only where its index exists
        index = Path(plan.with_variant("" if v == "nominal" else v).gallery_dir(s), "index.html")
        assert c.gallery == (str(index) if index.exists() else None)


def test_no_binning_no_counts(tmp_path: Path, write_config) -> None:
    plan = Plan.create(write_config(tiny_demo_dict()), tmp_path / "res")
    assert fit_status_counts(plan) == []


def test_calibflow_run_prints_the_summary(built: tuple[Path, Plan, list[StatusCounts]],
                                          capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A run with nothing to do still summarises the bins (here with the statuses the fixture gave them)."""
    from tasks.cli import main

    cfg, plan, _ = built
    monkeypatch.chdir(plan.result_dir)  # paths inside the current folder are shown relative to it
    code = main(["run", str(cfg), "--result-dir", plan.result_dir, "--workers", "1"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    start = lines.index("bins per variant and sample (failed: no result):")
    body = lines[start + 1 : start + 4]
    assert [re.sub(r"\s+", " ", ln.split(";")[0]) for ln in body] == [
        " nominal data: 1 ok, 1 flagged (1 at_limit, 1 chi2), 0 low statistics, 0 failed",
        " nominal mc: 1 ok, 0 flagged, 1 low statistics, 0 failed",
        " sigmodel data: 0 ok, 1 flagged (1 minos_failed), 0 low statistics, 1 failed",
    ]
    assert body[0].endswith("; gallery: small_demo/gallery/nominal/data/index.html")
    assert len({re.match(r"  \w+ \w+: +", ln).end() for ln in body}) == 1  # the counts start in one column
    assert code == 0 and "outputs in " in out  # the published tables are older than the removed result


def test_closing_list_shows_a_big_folder_in_one_line() -> None:
    from tasks.cli import LISTED_PER_FOLDER, _listing

    figures = [f"gallery/nominal/data/bin_{i}.png" for i in range(LISTED_PER_FOLDER)]
    files = ["efficiencies.csv", *figures, "gallery/nominal/data/index.html", "plots/a.png", "plots/b.png",
             *(f"big/{i}.txt" for i in range(LISTED_PER_FOLDER + 1)), "tables.md"]
    assert _listing(files) == ["efficiencies.csv", f"gallery/nominal/data/index.html and {LISTED_PER_FOLDER} more file(s)",
                               "plots/a.png", "plots/b.png", f"big/ ({LISTED_PER_FOLDER + 1} files)", "tables.md"]
    assert _listing(figures) == figures  # up to LISTED_PER_FOLDER files: every one
    small = ["gallery/a/index.html", "gallery/a/bin_0.png", "gallery/a/bin_1.png", "report/index.html"]
    assert _listing(small) == ["gallery/a/index.html and 2 more file(s)", "report/index.html"]  # a page: its index
