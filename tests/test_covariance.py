"""Issue 20 (items 2-4): covariance per source, eigen-variations, toy replicas and the Poisson bootstrap, each
checked against independent numbers (hand computations, numpy's covariance and eigenvalues, correctionlib's
evaluator)."""

from __future__ import annotations

import math
from pathlib import Path

import correctionlib
import h5py
import numpy as np
import pytest

from calibflow.binning.scheme import BinningScheme
from calibflow.config import EigenOutput, OutputsConfig, Variation
from calibflow.export.correctionlib import build_correction, write_correction_set
from calibflow.export.uncertainty import eigen_categories
from calibflow.tables.bootstrap import (
    _fill,
    bootstrap_covariance,
    fill_reference,
    nan_covariance,
    replica_efficiencies,
)
from calibflow.tables.covariance import (
    TableCovariance,
    correlation,
    covariances,
    eigen_variations,
    read_h5,
    sample_replicas,
    table_seed,
    write_h5,
)
from calibflow.tables.systematics import Runs, signed_shifts


def _row(k: int, sf: float, **extra: float) -> dict:
    return {"data": "data", "mc": "mc", "bin": k, "x_lo": float(k), "x_hi": k + 1.0, "scale_factor": sf,
            "err_down": 0.02, "err_up": 0.04, **extra}


SOURCES = [Variation(name="model", vary={"fit": {}}), Variation(name="range", up={"mass": {}}, down={"mass": {}}),
           Variation(name="effonly", vary={"fit": {}}, applies_to=["data", "mc"])]


def test_shifts_and_covariance_by_hand() -> None:
    """One-sided: δ = v_run − v₀ (signed); two-sided: (up − down)/2; a source not counting on scale factors: 0;
    statistical: diag(((down + up)/2)²) per part; total = sum of the parts."""
    nominal = [_row(0, 1.00, stat_data_down=0.01, stat_data_up=0.03, stat_mc_down=0.02, stat_mc_up=0.02),
               _row(1, 0.90, stat_data_down=0.02, stat_data_up=0.02, stat_mc_down=0.01, stat_mc_up=0.05)]
    varied = {"model": [_row(0, 1.03), _row(1, 0.88)], "rangeUp": [_row(0, 1.01), _row(1, 0.95)],
              "rangeDown": [_row(0, 0.97), _row(1, 0.91)], "effonly": [_row(0, 2.0), _row(1, 2.0)]}
    shifts = signed_shifts(nominal, Runs(varied, SOURCES, "quadrature_max"), "scale_factor", ("data", "bin"))
    assert shifts == [pytest.approx({"model": 0.03, "range": 0.02, "effonly": 0.0}),
                      pytest.approx({"model": -0.02, "range": 0.02, "effonly": 0.0})]
    (cov,) = covariances([], [], nominal, shifts, [s.name for s in SOURCES])
    assert cov.name == "scale_factor_data" and list(cov.parts) == ["stat_data", "stat_mc", "model", "range", "effonly"]
    np.testing.assert_allclose(cov.parts["stat_data"], [[0.02**2, 0], [0, 0.02**2]])
    np.testing.assert_allclose(cov.parts["stat_mc"], [[0.02**2, 0], [0, 0.03**2]])
    np.testing.assert_allclose(cov.parts["model"], [[0.0009, -0.0006], [-0.0006, 0.0004]])  # anti-correlated
    np.testing.assert_allclose(cov.parts["range"], [[0.0004, 0.0004], [0.0004, 0.0004]])
    np.testing.assert_allclose(cov.parts["effonly"], 0.0)
    np.testing.assert_allclose(cov.total, sum(cov.parts.values()))
    np.testing.assert_allclose(correlation(cov.parts["model"]), [[1, -1], [-1, 1]])


