"""The demo's content keys, pinned to values recorded from the code.

Every result folder is keyed by content (``calibflow.plan``): a change that alters any of these keys makes
every user's results recompute on their next run. Such a change must be deliberate (a ``*_VERSION`` bump in
``calibflow/plan.py``, or a new result-changing option, noted in docs/design.md) and then update the values
below. A move of code between modules (issue 14) must leave them all unchanged. Changes of record:
issue 15 added ``fit.min_candidates`` (fit keys of fitted samples and everything after them changed; prepared
tuples, binning, histograms and counted simulation did not), then made ``fit.plots`` presentation (which
figures are drawn never changes a fit: it left the fit keys, with the same reach). Issue 16 (items 4, 5) put the
signal yields with their errors in every per-bin result and gave fixed parameters error 0 (``FIT_VERSION`` 2, and
``SPLOT_VERSION`` 2 for the cached sPlot fits), and the yield columns in the tables (``TABLE_VERSION`` 2): every fit
key, fitted or counted, and the tables and combined tables changed; toy inputs, prepared tuples, binning and the
histograms of unweighted samples did not (weighted samples' histograms, which now count negative weights, have a new
key; the demo has none). Issue 18 (item 5) put the goodness-of-fit columns (``chi2``, ``ndof``, ``chi2_pvalue``,
``ks_pvalue``) in the efficiency tables (``TABLE_VERSION`` 3): the tables and combined tables changed; the fit keys did
not (the new fit options ``fail_gauss``, ``overrides`` and ``gof`` are left out of the fit section's dump while at their
defaults, and readers of older results compute the χ² p-value from their χ² and ndof). Issue 17 bumped
``PREP_VERSION`` to 2 (expression semantics: boolean addition counts, integers never wrap, constants beyond 64 bits
are floats; and checksummed HDF5): every prepared tuple and everything after it changed (histograms, fits, tables);
toy inputs and the given binning did not. Issue 20 added ``applies_to`` and ``role`` per systematic source (left out of
the source's dump at their defaults), the alias ``quadrature`` (stored as ``quadrature_max``) and
``outputs.correctionlib: {stat: ...}`` (``{stat: merged}`` is stored as ``true``), then ``outputs.correctionlib.eigen`` and
``outputs.replicas`` (left out of the outputs' dump while unset): no key changed; covariances in ``calibration.h5``
and the report's correlations section bumped ``EXPORT_VERSION`` to 3 (exports only). The export key holds the config file's path and
bytes, so it is not pinned by value but by what changes it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from calibflow.plan import Plan
from tests.conftest import DEMO

PACKAGED_DEMO = Path(__file__).resolve().parents[1] / "calibflow" / "data" / "demo.yaml"

RECORDED = {
    "toy/data": ["5a0f999820fcc5a1", "dd4da596b1e3bc8c", "65a4b8d5d0bfaa04"],
    "toy/mc": ["91f5929932b2084e", "e019cc24b7998332"],
    "prep/data": ["e898968cfd76458d", "08d92987ebae8075", "1c1256f7506c7bd0"],
    "prep/mc": ["d3ee190288ec1aaa", "88b908d478ae5761"],
    "hist/data": "d09037284e432ccc",
    "hist/mc": "330bce0c55b46fd8",
    "binning": "124fc3a489947821",
    "n_bins": 156,
    "bins": ["3a4f9685d23adac5", "e380f7244a2e1a11", "a8f0f9b70f712a24"],
    "fit/data": ["d91129ca904b4148", "51a2133e9fd36496", "6ee3094aa7a410ff"],
    "fit/mc": ["73dc4914e6dc2e51", "9d59239244454c44", "532d14e075652e7e"],
    "fit/data/sigmodel": ["5f89cf724462f66c", "f49815ee7e26bba0", "4ef1dc2d25d16f64"],
    "table": "558e8361455c0f56",
    "table/sigmodel": "1e50b16d78a2779b",
    "combined": "e53615a0af6e7945",
}


def demo_keys(config: Path, result_dir: Path, run_file: str = "") -> dict[str, object]:
    """Content keys of the demo computed by the plan alone (toy inputs and a given binning: no task runs), in
    the run of ``run_file`` (default: none)."""
    plan = Plan.create(config, result_dir)
    plan = Plan(plan.config_path, plan.result_dir, run_file=run_file)
    out: dict[str, object] = {}
    for s in ("data", "mc"):
        out[f"toy/{s}"] = [plan.toy_key(s, i) for i in range(len(plan.input_files(s)))]
        out[f"prep/{s}"] = plan.prep_keys(s)
        out[f"hist/{s}"] = plan.hist_key(s)
    out["binning"] = plan.binning_key()
    scheme = plan.scheme()
    assert scheme is not None, "the demo's binning is given (needs no data)"
    bins = [b.key for b in scheme.bins]
    out["n_bins"] = len(bins)
    picked = [bins[0], bins[len(bins) // 2], bins[-1]]
    out["bins"] = picked
    for s in ("data", "mc"):
        out[f"fit/{s}"] = plan.fit_keys(s, picked)
    assert plan.all_variants() == ["sigmodel"]
    varied = plan.with_variant("sigmodel")
    out["fit/data/sigmodel"] = varied.fit_keys("data", picked)
    out["table"] = plan.table_key()
    out["table/sigmodel"] = varied.table_key()
    out["combined"] = plan.combined_key()
    return out


@pytest.mark.parametrize("config", [DEMO, PACKAGED_DEMO], ids=["task_configs", "packaged"])
def test_demo_content_keys_are_pinned(config: Path, tmp_path: Path) -> None:
    keys = demo_keys(config, tmp_path)
    changed = {k: (RECORDED[k], v) for k, v in keys.items() if RECORDED[k] != v}
    assert not changed, f"content keys changed (recorded, now): {changed}"
    assert keys.keys() == RECORDED.keys()


def test_keys_do_not_depend_on_the_result_folder(tmp_path: Path) -> None:
    assert demo_keys(DEMO, tmp_path / "a") == demo_keys(DEMO, tmp_path / "b")


def test_a_changed_fit_model_changes_fit_and_table_keys_only(write_config, tmp_path: Path) -> None:
    """The pins can fail: a different model gives other fit keys, the same prep and histogram keys."""
    from tests.conftest import demo_dict

    d = demo_dict()
    d["fit"]["background"] = "chebyshev2"
    keys = demo_keys(write_config(d), tmp_path)
    assert keys["prep/data"] == RECORDED["prep/data"]
    assert keys["hist/data"] == RECORDED["hist/data"]
    assert keys["fit/mc"] == RECORDED["fit/mc"]  # simulation is counted: no model in its key
    assert keys["fit/data"] != RECORDED["fit/data"]
    assert keys["table"] != RECORDED["table"]


def test_presentation_changes_only_the_export_key(write_config, tmp_path: Path) -> None:
    """Description, labels, units and plot style re-export; they never refit (issue 15)."""
    from tests.conftest import demo_dict

    base = write_config(demo_dict(), "a.yaml")
    d = demo_dict()
    d["description"] = "another text"
    d["mass"]["label"], d["mass"]["unit"] = "$m(\\mu\\mu)$", "MeV"
    d["binning"]["variables"][0].update(label="$p$", unit="GeV")
    d["outputs"]["plot_style"] = {"experiment": "LHCb", "label": "Simulation"}
    relabelled = write_config(d, "b.yaml")
    a, b = Plan.create(base, tmp_path / "r"), Plan.create(relabelled, tmp_path / "r")
    keys_a, keys_b = demo_keys(base, tmp_path / "r"), demo_keys(relabelled, tmp_path / "r")
    assert keys_a == keys_b == RECORDED
    assert a.export_key() != b.export_key()


def test_export_key_follows_the_config_file_not_the_result_folder(write_config, tmp_path: Path) -> None:
    from tests.conftest import demo_dict

    path = write_config(demo_dict(), "a.yaml")
    key = Plan.create(path, tmp_path / "r1").export_key()
    assert Plan.create(path, tmp_path / "r2").export_key() == key
    path.write_text(path.read_text() + "# a comment\n")
    assert Plan.create(path, tmp_path / "r1").export_key() != key


def test_uncertainty_options_at_their_defaults_keep_the_keys(write_config, tmp_path: Path) -> None:
    """Issue 20's options at their defaults (``applies_to`` all three quantities, no ``role``, ``quadrature`` for
    ``quadrature_max``, ``outputs.correctionlib: {stat: merged}`` for ``true``, no ``eigen``, no ``replicas``) leave
    every key unchanged; a used option changes the combined key only."""
    from tests.conftest import demo_dict

    d = demo_dict()
    d["systematics"]["combine"] = "quadrature"
    d["systematics"]["sources"][0].update(applies_to=["sf", "mc", "data"], role=None)
    d["outputs"]["correctionlib"] = {"stat": "merged", "eigen": None}
    d["outputs"]["replicas"] = None
    path = write_config(d, "defaults.yaml")
    assert demo_keys(path, tmp_path / "r") == RECORDED
    assert Plan.create(path, tmp_path / "r").nominal_config.outputs == Plan.create(DEMO, tmp_path / "r").nominal_config.outputs
    d["systematics"]["sources"][0]["applies_to"] = ["sf"]
    keys = demo_keys(write_config(d, "used.yaml"), tmp_path / "r")
    assert keys["combined"] != RECORDED["combined"]
    assert {k: v for k, v in keys.items() if k != "combined"} == {k: v for k, v in RECORDED.items() if k != "combined"}


def test_eigen_and_replicas_change_only_the_export_key(write_config, tmp_path: Path) -> None:
    """``outputs.correctionlib.eigen`` and ``outputs.replicas`` (issue 20) are exports: every content key stays."""
    from tests.conftest import demo_dict

    d = demo_dict()
    base = Plan.create(write_config(d, "a.yaml"), tmp_path / "r")
    d["outputs"]["correctionlib"] = {"eigen": {"fraction": 0.99}}
    d["outputs"]["replicas"] = 50
    used = write_config(d, "b.yaml")
    assert demo_keys(used, tmp_path / "r") == RECORDED
    assert Plan.create(used, tmp_path / "r").export_key() != base.export_key()


def test_event_id_changes_only_its_samples_preparation(write_config, tmp_path: Path) -> None:
    """``samples.<s>.event_id`` (issue 20: the bootstrap over events) prepares one more column of that sample only;
    left out while unset, so configs without it keep every key."""
    from tests.conftest import demo_dict

    d = demo_dict()
    d["samples"]["mc"]["event_id"] = None
    assert demo_keys(write_config(d, "none.yaml"), tmp_path / "r") == RECORDED
    d["samples"]["mc"]["event_id"] = "eventNumber"
    keys = demo_keys(write_config(d, "event.yaml"), tmp_path / "r")
    assert keys["toy/mc"] == RECORDED["toy/mc"] and keys["prep/data"] == RECORDED["prep/data"]
    assert keys["fit/data"] == RECORDED["fit/data"]
    assert all(a != b for a, b in zip(keys["prep/mc"], RECORDED["prep/mc"], strict=True))
