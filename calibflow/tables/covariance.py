"""Bin-to-bin covariance of a table per uncertainty part, its eigen-variations and toy replicas.

Per table (``efficiency_<sample>``, ``yield_<sample>`` for a sample of method ``yield``, ``scale_factor_<data>``)
and per part, an N × N matrix over the table's bins (ordered by ``bin``), in the table's units squared
(docs/tables.md, "Covariance"):

* statistical: σ_k σ_l ρ_kl with σ_k = (err_down + err_up)/2 (the symmetrised interval) and ρ the identity, or for
  a counted sample with ``event_id`` the bootstrap correlation over events (:mod:`calibflow.tables.bootstrap`);
  scale factors keep the data and simulation parts apart (``stat_data``, ``stat_mc`` from ``stat_data_down/up``,
  ``stat_mc_down/up``, each with its sample's ρ), tables without them have one part ``stat``;
* a systematic source: δ δᵀ with δ its signed shift per bin (:func:`calibflow.tables.systematics.signed_shifts`:
  one-sided v_run − v₀, two-sided (v_up − v_down)/2), fully correlated over the bins, of rank one;
* ``total``: the sum of the parts.

:func:`eigen_variations` decomposes a covariance into orthogonal shifts (Σ_i v_i v_iᵀ = C when all are kept);
:func:`sample_replicas` draws toy tables from it. :func:`write_h5` / :func:`read_h5` store them in the master
table ``calibration.h5`` under ``covariance/<table>/<part>`` and ``replicas/<table>``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import h5py
import numpy as np

from calibflow.tables.rows import YIELD_METHOD, Row
from calibflow.tables.systematics import value_columns

TOTAL = "total"
"""Name of the sum of every part."""
COVARIANCE, REPLICAS = "covariance", "replicas"
"""Groups of ``calibration.h5``."""
CONVENTION = ("statistical parts sigma_k sigma_l rho_kl with sigma = (err_down + err_up)/2 and rho the identity or the "
              "bootstrap correlation over events (samples with event_id); a systematic source delta delta^T with "
              "delta its signed shift per bin: one-sided v_run - v0, two-sided (v_up - v_down)/2; total = sum of parts")
"""What the matrices are, stored as the attribute ``convention`` of each table's group."""
_STAT_PARTS = {"stat_data": ("stat_data_down", "stat_data_up"), "stat_mc": ("stat_mc_down", "stat_mc_up")}
_RELATIVE_ZERO = 1e-12
"""Eigenvalues at or below this fraction of the largest are taken as zero (rounding of a singular matrix)."""


@dataclass
class TableCovariance:
    """The covariance of one table: ``bins`` (the tables' ``bin`` column, in order), nominal ``value`` per bin and
    one matrix per part (statistical ones first, then the sources in config order)."""

    name: str
    bins: np.ndarray
    value: np.ndarray
    parts: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def total(self) -> np.ndarray:
        """The sum of every part (N × N)."""
        return np.sum(list(self.parts.values()), axis=0) if self.parts else np.zeros((len(self.bins),) * 2)


def symmetric_sigma(down: np.ndarray, up: np.ndarray) -> np.ndarray:
    """The symmetrised error (down + up)/2 of an interval [v − down, v + up] (same units)."""
    return 0.5 * (np.asarray(down, dtype=float) + np.asarray(up, dtype=float))


def table_covariance(
    name: str, rows: Sequence[Row], shifts: Sequence[Mapping[str, float]], value: str, sources: Sequence[str],
    stat_correlation: Mapping[str, np.ndarray] | None = None,
) -> TableCovariance:
    """The covariance of the table ``rows`` (one sample or data sample; ``shifts`` per row per source, in the order
    of the rows) of ``value`` (``efficiency``: a row of method ``yield`` its ``n_sig``; ``scale_factor``).
    ``stat_correlation``: per statistical part (``stat``, ``stat_data``, ``stat_mc``) a correlation matrix over all
    bins of the scheme (by ``bin``; the bootstrap over events): the part is then σ σᵀ ∘ ρ instead of diagonal."""
    order = sorted(range(len(rows)), key=lambda i: int(rows[i]["bin"]))
    rows = [rows[i] for i in order]
    col, down, up = value_columns(rows[0], value)
    out = TableCovariance(name, np.array([int(r["bin"]) for r in rows]), _array(rows, col))
    stat = {p: c for p, c in _STAT_PARTS.items() if all(c[0] in r and c[1] in r for r in rows)}
    for part, (d, u) in (stat or {"stat": (down, up)}).items():
        sigma = symmetric_sigma(_array(rows, d), _array(rows, u))
        rho = (stat_correlation or {}).get(part)
        out.parts[part] = np.diag(sigma**2) if rho is None else np.outer(sigma, sigma) * _within(rho, out.bins)
    for src in sources:
        delta = np.array([float(shifts[i][src]) for i in order])
        out.parts[src] = np.outer(delta, delta)
    return out


