"""Applying exported corrections to simulation: weights equal the table lookups, variations, contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import uproot
import yaml

from calibflow.apply import Calibrator, CalibratorError, CalibratorSequence, apply_to_file, load_apply_config
from calibflow.io.root import write_ttree
from calibflow.tables.rows import read_csv
from calibflow.toys.jpsi import SIMULATION, generate_candidates
from tasks.cli import main


@pytest.fixture
def apply_setup(demo_run: Path, tmp_path: Path) -> tuple[Path, Path, dict]:
    branches = generate_candidates(5000, SIMULATION, np.random.default_rng(7))
    write_ttree(tmp_path / "mc.root", branches)
    cfg = {
        "tree": "DecayTree",
        "calibrators": [{
            "name": "tracking", "file": str(demo_run / "corrections.json"), "correction": "demo_jpsi",
            "inputs": {"p": "probe_P", "eta": "probe_ETA"}, "output": "weight_tracking",
        }],
    }
    (tmp_path / "apply.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "apply.yaml", tmp_path / "mc.root", branches


def _lookup(rows: list[dict], p: np.ndarray, eta: np.ndarray, column: str) -> np.ndarray:
    """Independent table lookup: clamp to the edges, then find the row whose bin contains the point."""
    p_edges = sorted({r["p_lo"] for r in rows} | {r["p_hi"] for r in rows})
    e_edges = sorted({r["eta_lo"] for r in rows} | {r["eta_hi"] for r in rows})
    ip = np.clip(np.searchsorted(p_edges, p, side="right") - 1, 0, len(p_edges) - 2)
    ie = np.clip(np.searchsorted(e_edges, eta, side="right") - 1, 0, len(e_edges) - 2)
    table = {(r["p_lo"], r["eta_lo"]): r[column] for r in rows}
    return np.array([table[(p_edges[a], e_edges[b])] for a, b in zip(ip, ie, strict=True)])


def test_cli_apply_weights_equal_table_lookups(apply_setup, demo_run: Path, tmp_path: Path) -> None:
    cfg, src, branches = apply_setup
    assert main(["apply", str(cfg), str(src), "--output-dir", str(tmp_path / "out")]) == 0
    out = uproot.open(tmp_path / "out" / "mc_calibrated.root")["DecayTree"].arrays(library="np")
    assert np.array_equal(out["probe_P"], branches["probe_P"])  # original branches kept
    sf = read_csv(demo_run / "scale_factors.csv")
    p, eta = branches["probe_P"], branches["probe_ETA"]
    np.testing.assert_allclose(out["weight_tracking"], _lookup(sf, p, eta, "scale_factor"), rtol=1e-12)
    up = _lookup(sf, p, eta, "scale_factor") + _lookup(sf, p, eta, "total_up")
    np.testing.assert_allclose(out["weight_tracking_up"], up, rtol=1e-12)
    down = _lookup(sf, p, eta, "scale_factor") - _lookup(sf, p, eta, "total_down")
    np.testing.assert_allclose(out["weight_tracking_down"], down, rtol=1e-12)
    assert {"weight_tracking_statUp", "weight_tracking_systDown"} <= set(out)


def test_data_skips_simulation_only_steps(apply_setup, tmp_path: Path) -> None:
    cfg_path, src, _ = apply_setup
    cfg, seq = load_apply_config(cfg_path)
    assert apply_to_file(str(src), str(tmp_path / "d.root"), cfg, seq, is_mc=False) == []


def test_hdf5_input(apply_setup, tmp_path: Path) -> None:
    import h5py

    from calibflow.io.store import TableWriter, read_columns

    cfg_path, _, branches = apply_setup
    with h5py.File(tmp_path / "in.h5", "w") as h5, TableWriter(h5) as writer:
        writer.append({k: branches[k] for k in ("probe_P", "probe_ETA")})
    cfg, seq = load_apply_config(cfg_path)
    apply_to_file(str(tmp_path / "in.h5"), str(tmp_path / "out.h5"), cfg, seq)
    cols = read_columns(tmp_path / "out.h5")
    assert cols["weight_tracking"].shape == branches["probe_P"].shape
    assert np.all(cols["weight_tracking_up"] >= cols["weight_tracking"])


class _Scale(Calibrator):
    def calibrate(self, events, variation):
        factor = {None: 1.0, "Up": 1.01, "Down": 0.99}[variation]
        return {"pt": events["pt"] * factor}


class _Weight(Calibrator):
    def calibrate(self, events, variation):
        return {"w": np.where(events["pt"] > 10, 1.0, 0.5), "sneaky": events["pt"]} if self.name == "bad" else \
            {"w": np.where(events["pt"] > 10, 1.0, 0.5)}


def test_sequence_order_variations_and_contract() -> None:
    events = {"pt": np.array([9.95, 10.05, 20.0])}
    seq = CalibratorSequence([_Scale("jes", ("pt",), ("Up", "Down")), _Weight("wgt", ("w",))])
    out = seq.apply(events)
    np.testing.assert_allclose(out["pt_Up"], events["pt"] * 1.01)
    assert out["w"].tolist() == [0.5, 1.0, 1.0]
    assert out["w_jes_Up"].tolist() == [1.0, 1.0, 1.0]  # the later step sees the varied column
    assert out["w_jes_Down"].tolist() == [0.5, 0.5, 1.0]
    with pytest.raises(CalibratorError, match=r"calibrator 'bad' wrote undeclared column\(s\) \['sneaky'\]"):
        CalibratorSequence([_Weight("bad", ("w",))]).apply(events)


def test_apply_config_errors(tmp_path: Path, demo_run: Path) -> None:
    from calibflow.config import ConfigError

    cfg = {"calibrators": [{"name": "x", "file": str(demo_run / "corrections.json"), "correction": "nope",
                            "inputs": {"p": "probe_P"}, "output": "w"}]}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"calibrators\[0\].correction: 'nope' not in"):
        load_apply_config(tmp_path / "a.yaml")
    cfg["calibrators"][0]["correction"] = "demo_jpsi"
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"no expression for correction input\(s\) \['eta'\]"):
        load_apply_config(tmp_path / "a.yaml")


def test_default_variations_of_a_per_bin_correction_are_the_merged_ones(tmp_path: Path) -> None:
    """A correction with per-bin statistical categories (issue 20): by default every merged category is applied,
    the per-bin ones only when listed in ``variations``."""
    from calibflow.apply import _categories
    from calibflow.binning.scheme import BinningScheme
    from calibflow.export.correctionlib import build_correction, write_correction_set

    scheme = BinningScheme.product([("pt", [10, 20, 50])])
    cats = {"nominal": {0: 1.0, 1: 0.9}, "up": {0: 1.1, 1: 1.0}, "down": {0: 0.9, 1: 0.8}}
    corr = build_correction("c", scheme, cats, per_bin={"stat_data_bin{k}_up": {0: 1.05, 1: 0.95}})
    write_correction_set(tmp_path / "c.json", [corr])
    assert _categories(str(tmp_path / "c.json"), "c") == ["up", "down"]
