"""KDE templates (issue 19): the grid KDE against scipy at equal bandwidth, boundary reflection, negative
sWeights, per-candidate reproducibility, the transform's monotonicity and closure of cut efficiencies."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from calibflow.kde.bandwidth import bandwidths, kish_neff
from calibflow.kde.grid import Axis, kde_grid, linear_binning, linear_binning_reference, scipy_kde
from calibflow.kde.sample import (
    key_of,
    kinematic_cdf,
    resample,
    resample_reference,
    transform,
    transform_reference,
    uniforms,
    uniforms_reference,
)
from calibflow.kde.template import (
    Template,
    TemplateSpec,
    build_template,
    build_templates,
    conditional,
    export_root,
    read_templates,
    write_templates,
)
from calibflow.toys.sweighted import COS_RANGE, P_RANGE, generate

AXES = {"pid": {"expr": "pid", "lo": 0.0, "hi": 1.0, "bins": 200, "bandwidth": 0.01},
        "p": {"expr": "p", "lo": P_RANGE[0], "hi": P_RANGE[1], "bins": 30},
        "cosTheta": {"expr": "cosTheta", "lo": COS_RANGE[0], "hi": COS_RANGE[1], "bins": 20}}


@pytest.fixture(scope="module")
def toy() -> tuple[dict, dict, dict[str, Template], dict[str, Template]]:
    """sWeighted data (300k candidates, 60% signal), simulation (150k) and their templates."""
    rng = np.random.default_rng(19)
    data, sim = generate(300_000, True, rng), generate(150_000, False, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the x0.5 bandwidth variation is finer than the grid
        td = build_templates(data, TemplateSpec(pid="pid", axes=AXES, weight="sw", alt_weight="sw_alt"))
        ts = build_templates(sim, TemplateSpec(pid="pid", axes=AXES, variations=False))
    return data, sim, td, ts


def test_linear_binning_numba_equals_numpy() -> None:
    rng = np.random.default_rng(1)
    axes = (Axis("a", 0, 1, 7), Axis("b", -2, 2, 5), Axis("c", 0, 3, 4))
    pts = rng.uniform([-0.1, -2.2, 0], [1.1, 2.2, 3], size=(5000, 3))
    pts[:5] = [[0, -2, 0], [1, 2, 3], [0.5, 0, 1.5], [0.03, 1.99, 2.9], [1, -2, 0]]  # edges
    w = rng.normal(0.5, 1, 5000)
    np.testing.assert_allclose(linear_binning(pts, w, axes), linear_binning_reference(pts, w, axes), atol=1e-12)
    inside = np.all((pts >= [0, -2, 0]) & (pts <= [1, 2, 3]), axis=1)
    assert linear_binning(pts, w, axes).sum() == pytest.approx(w[inside].sum(), rel=1e-12)


@pytest.mark.parametrize(("dims", "peak_tol", "rel_tol"), [(1, 0.002, 0.01), (3, 0.005, 0.03)])
def test_grid_kde_matches_scipy_at_equal_bandwidth(dims: int, peak_tol: float, rel_tol: float) -> None:
    """Cells of sigma / 4: within 0.2% (1-D) / 0.5% (3-D) of the peak, 1% / 3% where above 1% of it;
    weights include negative ones (scipy's density with our weights set directly)."""
    rng = np.random.default_rng(dims)
    x = rng.normal(size=(800, dims))
    w = rng.uniform(-0.3, 1.5, 800)
    sigma = np.array([0.4, 0.5, 0.6][:dims])
    axes = tuple(Axis(f"x{k}", -6, 6, round(12 / (0.25 * sigma[k])), "none") for k in range(dims))
    grid = kde_grid(x, w, axes, sigma) / w.sum()
    idx = tuple(rng.integers(0, a.bins, 400) for a in axes)
    at = np.column_stack([a.centres[i] for a, i in zip(axes, idx, strict=True)])
    ref = scipy_kde(x, w, sigma)(at.T)
    peak = np.abs(ref).max()
    assert np.max(np.abs(grid[idx] - ref)) < peak_tol * peak
    big = np.abs(ref) > 0.01 * peak
    assert np.max(np.abs(grid[idx][big] / ref[big] - 1)) < rel_tol


def test_bandwidth_rules_follow_scipy_and_kish() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 2)) * [1.0, 3.0]
    w = rng.uniform(0.2, 2.0, 2000)
    assert kish_neff(w) == pytest.approx(w.sum() ** 2 / (w**2).sum())
    from scipy.stats import gaussian_kde

    ref = gaussian_kde(x.T, weights=w)
    std = np.sqrt(np.diag(np.cov(x.T, aweights=w, bias=True)))
    np.testing.assert_allclose(bandwidths(x, w, "scott"), std * ref.scotts_factor(), rtol=1e-10)
    np.testing.assert_allclose(bandwidths(x, w, "silverman"), std * ref.silverman_factor(), rtol=1e-10)
    np.testing.assert_allclose(bandwidths(x, w, "scott", [2, 0.5]), std * ref.scotts_factor() * [2, 0.5], rtol=1e-10)


