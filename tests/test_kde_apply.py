"""The ``pid_resample`` and ``pid_transform`` calibrators of ``calibflow apply`` (issue 19): columns and
variations, equal to the library's values, the same per candidate in a shuffled tuple, config errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import uproot
import yaml

from calibflow.apply import apply_to_file, load_apply_config
from calibflow.config import ConfigError
from calibflow.io.root import write_ttree
from calibflow.kde.sample import key_of, resample, transform, uniforms
from calibflow.kde.template import TemplateSpec, build_templates, write_templates
from calibflow.toys.sweighted import generate

AXES = {"pid": {"expr": "pid", "lo": 0.0, "hi": 1.0, "bins": 100, "bandwidth": 0.02},
        "p": {"expr": "p", "lo": 0.5, "hi": 5.0, "bins": 20},
        "cosTheta": {"expr": "cosTheta", "lo": -0.866, "hi": 0.956, "bins": 10}}
VARIATIONS = ("bandwidthDown", "bandwidthUp", "sweightsUp", "sweightsDown")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("kde_apply")
    rng = np.random.default_rng(5)
    data, sim = generate(60_000, True, rng), generate(5_000, False, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_templates(tmp / "data.h5", build_templates(data, TemplateSpec(pid="pid", axes=AXES, weight="sw", alt_weight="sw_alt")))
        write_templates(tmp / "sim.h5", build_templates(sim, TemplateSpec(pid="pid", axes=AXES)))
    mc = {f"K_{k}" if k in ("p", "cosTheta", "pid") else k: v for k, v in sim.items()}
    write_ttree(tmp / "mc.root", mc, "variables")
    cfg = {"tree": "variables", "calibrators": [
        {"name": "kaon_resample", "type": "pid_resample", "templates": "data.h5",
         "kinematics": {"p": "K_p", "cosTheta": "K_cosTheta"}, "identity": ["__run__", "__event__", "__candidate__"],
         "seed": 3},
        {"name": "kaon_transform", "type": "pid_transform", "templates": "data.h5", "simulation_templates": "sim.h5",
         "kinematics": {"p": "K_p", "cosTheta": "K_cosTheta"}, "pid": "K_pid", "output": "K_pid_transformed"},
    ]}
    (tmp / "apply.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return tmp, mc


def _read(path: Path) -> dict[str, np.ndarray]:
    return uproot.open(path)["variables"].arrays(library="np")


def test_columns_and_variations_equal_the_library(setup) -> None:
    from calibflow.kde.template import read_templates

    tmp, mc = setup
    cfg, seq = load_apply_config(tmp / "apply.yaml")
    new = apply_to_file(str(tmp / "mc.root"), str(tmp / "out.root"), cfg, seq)
    expected = {"pid_resampled", "K_pid_transformed"}
    expected |= {f"{c}_{v}" for c in ("pid_resampled", "K_pid_transformed") for v in VARIATIONS}
    assert set(new) == expected
    out = _read(tmp / "out.root")
    data, _ = read_templates(tmp / "data.h5")
    sim, _ = read_templates(tmp / "sim.h5")
    kin = np.column_stack([mc["K_p"], mc["K_cosTheta"]])
    u = uniforms([mc["__run__"], mc["__event__"], mc["__candidate__"]], key_of(3, "pid_resampled"))
    np.testing.assert_array_equal(out["pid_resampled"], resample(data["nominal"], kin, u))
    np.testing.assert_array_equal(out["pid_resampled_bandwidthUp"], resample(data["bandwidthUp"], kin, u))
    np.testing.assert_array_equal(out["K_pid_transformed"], transform(sim["nominal"], data["nominal"], mc["K_pid"], kin))
    # a variation without a simulation variant uses the nominal simulation template
    np.testing.assert_array_equal(out["K_pid_transformed_sweightsUp"],
                                  transform(sim["nominal"], data["sweightsUp"], mc["K_pid"], kin))
    assert 0.2 < np.mean(out["pid_resampled_bandwidthUp"] != out["pid_resampled"]) <= 1
    assert np.all((out["pid_resampled"] >= 0) & (out["pid_resampled"] <= 1))


def test_values_follow_the_candidate_not_the_row(setup) -> None:
    tmp, mc = setup
    perm = np.random.default_rng(0).permutation(len(mc["K_p"]))
    write_ttree(tmp / "shuffled.root", {k: v[perm] for k, v in mc.items()}, "variables")
    cfg, seq = load_apply_config(tmp / "apply.yaml")
    apply_to_file(str(tmp / "mc.root"), str(tmp / "a.root"), cfg, seq)
    apply_to_file(str(tmp / "shuffled.root"), str(tmp / "b.root"), cfg, seq)
    a, b = _read(tmp / "a.root"), _read(tmp / "b.root")
    for col in ("pid_resampled", "pid_resampled_sweightsDown", "K_pid_transformed"):
        np.testing.assert_array_equal(b[col], a[col][perm])


def test_cli_apply_with_pid_steps(setup) -> None:
    from tasks.cli import main

    tmp, _ = setup
    assert main(["apply", str(tmp / "apply.yaml"), str(tmp / "mc.root"), "--output-dir", str(tmp / "cli")]) == 0
    assert "pid_resampled_sweightsUp" in uproot.open(tmp / "cli" / "mc_calibrated.root")["variables"]


@pytest.mark.parametrize(("change", "message"), [
    ({"kinematics": {"p": "K_p", "cos": "K_cosTheta"}}, r"calibrators\[0\].templates: kinematics"),
    ({"variations": ["bandwidthUp", "nope"]}, r"calibrators\[0\].variations: \['nope'\] not in"),
    ({"templates": "missing.h5"}, r"calibrators\[0\].templates: no such file"),
    ({"identity": []}, r"identity"),
    ({"type": "pid_resampler"}, r"calibrators\[0\]: Input tag .pid_resampler."),
])
def test_config_errors_name_the_key(setup, change: dict, message: str) -> None:
    tmp, _ = setup
    cfg = yaml.safe_load((tmp / "apply.yaml").read_text())
    cfg["calibrators"][0].update(change)
    (tmp / "bad.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=message):
        load_apply_config(tmp / "bad.yaml")
