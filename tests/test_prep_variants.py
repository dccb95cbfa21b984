"""One read per input file for all variants (issue 22, item 2): a file's ``PrepareTuple`` reads the union of the
branches its variants need once and writes every distinct preparation's tuple, byte for byte what preparing each
alone writes; a changed selection of one variant rebuilds that variant's tuple only.

Two configs with variants that prepare files differently: the ``cms_muon_id_z`` recipe (NanoAOD pairing, lumi
mask; the ``tagsel`` systematic changes the tag, method ``Iso`` the probe selection and the pass decision) and the
flat J/ψ demo with a tag-selection systematic and a method with its own probe selection. Reads are counted on the
real reader: every open of an input by prep (``calibflow.prep.prepare._open``) and every basket-reader layout
(``calibflow.io.baskets.read_layout``), per file.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import calibflow.io.baskets
import calibflow.prep.prepare
from calibflow.config import parse_config
from calibflow.io.store import read_columns
from calibflow.plan import NOMINAL, Plan
from calibflow.prep.prepare import Preparation, prepare_each, prepare_file
from calibflow.prep.spec import PrepError, prep_spec
from tasks.prep import PrepareTuple
from tasks.runner import build

from .conftest import small_demo_dict
from .recipe_helpers import recipe


def z_recipe() -> dict[str, Any]:
    """The Z recipe on a small toy: 2 data files, 1 simulation file; variants massrangeUp/Down (same tuples as
    nominal), tagsel (another tag), methods ID (= nominal) and Iso (its own probe selection and pass)."""
    d = recipe("cms_muon_id_z")
    d["toy"]["samples"] = {"data": {"candidates": 8000, "files": 2}, "mc": {"candidates": 4000, "files": 1}}
    return d


def flat_demo() -> dict[str, Any]:
    """The J/ψ demo (flat tuples, fused loop) with a tag-selection systematic and a method of its own probe
    selection."""
    d = small_demo_dict()
    d["toy"]["samples"] = {"data": {"candidates": 12000, "files": 2}, "mc": {"candidates": 8000, "files": 1}}
    d["systematics"] = {"sources": [{"name": "tagsel", "vary": {"selection": {"tag": "tag_PT > 1.5 and tag_isMuon == 1"}}},
                                    {"name": "sigmodel", "vary": {"fit": {"signal": "gauss", "parameters": {"n": None}}}}]}
    d["methods"] = {"central": {"selection": {"probe": "p > 3 and eta > 2.5 and eta < 4.5"}}}
    return d


CONFIGS = {"z": (z_recipe, ("methods", "Iso", "selection", "probe"), "probe_tightId and probe_pt > 20"),
           "flat": (flat_demo, ("methods", "central", "selection", "probe"), "p > 4 and eta > 2.5 and eta < 4.5")}
"""Config, the key of one variant's cut and a new value for it."""


class Reads:
    """Reads of input files by tuple preparation, counted on the real functions: opens and basket layouts per
    file, and the prepared tuples written."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opens: Counter[str] = Counter()
        self.layouts: Counter[str] = Counter()
        self.written: Counter[str] = Counter()
        self._wrap(monkeypatch, calibflow.prep.prepare, "_open", lambda path, *a, **k: self.opens.update([path]))
        self._wrap(monkeypatch, calibflow.io.baskets, "read_layout", lambda path, *a, **k: self.layouts.update([path]))
        self._wrap(monkeypatch, calibflow.prep.prepare, "atomic_path", lambda path, *a, **k: self.written.update([path]))

    @staticmethod
    def _wrap(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, count: Callable[..., None]) -> None:
        real = getattr(module, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            count(*args, **kwargs)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)

    def clear(self) -> None:
        self.opens.clear()
        self.layouts.clear()
        self.written.clear()


def _plan(d: dict[str, Any], tmp_path: Path) -> Plan:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    return Plan.create(cfg, tmp_path / "res")


def _prep_tasks(plan: Plan) -> list[PrepareTuple]:
    """The tuple preparations of the calibration's whole task graph."""
    from tasks.state import graph

    return sorted((t for t in graph(plan) if isinstance(t, PrepareTuple)), key=lambda t: (t.sample, t.index))


def _wanted(plan: Plan) -> dict[str, tuple[str, str, int]]:
    """Every variant's prepared tuples (the paths the later tasks read) -> (variant, sample, index)."""
    out: dict[str, tuple[str, str, int]] = {}
    for v in [NOMINAL, *plan.all_variants()]:
        vp = plan.with_variant(v)
        for s in vp.config.samples:
            for i in range(len(vp.input_files(s))):
                out.setdefault(vp.prep_path(s, i), (v, s, i))
    return out


