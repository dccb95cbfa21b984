"""Statistical covariance of counted efficiencies by a Poisson bootstrap over events.

Bins of a table are statistically correlated when one event has candidates in several bins (several probes per
event): their counts move together. The bootstrap draws, per replica, a Poisson(1) weight per *event* and gives it
to every candidate of the event; each replica's efficiency per bin is Σ w_event w_i pass_i / Σ w_event w_i (w_i the
candidate's weight), and the covariance of the replicas' efficiencies estimates the statistical covariance, off the
diagonal included. For methods that count (``count``, ``sweighted``: the weight column is w_i) of a sample with
``event_id`` (an expression prepared as the column ``_event``): :func:`sample_correlation`, whose correlation the
covariance's statistical part takes (:mod:`calibflow.tables.covariance`; docs/tables.md, "Covariance").

The accumulation is a numba kernel (:func:`_fill`); :func:`fill_reference` is the plain-numpy reference it is tested
against.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numba as nb
import numpy as np

if TYPE_CHECKING:
    from calibflow.plan import Plan

COUNTED = ("count", "sweighted")
"""Methods whose per-bin efficiency is a ratio of (weighted) counts: the bootstrap over events applies."""
FITTED = "fit"
"""The pass/fail fit: bootstrapped as the ratio of its candidates' signal weights (:mod:`calibflow.fit.linearise`)."""
REPLICAS = 1000
"""Bootstrap replicas of :func:`sample_correlation`: a correlation's statistical error is ≈ (1 − ρ²)/√1000 ≈ 0.03."""
MAX_DRAWS = 4_000_000
"""Poisson weights drawn at once (replicas × events): memory of about 32 MB."""


