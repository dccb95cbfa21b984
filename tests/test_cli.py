"""The ``calibflow`` command as users meet it (issue 16): --version, help without a command, did-you-mean for
commands and options, no abbreviated options, ``--sample A B``, examples and exit codes in --help, the README
synopsis equal to the parser, ``inspect``, and the config path printed once in every error."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from calibflow import __version__
from calibflow.io.root import write_ttree
from calibflow.toys.registry import write_toy_file
from tasks.cli import _parser, main

from .conftest import tiny_demo_dict

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``calibflow *argv`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


# --- the parser --------------------------------------------------------------------------------------------
def test_version() -> None:
    code, out, _ = run_cli("--version")
    assert code == 0 and out.strip() == f"calibflow {__version__}"


def test_no_command_prints_the_help_with_examples_and_exit_codes() -> None:
    code, out, err = run_cli()
    assert code == 0 and not err
    assert out.startswith("usage: calibflow") and "examples:" in out and "calibflow inspect" in out
    assert re.search(r"exit codes:\n  0  success\n  1  a task failed.*\n  2  a bad config", out)
    code, out, _ = run_cli("run", "--help")
    assert code == 0 and "exit codes:" in out and "--skip-bad-files" in out


@pytest.mark.parametrize(("argv", "hint"), [
    (["rn"], "(did you mean 'run'?)"),
    (["inpsect", "x.root"], "(did you mean 'inspect'?)"),
    (["run", "--worker", "2"], "unrecognized arguments: --worker (did you mean '--workers'?)"),
    (["run", "--skip-bad", "c.yaml"],
     "unrecognized arguments: --skip-bad (did you mean '--skip-bad-files'?)"),
    (["fit-bin", "c.yaml", "--bin", "0", "--smaple", "data"], "(did you mean '--sample'?)"),
    (["scheduler", "stauts"], "(did you mean 'status'?)"),
])
def test_unknown_commands_and_options_get_a_did_you_mean(argv: list[str], hint: str) -> None:
    code, out, err = run_cli(*argv)
    assert code == 2 and not out
    assert hint in err.splitlines()[-1], err


def test_options_are_never_abbreviated() -> None:
    for argv in (["run", "--work", "2"], ["run", "--result", "x"],
                 ["fit-bin", "c.yaml", "--bin", "0", "--samp", "a"]):
        code, _, err = run_cli(*argv)
        assert code == 2 and "unrecognized arguments" in err, argv


def test_several_samples_after_one_option() -> None:
    args = _parser().parse_args(["fit-bin", "c.yaml", "--bin", "3", "--sample", "data", "mc"])
    assert args.sample == ["data", "mc"] and args.bin_index == 3 and args.config == "c.yaml"
    args = _parser().parse_args(["fit-bin", "c.yaml", "--sample", "a", "--bin", "3", "--sample", "b", "c"])
    assert args.sample == ["a", "b", "c"]


# --- the README synopsis -----------------------------------------------------------------------------------
VALUES = {"CONFIG": "c.yaml", "N": "2", "DIR": "out", "H": "localhost", "P": "8082", "ID": "5",
          "NAME": "data", "...": "mc", "FILE": "f.root", "T": "DecayTree", "GLOB": "probe_*",
          "APPLY_CONFIG": "a.yaml", "TUPLE...": "t.root"}
"""A value for each metavariable of the synopsis."""


def synopsis() -> list[str]:
    """The README's command lines (continuation lines joined, comments dropped)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Commands\n\n```text\n(.*?)```", text, re.S)
    assert block, "README: no ```text block under ## Commands"
    lines: list[str] = []
    for raw in block.group(1).splitlines():
        line = raw.split("#")[0].rstrip()
        if raw.startswith(" "):
            lines[-1] += " " + line.strip()
        elif line:
            lines.append(line)
    return lines


def _options(parser: Any) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings if o not in ("-h", "--help")}


def test_readme_synopsis_equals_the_parser() -> None:
    """Every command of the parser has its README line naming exactly its options; the line, with values for
    its metavariables and every optional part given, parses to those values."""
    parser = _parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    seen = set()
    for line in synopsis():
        words = line.split()
        assert words[0] == "calibflow", line
        if words[1].startswith("--"):
            assert set(words[1:]) <= _options(parser), line
            continue
        name = words[1]
        assert name in commands, f"README names an unknown command: {line}"
        seen.add(name)
        sub = commands[name]
        assert set(re.findall(r"--[a-z][a-z-]*", line)) == _options(sub), line
        argv = []
        for word in re.sub(r"[\[\]]", " ", " ".join(words[1:])).split():
            argv.append(VALUES.get(word, "start" if "|" in word else word))
        args = parser.parse_args(argv)
        for option in _options(sub):
            value = getattr(args, sub._option_string_actions[option].dest)
            assert value not in (None, False, 0), (line, option)
    assert seen == set(commands), f"commands missing from the README synopsis: {set(commands) - seen}"
    assert any(line == "calibflow --version" for line in synopsis())


