"""Per-bin fits in chunks: one result per bin, identical to one-bin tasks; only missing bins are fitted and
the run report counts bins; a failing bin fails its chunk with the bin named, the others are kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calibflow.plan import Plan
from tasks import ExportTables, FitBin, MakeBinning
from tasks.fit import fit_tasks
from tasks.runner import build

from .conftest import small_demo_dict


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Plan:
    """The small demo (3 x 2 bins, data fitted, simulation counted) built once with chunked fits."""
    import yaml

    tmp = tmp_path_factory.mktemp("chunks")
    d = small_demo_dict()
    d["outputs"] = {"plots": False}
    cfg = tmp / "small.yaml"
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    plan = Plan.create(cfg, tmp / "res")
    report = build(plan, [ExportTables(config=plan.config_path, result_dir=plan.result_dir)], workers=2)
    assert report.ok, report.failed
    assert report.ran["FitBin"] == 12 and report.tasks_ran["FitBin"] == 2  # one chunk per sample
    return plan


def _chunks(plan: Plan, chunk: int) -> list[FitBin]:
    table = ExportTables(config=plan.config_path, result_dir=plan.result_dir)
    return fit_tasks(table, chunk)


def _results(tasks: list[FitBin]) -> dict[tuple[str, int], dict]:
    out = {}
    for t in tasks:
        for i, path in zip(t.bin_indices(), t.result_paths(), strict=True):
            out[(t.sample, i)] = json.loads(Path(path).read_text())
    return out


def test_chunks_cover_every_bin_once(built: Plan) -> None:
    tasks = _chunks(built, 4)
    assert [(t.sample, t.bin_index, t.bin_count) for t in tasks] == [
        ("data", 0, 4), ("data", 4, 2), ("mc", 0, 4), ("mc", 4, 2)]
    assert sum(t.results() for t in tasks) == 12
    # the paths are the per-bin content-keyed paths of one-bin tasks
    singles = [FitBin(sample=t.sample, bin_index=i, **t.common()) for t in tasks for i in t.bin_indices()]
    assert [p for t in tasks for p in t.result_paths()] == [t.output().path for t in singles]


def test_one_bin_tasks_give_the_chunks_results(built: Plan) -> None:
    chunked = _results(_chunks(built, 20))
    singles = [FitBin(sample=s, bin_index=i, config=built.config_path, result_dir=built.result_dir)
               for s, i in chunked]
    for t in singles:
        Path(t.output().path).unlink()
    report = build(built, singles, workers=2)
    assert report.ok, report.failed
    assert report.ran["FitBin"] == report.tasks_ran["FitBin"] == 12
    assert _results(singles) == chunked


def test_a_chunk_fits_only_missing_bins_and_the_report_counts_bins(built: Plan) -> None:
    data = next(t for t in _chunks(built, 20) if t.sample == "data")
    paths = data.result_paths()
    before = {p: Path(p).read_text() for p in paths}
    for p in paths[1:3]:
        Path(p).unlink()
    report = build(built, [data], workers=2)  # in the pool: the count comes back with the result
    assert report.ok, report.failed
    assert report.ran["FitBin"] == 2 and report.reused["FitBin"] == 4 and report.tasks_ran["FitBin"] == 1
    assert "2 FitBin results in 1 task(s)" in report.summary()
    assert {p: Path(p).read_text() for p in paths} == before
    again = build(built, [data], workers=1)
    assert again.ran["FitBin"] == 0 and again.reused["FitBin"] == 6 and again.tasks_reused["FitBin"] == 1


def test_a_failing_bin_fails_its_chunk_and_keeps_the_others(built: Plan, monkeypatch: pytest.MonkeyPatch) -> None:
    import calibflow.fit.measure

    data = next(t for t in _chunks(built, 20) if t.sample == "data")
    paths = data.result_paths()
    for p in paths:
        Path(p).unlink()
    real = calibflow.fit.measure.measure_bin
    calls = []

    def measure(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("broken bin")
        return real(*args, **kwargs)

    monkeypatch.setattr(calibflow.fit.measure, "measure_bin", measure)
    report = build(built, [data], workers=1)  # in this process, so that the patch applies
    assert not report.ok
    (task_id, reason), = report.failed
    assert task_id.startswith("FitBin")
    assert reason.startswith("RuntimeError: 1 of 6 bin(s) failed; bin 2 (p in [6, 15), eta in [2, 3.5)): ValueError:")
    assert [Path(p).exists() for p in paths] == [True, True, False, True, True, True]
    monkeypatch.setattr(calibflow.fit.measure, "measure_bin", real)
    rerun = build(built, [data], workers=1)
    assert rerun.ok and rerun.ran["FitBin"] == 1 and rerun.reused["FitBin"] == 5


def test_cached_keys_follow_the_inputs_and_the_config(tmp_path: Path, write_config) -> None:
    """Prep and fit keys are cached per process; a rewritten input or an edited config still gives new keys,
    and the cached keys are those of the one-bin recipe."""
    import os

    from calibflow.hashing import content_key
    from calibflow.plan import FIT_VERSION
    from calibflow.toys.registry import write_toy_file

    from .conftest import tiny_demo_dict

    src = tmp_path / "data.root"
    write_toy_file(str(src), 2000, is_data=True, seed=5)
    d = tiny_demo_dict()
    del d["toy"]["samples"]["data"]
    d["samples"]["data"]["files"] = [src.name]
    cfg = write_config(d)
    plan = Plan.create(cfg, tmp_path / "res")

    def recipe(p: Plan, bin_key: str) -> str:
        c = p.config
        return content_key(bin_key, p.prep_keys("data"), c.mass_spec, p.pass_column, "fit", c.fit, None, FIT_VERSION)

    prep, fits = plan.prep_key("data", 0), plan.fit_keys("data", ["a", "b"])
    assert fits == [recipe(plan, "a"), recipe(plan, "b")] and fits[0] != fits[1]
    assert content_key(plan.prep_spec("data").describe(), plan.input_identity("data", 0)) == prep
    write_toy_file(str(src), 2500, is_data=True, seed=6)  # the input changes: size and mtime
    assert plan.prep_key("data", 0) != prep and plan.fit_keys("data", ["a", "b"]) != fits
    prep, fits = plan.prep_key("data", 0), plan.fit_keys("data", ["a", "b"])
    d["fit"]["background"] = "chebyshev2"
    write_config(d)
    st = os.stat(cfg)
    os.utime(cfg, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later edit, whatever the clock's resolution
    assert plan.prep_key("data", 0) == prep
    assert plan.fit_keys("data", ["a", "b"]) != fits and plan.fit_key("data", "a") == recipe(plan, "a")


def test_bins_per_task_sets_the_chunk_and_belongs_to_fitbin(tmp_path: Path) -> None:
    """``resources.FitBin.bins_per_task: 1`` gives one luigi task per bin (same result paths); the
    setting under another task family is a config error naming where it belongs."""
    import yaml

    from calibflow.config import ConfigError, parse_config

    d = small_demo_dict()
    d["resources"] = {"FitBin": {"bins_per_task": 1}}
    cfg = tmp_path / "one.yaml"
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    plan = Plan.create(cfg, tmp_path / "res")
    assert build(plan, [MakeBinning(config=plan.config_path, result_dir=plan.result_dir)]).ok
    tasks = fit_tasks(ExportTables(config=plan.config_path, result_dir=plan.result_dir))
    n = len(plan.load_scheme())
    assert [(t.sample, t.bin_index, t.bin_count) for t in tasks] == [(s, i, 1) for s in ("data", "mc") for i in range(n)]
    d["resources"] = {"PrepareTuple": {"bins_per_task": 5}}
    with pytest.raises((ConfigError, ValueError), match=r"resources\.PrepareTuple\.bins_per_task.*resources\.FitBin"):
        parse_config(d)