def _files(plan: Plan) -> list[str]:
    return [plan.input_file(s, i) for s in plan.config.samples for i in range(len(plan.input_files(s)))]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_each_file_read_once_for_all_variants(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One task and one read per input file; every variant's tuple written once and equal, byte for byte, to
    preparing it alone; a changed cut of one variant makes that variant's tuples only, the others untouched."""
    make, key, value = CONFIGS[name]
    d = make()
    plan = _plan(d, tmp_path)
    tasks = _prep_tasks(plan)
    files = _files(plan)
    assert [(t.sample, t.index, t.variant) for t in tasks] == [(s, i, NOMINAL) for s in plan.config.samples
                                                               for i in range(len(plan.input_files(s)))]
    wanted = _wanted(plan)
    assert {t.path for task in tasks for t in task.output()} == set(wanted)
    per_file = Counter(plan.input_file(s, i) for _, s, i in wanted.values())
    assert min(per_file.values()) >= 3, per_file  # nominal, the systematic, the method (and both)
    assert len(wanted) < len(plan.all_variants()) * len(files)  # variants that prepare alike share a tuple

    reads = Reads(monkeypatch)
    report = build(plan, tasks)
    assert report.ok, report.failed
    assert reads.opens == Counter(files) and reads.layouts == Counter(files)  # once per file, for all variants
    assert reads.written == Counter(list(wanted))  # each distinct tuple written once
    assert report.tasks_ran["PrepareTuple"] == len(files) and report.ran["PrepareTuple"] == len(wanted)

    for n, (path, (v, s, i)) in enumerate(wanted.items()):  # as each variant's own preparation writes it
        vp = plan.with_variant(v)
        alone = tmp_path / f"alone-{n}.h5"
        prepare_file(vp.input_file(s, i), vp.prep_spec(s), str(alone), metadata={"sample": s, "key": vp.prep_key(s, i)})
        assert Path(path).read_bytes() == alone.read_bytes(), (v, s, i)

    # one variant's cut changes: its tuples only are made (one read of each file), the others stay as they are
    before = {p: (os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in wanted}
    section = d
    for k in key[:-1]:
        section = section[k]
    section[key[-1]] = value
    plan = _plan(d, tmp_path)
    now = _wanted(plan)
    new = set(now) - set(before)
    assert new and len(new) < len(now) and set(now) - new <= set(before)
    assert {now[p][0].split("/")[0] for p in new} == {"/".join(key[:2]).replace("methods/", "method=")}
    reads.clear()
    tasks = _prep_tasks(plan)
    report = build(plan, tasks)
    assert report.ok, report.failed
    assert reads.opens == Counter(files) and reads.written == Counter(list(new))
    assert report.ran["PrepareTuple"] == len(new) and report.reused["PrepareTuple"] == len(now) - len(new)
    assert {p: (os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in set(now) - new} == {
        p: before[p] for p in set(now) - new}
    reads.clear()
    assert build(plan, _prep_tasks(plan)).tasks_ran["PrepareTuple"] == 0 and not reads.opens


def test_batch_job_rebuilds_and_runs_the_task(tmp_path: Path) -> None:
    """A batch job (tasks.entry) rebuilds the task from its family and string parameters and makes every
    variant's tuple of its file."""
    from tasks.entry import rebuild, run_task

    plan = _plan(flat_demo(), tmp_path)
    task = next(t for t in _prep_tasks(plan) if t.sample == "mc")
    build(plan, list(task.requires()))
    job = rebuild(task.task_family, json.dumps(task.to_str_params(), sort_keys=True), task.task_id)
    assert [t.path for t in job.output()] == [t.path for t in task.output()] and not job.complete()
    status, *_ = run_task(job)
    assert status == "DONE" and job.complete() and all(os.path.exists(t.path) for t in task.output())


def test_a_preparation_that_fails_fails_alone(tmp_path: Path) -> None:
    """Where the shared read fails, each preparation is read alone: one needing a branch the file lacks fails
    (a PrepError naming it), the other is written as it would be alone."""
    from calibflow.toys.registry import write_toy_file

    src = tmp_path / "data.root"
    write_toy_file(str(src), 5000, is_data=True, seed=3)
    good = prep_spec(parse_config(flat_demo()), "data")
    d = flat_demo()
    d["selection"]["probe"] = "p > 2 and probe_NOPE > 0"
    bad = prep_spec(parse_config(d), "data")
    outcomes = prepare_each(str(src), [Preparation(bad, str(tmp_path / "bad.h5")),
                                       Preparation(good, str(tmp_path / "good.h5"))])
    assert isinstance(outcomes[0], PrepError) and "probe_NOPE" in str(outcomes[0])
    assert not (tmp_path / "bad.h5").exists() and isinstance(outcomes[1], dict)
    prepare_file(str(src), good, str(tmp_path / "alone.h5"))
    alone, shared = read_columns(tmp_path / "alone.h5"), read_columns(tmp_path / "good.h5")
    assert alone.keys() == shared.keys() and all((alone[k] == shared[k]).all() for k in alone)