# --- inspect -----------------------------------------------------------------------------------------------
def test_inspect_lists_trees_branches_types_and_compression(tmp_path: Path) -> None:
    path = tmp_path / "data.root"
    write_toy_file(str(path), 2000, is_data=True, seed=1)
    code, out, err = run_cli("inspect", str(path))
    assert code == 0, err
    assert "TTree DecayTree: 2,000 entries, 15 branches" in out
    row = next(ln.split() for ln in out.splitlines() if ln.split()[:1] == ["Jpsi_M"])
    assert row[1] == "double" and row[-1] == "ZLIB-1" and float(row[-2]) > 1.0
    code, out, _ = run_cli("inspect", str(path), "--filter", "tag_*", "--tree", "DecayTree")
    shown = [ln.split()[0] for ln in out.splitlines() if ln.startswith("  tag_")]
    assert code == 0 and shown == ["tag_P", "tag_PT", "tag_ETA", "tag_isMuon"] and "4 shown" in out


def test_inspect_jagged_and_uncompressed(tmp_path: Path) -> None:
    import uproot

    path = tmp_path / "nano.root"
    write_toy_file(str(path), 200, is_data=False, seed=2, generator="z_mumu_nanoaod")
    code, out, _ = run_cli("inspect", str(path), "--filter", "Muon_p*")
    assert code == 0 and re.search(r"^  Muon_pt +float\[\] +[0-9.]+ kB +[0-9.]+ +ZSTD-1$", out, re.M), out
    raw = tmp_path / "raw.root"
    with uproot.recreate(raw, compression=None) as f:
        f.mktree("t", {"x": np.float64}).extend({"x": np.arange(100.0)})
    code, out, _ = run_cli("inspect", str(raw))
    assert code == 0 and re.search(r"^  x +double +[0-9]+ B +1\.00 +none$", out, re.M), out


def test_inspect_errors_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "data.root"
    write_ttree(path, {"x": np.ones(3)})
    code, _, err = run_cli("inspect", str(path), "--tree", "DecayTre")
    assert code == 2 and err == f"calibflow: error: {path}: no tree 'DecayTre' (did you mean 'DecayTree'?)\n"
    (tmp_path / "text.root").write_text("no ROOT here\n" * 30)
    code, _, err = run_cli("inspect", str(tmp_path / "text.root"))
    assert code == 2 and err.count("\n") == 1 and "cannot read as a ROOT file" in err