def test_reflection_loses_no_density_at_a_boundary() -> None:
    """An exponential on [0, inf) and a uniform PID on [0, 1]: with reflection the density in the range
    integrates to the weight in it, and the edge density is right (without it, half is lost at the edge)."""
    rng = np.random.default_rng(4)
    x = rng.exponential(1.0, 200_000)
    w = np.ones_like(x)
    inside = x <= 8
    for boundary, edge_lo, edge_hi in (("reflect", 0.92, 1.02), ("none", 0.45, 0.55)):
        axis = (Axis("x", 0.0, 8.0, 400, boundary),)
        dens = kde_grid(x[:, None], w, axis, np.array([0.08]))
        mass = dens.sum() * axis[0].width
        if boundary == "reflect":
            assert mass == pytest.approx(inside.sum(), rel=1e-9)
        else:
            assert mass < 0.98 * inside.sum()
        assert edge_lo < dens[0] / len(x) < edge_hi  # true density at 0: 1
    u = rng.random(100_000)
    axis = (Axis("pid", 0.0, 1.0, 100),)
    dens = kde_grid(u[:, None], np.ones_like(u), axis, np.array([0.05])) / len(u)
    np.testing.assert_allclose(dens, 1.0, atol=0.03)  # flat to the edges


def test_negative_weights_clipped_and_renormalised_per_cell() -> None:
    raw = np.array([[1.0, -1.0, 0.0], [3.0, -1.0, 0.0], [-2.0, 2.0, 0.0], [0.0, 4.0, -1.0]])  # (pid 4, kin 3)
    cond, info = conditional(raw, 0.25)
    np.testing.assert_allclose(cond.sum(axis=0) * 0.25, 1.0)
    assert cond.min() >= 0
    np.testing.assert_allclose(cond[:, 0], [1, 3, 0, 0] / np.float64(4 * 0.25))  # -2 clipped
    np.testing.assert_allclose(cond[:, 2], [1, 3, 2, 4] / np.float64(10 * 0.25))  # empty cell: all cells' pid density
    assert info["empty_cells"] == 1
    assert info["clipped_fraction"] == pytest.approx(5 / 15)


def test_sweighted_template_closes_on_the_signal_pid(toy) -> None:
    """The data template (60% signal, negative sWeights) is the signal's, not the mixture's."""
    data, _, td, _ = toy
    t = td["nominal"]
    assert t.info["candidates"] == 300_000 and t.info["n_eff"] < t.info["sum_weights"]
    np.testing.assert_allclose(t.density.sum(axis=0) * t.pid.width, 1.0)
    sig = data["isSignal"] == 1
    pid_all = np.tensordot(t.density, np.ones(t.density.shape[1:]), axes=t.density.ndim - 1)
    assert set(td) == {"nominal", "bandwidthDown", "bandwidthUp", "sweightsUp", "sweightsDown"}
    # the mean PID of the signal, not of signal + background, in the p-integrated density (roughly)
    mean = (t.pid.centres * pid_all).sum() / pid_all.sum()
    assert abs(mean - data["pid"][sig].mean()) < abs(mean - data["pid"].mean())


def test_templates_store_and_export(toy, tmp_path: Path) -> None:
    import uproot

    _, _, td, _ = toy
    write_templates(tmp_path / "t.h5", td, {"sample": "toy"})
    back, meta = read_templates(tmp_path / "t.h5")
    assert meta == {"sample": "toy"} and list(back) == list(td)
    for k, t in td.items():
        np.testing.assert_array_equal(back[k].density, t.density)
        np.testing.assert_array_equal(back[k].bandwidth, t.bandwidth)
        assert back[k].axes == t.axes
    export_root(tmp_path / "t.root", td)
    h = uproot.open(tmp_path / "t.root")["nominal"]
    np.testing.assert_allclose(h.values(), td["nominal"].density)
    np.testing.assert_allclose(h.axis(1).edges(), td["nominal"].axes[1].edges)


def test_uniforms_are_per_candidate_not_per_row() -> None:
    rng = np.random.default_rng(6)
    run, event, cand = rng.integers(0, 50, 10_000), rng.integers(0, 2**40, 10_000), rng.integers(0, 3, 10_000)
    key = key_of(7, "pid_resampled")
    u = uniforms([run, event, cand], key)
    np.testing.assert_array_equal(u, uniforms_reference([run, event, cand], key))
    perm = rng.permutation(10_000)
    np.testing.assert_array_equal(uniforms([run[perm], event[perm], cand[perm]], key), u[perm])
    np.testing.assert_array_equal(uniforms([run.astype(float), event, cand.astype(np.int32)], key), u)
    assert not np.any(uniforms([run, event, cand], key_of(8, "pid_resampled")) == u)
    from scipy.stats import kstest

    assert kstest(u, "uniform").pvalue > 1e-3 and u.min() > 0 and u.max() < 1


