"""Config validation: every error names the key (or file) to fix, in one line, with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from calibflow.config import ConfigError, load_config, parse_config
from calibflow.plan import Plan

from .conftest import DEMO, demo_dict


def test_demo_config_is_valid() -> None:
    cfg = load_config(DEMO)
    assert cfg.name == "demo_jpsi"
    assert cfg.samples["mc"].method == "count"
    assert [v.name for v in cfg.binning.variables] == ["p", "eta"]
    assert cfg.reference_sample == "mc"


def test_packaged_demo_equals_task_configs_demo() -> None:
    packaged = Path(__file__).resolve().parents[1] / "calibflow" / "data" / "demo.yaml"
    assert packaged.read_text() == DEMO.read_text()


def _error(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="cfg.yaml")
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_typo_key_suggests_the_right_one() -> None:
    d = demo_dict()
    d["samples"]["data"]["tre"] = d["samples"]["data"].pop("tree")
    assert "samples.data.tre: unknown key (did you mean 'tree'?)" in _error(d)


def test_typo_top_level_key() -> None:
    d = demo_dict()
    d["binnig"] = d.pop("binning")
    msg = _error(d)
    assert "binnig: unknown key (did you mean 'binning'?)" in msg
    assert "binning: required key is missing" in msg


def test_wrong_type() -> None:
    d = demo_dict()
    d["mass"]["bins"] = "many"
    assert "mass.bins:" in _error(d)


def test_non_increasing_edges() -> None:
    d = demo_dict()
    d["binning"]["variables"][1]["edges"] = [2.0, 3.0, 3.0, 5.0]
    assert "binning.variables[1].edges: must be strictly increasing" in _error(d)


def test_bad_role_and_range() -> None:
    d = demo_dict()
    d["samples"]["mc"]["role"] = "simulation"
    d["mass"]["range"] = [3200, 3000]
    msg = _error(d)
    assert "samples.mc.role:" in msg and "mass.range: must be [low, high]" in msg


def test_sample_without_files(tmp_path: Path) -> None:
    d = demo_dict()
    del d["toy"]
    assert "samples.data.files: give at least one file" in _error(d)


def test_missing_input_file(tmp_path: Path, write_config) -> None:
    d = demo_dict()
    del d["toy"]
    d["samples"]["data"]["files"] = ["nowhere/*.root"]
    d["samples"]["mc"]["files"] = [str(tmp_path / "missing_mc.root")]
    cfg = write_config(d)
    with pytest.raises(ConfigError, match=r"samples.data.files\[0\]: no file matches '.*nowhere/\*.root'"):
        Plan.create(cfg, tmp_path / "res")


def test_globs_follow_added_and_removed_files(tmp_path: Path) -> None:
    """A file-name glob is expanded again when its folder changes (files added, removed, renamed), and
    gives the same sorted absolute paths as glob itself; a glob with a wildcard folder is always expanded."""
    import glob
    import os
    import time

    from calibflow.config import _GLOBS, resolve_files

    d = demo_dict()
    del d["toy"]
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    for name in ("f2.root", "f1.root", "a/f3.root"):
        (data / name).write_bytes(b"x")
    d["samples"]["data"]["files"] = ["data/*.root"]
    d["samples"]["mc"]["files"] = ["data/*/*.root"]
    cfg = parse_config(d)
    settled = time.time() - 60  # an old folder: its glob is cached (a fresh one is expanded every time)
    os.utime(data, (settled, settled))

    def expected(pattern: str) -> list[str]:
        return sorted(os.path.abspath(p) for p in glob.glob(str(tmp_path / pattern)))

    assert resolve_files(cfg, "data", tmp_path) == expected("data/*.root") == [str(data / "f1.root"),
                                                                              str(data / "f2.root")]
    assert resolve_files(cfg, "data", tmp_path) == expected("data/*.root")
    assert str(tmp_path / "data/*.root") in _GLOBS  # from the cache
    (data / "f0.root").write_bytes(b"x")
    assert resolve_files(cfg, "data", tmp_path)[0] == str(data / "f0.root")
    (data / "f2.root").rename(data / "f2.root.bak")
    (data / "f1.root").unlink()
    assert resolve_files(cfg, "data", tmp_path) == expected("data/*.root") == [str(data / "f0.root")]
    (data / "b").mkdir()
    (data / "b" / "f4.root").write_bytes(b"x")
    assert resolve_files(cfg, "mc", tmp_path) == expected("data/*/*.root") == [str(data / "a" / "f3.root"),
                                                                             str(data / "b" / "f4.root")]


def test_bad_expression_names_key(tmp_path: Path, write_config) -> None:
    d = demo_dict()
    d["selection"]["probe"] = "p > 2 and eta.x < 5"
    with pytest.raises(Exception, match=r"selection.probe: attribute access"):
        Plan.create(write_config(d), tmp_path / "res")


def test_yaml_syntax_error(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nsamples: [unclosed\n")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        load_config(p)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d.update(fitt=d.pop("fit")), "fitt: unknown key (did you mean 'fit'?)"),
        (lambda d: d["mass"].update(bins=[1]), "mass.bins:"),
        (lambda d: d["binning"]["variables"][0].update(edges=[5, 4]), "binning.variables[0].edges: must be strictly"),
        (
            lambda d: (d.pop("toy"), d["samples"]["data"].update(files=["none*.root"]),
                       d["samples"]["mc"].update(files=["none*.root"])),
            "samples.data.files[0]: no file",
        ),
        (lambda d: d["fit"].update(signal="lorentz"), "fit.signal: unknown signal model 'lorentz'"),
    ],
)
def test_cli_reports_bad_config_in_one_line(tmp_path: Path, write_config, edit, expected: str) -> None:
    d = demo_dict()
    edit(d)
    cfg = write_config(d)
    out = subprocess.run([sys.executable, "-m", "tasks.cli", "run", str(cfg), "--result-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 2
    assert expected in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "demo_jpsi").exists()


@pytest.mark.parametrize("recipe", sorted(p.name for p in DEMO.parent.glob("*.yaml")))
def test_every_recipe_names_its_axes(recipe: str) -> None:
    """The demo and every recipe give each binning variable (in every method) a label or a known name, a unit
    where it has one, and the mass its label and unit (issue 15): no figure or table shows a bare column name."""
    import yaml

    from calibflow.config import KNOWN_LABELS

    cfg = load_config(DEMO.parent / recipe)
    raw = yaml.safe_load((DEMO.parent / recipe).read_text())
    variables = [*cfg.binning.variables]
    for override in cfg.methods.values():
        variables += [parse_config({**raw, **override}).binning.variables[i]
                      for i in range(len(override.get("binning", {}).get("variables", [])))]
    for v in variables:
        assert v.label is not None or v.name in KNOWN_LABELS, f"{recipe}: {v.name} has no label"
        momentum_like = v.name.lower().endswith(("pt", "p"))
        assert v.display_unit or not momentum_like, f"{recipe}: {v.name} has no unit"
    if cfg.mass is not None:
        assert cfg.mass.label != "mass" and cfg.mass.unit, f"{recipe}: the mass has no label or unit"
    assert cfg.outputs.plot_style.label or cfg.outputs.plot_style.experiment


def test_methods_and_the_sections_they_need() -> None:
    """``sweighted`` and ``count`` fit nothing (no ``mass`` needed); ``yield`` needs no ``pass`` but measures no
    efficiency, so it is never a scale factor's sample; every other method needs ``pass`` (issue 16)."""
    d = demo_dict()
    del d["mass"]
    assert "mass: required for fitted samples (data); or set their method: count or sweighted" in _error(d)
    d["samples"]["data"].update(method="sweighted", weight="sw")
    assert parse_config(d).mass is None
    d = demo_dict()
    del d["pass"]
    assert "pass: required key is missing (samples data, mc measure a pass fraction" in _error(d)
    d["samples"]["mc"]["method"] = d["samples"]["data"]["method"] = "yield"
    cfg = parse_config(d)
    assert cfg.pass_ is None and cfg.pass_expression == "True" and cfg.scale_factor_pairs == []
    d["working_points"] = {"tight": "probe_score > 0.9"}
    assert "working_points: every sample's method is yield" in _error(d)
    d = demo_dict()
    d["samples"]["mc"]["method"] = "yield"
    assert parse_config(d).scale_factor_pairs == []  # the only simulation measures a yield
    d["reference"] = "mc"
    assert "reference: sample 'mc' has method yield, which measures no efficiency" in _error(d)