# --- the config path, once, in every error -----------------------------------------------------------------
@pytest.fixture(scope="module")
def counted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a tiny counted calibration (real files) that has run once: c.yaml, data.root, mc.root,
    res/."""
    folder = tmp_path_factory.mktemp("counted")
    write_toy_file(str(folder / "data.root"), 4000, is_data=True, seed=1)
    write_toy_file(str(folder / "mc.root"), 4000, is_data=False, seed=2)
    d = tiny_demo_dict()
    del d["toy"]
    d["name"] = "counted"
    d["samples"]["data"].update(files=["data.root"], method="count")
    d["samples"]["mc"]["files"] = ["mc.root"]
    d["outputs"] = {"correctionlib": False, "root": False, "markdown": False, "latex": False, "plots": False,
                    "report": False}
    (folder / "c.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    code, _, err = run_cli("run", str(folder / "c.yaml"), "--result-dir", str(folder / "res"),
                           "--workers", "1", "--quiet")
    assert code == 0, err
    return folder


def _edit(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], list[str]]:
    """A ``calibflow run`` of the counted config changed by ``change`` (as x.yaml beside it)."""
    def make(folder: Path) -> list[str]:
        d = yaml.safe_load((folder / "c.yaml").read_text())
        change(d)
        (folder / "x.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
        return ["run", "x.yaml", "--result-dir", "res_x"]
    return make


def _text(text: str) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        (folder / "x.yaml").write_text(text)
        return ["run", "x.yaml", "--result-dir", "res_x"]
    return make


def _taken(folder: Path) -> list[str]:
    (folder / "x.yaml").write_text((folder / "c.yaml").read_text())
    return ["run", "x.yaml", "--result-dir", "res"]  # c.yaml's results are published there


def _apply(calibrators: Any) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        (folder / "x.yaml").write_text(yaml.safe_dump({"calibrators": calibrators}))
        return ["apply", "x.yaml", "mc.root", "--output-dir", "out"]
    return make


ERRORS: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "unknown key": (_edit(lambda d: d.update(selecton=d.pop("selection"))),
                    "selecton: unknown key (did you mean 'selection'?)"),
    "YAML syntax": (_text("name: x\nsamples: [unclosed\n"), "YAML syntax error"),
    "config not found": (lambda folder: ["run", "x.yaml"], "config file not found"),
    "expression syntax": (_edit(lambda d: d["selection"].update(tag="tag_PT >> > 1")),
                          "selection.tag: syntax error"),
    "unknown function": (_edit(lambda d: d.update({"pass": "abss(probe_Assoc) == 1"})),
                         "pass: unknown function 'abss'"),
    "no file matches": (_edit(lambda d: d["samples"]["data"].update(files=["nodata*.root"])),
                        "samples.data.files[0]: no file matches"),
    "toy generator": (_edit(lambda d: d.update(toy={"generator": "jpsi",
                                                    "samples": {"data": {"candidates": 10}}})),
                      "toy.generator: unknown generator 'jpsi'"),
    "fit model": (_edit(lambda d: d["fit"].update(signal="gaus")), "fit.signal: unknown signal model 'gaus'"),
    "fit parameter": (_edit(lambda d: d["fit"]["parameters"].update(foo={"value": 1})),
                      "fit.parameters.foo: not a parameter of crystalball + exponential"),
    "branch": (_edit(lambda d: d.update({"pass": "probe_Asoc == 1"})),
               "pass: 'probe_Asoc' is neither a branch"),
    "lumi mask": (_edit(lambda d: d["samples"]["data"].update(lumi_mask="golden.json")),
                  "samples.data.lumi_mask: certification JSON"),
    "variation key": (_edit(lambda d: d.update(systematics={"sources": [{"name": "a",
                                                                         "vary": {"selecton": {}}}]})),
                      "systematics.sources[0].vary: 'selecton' cannot be varied (did you mean 'selection'?)"),
    "variation value": (_edit(lambda d: d.update(systematics={"sources": [{"name": "a", "vary": {
        "mass": {"range": [3, 1]}}}]})), "systematics.sources[0] (a): mass.range: must be [low, high]"),
    "variation expression": (_edit(lambda d: d.update(systematics={"sources": [{"name": "a", "vary": {
        "selection": {"tag": "tag_PT >> > 1"}}}]})), "systematics.sources[0] (a): selection.tag: syntax error"),
    "name taken": (_taken, "name 'counted' is taken"),
    "fit-bin before a run": (lambda folder: ["fit-bin", "c.yaml", "--bin", "0", "--result-dir", "res_new"],
                             "no binning yet"),
    "fit-bin bin": (lambda folder: ["fit-bin", "c.yaml", "--bin", "7", "--result-dir", "res"],
                    "--bin 7: the binning has bins 0..1"),
    "fit-bin sample": (lambda folder: ["fit-bin", "c.yaml", "--bin", "0", "--sample", "dat",
                                       "--result-dir", "res"],
                       "--sample dat: not a sample (did you mean 'data'?)"),
    "apply not found": (lambda folder: ["apply", "x.yaml", "mc.root", "--output-dir", "out"],
                        "config file not found"),
    "apply key": (_apply([{"nme": "w"}]), "calibrators[0]"),
    "apply file": (_apply([{"name": "w", "file": "nope.json", "correction": "c", "inputs": {},
                            "output": "w"}]),
                   "calibrators[0].file: no such file"),
}


@pytest.mark.parametrize("kind", list(ERRORS))
def test_every_error_names_the_config_once(kind: str, counted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make, message = ERRORS[kind]
    monkeypatch.chdir(counted)
    for leftover in ("x.yaml",):
        (counted / leftover).unlink(missing_ok=True)
    argv = make(counted)
    config = "c.yaml" if "c.yaml" in argv else "x.yaml"
    code, out, err = run_cli(*argv)
    assert code == 2, (out, err)
    assert err.count("\n") == 1, err
    assert err.startswith(f"calibflow: error: {config}: "), err
    assert err.count(config) == 1, err
    assert message in err, err


def test_fit_bin_refits_several_samples_named_after_one_option(counted: Path) -> None:
    code, out, err = run_cli("fit-bin", str(counted / "c.yaml"), "--bin", "1", "--sample", "data", "mc",
                             "--result-dir", str(counted / "res"))
    assert code == 0, err
    assert re.search(r"^data bin 1 .*efficiency", out, re.M), out
    assert re.search(r"^mc bin 1 .*efficiency", out, re.M), out
    manifest = json.loads((counted / "res" / "counted" / "manifest.json").read_text())
    assert manifest["config"] == str(counted / "c.yaml")