def test_efficiency_tables_and_a_missing_run_bin() -> None:
    """Efficiency tables take err_down/up (one ``stat`` part); a bin missing in a run gives NaN in its row and
    column of that source, never a silent 0."""
    rows = [{"sample": "data", "bin": k, "x_lo": float(k), "x_hi": k + 1.0, "efficiency": 0.9, "err_down": 0.01,
             "err_up": 0.03} for k in range(2)]
    varied = {"model": [{**rows[0], "efficiency": 0.95}], "rangeUp": rows, "rangeDown": rows, "effonly": rows}
    shifts = signed_shifts(rows, Runs(varied, SOURCES, "quadrature_max", {"data": "data"}), "efficiency",
                           ("sample", "bin"))
    (cov,) = covariances(rows, shifts, [], [], [s.name for s in SOURCES])
    assert cov.name == "efficiency_data" and list(cov.parts) == ["stat", "model", "range", "effonly"]
    np.testing.assert_allclose(np.diag(cov.parts["stat"]), [0.02**2] * 2)
    assert cov.parts["model"][0, 0] == pytest.approx(0.05**2) and np.isnan(cov.parts["model"][1]).all()


def _random_cov(n: int, rank: int, seed: int = 4) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(n, rank)) * np.linspace(1, 0.1, rank)
    return a @ a.T


def test_eigen_variations_reproduce_the_covariance() -> None:
    """All kept: Σ v vᵀ = C; the leading k: C minus the dropped eigenvalues' part (numpy's eigvalsh for the norm);
    a fraction keeps the fewest reaching it; a rank-r matrix has r variations."""
    cov = _random_cov(8, 8)
    v = eigen_variations(cov)
    np.testing.assert_allclose(v.T @ v, cov, atol=1e-12)
    lam = np.sort(np.linalg.eigvalsh(cov))[::-1]
    v3 = eigen_variations(cov, count=3)
    assert v3.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(cov - v3.T @ v3), np.sqrt(np.sum(lam[3:] ** 2)), rtol=1e-9)
    np.testing.assert_allclose(np.sum(v3**2, axis=1), lam[:3], rtol=1e-10)  # |v_i|² = λ_i
    share = np.cumsum(lam) / lam.sum()
    k = int(np.argmax(share >= 0.9)) + 1
    assert len(eigen_variations(cov, fraction=0.9)) == k and share[k - 2] < 0.9
    assert len(eigen_variations(_random_cov(6, 2))) == 2
    assert len(eigen_variations(_random_cov(6, 2), count=5)) == 2
    assert all(row[np.argmax(np.abs(row))] > 0 for row in v)  # sign convention


def test_eigen_categories_through_correctionlib(tmp_path: Path) -> None:
    """eig<i>_up/down (total) and <part>_eig<i>_up/down (per source) in corrections.json, read back with
    correctionlib's evaluator: the outer products of the shifts reproduce the covariance (all kept) or its
    leading part (truncated)."""
    scheme = BinningScheme.product([("pt", [10, 20, 50, 200]), ("abseta", [0.0, 1.2, 2.4])])
    n = len(scheme)
    rng = np.random.default_rng(7)
    value = 1 + 0.05 * rng.normal(size=n)
    delta = 0.02 * rng.normal(size=n)
    cov = TableCovariance("scale_factor_data", np.arange(n), value,
                          {"stat_data": np.diag(rng.uniform(1e-4, 4e-4, n)), "model": np.outer(delta, delta)})
    nominal = {k: float(x) for k, x in enumerate(value)}
    pt = np.array([scheme.bins[k].center["pt"] for k in range(n)])
    eta = np.array([scheme.bins[k].center["abseta"] for k in range(n)])
    for eigen, expected in ((EigenOutput(count=n), cov.total), (EigenOutput(count=2), None),
                            (EigenOutput(fraction=1.0, of="per_source"), cov.total)):
        cats = {"nominal": nominal, **eigen_categories(cov, eigen)}
        write_correction_set(tmp_path / "c.json", [build_correction("sf", scheme, cats)])
        corr = correctionlib.CorrectionSet.from_file(str(tmp_path / "c.json"))["sf"]
        ups = [k for k in cats if k.endswith("_up")]
        shifts = np.array([corr.evaluate(pt, eta, k) - value for k in ups])
        downs = np.array([value - corr.evaluate(pt, eta, k.replace("_up", "_down")) for k in ups])
        np.testing.assert_allclose(downs, shifts, atol=1e-12)
        if eigen.of == "per_source":
            assert sorted(ups) == sorted([f"stat_data_eig{i}_up" for i in range(n)] + ["model_eig0_up"])
        if expected is None:  # truncated: the best rank-2 approximation
            lam, vec = np.linalg.eigh(cov.total)
            expected = (vec[:, -2:] * lam[-2:]) @ vec[:, -2:].T
            assert ups == ["eig0_up", "eig1_up"]
        np.testing.assert_allclose(shifts.T @ shifts, expected, atol=1e-12)