def _within(rho: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """The correlation matrix ``rho`` (all bins) restricted to ``bins``: 1 on the diagonal, 0 where not finite."""
    sub = np.nan_to_num(rho[np.ix_(bins, bins)], nan=0.0)
    np.fill_diagonal(sub, 1.0)
    return sub


def _array(rows: Sequence[Row], col: str) -> np.ndarray:
    return np.array([float(r[col]) for r in rows])


def covariances(
    eff: Sequence[Row], eff_shifts: Sequence[Mapping[str, float]], sf: Sequence[Row],
    sf_shifts: Sequence[Mapping[str, float]], sources: Sequence[str],
    correlations: Mapping[str, np.ndarray] | None = None,
) -> list[TableCovariance]:
    """Every table's covariance: each sample's efficiencies (``efficiency_<sample>``, or ``yield_<sample>``) and
    each data sample's scale factors (``scale_factor_<data>``); ``*_shifts`` as
    :func:`calibflow.tables.systematics.signed_shifts` gives them for ``eff`` and ``sf``; ``correlations``: per
    sample the statistical correlation of its efficiencies over the scheme's bins (samples not in it: diagonal)."""
    corr = correlations or {}
    out = []
    for rows, shifts, key, value in ((eff, eff_shifts, "sample", "efficiency"), (sf, sf_shifts, "data", "scale_factor")):
        for group in sorted({str(r[key]) for r in rows}):
            mine = [i for i, r in enumerate(rows) if str(r[key]) == group]
            first = rows[mine[0]]
            kind = "yield" if first.get("method") == YIELD_METHOD else value
            sides = {"stat": group} if key == "sample" else {"stat_data": group, "stat_mc": str(first.get("mc"))}
            rho = {part: corr[s] for part, s in sides.items() if s in corr}
            out.append(table_covariance(f"{kind}_{group}", [rows[i] for i in mine], [shifts[i] for i in mine],
                                        value, sources, rho))
    return out


def eigen_variations(cov: np.ndarray, count: int | None = None, fraction: float | None = None) -> np.ndarray:
    """The leading eigen-variations of the covariance ``cov`` (N × N), one per row (k × N, the table's units):
    v_i = √λ_i u_i for the eigenvalues λ_1 ≥ λ_2 ≥ ... > 0, signed so that each one's largest component is positive.
    Kept: the ``count`` largest, or the fewest whose λ sum to at least ``fraction`` of the trace; none given: all.
    Σ_i v_i v_iᵀ is ``cov`` when all are kept. Entries that are not finite (a bin missing in a run) count 0."""
    c = np.nan_to_num(np.asarray(cov, dtype=float), nan=0.0, posinf=0.0, neginf=0.0)
    lam, vec = np.linalg.eigh(0.5 * (c + c.T))
    lam, vec = lam[::-1], vec[:, ::-1]
    positive = int(np.sum(lam > _RELATIVE_ZERO * max(lam[0], 0.0))) if len(lam) and lam[0] > 0 else 0
    keep = positive
    if count is not None:
        keep = min(count, positive)
    elif fraction is not None and positive:
        share = np.cumsum(lam[:positive]) / np.sum(lam[:positive])
        keep = int(np.searchsorted(share, fraction - 1e-12) + 1)
    v = (vec[:, :keep] * np.sqrt(lam[:keep])).T
    signs = np.sign(v[np.arange(keep), np.argmax(np.abs(v), axis=1)]) if keep else np.ones(0)
    return v * signs[:, None]


def table_seed(key: str, table: str) -> int:
    """The fixed seed (64 bits) of the replicas of ``table`` whose tables have the content key ``key``."""
    return int(hashlib.sha256(f"{key}/{table}".encode()).hexdigest()[:16], 16)


def sample_replicas(value: np.ndarray, cov: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` toy tables (n × N) drawn from the multivariate normal of mean ``value`` and covariance ``cov`` through
    its eigen-variations (a singular covariance is fine); a bin whose value is not finite stays NaN."""
    v = eigen_variations(cov)
    z = np.random.default_rng(seed).standard_normal((n, len(v)))
    return np.asarray(value, dtype=float)[None, :] + z @ v


def write_h5(h5: h5py.File, tables: Sequence[TableCovariance], replicas: int | None = None, key: str = "") -> None:
    """Store ``tables`` in ``h5``: ``covariance/<table>/<part>`` and ``total`` (N × N), ``bins``, ``value``, the
    attributes ``parts`` and ``convention``; with ``replicas``, ``replicas/<table>`` (replicas × N, attributes
    ``seed`` from ``key`` and the table's name, ``bins``) for every scale-factor table."""
    for t in tables:
        g = h5.require_group(COVARIANCE).create_group(t.name)
        g["bins"], g["value"] = t.bins, t.value
        for part, m in {**t.parts, TOTAL: t.total}.items():
            g[part] = m
        g.attrs["parts"] = list(t.parts)
        g.attrs["convention"] = CONVENTION
        if replicas and t.name.startswith("scale_factor_"):
            seed = table_seed(key, t.name)
            d = h5.require_group(REPLICAS).create_dataset(t.name, data=sample_replicas(t.value, t.total, replicas, seed))
            d.attrs["seed"], d.attrs["bins"] = seed, t.bins


def read_h5(path: str) -> dict[str, TableCovariance]:
    """The covariances stored by :func:`write_h5` in ``path``, by table name (none: an empty mapping)."""
    out: dict[str, TableCovariance] = {}
    with h5py.File(path, "r") as h5:
        for name, g in h5.get(COVARIANCE, {}).items():
            parts = {str(p): g[str(p)][...] for p in g.attrs["parts"]}
            out[name] = TableCovariance(name, g["bins"][...], g["value"][...], parts)
    return out


def correlation(cov: np.ndarray) -> np.ndarray:
    """The correlation matrix of ``cov``: C_ij / √(C_ii C_jj); NaN where a variance is 0 or not finite, 1 on
    the diagonal where it is positive."""
    sigma = np.sqrt(np.diag(cov))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = cov / np.outer(sigma, sigma)
    rho[~np.isfinite(rho)] = math.nan
    return np.clip(rho, -1.0, 1.0)
