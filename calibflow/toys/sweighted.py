"""sWeighted PID toys for the KDE templates: a PID score against (p, cos theta) with exact truth.

Two generators. :func:`generate`, the library tests' and the benchmark's, is described below.
``belle2_dstar_sweighted`` (:func:`write_dstar_sweighted_file`) is the Belle II D* toy of
:mod:`calibflow.toys.belle2` (kaons and pions of D0 -> K pi with ``kaonID``, tree ``variables``) with
signal sWeights ``sw`` of the fitted ``D0_M`` (the generator's double Gaussian with its per-candidate width
against a linear background; yields fitted at fixed shapes) and ``sw_alt`` (a flat background instead).

Data: D0-like candidates, signal (Gaussian in the mass) and combinatorial background (linear in the mass,
softer momenta, low PID scores), with sWeights from a fit of the two yields at fixed shapes (EM iterations
to the maximum likelihood) and alternative sWeights with a wrongly sloped background shape. Simulation:
signal only, with a different PID response. The score of a signal track is ``sigma(mu(p, cos theta) +
scale * L)``, ``L`` standard logistic, so the exact probability that it passes any cut is known
(:func:`data_pass_probability`). Identity columns ``__run__``, ``__event__``, ``__candidate__``.
Momenta in GeV, masses in GeV.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from calibflow.toys.common import Response, gamma_on, pass_probability, score

MASS_RANGE, MASS, MASS_SIGMA = (1.81, 1.92), 1.865, 0.008
P_RANGE, COS_RANGE = (0.5, 5.0), (-0.866, 0.956)
SIGNAL = {True: Response(2.0, a_x=-0.35, a_y=0.3, a_y2=-0.8, scale=1.0),
          False: Response(2.4, a_x=-0.30, a_y=0.1, a_y2=-0.6, scale=1.0)}
BACKGROUND = Response(-1.0, a_x=0.1, scale=1.2)
BKG_SLOPE, ALT_SLOPE = -4.0, 0.0


def _linear_pdf(m: np.ndarray, slope: float) -> np.ndarray:
    lo, hi = MASS_RANGE
    c = 0.5 * (lo + hi)
    return (1.0 + slope * (m - c)) / (hi - lo)


def _gauss_pdf(m: np.ndarray) -> np.ndarray:
    from scipy.stats import norm

    lo, hi = MASS_RANGE
    return norm.pdf(m, MASS, MASS_SIGMA) / (norm.cdf(hi, MASS, MASS_SIGMA) - norm.cdf(lo, MASS, MASS_SIGMA))


def sweights(m: np.ndarray, slope: float) -> np.ndarray:
    """Signal sWeights of masses ``m`` for a Gaussian signal and a linear background of ``slope`` (1/GeV)."""
    return sweights_of(np.stack([_gauss_pdf(m), _linear_pdf(m, slope)]))


def sweights_of(g: np.ndarray, iterations: int = 300) -> np.ndarray:
    """Signal sWeights from per-candidate pdfs ``g`` (2, N: signal, background), the two yields fitted at
    fixed shapes (EM iterations to the maximum likelihood)."""
    n = np.array([0.5, 0.5]) * g.shape[1]
    for _ in range(iterations):
        mix = n @ g
        n = n * (g / mix).sum(axis=1)
    mix = n @ g
    cov = np.linalg.inv((g / mix) @ (g / mix).T)
    return (cov[0] @ g) / mix


def _kinematics(rng: np.random.Generator, n: int, soft: bool) -> tuple[np.ndarray, np.ndarray]:
    p = gamma_on(rng, n, 2.0, 0.45 if soft else 0.8, *P_RANGE)
    return p, rng.uniform(*COS_RANGE, n)


def generate(n: int, is_data: bool, rng: np.random.Generator, signal_fraction: float = 0.6) -> dict[str, np.ndarray]:
    """``n`` candidates (data: signal and background with sWeights; simulation: signal)."""
    sig = rng.random(n) < (signal_fraction if is_data else 1.0)
    p, cos = _kinematics(rng, n, soft=False)
    pb, cb = _kinematics(rng, n, soft=True)
    p, cos = np.where(sig, p, pb), np.where(sig, cos, cb)
    pid = np.where(sig, SIGNAL[is_data].sample(rng, p, cos), score(rng, BACKGROUND.mean(p, cos), BACKGROUND.scale))
    out = {"__run__": rng.integers(1, 30, n), "__event__": rng.integers(0, 2**40, n),
           "__candidate__": np.zeros(n, dtype=np.int64), "p": p, "cosTheta": cos, "pid": pid,
           "isSignal": sig.astype(np.int32)}
    if is_data:
        lo, hi = MASS_RANGE
        mass = rng.normal(MASS, MASS_SIGMA, n)
        bad = (mass < lo) | (mass > hi)
        while bad.any():
            mass[bad] = rng.normal(MASS, MASS_SIGMA, int(bad.sum()))
            bad = (mass < lo) | (mass > hi)
        u = rng.random(n)  # linear background by inversion of its CDF
        a, c = BKG_SLOPE, 0.5 * (lo + hi)
        x0 = lo - c
        q = (hi - lo) * u + x0 + 0.5 * a * x0**2
        bkg = c + (-1 + np.sqrt(1 + 2 * a * q)) / a
        out["mass"] = np.where(sig, mass, bkg)
        out["sw"] = sweights(out["mass"], BKG_SLOPE)
        out["sw_alt"] = sweights(out["mass"], ALT_SLOPE)
    return out


def data_pass_probability(p: np.ndarray, cos_theta: np.ndarray, cut: float) -> np.ndarray:
    """Exact probability that a data signal track at (p, cos theta) has ``pid > cut``."""
    return pass_probability(SIGNAL[True].mean(p, cos_theta), SIGNAL[True].scale, cut)


def _dstar_pdfs(m: np.ndarray, p_kaon: np.ndarray, background_slope: float) -> np.ndarray:
    """Per-candidate pdfs (2, N) of ``D0_M`` (GeV): the D* toy's double Gaussian (core width growing with the
    kaon momentum) and a linear background of scaled slope ``background_slope``, normalised in the window."""
    from scipy.stats import norm

    from calibflow.toys.belle2 import DSTAR

    lo, hi = DSTAR.window
    sig = np.zeros_like(m)
    core = DSTAR.sigma * (1.0 + DSTAR.sigma_slope * p_kaon)
    for frac, width in ((DSTAR.core_fraction, core), (1 - DSTAR.core_fraction, DSTAR.wide * core)):
        sig += frac * norm.pdf(m, DSTAR.mass, width) / (norm.cdf(hi, DSTAR.mass, width) - norm.cdf(lo, DSTAR.mass, width))
    t = 2.0 * (m - lo) / (hi - lo) - 1.0
    return np.stack([sig, (1.0 + background_slope * t) / (hi - lo)])


def generate_dstar_sweighted(n: int, is_data: bool, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The Belle II D* toy with signal sWeights ``sw`` and ``sw_alt`` (flat background); the D0 mass in the
    window only (simulation: weights 1)."""
    from calibflow.toys.belle2 import DSTAR, generate_dstar

    out = generate_dstar(n, is_data, rng)
    lo, hi = DSTAR.window
    inside = (out["D0_M"] >= lo) & (out["D0_M"] <= hi)
    out = {k: v[inside] for k, v in out.items()}
    if is_data:
        out["sw"] = sweights_of(_dstar_pdfs(out["D0_M"], out["K_p"], DSTAR.background_slope))
        out["sw_alt"] = sweights_of(_dstar_pdfs(out["D0_M"], out["K_p"], 0.0))
    else:
        out["sw"] = out["sw_alt"] = np.ones(len(out["D0_M"]))
    return out


def write_dstar_sweighted_file(path: str, n: int, is_data: bool, seed: int, **options: Any) -> None:
    """``belle2_dstar_sweighted``: ``n`` generated D* candidates (those in the mass window kept) with
    ``seed``, tree ``variables`` of the ROOT file ``path``. No options."""
    from calibflow.io.root import write_ttrees
    from calibflow.toys.belle2 import DSTAR_TREE
    from calibflow.toys.common import TOY_COMPRESSION, toy_options

    toy_options("belle2_dstar_sweighted", options, {})
    write_ttrees(path, {DSTAR_TREE: generate_dstar_sweighted(n, is_data, np.random.default_rng(seed))},
                 TOY_COMPRESSION)
