"""Realistic toy J/ψ→μμ tag-and-probe samples with known truth, written as flat ROOT ntuples.

One row per (tag, probe) candidate, 1–3 probes per event (LHCb DecayTree style). Units: momenta in
GeV, masses in MeV. The probe passes with a known smooth efficiency ε(p, η) that differs between data
and simulation, so the true scale factor varies across the plane. Truth branches start with ``toy_``
and are read only by the closure table, never by the measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from calibflow.io.root import write_ttree

JPSI_MASS = 3096.9  # MeV
MASS_RANGE = (2900.0, 3300.0)  # MeV, generated window
P_RANGE = (2.0, 200.0)  # GeV
ETA_RANGE = (2.0, 5.0)
TREE = "DecayTree"


@dataclass(frozen=True)
class ToyParameters:
    """Knobs of one toy sample. Fractions are per candidate."""

    is_data: bool
    signal_fraction: float
    background_pass_probability: float = 0.55
    radiative_fraction: float = 0.15
    radiative_scale: float = 25.0  # MeV, mean of the radiative tail
    background_slope: float = -1.0 / 700.0  # 1/MeV


DATA = ToyParameters(is_data=True, signal_fraction=0.6)
SIMULATION = ToyParameters(is_data=False, signal_fraction=0.85)


def true_efficiency(p: np.ndarray, eta: np.ndarray, is_data: bool) -> np.ndarray:
    """True probe efficiency for momentum ``p`` (GeV) and pseudorapidity ``eta``."""
    p = np.asarray(p, dtype=float)
    eta = np.asarray(eta, dtype=float)
    if is_data:
        return 0.96 * (1.0 - 0.35 * np.exp(-(p - 2.0) / 5.0)) * (1.0 - 0.10 * (eta - 3.4) ** 2)
    return 0.98 * (1.0 - 0.25 * np.exp(-(p - 2.0) / 7.0)) * (1.0 - 0.06 * (eta - 3.5) ** 2)


def mass_resolution(p: np.ndarray) -> np.ndarray:
    """Dimuon mass resolution (MeV) growing with probe momentum ``p`` (GeV)."""
    return 11.0 * (1.0 + np.asarray(p) / 60.0)


def _momentum(rng: np.random.Generator, n: int) -> np.ndarray:
    """Falling spectrum on [2, 200] GeV: pdf ∝ (1 + (p−2)/10)^−3.5, by inverse transform."""
    lo, hi = P_RANGE
    a, p0 = 2.5, 10.0
    umax = 1.0 - (1.0 + (hi - lo) / p0) ** (-a)
    u = rng.uniform(0.0, umax, n)
    return lo + p0 * ((1.0 - u) ** (-1.0 / a) - 1.0)


def _eta(rng: np.random.Generator, n: int) -> np.ndarray:
    lo, hi = ETA_RANGE
    return lo + (hi - lo) * rng.beta(2.0, 2.5, n)


def _truncated_exponential(rng: np.random.Generator, n: int, slope: float, lo: float, hi: float) -> np.ndarray:
    """Samples of exp(slope·x) on [lo, hi] by inverse transform."""
    u = rng.uniform(0.0, 1.0, n)
    if abs(slope) < 1e-12:
        return lo + (hi - lo) * u
    ea, eb = np.exp(slope * lo), np.exp(slope * hi)
    return np.log(ea + u * (eb - ea)) / slope


def generate_candidates(n: int, params: ToyParameters, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``n`` tag-and-probe candidates as a dict of flat branches (see module docstring)."""
    n_probes = rng.choice([1, 2, 3], size=n, p=[0.6, 0.3, 0.1])
    event = np.repeat(np.arange(n), n_probes)[:n].astype(np.int64)
    signal = rng.uniform(size=n) < params.signal_fraction

    p = _momentum(rng, n)
    eta = _eta(rng, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    tag_p = _momentum(rng, n) + 3.0
    tag_eta = _eta(rng, n)

    mass = np.empty(n)
    ns = int(signal.sum())
    core = rng.normal(JPSI_MASS, mass_resolution(p[signal]))
    radiative = rng.uniform(size=ns) < params.radiative_fraction
    core[radiative] -= rng.exponential(params.radiative_scale, int(radiative.sum()))
    mass[signal] = core
    mass[~signal] = _truncated_exponential(rng, n - ns, params.background_slope, *MASS_RANGE)

    eff = true_efficiency(p, eta, params.is_data)
    pass_prob = np.where(signal, eff, params.background_pass_probability)
    passed = rng.uniform(size=n) < pass_prob
    # a classifier-like score for cut scans: high for passing signal probes, broad for background
    score = np.where(signal, np.where(passed, rng.beta(5.0, 1.5, n), rng.beta(1.5, 4.0, n)), rng.beta(2.0, 2.0, n))

    out = {
        "eventNumber": event,
        "Jpsi_M": mass,
        "tag_P": tag_p,
        "tag_PT": tag_p / np.cosh(tag_eta),
        "tag_ETA": tag_eta,
        "tag_isMuon": (rng.uniform(size=n) < 0.97).astype(np.int32),
        "probe_P": p,
        "probe_PT": p / np.cosh(eta),
        "probe_ETA": eta,
        "probe_PHI": phi,
        "probe_Q": rng.choice([-1, 1], size=n).astype(np.int32),
        "probe_Assoc": passed.astype(np.int32),
        "probe_score": score,
        "toy_true_eff": eff,
        "toy_is_signal": signal.astype(np.int32),
    }
    if not params.is_data:
        out["probe_TRUEID_match"] = signal.astype(np.int32)
    return out


def write_jpsi_file(path: str, n: int, is_data: bool, seed: int, **options: Any) -> None:
    """J/ψ tag-and-probe toy: ``n`` candidates with ``seed`` written atomically to the ROOT file ``path``."""
    if options:
        raise ValueError(f"toy.options: the jpsi_tag_and_probe generator takes no options, got {sorted(options)}")
    rng = np.random.default_rng(seed)
    branches = generate_candidates(n, DATA if is_data else SIMULATION, rng)
    write_ttree(path, branches, TREE)