@nb.njit(cache=True)
def _fill(bins: np.ndarray, passed: np.ndarray, weights: np.ndarray, event: np.ndarray,
          boot: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    n_boot = boot.shape[0]
    sum_pass = np.zeros((n_boot, n_bins))
    sum_all = np.zeros((n_boot, n_bins))
    for b in range(n_boot):
        for i in range(bins.size):
            k = bins[i]
            if k < 0:
                continue
            w = boot[b, event[i]] * weights[i]
            sum_all[b, k] += w
            if passed[i]:
                sum_pass[b, k] += w
    return sum_pass, sum_all


def fill_reference(bins: np.ndarray, passed: np.ndarray, weights: np.ndarray, event: np.ndarray,
                   boot: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Plain-numpy reference of :func:`_fill`: per replica (row of ``boot``: a weight per event) and bin, the
    weighted passing and total counts (candidates of bin −1 left out)."""
    inside = bins >= 0
    out = []
    for b in range(boot.shape[0]):
        w = boot[b, event[inside]] * weights[inside]
        out.append((np.bincount(bins[inside], w * passed[inside], n_bins), np.bincount(bins[inside], w, n_bins)))
    return np.array([p for p, _ in out]).reshape(-1, n_bins), np.array([a for _, a in out]).reshape(-1, n_bins)


def replica_efficiencies(
    bins: np.ndarray, passed: np.ndarray, events: np.ndarray, n_bins: int, weights: np.ndarray | None = None,
    replicas: int = 200, seed: int = 1, reference: bool = False,
) -> np.ndarray:
    """Efficiency per bootstrap replica and bin (replicas × ``n_bins``; NaN where a replica has no candidate):
    ``bins`` the bin index of each candidate (−1: none), ``passed`` its decision, ``events`` its event identifier
    (any integers), ``weights`` its weight (default 1). ``reference``: the numpy reference instead of the kernel."""
    bins = np.asarray(bins, dtype=np.int64)
    if bins.size and bins.max() >= n_bins:
        raise ValueError(f"bin index {bins.max()} is beyond the {n_bins} bins")
    passed = np.asarray(passed, dtype=np.bool_)
    weights = np.ones(bins.size) if weights is None else np.asarray(weights, dtype=float)
    _, event = np.unique(np.asarray(events), return_inverse=True)
    event = event.astype(np.int64).ravel()
    n_events = int(event.max()) + 1 if event.size else 0
    rng = np.random.default_rng(seed)
    fill = fill_reference if reference else _fill
    chunk = max(1, MAX_DRAWS // max(n_events, 1))
    out = np.full((replicas, n_bins), np.nan)
    for start in range(0, replicas, chunk):
        boot = rng.poisson(1.0, (min(chunk, replicas - start), n_events)).astype(float)
        p, a = fill(bins, passed, weights, event, boot, n_bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + len(boot)] = np.where(a > 0, p / np.where(a > 0, a, 1.0), np.nan)
    return out


def nan_covariance(x: np.ndarray) -> np.ndarray:
    """Sample covariance (divisor n − 1) of the columns of ``x`` (replicas × bins), each pair over the replicas
    where both are finite; NaN where fewer than two are."""
    mask = np.isfinite(x)
    z = np.where(mask, x, 0.0)
    n = mask.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = z.sum(axis=0) / n
        d = np.where(mask, x - mean, 0.0)
        pairs = mask.T.astype(float) @ mask.astype(float)
        return np.where(pairs > 1, (d.T @ d) / (pairs - 1), np.nan)


def bootstrap_covariance(
    bins: np.ndarray, passed: np.ndarray, events: np.ndarray, n_bins: int, weights: np.ndarray | None = None,
    replicas: int = 200, seed: int = 1,
) -> np.ndarray:
    """The statistical covariance (``n_bins`` × ``n_bins``, efficiency units squared) of counted efficiencies by a
    Poisson bootstrap over events (module docstring); arguments as :func:`replica_efficiencies`."""
    return nan_covariance(replica_efficiencies(bins, passed, events, n_bins, weights, replicas, seed))


def sample_correlation(plan: Plan, sample: str, seed: int) -> np.ndarray | None:
    """The bootstrap correlation (bins × bins of ``plan``'s scheme) of the counted efficiencies of ``sample`` in
    ``plan``'s variant, from its prepared tuples (candidates in the mass range, the variant's pass decision, the
    weight column; events told apart per input file); None unless the sample counts and has ``event_id``."""
    from calibflow.io.store import read_columns
    from calibflow.prep.spec import EVENT, MASS, WEIGHT
    from calibflow.tables.covariance import correlation

    s = plan.config.samples[sample]
    if s.event_id is None or s.method not in (*COUNTED, FITTED):
        return None
    scheme = plan.load_scheme()
    lo, hi = plan.config.mass_spec.range
    bins, passed, weights, events, masses = [], [], [], [], []
    offset = 0
    for i in range(len(plan.input_files(sample))):
        if plan.is_excluded(sample, i):
            continue
        cols = read_columns(plan.prep_path(sample, i))
        m = cols[MASS]
        bins.append(np.where((m >= lo) & (m < hi), scheme.locate(cols), -1))
        passed.append(np.broadcast_to(np.asarray(cols[plan.pass_column], dtype=bool), m.shape))
        weights.append(cols.get(WEIGHT, np.ones_like(m)))
        masses.append(m)
        ids = np.unique(cols[EVENT], return_inverse=True)[1].ravel() + offset  # per file: numbers repeat across files
        offset = int(ids.max()) + 1 if ids.size else offset
        events.append(ids)
    k, ok, w = np.concatenate(bins), np.concatenate(passed), np.concatenate(weights)
    if s.method == FITTED:
        w = w * fitted_weights(plan, sample, k, np.concatenate(masses), ok)
    cov = bootstrap_covariance(k, ok, np.concatenate(events), len(scheme), w, REPLICAS, seed)
    return correlation(cov)


def fitted_weights(plan: Plan, sample: str, bins: np.ndarray, mass: np.ndarray, passed: np.ndarray) -> np.ndarray:
    """Per candidate (its bin of the scheme, −1: none; mass; pass decision) of fitted ``sample``, its signal weight
    under its bin's fit (:func:`calibflow.fit.linearise.fitted_signal_weights`; 0 in a bin without a fit), so that
    the bootstrap of the weighted counts follows the fitted efficiencies."""
    from calibflow.fit.linearise import fitted_signal_weights
    from calibflow.io.jsonio import load_numbers

    cfg = plan.config
    lo, hi = cfg.mass_spec.range
    edges = np.linspace(lo, hi, cfg.mass_spec.bins + 1)
    out = np.zeros(mass.size)
    order = np.argsort(bins, kind="stable")
    starts = np.searchsorted(bins[order], np.arange(len(plan.bin_keys()) + 1))
    for k, path in enumerate(plan.fit_paths(sample, plan.bin_keys())):
        idx = order[starts[k]:starts[k + 1]]
        try:
            result = load_numbers(path)
        except FileNotFoundError:
            continue
        w = fitted_signal_weights(mass[idx], passed[idx], edges, result, cfg.fit.background, cfg.fit.fail_width_shift)
        if w is not None:
            out[idx] = w
    return out