def test_replicas_sample_the_covariance() -> None:
    """Replicas' sample covariance (numpy) is the covariance within its statistical error; the seed is fixed by the
    table key and the table; a singular covariance is fine."""
    cov = _random_cov(5, 3) * 1e-4
    value = np.linspace(0.9, 1.1, 5)
    n = 20000
    r = sample_replicas(value, cov, n, table_seed("abc", "scale_factor_data"))
    sigma = np.sqrt(np.diag(cov))
    tolerance = 5 * np.sqrt((np.outer(sigma**2, sigma**2) + cov**2) / n)
    assert np.all(np.abs(np.cov(r, rowvar=False) - cov) < tolerance)
    assert np.all(np.abs(r.mean(axis=0) - value) < 5 * sigma / math.sqrt(n))
    np.testing.assert_array_equal(r, sample_replicas(value, cov, n, table_seed("abc", "scale_factor_data")))
    assert table_seed("abc", "scale_factor_data") != table_seed("abd", "scale_factor_data")


def test_h5_round_trip(tmp_path: Path) -> None:
    """covariance/<table>/<part> and total, replicas/<table> for scale factors only, read back as written."""
    cov = TableCovariance("scale_factor_data", np.arange(3), np.ones(3), {"stat_data": np.eye(3) * 1e-4,
                                                                           "model": np.full((3, 3), 4e-4)})
    eff = TableCovariance("efficiency_mc", np.arange(3), np.full(3, 0.9), {"stat": np.eye(3) * 1e-4})
    with h5py.File(tmp_path / "c.h5", "w") as h5:
        write_h5(h5, [eff, cov], replicas=10, key="k")
    with h5py.File(tmp_path / "c.h5") as h5:
        np.testing.assert_allclose(h5["covariance/scale_factor_data/total"][...], np.eye(3) * 1e-4 + 4e-4)
        assert list(h5["replicas"]) == ["scale_factor_data"] and h5["replicas/scale_factor_data"].shape == (10, 3)
        assert h5["replicas/scale_factor_data"].attrs["seed"] == table_seed("k", "scale_factor_data")
    back = read_h5(str(tmp_path / "c.h5"))
    assert list(back["scale_factor_data"].parts) == ["stat_data", "model"]
    np.testing.assert_allclose(back["efficiency_mc"].total, eff.total)


# ---------------------------------------------------------------- bootstrap ------------------------------------


def _events(n_events: int, seed: int = 3) -> tuple[np.ndarray, ...]:
    """Two probes per event: the first in bin 0 or 1, the second in bin 2, same decision half of the time."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, 2, n_events)
    p1 = rng.random(n_events) < 0.8
    p2 = np.where(rng.random(n_events) < 0.5, p1, rng.random(n_events) < 0.8)
    bins = np.column_stack([first, np.full(n_events, 2)]).ravel()
    passed = np.column_stack([p1, p2]).ravel()
    events = np.repeat(rng.permutation(10 * n_events)[:n_events], 2)  # identifiers, not indices
    return bins, passed, events


def test_bootstrap_kernel_equals_numpy_reference() -> None:
    bins, passed, events = _events(500)
    bins[::7] = -1
    weights = np.random.default_rng(1).uniform(0.5, 1.5, bins.size)
    boot = np.random.default_rng(2).poisson(1.0, (20, 500)).astype(float)
    event = np.unique(events, return_inverse=True)[1]
    for a, b in zip(_fill(bins, passed, weights, event, boot, 4), fill_reference(bins, passed, weights, event, boot, 4),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(replica_efficiencies(bins, passed, events, 4, weights, 30, seed=5),
                               replica_efficiencies(bins, passed, events, 4, weights, 30, seed=5, reference=True),
                               rtol=1e-12)


def test_bootstrap_covariance_independent_numbers() -> None:
    """Diagonal: the binomial variance ε(1 − ε)/N; bins sharing events correlate as the two probes' decisions do
    (analytic, to first order: cov(ε_a, ε_2) = (mean_a(p₁p₂) − ε_a mean_a(p₂)) / N over the n_a events of bin a);
    bins 0 and 1 share no event: 0; the covariance of
    the replicas is numpy's."""
    n_events = 4000
    bins, passed, events = _events(n_events)
    x = replica_efficiencies(bins, passed, events, 3, replicas=800, seed=11)
    np.testing.assert_allclose(nan_covariance(x), np.cov(x, rowvar=False), rtol=1e-12)
    cov = bootstrap_covariance(bins, passed, events, 3, replicas=800, seed=11)
    b1, p1, p2 = bins[::2], passed[::2], passed[1::2]
    for k in range(2):
        n_k, eps = np.sum(b1 == k), p1[b1 == k].mean()
        assert cov[k, k] == pytest.approx(eps * (1 - eps) / n_k, rel=0.15)
        both = np.mean(p1[b1 == k] & p2[b1 == k]) - eps * p2[b1 == k].mean()
        assert cov[k, 2] == pytest.approx(both / n_events, rel=0.3)  # positive: the decisions are correlated
    assert cov[2, 2] == pytest.approx(p2.mean() * (1 - p2.mean()) / n_events, rel=0.15)
    assert abs(cov[0, 1]) < 0.1 * math.sqrt(cov[0, 0] * cov[1, 1])
    with pytest.raises(ValueError, match="beyond the 2 bins"):
        replica_efficiencies(bins, passed, events, 2)


