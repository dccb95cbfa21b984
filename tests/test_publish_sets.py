"""Publishing as a set (issue 17, items 8 and 11): a new folder per published set, one atomic switch of
``current``, stable names linked to it, the previous set kept one generation; the per-file layout adopted;
every export written atomically (figures, text tables); bounded figure names; empty figures redrawn."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from calibflow.binning.scheme import BinningScheme
from calibflow.export.publish import (
    CURRENT,
    MANIFEST,
    PUBLISHED,
    STALE,
    clear_stale,
    is_published,
    publish,
    published_dir,
)
from calibflow.fit.gallery import MAX_STEM, file_stems


def _export(out: Path, files: dict[str, str]) -> list[str]:
    """Write ``files`` (relative name -> content) under ``out`` as an export folder; returns their paths."""
    paths = []
    for rel, text in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
        paths.append(str(out / rel))
    return paths


def _sets(work: Path) -> list[str]:
    return sorted(p.name for p in (work / PUBLISHED).iterdir())


def test_a_publication_switches_the_whole_set_and_keeps_the_previous_one(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    one = _export(out / "1", {"efficiencies.csv": "e1", "scale_factors.csv": "s1", "plots/a.png": "a1"})
    publish(str(out / "1"), str(work), "k1", one, config="c.yaml")
    assert (work / "efficiencies.csv").read_text() == "e1" and (work / "plots" / "a.png").read_text() == "a1"
    assert os.readlink(work / "efficiencies.csv") == os.path.join(CURRENT, "efficiencies.csv")
    assert os.readlink(work / CURRENT) == os.path.join(PUBLISHED, "1-k1")
    assert json.loads((work / MANIFEST).read_text())["files"] == ["efficiencies.csv", "scale_factors.csv",
                                                                 "plots/a.png"]
    assert is_published(str(work), "k1") and not is_published(str(work), "k2")
    first = published_dir(str(work))
    assert first is not None and os.path.samefile(os.path.join(first, "plots", "a.png"), out / "1" / "plots" / "a.png")

    two = _export(out / "2", {"efficiencies.csv": "e2", "tables.md": "t2"})  # no scale factors, no plots
    publish(str(out / "2"), str(work), "k2", two)
    assert (work / "efficiencies.csv").read_text() == "e2" and (work / "tables.md").read_text() == "t2"
    assert not os.path.lexists(work / "scale_factors.csv") and not os.path.lexists(work / "plots")
    assert is_published(str(work), "k2") and _sets(work) == ["1-k1", "2-k2"]  # the previous set stays
    assert Path(first, "efficiencies.csv").read_text() == "e1"  # a reader holding it reads one whole set

    three = _export(out / "3", {"efficiencies.csv": "e3"})
    publish(str(out / "3"), str(work), "k3", three)
    assert _sets(work) == ["2-k2", "3-k3"]  # one generation kept


def test_a_later_export_never_changes_a_published_file(tmp_path: Path) -> None:
    """Sets hold hard links to the exports: safe because every writer replaces its file (atomic_path)."""
    from calibflow.export.text import write_text_tables
    from calibflow.io.store import atomic_path

    work, out = tmp_path / "work", tmp_path / "out"
    paths = _export(out, {"efficiencies.csv": "old", "tables.md": "old"})
    work.mkdir()
    publish(str(out), str(work), "k", paths)
    with atomic_path(paths[0]) as tmp, open(tmp, "w") as f:
        f.write("new")
    scheme = BinningScheme.product({"p": [0.0, 1.0]})
    write_text_tables(paths[1], "x", scheme, [], {"p": "p"}, [], False)
    assert Path(paths[1]).read_text() != "old"
    assert (work / "efficiencies.csv").read_text() == "old" and (work / "tables.md").read_text() == "old"


def test_a_killed_publication_leaves_the_previous_set_and_is_cleaned_up(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    publish(str(out), str(work), "k1", _export(out, {"efficiencies.csv": "e1"}))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    partial = work / PUBLISHED / f"7-k2.tmp-{dead}"  # a builder killed half-way
    (partial / "plots").mkdir(parents=True)
    (partial / "efficiencies.csv").write_text("e2")
    os.symlink(os.path.join(PUBLISHED, partial.name), work / f"{CURRENT}.tmp-{dead}")  # a switch killed
    assert is_published(str(work), "k1") and (work / "efficiencies.csv").read_text() == "e1"
    publish(str(out), str(work), "k3", _export(out, {"efficiencies.csv": "e3"}))
    assert _sets(work) == ["1-k1", "8-k3"] and not os.path.lexists(work / f"{CURRENT}.tmp-{dead}")


def test_a_publication_that_fails_leaves_the_previous_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    publish(str(out), str(work), "k1", _export(out, {"efficiencies.csv": "e1"}))
    paths = _export(out / "2", {"efficiencies.csv": "e2", "scale_factors.csv": "s2"})

    def full(src: str, dst: str) -> None:
        Path(dst).write_bytes(b"")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "link", lambda src, dst: (_ for _ in ()).throw(OSError(errno.EXDEV, "cross-device")))
    monkeypatch.setattr(shutil, "copyfile", full)
    with pytest.raises(OSError, match="No space"):
        publish(str(out / "2"), str(work), "k2", paths)
    assert (work / "efficiencies.csv").read_text() == "e1" and not os.path.lexists(work / "scale_factors.csv")
    assert _sets(work) == ["1-k1"] and is_published(str(work), "k1")


def test_a_folder_of_the_per_file_layout_is_adopted(tmp_path: Path) -> None:
    """Published before sets: regular files, STALE.txt and a stale banner. A run that succeeds adopts them
    as a set (same content) and clears the marks as a new set."""
    from calibflow.export.report import with_banner

    work = tmp_path / "work"
    page = with_banner("<main><h1>r</h1></main>", "stale", "failed")
    _export(work, {"efficiencies.csv": "e", "plots/a.png": "a", "report.html": page, STALE: "STALE: x\n",
                   MANIFEST: json.dumps({"key": "k", "files": ["efficiencies.csv", "plots/a.png", "report.html"],
                                         "stale": {"since": "t"}})})
    assert is_published(str(work), "k")
    assert clear_stale(str(work))
    assert all(os.path.islink(work / n) for n in ("efficiencies.csv", "plots", "report.html", MANIFEST))
    assert (work / "plots" / "a.png").read_text() == "a" and (work / "report.html").read_text() == "<main><h1>r</h1></main>"
    assert not os.path.lexists(work / STALE) and "stale" not in json.loads((work / MANIFEST).read_text())
    assert is_published(str(work), "k") and len(_sets(work)) == 2  # adopted, then cleared
    assert not clear_stale(str(work))


def test_a_full_disk_leaves_no_empty_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.figure

    from calibflow.export.figures import save_figure

    fig = matplotlib.figure.Figure()
    fig.add_subplot().plot([0, 1])
    path = tmp_path / "plots" / "a"
    assert save_figure(fig, str(path), ("png", "pdf")) == [f"{path}.png", f"{path}.pdf"]
    before = (tmp_path / "plots" / "a.png").read_bytes()

    def full(self: matplotlib.figure.Figure, fname: str, **kwargs: object) -> None:
        Path(fname).write_bytes(b"")  # what a full disk leaves
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    with pytest.raises(OSError, match="No space"):
        save_figure(fig, str(path), ("png",))
    assert (tmp_path / "plots" / "a.png").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["a.pdf", "a.png"]


def test_huge_edges_and_many_variables_give_bounded_unique_file_names() -> None:
    scheme = BinningScheme.product({"p": [2.0, 10.0, 1e308], "eta": [1e-9, 0.5, 1.0]})
    stems = file_stems(scheme.bins)
    assert len(set(stems)) == len(stems) and max(map(len, stems)) < 60, stems
    assert "p_10-1e+308" in stems[-1] and "p_2-10" in stems[0]
    wide = BinningScheme.product({f"variable_with_a_long_name_{i}": [0.125, 0.25, 0.5] for i in range(5)})
    stems = file_stems(wide.bins)
    assert len(set(stems)) == len(stems) and all(len(s) <= MAX_STEM for s in stems)
    assert stems[0] == "bin0"


def test_an_empty_fit_figure_is_drawn_again(tmp_path: Path, write_config) -> None:
    """A 0-byte figure beside a result (left before atomic writes by a full disk) is not trusted: the export
    draws it again."""
    from calibflow.plan import Plan
    from tasks import ExportTables
    from tasks.runner import build

    from .conftest import tiny_demo_dict

    d = tiny_demo_dict()
    d["outputs"] = {"correctionlib": False, "plots": False, "report": False}
    plan = Plan.create(write_config(d), tmp_path / "res")
    assert build(plan, [ExportTables(config=plan.config_path, result_dir=plan.result_dir)], 1).ok
    figure = Path(plan.figure_paths("data", plan.bin_keys())[0])
    figure.write_bytes(b"")
    d["description"] = "re-exported"  # a new export key: nothing is refitted
    plan = Plan.create(write_config(d), tmp_path / "res")
    report = build(plan, [ExportTables(config=plan.config_path, result_dir=plan.result_dir)], 1)
    assert report.ok and report.ran.get("FitBin", 0) == 0
    assert figure.stat().st_size > 0
    assert all(p.stat().st_size > 0 for p in Path(plan.gallery_dir("data")).glob("*.png"))
