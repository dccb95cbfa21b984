"""The config checked against its inputs before any task runs (issue 16): a misspelt branch, tree, alias or
fit parameter is one line and exit 2 with a did-you-mean; a branch missing from some files only stays a
bad-file error that names each file once. Also the branch-name reader behind it, on real ROOT files."""

from __future__ import annotations

import contextlib
import io
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uproot
import yaml

from calibflow.config import ConfigError
from calibflow.io.inspect import (
    InputFileError,
    NoSuchTree,
    _quick_names,
    all_branch_names,
    branch_names,
    missing_branches,
)
from calibflow.io.root import write_ttree, write_ttrees
from calibflow.toys.registry import write_toy_file
from tasks.cli import main

from .conftest import tiny_demo_dict
from .test_prep_nanoaod import nano_config, write_nano


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``calibflow *argv`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


# --- reading branch names ---------------------------------------------------------------------------------
def _files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Real ROOT files of each kind the reader meets: flat, NanoAOD-like jagged, a tree in a folder, an
    RNTuple."""
    flat = tmp_path / "flat.root"
    dtypes = [np.float64, np.int32, np.bool_]
    write_ttree(flat, {f"b{i}": (np.arange(10) % 3).astype(dtypes[i % 3]) for i in range(40)})
    nano = tmp_path / "nano.root"
    write_nano(nano, n=200)
    folder = tmp_path / "folder.root"
    with uproot.recreate(folder) as f:
        f.mkdir("Tuple")
        f["Tuple"].mktree("DecayTree", {"x": np.float64, "y": np.int32}).extend(
            {"x": np.arange(3.0), "y": np.arange(3, dtype=np.int32)})
    rntuple = tmp_path / "rntuple.root"
    with uproot.recreate(rntuple) as f:
        f["ntuple"] = {"x": np.arange(5.0), "n": np.arange(5, dtype=np.int32)}
    return {"flat": (flat, "DecayTree"), "nano": (nano, "Events"), "folder": (folder, "Tuple/DecayTree"),
            "rntuple": (rntuple, "ntuple")}


@pytest.mark.parametrize("kind", ["flat", "nano", "folder", "rntuple"])
def test_branch_names_equal_uproots_keys(kind: str, tmp_path: Path) -> None:
    path, tree = _files(tmp_path)[kind]
    with uproot.open(path) as f:
        expected = list(f[tree].keys())
    assert list(branch_names(str(path), tree)) == expected == all_branch_names(str(path), tree)
    quick = _quick_names(str(path), tree)
    if kind == "rntuple":
        assert quick is None  # no TBranch: uproot's own read
    else:
        assert quick == tuple(expected)  # the name-only read, not the fallback


def test_the_quick_read_skips_the_branch_metadata(tmp_path: Path) -> None:
    """The name-only model deserialises one TNamed per branch; uproot's TTree reads basket tables and leaves:
    the quick read builds far fewer objects (counted, not timed: this machine is shared)."""
    path = tmp_path / "wide.root"
    write_ttree(path, {f"branch_{i:03d}": np.zeros(5, np.float32) for i in range(300)})
    counts = {}
    for label, read in (("quick", lambda: _quick_names(str(path), "DecayTree")),
                        ("full", lambda: all_branch_names(str(path), "DecayTree"))):
        calls = 0

        def count(frame: Any, event: str, arg: Any) -> None:
            nonlocal calls
            calls += event == "call"

        sys.setprofile(count)
        try:
            names = read()
        finally:
            sys.setprofile(None)
        assert names is not None and len(names) == 300
        counts[label] = calls
    assert counts["quick"] * 3 < counts["full"], counts


def test_missing_branches_and_trees(tmp_path: Path) -> None:
    path, _ = _files(tmp_path)["folder"]
    known = branch_names(str(path), "Tuple/DecayTree")
    assert missing_branches(str(path), "Tuple/DecayTree", ["x", "z", "y"], known) == ["z"]
    with pytest.raises(NoSuchTree) as info:
        branch_names(str(path), "DecayTree")
    assert info.value.trees == ["Tuple/DecayTree"]
    (tmp_path / "text.root").write_text("not ROOT\n" * 50)
    with pytest.raises(InputFileError, match=r"text\.root: cannot read as a ROOT file"):
        branch_names(str(tmp_path / "text.root"), "DecayTree")
    with pytest.raises(InputFileError, match=r"nowhere\.root: file not found"):
        branch_names(str(tmp_path / "nowhere.root"), "DecayTree")


# --- the check before any task runs ------------------------------------------------------------------------
def _flat_config(tmp_path: Path) -> dict[str, Any]:
    """The tiny demo on two real files per sample (method count: nothing to fit)."""
    for i in range(2):
        write_toy_file(str(tmp_path / f"data_{i}.root"), 3000, is_data=True, seed=1 + i)
        write_toy_file(str(tmp_path / f"mc_{i}.root"), 3000, is_data=False, seed=11 + i)
    d = tiny_demo_dict()
    del d["toy"]
    d["name"] = "checked"
    d["samples"]["data"].update(files=["data_*.root"])
    d["samples"]["mc"]["files"] = ["mc_*.root"]
    return d


def _nano_config(tmp_path: Path) -> dict[str, Any]:
    write_nano(tmp_path / "nano.root", n=300)
    d = nano_config(lumi=None)
    d["samples"]["data"]["method"] = "fit"
    d["fit"] = {"signal": "gauss", "background": "exponential"}
    return d


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change of the config at the dotted key ``path`` (list indices as numbers)."""
    def change(d: dict[str, Any]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node = d
        for p in parents:
            node = node[p]
        node[last] = value
    return change


# (config maker, change, expected start of the message after "<config>: ", its did-you-mean)
CASES: dict[str, tuple[Callable[[Path], dict[str, Any]], Callable[[dict[str, Any]], None], str, str]] = {
    "pass": (_flat_config, _set("pass", "probe_Asoc == 1"),
             "pass: 'probe_Asoc' is neither a branch of tree 'DecayTree' in data_0.root and data_1.root "
             "nor an alias",
             "probe_Assoc"),
    "mass variable": (_flat_config, _set("mass.variable", "Jpsi_MM"), "mass.variable: 'Jpsi_MM'", "Jpsi_M"),
    "tag cut": (_flat_config, _set("selection.tag", "tag_PT > 1 and tag_isMuonX == 1"),
                "selection.tag: 'tag_isMuonX'", "tag_isMuon"),
    "alias": (_flat_config, _set("aliases.p", "probe_PP"), "aliases.p: 'probe_PP'", "probe_P"),
    "sample alias": (_flat_config, _set("samples.mc.aliases", {"eta": "probe_ET"}),
                     "samples.mc.aliases.eta: 'probe_ET' is neither a branch of tree 'DecayTree' in "
                     "mc_0.root and mc_1.root",
                     "probe_ETA"),
    "binning expression": (_flat_config, _set("binning.variables.1.expression", "probe_eta"),
                           "binning.variables[1]: 'probe_eta'", "probe_ETA"),
    "tree": (_flat_config, _set("samples.mc.tree", "DecayTre"),
             "samples.mc.tree: no tree 'DecayTre' in mc_0.root and mc_1.root", "DecayTree"),
    "variation": (_flat_config, _set("systematics", {"sources": [{"name": "tight", "vary": {
        "selection": {"tag": "tag_PTT > 2"}}}]}),
        "systematics.sources[0] (tight): selection.tag: 'tag_PTT'", "tag_PT"),
    "fit parameter": (_flat_config, _set("fit.parameters.sigmaa", {"value": 10}),
                      "fit.parameters.sigmaa: not a parameter of crystalball + exponential", "sigma"),
    "variation's fit parameter": (_flat_config, _set("systematics", {"sources": [{"name": "bkg", "vary": {
        "fit": {"background": "chebyshev2", "parameters": {"c3_pass": {"value": 0}}}}}]}),
        "systematics.sources[0] (bkg): fit.parameters.c3_pass: not a parameter of crystalball + chebyshev2",
        "c2_pass"),
    "toy": (lambda _: tiny_demo_dict(), _set("pass", "probe_Asoc == 1"),
            "pass: 'probe_Asoc' is neither a branch of tree 'DecayTree' of toy generator "
            "'jpsi_tag_and_probe'",
            "probe_Assoc"),
    "pair field": (_nano_config, _set("pass", "probe_tightID"),
                   "pass: 'probe_tightID' (branch 'Muon_tightID') is not a branch of tree 'Events' in "
                   "nano.root",
                   "probe_tightId"),
    "per-object cut": (_nano_config, _set("pairing.tag", "Muon_pt > 25 and Muon_tigthId"),
                       "pairing.tag: 'Muon_tigthId'", "Muon_tightId"),
    "event branch": (_nano_config, _set("selection.event", "HLT_IsoMu42 == 1"),
                     "selection.event: 'HLT_IsoMu42'", "HLT_IsoMu24"),
    "pair column": (_nano_config, _set("selection.pair", "pair_charge < 0 and pair_masss > 50"),
                    "selection.pair: unknown pair column 'pair_masss'", "pair_mass"),
    "match objects": (_nano_config, _set("pairing.match.0.objects", "TrigObjs"),
                      "pairing.match[0].objects: 'TrigObjs_eta'", "TrigObj_eta"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_misspelt_name_is_one_line_with_a_did_you_mean_before_any_task(case: str, tmp_path: Path) -> None:
    make, change, message, meant = CASES[case]
    d = make(tmp_path)
    change(d)
    cfg = tmp_path / "typo.yaml"
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    code, out, err = run_cli("run", str(cfg), "--result-dir", str(tmp_path / "res"), "--workers", "1")
    assert code == 2, err
    assert err.count("\n") == 1 and not out, err
    assert err.startswith(f"calibflow: error: {cfg}: {message}"), err
    assert err.rstrip().endswith(f"(did you mean {meant!r}?)"), err
    assert not (tmp_path / "res" / d["name"] / "prep").exists()  # no task ran


def _check_correct_configs(tmp_path: Path) -> None:
    """The input check of the flat and the NanoAOD config above, as written (nothing misspelt)."""
    from calibflow.plan import Plan

    for make in (_flat_config, _nano_config):
        folder = tmp_path / make.__name__
        folder.mkdir()
        cfg = folder / "ok.yaml"
        cfg.write_text(yaml.safe_dump(make(folder), sort_keys=False))
        Plan.create(cfg, folder / "res").check_inputs()


def test_a_correct_config_passes_the_check(tmp_path: Path) -> None:
    """No false alarm on the configs above as written (the same checks, nothing misspelt)."""
    _check_correct_configs(tmp_path)


def test_a_correct_config_is_confirmed_from_the_needed_branches_metadata_only(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Every needed branch found by calibflow.io.tree_meta (milliseconds for 2000 branches): no listing of every name,
    which only a missing name needs (for its did-you-mean: the cases above)."""
    import calibflow.io.inspect as inspect_module
    from calibflow.plan import Plan

    def listing(*args: Any) -> None:
        raise AssertionError("every branch name listed")

    for name in ("branch_names", "all_branch_names", "missing_branches"):
        monkeypatch.setattr(inspect_module, name, listing)
    _check_correct_configs(tmp_path)
    d = _nano_config(tmp_path / "_nano_config")
    d["pass"] = "probe_tightID"
    (tmp_path / "_nano_config" / "bad.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    with pytest.raises(AssertionError, match="every branch name listed"):  # a missing one: the names are listed
        Plan.create(tmp_path / "_nano_config" / "bad.yaml", tmp_path / "res").check_inputs()


def test_the_first_readable_file_is_checked_and_a_bad_first_file_is_no_config_error(tmp_path: Path) -> None:
    """An unreadable first file is a bad file (left to tuple preparation); the next readable one is checked.
    A tree missing from the first file but not from the last is a bad file too."""
    from calibflow.plan import Plan

    d = _flat_config(tmp_path)
    (tmp_path / "data_0.root").write_text("broken\n" * 100)
    d["pass"] = "probe_Asoc == 1"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    with pytest.raises(ConfigError, match=r"pass: 'probe_Asoc' is neither a branch of tree 'DecayTree' in "
                       r"data_1\.root"):
        Plan.create(cfg, tmp_path / "res").check_inputs()
    d["pass"] = "probe_Assoc == 1"  # and a first mc file without the tree, the last with it: a bad file
    write_ttree(tmp_path / "mc_0.root", {"x": np.ones(3)}, tree="Other")
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    Plan.create(cfg, tmp_path / "res").check_inputs()
    write_ttree(tmp_path / "mc_1.root", {"x": np.ones(3)}, tree="Other")  # no file has it: a config error
    with pytest.raises(ConfigError, match=r"samples\.mc\.tree: no tree 'DecayTree' in mc_0\.root and "
                       r"mc_1\.root \(trees: Other\)"):
        Plan.create(cfg, tmp_path / "res").check_inputs()


# --- a branch missing from some files only: bad files, each listed once -------------------------------------
def test_a_branch_missing_from_some_files_is_a_bad_file_listed_once(tmp_path: Path) -> None:
    """data_0 lacks probe_Assoc, data_1 has it: not a config error (the last file has the branch), so the
    tasks run and data_0 fails as a bad file. A variation of the selection gives every file two preparations (two
    keys), made by one task per file: the file is listed once, and --skip-bad-files then leaves it out."""
    d = _flat_config(tmp_path)
    with uproot.open(tmp_path / "data_0.root") as f:
        arrays = f["DecayTree"].arrays(library="np")
    write_ttree(tmp_path / "data_0.root", {k: v for k, v in arrays.items() if k != "probe_Assoc"})
    d["samples"]["data"]["method"] = "count"
    d["systematics"] = {"sources": [{"name": "tight", "vary": {"selection": {"tag": "tag_PT > 1.5"}}}]}
    d["outputs"] = {"correctionlib": False, "root": False, "markdown": False, "latex": False, "plots": False,
                    "report": False}
    cfg = tmp_path / "some.yaml"
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    bad = str(tmp_path / "data_0.root")
    run = ["run", str(cfg), "--result-dir", str(tmp_path / "res"), "--workers", "1", "--quiet"]
    code, _, err = run_cli(*run)
    assert code == 1, err
    # two variants with their own preparations, one task (one read) per file: the file's failure is named once
    assert err.count(f"PrepError: {bad}: tree 'DecayTree' has no branch(es) probe_Assoc") == 1
    assert "calibflow: 1 bad input file(s)" in err
    assert len(re.findall(rf"^  {re.escape(bad)}: ", err, re.M)) == 1, err
    code, out, err = run_cli(*run, "--skip-bad-files")
    assert code == 0, err
    assert "calibflow: 1 bad input file(s) left out (--skip-bad-files)" in out


def test_bad_files_lists_each_file_once() -> None:
    from tasks.cli import bad_files

    failed = [("PrepareTuple(sample=data, index=0)", "PrepError: /d/a.root: tree 'T' has no branch(es) x"),
              ("PrepareTuple(variant=v, sample=data, index=0)",
               "PrepError: /d/a.root: tree 'T' has no branch(es) y"),
              ("FitBin(sample=data)", "RuntimeError: boom"),
              ("PrepareTuple(sample=data, index=1)", "PrepError: /d/b.root: file not found")]
    assert bad_files(failed) == ["/d/a.root: tree 'T' has no branch(es) x", "/d/b.root: file not found"]


def test_pairing_names_map_to_collection_branches(tmp_path: Path) -> None:
    """The needs of a pairing spec: per-pair names through the collection, the key that asks for each."""
    from calibflow.config import parse_config
    from calibflow.prep.inputs import needs
    from calibflow.prep.spec import prep_spec

    d = _nano_config(tmp_path)
    spec = prep_spec(parse_config(d), "data")
    found = {n.branch: n for n in needs(spec, "data")}
    assert set(found) == set(spec.branches)
    assert (found["Muon_tightId"].where, found["Muon_tightId"].name) == ("pairing.tag", "Muon_tightId")
    assert (found["MET_pt"].where, found["MET_pt"].name) == ("working_points.above_met", "MET_pt")
    assert (found["TrigObj_filterBits"].where) == "pairing.match[0].cut"


def test_toy_reference_file_has_the_generators_branches(tmp_path: Path) -> None:
    from calibflow.toys.registry import reference_file

    path = reference_file("z_mumu_nanoaod", {}, is_data=False)
    real = tmp_path / "toy.root"
    write_toy_file(str(real), 500, is_data=False, seed=3, generator="z_mumu_nanoaod")
    assert branch_names(path, "Events") == branch_names(str(real), "Events")
    assert reference_file("z_mumu_nanoaod", {}, is_data=False) == path  # written once per process


def test_write_ttrees_trees_are_listed(tmp_path: Path) -> None:
    """Several trees in one file (Belle II style): the check and inspect list all of them."""
    from calibflow.io.inspect import open_root, tree_names

    path = tmp_path / "two.root"
    write_ttrees(path, {"K_S0": {"x": np.arange(3.0)}, "Lambda0": {"y": np.arange(2.0)}})
    with open_root(str(path)) as f:
        assert tree_names(f) == ["K_S0", "Lambda0"]
    with pytest.raises(NoSuchTree, match=r"no tree 'K_S' \(trees: K_S0, Lambda0\)"):
        branch_names(str(path), "K_S")
