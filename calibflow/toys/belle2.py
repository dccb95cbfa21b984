"""Belle II-like toy ntuples for charged-hadron identification with known truth.

Flat TTrees as written by ``variablesToNtuple`` (one row per candidate, ``__experiment__``, ``__run__``,
``__event__``, ``__candidate__``, ``__ncandidates__``), branch names of ``modularAnalysis`` variables
behind daughter aliases (``K_p``, ``K_cosTheta``, ``K_kaonID``, ``K_charge``, ``K_isSignal``, ...).
Units as in Belle II: momenta in GeV, masses in GeV, flight distances in cm.

* ``belle2_dstar`` (tree ``variables``): D*⁺ → D⁰(→ K⁻π⁺) π⁺_s with ``D0_M``, ``DeltaM``, ``isSignal``;
  tracks ``K``, ``pi``, ``pisoft``.
* ``belle2_v0`` (trees ``Lambda0`` and ``K_S0`` in every file): Λ → p π⁻ (tracks ``p``, ``pi``) and
  K⁰_S → π⁺π⁻ (tracks ``pip``, ``pim``), with ``M``, ``flightDistance``, ``isSignal``.

Every track carries ``kaonID`` and ``protonID`` scores drawn from the response of its true species
(:data:`RESPONSES`, smooth in p and cos θ, different in data and simulation; see
:mod:`calibflow.toys.common`) and ``pionID`` = (1 − kaonID)(1 − protonID). Data contain combinatorial
background, flat-ish in the fitted mass, with a mix of true species; simulation is purer.

Truth, read only by closure tables: ``toy_is_signal`` and, per track, ``toy_<track>_true_eff``, the
exact probability that the track passes the generator's nominal cut (``kaonID > kaon_id_cut`` for the
D*, ``protonID > proton_id_cut`` for the V0s; options of the generators, default 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from calibflow.io.root import write_ttrees
from calibflow.toys.common import (
    TOY_COMPRESSION,
    Response,
    beta_on,
    by_label,
    double_gauss,
    gamma_on,
    linear_on,
    pick,
    threshold_on,
    toy_options,
)

COS_THETA_RANGE = (-0.95, 0.98)
"""Generated polar-angle range (the CDC acceptance, 17°–150°, is a selection cut)."""
DSTAR_TREE = "variables"
LAMBDA_TREE, KSHORT_TREE = "Lambda0", "K_S0"
D0_MASS, DSTAR_DELTA_M, PION_MASS = 1.86484, 0.145426, 0.13957  # GeV
LAMBDA_MASS, KSHORT_MASS = 1.115683, 0.497611  # GeV

RESPONSES: dict[tuple[str, str, bool], Response] = {
    # (score, true species, is_data): kaonID of kaons falls with p and towards the forward/backward
    # edges, and is lower in data; misidentification of pions and protons rises with p.
    ("kaonID", "K", True): Response(2.8, a_x=-0.45, a_y=0.25, a_y2=-1.0, scale=1.2),
    ("kaonID", "K", False): Response(3.0, a_x=-0.40, a_y=0.10, a_y2=-0.8, scale=1.2),
    ("kaonID", "pi", True): Response(-3.0, a_x=0.35, a_y2=0.6, scale=1.2),
    ("kaonID", "pi", False): Response(-3.2, a_x=0.30, a_y2=0.5, scale=1.2),
    ("kaonID", "p", True): Response(-2.0, a_x=0.2, scale=1.2),
    ("kaonID", "p", False): Response(-2.2, a_x=0.2, scale=1.2),
    ("protonID", "p", True): Response(3.0, a_x=-0.5, a_y=-0.2, a_y2=-0.6),
    ("protonID", "p", False): Response(3.2, a_x=-0.45, a_y2=-0.5),
    ("protonID", "pi", True): Response(-2.8, a_x=0.3, a_y2=0.4),
    ("protonID", "pi", False): Response(-3.0, a_x=0.3, a_y2=0.3),
    ("protonID", "K", True): Response(-1.5, a_x=0.2),
    ("protonID", "K", False): Response(-1.7, a_x=0.2),
}
SCORES = ("kaonID", "protonID")


def pid_efficiency(score: str, species: str, is_data: bool, p: np.ndarray, cos_theta: np.ndarray,
                   cut: float) -> np.ndarray:
    """True probability that a ``species`` track (``K``, ``pi``, ``p``) of momentum ``p`` (GeV) and
    ``cos_theta`` passes ``score > cut`` (``score``: ``kaonID`` or ``protonID``)."""
    return RESPONSES[(score, species, is_data)].pass_probability(p, cos_theta, cut)


@dataclass(frozen=True)
class Track:
    """A final-state track of a decay: branch prefix, true species, charge relative to the parent's
    flavour, momentum spectrum (Gamma(shape, scale) on [lo, hi], GeV) and the species mix of the tracks
    that take its place in combinatorial background."""

    prefix: str
    species: str
    charge: int
    momentum: tuple[float, float, float, float]
    background_species: dict[str, float]


@dataclass(frozen=True)
class DecayToy:
    """A two-body (plus tag) decay in one flat tree: the mass branch, its peak (double Gaussian with
    core width ``sigma``·(1 + ``sigma_slope``·p of the first track), GeV), the generated mass window,
    the background slope (see :func:`calibflow.toys.common.linear_on`) and the tracks."""

    tree: str
    mass_branch: str
    mass: float
    sigma: float
    window: tuple[float, float]
    tracks: tuple[Track, ...]
    signal_fraction: dict[bool, float]
    score: str
    sigma_slope: float = 0.04
    wide: float = 2.2
    core_fraction: float = 0.75
    background_slope: float = -0.3
    right_sign_background: float = 0.7
    flavoured: bool = True


_K_MIX = {"pi": 0.65, "K": 0.30, "p": 0.05}
_PI_MIX = {"pi": 0.80, "K": 0.15, "p": 0.05}

DSTAR = DecayToy(
    tree=DSTAR_TREE, mass_branch="D0_M", mass=D0_MASS, sigma=0.0045, window=(1.78, 1.95), score="kaonID",
    tracks=(
        Track("K", "K", -1, (2.2, 0.6, 0.3, 6.0), _K_MIX),
        Track("pi", "pi", +1, (2.2, 0.6, 0.3, 6.0), _PI_MIX),
        Track("pisoft", "pi", +1, (3.0, 0.06, 0.05, 0.8), _PI_MIX),
    ),
    signal_fraction={True: 0.25, False: 0.35},
)
LAMBDA = DecayToy(
    tree=LAMBDA_TREE, mass_branch="M", mass=LAMBDA_MASS, sigma=0.0012, window=(LAMBDA_MASS - 0.03, LAMBDA_MASS + 0.03),
    score="protonID", sigma_slope=0.10, wide=2.5, core_fraction=0.7, background_slope=0.3,
    tracks=(
        Track("p", "p", +1, (2.5, 0.45, 0.2, 5.0), {"pi": 0.45, "p": 0.40, "K": 0.15}),
        Track("pi", "pi", -1, (2.0, 0.12, 0.06, 1.5), _PI_MIX),
    ),
    signal_fraction={True: 0.35, False: 0.5},
)
KSHORT = DecayToy(
    tree=KSHORT_TREE, mass_branch="M", mass=KSHORT_MASS, sigma=0.003, window=(KSHORT_MASS - 0.03, KSHORT_MASS + 0.03),
    score="protonID", sigma_slope=0.05, wide=2.2, core_fraction=0.75, background_slope=-0.2, flavoured=False,
    tracks=(
        Track("pip", "pi", +1, (2.0, 0.35, 0.1, 4.0), {"pi": 0.88, "K": 0.08, "p": 0.04}),
        Track("pim", "pi", -1, (2.0, 0.35, 0.1, 4.0), {"pi": 0.88, "K": 0.08, "p": 0.04}),
    ),
    signal_fraction={True: 0.4, False: 0.55},
)


def event_branches(rng: np.random.Generator, n: int, is_data: bool) -> dict[str, np.ndarray]:
    """Belle II ntuple bookkeeping branches (one candidate per event)."""
    return {
        "__experiment__": np.full(n, 26 if is_data else 1003, dtype=np.int32),
        "__run__": rng.integers(1, 2000, n).astype(np.int32),
        "__event__": np.arange(n, dtype=np.int32),
        "__candidate__": np.zeros(n, dtype=np.int32),
        "__ncandidates__": np.ones(n, dtype=np.int32),
    }


def _track(rng: np.random.Generator, t: Track, signal: np.ndarray, flavour: np.ndarray, right_sign: np.ndarray,
           is_data: bool, cut: float, score: str) -> dict[str, np.ndarray]:
    """Branches of track ``t`` (kinematics, charge, PID scores, truth) for every candidate."""
    n = signal.size
    species = np.where(signal, t.species, pick(rng, n, t.background_species))
    p = gamma_on(rng, n, *t.momentum)
    cos_theta = beta_on(rng, n, *COS_THETA_RANGE, 2.2, 1.6)
    charge = np.where(right_sign, t.charge * flavour, rng.choice([-1, 1], n)).astype(np.int32)
    pre = f"{t.prefix}_"
    out = {pre + "p": p, pre + "pt": p * np.sqrt(1.0 - cos_theta**2), pre + "cosTheta": cos_theta,
           pre + "charge": charge}
    for s in SCORES:
        out[pre + s] = by_label(species, {sp: RESPONSES[(s, sp, is_data)].sample(rng, p, cos_theta)
                                          for sp in np.unique(species)})
    out[pre + "pionID"] = (1.0 - out[pre + "kaonID"]) * (1.0 - out[pre + "protonID"])
    out[pre + "isSignal"] = (species == t.species).astype(np.int32)
    out[f"toy_{t.prefix}_true_eff"] = by_label(
        species, {sp: pid_efficiency(score, sp, is_data, p, cos_theta, cut) for sp in np.unique(species)})
    return out


def generate_decay(spec: DecayToy, n: int, is_data: bool, rng: np.random.Generator, cut: float
                   ) -> dict[str, np.ndarray]:
    """``n`` candidates of ``spec`` as flat branches (see the module docstring)."""
    signal = rng.uniform(size=n) < spec.signal_fraction[is_data]
    flavour = rng.choice([-1, 1], n) if spec.flavoured else np.ones(n, dtype=int)
    right_sign = signal | (rng.uniform(size=n) < spec.right_sign_background)
    out = event_branches(rng, n, is_data)
    tracks = [_track(rng, t, signal, flavour, right_sign, is_data, cut, spec.score) for t in spec.tracks]
    p_first = tracks[0][f"{spec.tracks[0].prefix}_p"]
    mass = linear_on(rng, n, *spec.window, spec.background_slope)
    peak = double_gauss(rng, spec.mass, spec.sigma * (1.0 + spec.sigma_slope * p_first), spec.wide,
                        spec.core_fraction)
    out[spec.mass_branch] = np.where(signal, peak, mass)
    out["isSignal"] = signal.astype(np.int32)
    for t in tracks:
        out.update(t)
    out["toy_is_signal"] = signal.astype(np.int32)
    return out


def generate_dstar(n: int, is_data: bool, rng: np.random.Generator, kaon_id_cut: float = 0.5
                   ) -> dict[str, np.ndarray]:
    """``n`` D*⁺ → D⁰(→ K⁻π⁺)π⁺ candidates: :data:`DSTAR` plus ``DeltaM`` = M(D*) − M(D⁰) (GeV), a
    narrow peak for signal and a threshold shape from m(π) for background."""
    out = generate_decay(DSTAR, n, is_data, rng, kaon_id_cut)
    signal = out["isSignal"] == 1
    background = threshold_on(rng, n, PION_MASS, 0.155, 0.5)
    out["DeltaM"] = np.where(signal, rng.normal(DSTAR_DELTA_M, 0.0003, n), background)
    return out


def generate_v0(spec: DecayToy, n: int, is_data: bool, rng: np.random.Generator, proton_id_cut: float = 0.5
                ) -> dict[str, np.ndarray]:
    """``n`` V0 candidates of ``spec`` (:data:`LAMBDA` or :data:`KSHORT`) plus ``flightDistance`` (cm):
    long for true V0s, short for prompt combinatorial background."""
    out = generate_decay(spec, n, is_data, rng, proton_id_cut)
    signal = out["isSignal"] == 1
    out["flightDistance"] = rng.exponential(np.where(signal, 6.0 if spec is LAMBDA else 3.0, 0.4))
    return out


def write_dstar_file(path: str, n: int, is_data: bool, seed: int, **options: Any) -> None:
    """D* toy: ``n`` candidates with ``seed`` in tree ``variables`` of the ROOT file ``path``.

    Option ``kaon_id_cut`` (default 0.5): the nominal cut of the ``toy_*_true_eff`` truth.
    """
    opts = toy_options("belle2_dstar", options, {"kaon_id_cut": 0.5})
    rng = np.random.default_rng(seed)
    write_ttrees(path, {DSTAR_TREE: generate_dstar(n, is_data, rng, opts["kaon_id_cut"])}, TOY_COMPRESSION)


def write_v0_file(path: str, n: int, is_data: bool, seed: int, **options: Any) -> None:
    """V0 toy: ``n`` Λ candidates (tree ``Lambda0``) and ``n`` K⁰_S candidates (tree ``K_S0``) with ``seed``.

    Option ``proton_id_cut`` (default 0.5): the nominal cut of the ``toy_*_true_eff`` truth.
    """
    opts = toy_options("belle2_v0", options, {"proton_id_cut": 0.5})
    rng = np.random.default_rng(seed)
    write_ttrees(path, {LAMBDA_TREE: generate_v0(LAMBDA, n, is_data, rng, opts["proton_id_cut"]),
                        KSHORT_TREE: generate_v0(KSHORT, n, is_data, rng, opts["proton_id_cut"])}, TOY_COMPRESSION)