def test_numba_kernels_equal_numpy_references(toy) -> None:
    """3-D templates with clamped and NaN inputs, and a 1-D template (no kinematics)."""
    _, sim, td, ts = toy
    kin = np.column_stack([sim["p"], sim["cosTheta"]])[:3000]
    kin[:3] = [[0.1, -1.0], [9.0, 1.0], [np.nan, 0.0]]  # clamped, clamped, NaN
    u = uniforms([sim["__event__"][:3000]], key_of(0, "x"))
    r = resample(td["nominal"], kin, u)
    np.testing.assert_allclose(r, resample_reference(td["nominal"], kin, u), atol=1e-12)
    assert np.isnan(r[2]) and np.all(np.isfinite(r[3:]))
    pid = sim["pid"][:3000].copy()
    pid[3:5] = [np.nan, 1.5]  # NaN, clamped
    t = transform(ts["nominal"], td["nominal"], pid, kin)
    np.testing.assert_allclose(t, transform_reference(ts["nominal"], td["nominal"], pid, kin), atol=1e-12)
    assert np.isnan(t[3]) and t[4] == pytest.approx(td["nominal"].pid.hi, abs=td["nominal"].pid.width)
    data_pid = sim["pid"][:5000, None]
    one_d = build_template(data_pid, np.ones(5000), (Axis("pid", 0, 1, 100),), np.array([0.02]))
    r1 = resample(one_d, np.zeros((1000, 0)), u[:1000])
    np.testing.assert_allclose(r1, resample_reference(one_d, np.zeros((1000, 0)), u[:1000]), atol=1e-12)
    assert abs(np.mean(r1 > 0.5) - np.mean(data_pid > 0.5)) < 0.05


def test_transform_is_monotone_per_kinematic_cell(toy) -> None:
    _, _, td, ts = toy
    x = np.linspace(0, 1, 2001)
    for p in np.linspace(*P_RANGE, 7):
        for c in np.linspace(*COS_RANGE, 5):
            kin = np.tile([p, c], (len(x), 1))
            y = transform(ts["nominal"], td["nominal"], x, kin)
            assert np.all(np.diff(y) >= 0), (p, c)
            f = kinematic_cdf(ts["nominal"], x, kin)
            assert np.all(np.diff(y)[np.diff(f) > 1e-9] > 0)  # strictly where the simulation has density


THRESHOLDS = (0.2, 0.4, 0.6, 0.8, 0.9)
P_BINS = (0.5, 1.2, 2.0, 5.0)


def test_cut_efficiencies_close_at_five_thresholds(toy, tmp_path: Path) -> None:
    """Efficiencies of 5 cuts on the resampled and the transformed simulation, per p bin, against sWeighted
    counting on the calibration data: |pull| < 3 for each of the 15 per column, mean squared pull < 2.5
    (statistical errors of both); the raw simulation does not close; the transform keeps the ranks."""
    from calibflow.kde.validate import closure_table, rank_correlation, write_closure

    data, sim, td, ts = toy
    kin = np.column_stack([sim["p"], sim["cosTheta"]])
    columns = {"simulation": sim["pid"],
               "resampled": resample(td["nominal"], kin, uniforms([sim["__run__"], sim["__event__"]], key_of(1, "pid"))),
               "transformed": transform(ts["nominal"], td["nominal"], sim["pid"], kin)}
    rows = closure_table(data, data["sw"], data["pid"], sim, columns, {"p": P_BINS}, THRESHOLDS)
    assert len(rows) == 15
    for name in ("resampled", "transformed"):
        pulls = np.array([r[f"{name}_pull"] for r in rows])
        assert np.all(np.abs(pulls) < 3), (name, pulls.round(2))
        assert np.mean(pulls**2) < 2.5, (name, pulls.round(2))
    assert np.max(np.abs([r["simulation_pull"] for r in rows])) > 10
    rho = rank_correlation(columns["transformed"], sim["pid"])
    assert rho > 0.98
    paths = write_closure(tmp_path, rows, list(columns), {"rank_correlation_transformed": rho})
    assert all(Path(p).stat().st_size > 0 for p in paths)


def test_templates_warn_on_a_coarse_grid() -> None:
    cols = {"x": np.random.default_rng(0).random(100)}
    with pytest.warns(UserWarning, match="cell width"):
        build_templates(cols, TemplateSpec(pid="x", axes={"x": {"expr": "x", "lo": 0, "hi": 1, "bins": 10}}))
