"""A config derived from another (``base:``): the merge rule, the chain's errors, and a plan that sees an edited
base (its cached config, its content keys and the config hash of what it publishes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from calibflow.config import ConfigError, config_chain, load_config, load_document, merge_documents
from calibflow.plan import Plan
from tests.conftest import tiny_demo_dict


def test_mappings_merge_key_by_key_and_anything_else_is_replaced() -> None:
    base = {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "l": [1, 2, 3], "s": "base", "n": 5}
    derived = {"a": {"y": {"q": 20}, "z": 3}, "l": [9], "s": None, "new": {"k": 1}}
    assert merge_documents(base, derived) == {"a": {"x": 1, "y": {"p": 1, "q": 20}, "z": 3}, "l": [9], "s": None,
                                              "n": 5, "new": {"k": 1}}
    assert base == {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "l": [1, 2, 3], "s": "base", "n": 5}  # untouched
    assert merge_documents({"a": {"x": 1}}, {"a": [1]}) == {"a": [1]}  # a mapping replaced by a list


def _write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_a_chain_of_two_bases(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "recipe.yaml", tiny_demo_dict())
    _write(tmp_path / "sub" / "era.yaml", {"base": "../recipe.yaml", "name": "era", "toy": {"seed": 7}})
    _write(tmp_path / "sub" / "quick.yaml", {"base": "era.yaml", "name": "quick", "fit": {"plots": "none"}})
    chain = config_chain(tmp_path / "sub" / "quick.yaml")
    assert chain == [str(tmp_path / "sub" / "quick.yaml"), str(tmp_path / "sub" / "era.yaml"),
                     str(tmp_path / "recipe.yaml")]
    cfg = load_config(tmp_path / "sub" / "quick.yaml")
    demo = load_config(tmp_path / "recipe.yaml")
    assert cfg.name == "quick" and cfg.toy.seed == 7 and cfg.fit.plots == "none"
    assert cfg.binning == demo.binning and cfg.samples == demo.samples
    assert "base" not in load_document(tmp_path / "sub" / "quick.yaml")


@pytest.mark.parametrize(("files", "message"), [
    ({"a.yaml": {"base": "missing.yaml"}}, r"a\.yaml: base: 'missing\.yaml' is not a file \(.*missing\.yaml; relative"),
    ({"a.yaml": {"base": "b.yaml"}, "b.yaml": {"base": "a.yaml"}}, r"base: .*a\.yaml -> .*b\.yaml -> .*a\.yaml is a "
                                                                   r"cycle"),
    ({"a.yaml": {"base": "a.yaml"}}, "is a cycle"),
    ({"a.yaml": {"base": 3}}, "base: give the path of the config this one derives from, got 3"),
    ({"a.yaml": {"base": "b.yaml"}, "b.yaml": [1, 2]}, r"b\.yaml: a base config must be a mapping of keys"),
])
def test_a_bad_chain_is_an_error_naming_the_file(tmp_path: Path, files: dict, message: str) -> None:
    for name, doc in files.items():
        (tmp_path / name).write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "a.yaml")


def test_too_long_a_chain(tmp_path: Path) -> None:
    for i in range(12):
        _write(tmp_path / f"c{i}.yaml", {"base": f"c{i + 1}.yaml"})
    _write(tmp_path / "c12.yaml", tiny_demo_dict())
    with pytest.raises(ConfigError, match="more than 8 bases"):
        load_config(tmp_path / "c0.yaml")


def test_a_plan_sees_its_base_edited(tmp_path: Path) -> None:
    """The cached config, the toy key and the config hash follow an edit of the base, not only of the file run."""
    _write(tmp_path / "recipe.yaml", tiny_demo_dict())
    era = _write(tmp_path / "era.yaml", {"base": "recipe.yaml", "name": "era"})
    plan = Plan.create(str(era), str(tmp_path / "res"))
    seed, sha, toy = plan.config.toy.seed, plan.config_sha256(), plan.toy_key("data", 0)
    d = tiny_demo_dict()
    d["toy"]["seed"] = seed + 1
    _write(tmp_path / "recipe.yaml", d)
    st = os.stat(tmp_path / "recipe.yaml")
    os.utime(tmp_path / "recipe.yaml", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later mtime for sure
    assert plan.config.toy.seed == seed + 1
    assert plan.config_sha256() != sha and plan.toy_key("data", 0) != toy
    own = Plan.create(str(tmp_path / "recipe.yaml"), str(tmp_path / "res"))
    import hashlib

    assert own.config_sha256() == hashlib.sha256((tmp_path / "recipe.yaml").read_bytes()).hexdigest()  # no base