def _with_sources(combine: str, *sources: dict) -> dict:
    d = demo_dict()
    d["systematics"] = {"combine": combine, "sources": list(sources)}
    return d


def _alt(name: str, **extra: object) -> dict:
    return {"name": name, "vary": {"fit": {"background": "chebyshev2"}}, **extra}


def test_combination_conventions_and_their_roles() -> None:
    """quadrature is quadrature_max; an EGM convention needs the EGM role of every source (given, or the
    source's name), one source per role, one-sided, and egm_2023 its three alternative fits (issue 20)."""
    assert parse_config(_with_sources("quadrature")).systematics.combine == "quadrature_max"
    fits = [_alt("altSig"), _alt("altBkg"), _alt("bkgsig", role="altSigBkg")]
    cfg = parse_config(_with_sources("egm_2023", *fits, _alt("altMC")))
    assert [s.egm_role for s in cfg.systematics.sources] == ["altSig", "altBkg", "altSigBkg", "altMC"]
    assert ("systematics: sources[0] (sigmodel).role: combine egm_classic needs the EGM role of every source"
            in _error(_with_sources("egm_classic", _alt("sigmodel"))))
    assert ("systematics: sources[2] (bkgsig).role: altSigBkg is not part of egm_classic"
            in _error(_with_sources("egm_classic", *fits)))
    assert ("systematics: sources[1] (other).role: altSig is the role of 'altSig' already"
            in _error(_with_sources("egm_classic", _alt("altSig"), _alt("other", role="altSig"))))
    two_sided = {"name": "altMC", "up": {"fit": {}}, "down": {"fit": {}}}
    assert "sources[0] (altMC): an EGM role takes one alternative" in _error(_with_sources("egm_classic", two_sided))
    assert ("systematics: sources: combine egm_2023 needs a source of each role altSig, altBkg, altSigBkg; "
            "missing: altSigBkg" in _error(_with_sources("egm_2023", *fits[:2])))
    mixed = [*fits[:2], _alt("bkgsig", role="altSigBkg", applies_to=["data"])]
    assert "give them the same applies_to" in _error(_with_sources("egm_2023", *mixed))
    assert "systematics.combine: Input should be" in _error(_with_sources("egm"))
    assert "systematics.sources[0].role: Input should be 'altSig'" in _error(
        _with_sources("quadrature_max", _alt("x", role="altsig")))


