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
key; the demo has none). The export key holds the config file's path and
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
    "prep/data": ["577e6f0df4062598", "3eed6ae6e12da5f9", "63a94946dee31790"],
    "prep/mc": ["05b4cd7988507860", "24c49fe3f449a50a"],
    "hist/data": "cc26215fb7168d9b",
    "hist/mc": "2983d10ea3e88f00",
    "binning": "124fc3a489947821",
    "n_bins": 156,
    "bins": ["3a4f9685d23adac5", "e380f7244a2e1a11", "a8f0f9b70f712a24"],
    "fit/data": ["fc19b12ca133a747", "edfed19dffa65e07", "006da3cc4841b020"],
    "fit/mc": ["ac21e74afacb1c75", "c09c2bc70ad15dfc", "a5e8302883fdde7f"],
    "fit/data/sigmodel": ["71d32a9de42f7e6a", "e882ffc43462e8a9", "7ac53bad9966b86c"],
    "table": "85022dcf23cd1b46",
    "table/sigmodel": "0e30fe0d21faefa0",
    "combined": "ee38bb78c0064be4",
}


def demo_keys(config: Path, result_dir: Path) -> dict[str, object]:
    """Content keys of the demo computed by the plan alone (toy inputs and a given binning: no task runs)."""
    plan = Plan.create(config, result_dir)
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