# ---------------------------------------------------------------- config ---------------------------------------


@pytest.mark.parametrize(("value", "message"), [
    ({"eigen": 0}, r"outputs\.correctionlib\.eigen\.count: 0"),
    ({"eigen": True}, r"outputs\.correctionlib\.eigen: give a count"),
    ({"eigen": {"fraction": 1.5}}, r"outputs\.correctionlib\.eigen\.fraction: 1\.5"),
    ({"eigen": {"count": 2, "fraction": 0.9}}, r"outputs\.correctionlib\.eigen: give count .* one of the two"),
    ({"eigen": {"cout": 2}}, r"'cout' is not an option of outputs\.correctionlib\.eigen \(did you mean 'count'"),
    ({"eigen": {"count": 2, "of": "each"}}, r"outputs\.correctionlib\.eigen\.of: 'each'"),
    ({"eigenn": 2}, r"'eigenn' is not an option of outputs\.correctionlib"),
])
def test_bad_eigen_options_name_the_key(value: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OutputsConfig(correctionlib=value)


def test_outputs_forms() -> None:
    """eigen: N is {count: N}; without eigen and replicas the outputs dump as before (no new keys)."""
    assert OutputsConfig(correctionlib={"eigen": 5}).eigen == EigenOutput(count=5)
    assert OutputsConfig(correctionlib={"stat": "per_bin", "eigen": {"fraction": 0.99, "of": "per_source"}}).eigen == \
        EigenOutput(fraction=0.99, of="per_source")
    plain = OutputsConfig().model_dump(mode="json")
    assert "replicas" not in plain and OutputsConfig(correctionlib={"stat": "merged", "eigen": None}).correctionlib is True
    assert "eigen" not in OutputsConfig(correctionlib={"stat": "both"}).model_dump(mode="json")["correctionlib"]
    assert OutputsConfig(replicas=100).model_dump(mode="json")["replicas"] == 100
    with pytest.raises(ValueError, match="replicas"):
        OutputsConfig(replicas=0)


def test_event_id_needs_a_counted_or_fitted_method(write_config) -> None:
    """samples.<s>.event_id on a sample that is neither counted nor fitted (sideband) is an error naming the sample
    and the key; on a fitted or counted one it is taken."""
    from calibflow.config import ConfigError, load_config
    from tests.conftest import small_demo_dict

    d = small_demo_dict()
    d["samples"]["data"]["event_id"] = "eventNumber"
    assert load_config(write_config(d)).samples["data"].event_id == "eventNumber"  # method fit
    d["samples"]["data"]["method"] = "sideband"
    d["fit"]["sideband"] = {"signal": [3049, 3148], "sidebands": [[2950, 3001], [3199, 3250]]}
    with pytest.raises(ConfigError, match=r"samples\.data: event_id: only methods count, sweighted and fit"):
        load_config(write_config(d))
    d["samples"]["data"]["event_id"] = None
    d["samples"]["mc"]["event_id"] = "eventNumber"
    assert load_config(write_config(d)).samples["mc"].event_id == "eventNumber"