def test_applies_to() -> None:
    cfg = parse_config(_with_sources("quadrature_max", _alt("a", applies_to=["sf", "data"])))
    assert cfg.systematics.sources[0].applies_to == ["sf", "data"]
    assert "systematics.sources[0].applies_to: ['mc', 'mc']: name each of data, mc, sf at most once" in _error(
        _with_sources("quadrature_max", _alt("a", applies_to=["mc", "mc"])))
    assert "systematics.sources[0].applies_to[0]: Input should be 'data', 'mc' or 'sf'" in _error(
        _with_sources("quadrature_max", _alt("a", applies_to=["simulation"])))
    assert "systematics.sources[0].applies_to: List should have at least 1 item" in _error(
        _with_sources("quadrature_max", _alt("a", applies_to=[])))


def test_correctionlib_output_forms() -> None:
    """outputs.correctionlib: true/false as before, or {stat: merged|per_bin|both}; {stat: merged} is true."""
    for given, stat in ((True, "merged"), (False, None), ({"stat": "merged"}, "merged"), ({}, "merged"),
                        ({"stat": "per_bin"}, "per_bin"), ({"stat": "both"}, "both")):
        d = demo_dict()
        d["outputs"]["correctionlib"] = given
        outputs = parse_config(d).outputs
        assert outputs.correctionlib_stat == stat, given
        if stat == "merged":
            assert outputs.correctionlib is True  # the same dump, and export key, as true
    for given, msg in (({"stat": "perbin"}, "outputs.correctionlib: stat: 'perbin' is not one of merged, per_bin, "
                                            "both (did you mean 'per_bin'?)"),
                       ({"stats": "both"}, "outputs.correctionlib: 'stats' is not an option of outputs.correctionlib "
                                           "(did you mean 'stat'?)"),
                       ("yes", "outputs.correctionlib: give true, false or a mapping {stat: merged|per_bin|both}")):
        d = demo_dict()
        d["outputs"]["correctionlib"] = given
        assert msg in _error(d), given
