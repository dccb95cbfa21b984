"""Toy LHCb TrackCalib-style J/ψ→μμ tracking-efficiency tuples with known truth (flat ``DecayTree``, one
row per tag-and-probe candidate, jagged hit-ID branches for shared-hit matching).

Units: masses and momenta in MeV (``J_psi_1S_M``, ``probe_P``, ``probe_PT``, ``tag_P``, ``tag_PT``), as in
LHCb DaVinci tuples; η dimensionless, φ in rad.

Every row is one probe of one method (``probe_type``: 1 = VeloMuon, 2 = Downstream, 3 = MuonUT) paired with
a fully reconstructed long-track tag muon. The probe carries ``probe_hitIDs``: its hit IDs (LHCbID-like,
``detector << 28 | channel``) in the sub-detectors that long tracks also use (VeloMuon: VELO; Downstream:
T stations; MuonUT: UT). The event's long tracks (the tags, the long track of each reconstructed
probe, partial clones and unrelated tracks) are stored per row as ``long_hitIDs`` (all hits concatenated)
and ``long_nHits`` (hits per track, counter ``nlong``). Each row of an event carries the same long tracks.

A probe's long track is reconstructed with probability ε_method(p, η) for J/ψ signal (0.5 for
combinatorial background) and then holds each probe hit with probability ``q`` (hit efficiency), so it
shares k ~ Binomial(n_hits, q) hits; without it a partial clone may share ⌊0.3·n_hits⌋ hits and unrelated
tracks at most one. The nominal pass criterion ``shared fraction >= match_threshold`` (option, default
0.7, > 0.35) therefore holds with probability ε_method · P(Binomial(n_hits, q) ≥ k_min), stored per row as
``toy_true_eff``. Data come in two blocks of runs (``runNumber`` < or ≥ :data:`BLOCK2_FIRST_RUN`); block 2
has a lower VELO efficiency (Downstream and MuonUT methods). The MuonUT (full long-track) efficiency is the
product of the VeloMuon and Downstream ones. Truth branches start with ``toy_``; simulation has
``J_psi_1S_BKGCAT`` (0 = signal) and ``probe_TRUEID``.
"""

from __future__ import annotations

from typing import Any

import awkward as ak
import numpy as np
from scipy import stats

from calibflow.toys.common import beta_on, gamma_on, toy_options
from calibflow.toys.nanoaod import Surface, write_tree

JPSI_MASS = 3096.9  # MeV
MASS_WINDOW = (2600.0, 3600.0)  # MeV, generated combinatorial background
P_RANGE = (5.0, 200.0)  # GeV
ETA_RANGE = (1.9, 4.9)
METHODS = {1: "VeloMuon", 2: "Downstream", 3: "MuonUT"}
DETECTOR = {"VP": 1, "UT": 2, "FT": 3}
PROBE_DETECTOR = {1: DETECTOR["VP"], 2: DETECTOR["FT"], 3: DETECTOR["UT"]}
PROBE_HITS = {1: (10, 20), 2: (16, 28), 3: (5, 8)}
"""Range of the number of shareable probe hits per method (inclusive)."""
RESOLUTION = {1: 45.0, 2: 18.0, 3: 55.0}
"""J/ψ mass resolution (MeV) at low momentum per method; it grows as (1 + p/100 GeV)."""
SIGNAL_FRACTION = {True: {1: 0.50, 2: 0.60, 3: 0.45}, False: {1: 0.85, 2: 0.85, 3: 0.85}}
HIT_EFFICIENCY = {True: 0.95, False: 0.96}
BLOCK_RUNS = ((290100, 291000), (291100, 292000))
BLOCK2_FIRST_RUN = BLOCK_RUNS[1][0]
BLOCK2_VELO_LOSS = 0.96
"""Factor on the VELO efficiency (Downstream, and MuonUT through the product) in data block 2."""
EFFICIENCY = {
    ("VeloMuon", True): Surface(0.975, a=0.25, x0=5.0, scale=10.0, b=0.020, y0=3.3),
    ("VeloMuon", False): Surface(0.985, a=0.18, x0=5.0, scale=12.0, b=0.012, y0=3.3),
    ("Downstream", True): Surface(0.970, a=0.15, x0=5.0, scale=15.0, b=0.025, y0=3.0),
    ("Downstream", False): Surface(0.980, a=0.10, x0=5.0, scale=15.0, b=0.015, y0=3.0),
}
"""Long-track finding efficiency given the probe, versus p (GeV) and η: VeloMuon probes test the
T-station and UT part (ε_T|VELO), Downstream probes the VELO part (ε_VELO)."""
TRACKING_DEFAULTS = {"match_threshold": 0.7}
SLOT = 1 << 20
"""Channel range of one candidate slot of an event: IDs of different tracks never collide."""


def method_efficiency(method: int | np.ndarray, p: np.ndarray, eta: np.ndarray, is_data: bool,
                      block2: np.ndarray | bool = False) -> np.ndarray:
    """Long-track reconstruction efficiency of the probe of ``method`` (1, 2, 3) at p (GeV), η."""
    velo_loss = np.where(block2, BLOCK2_VELO_LOSS, 1.0) if is_data else 1.0
    t_given_velo = EFFICIENCY[("VeloMuon", is_data)](p, eta)
    velo = EFFICIENCY[("Downstream", is_data)](p, eta) * velo_loss
    return np.select([method == 1, method == 2], [t_given_velo, velo], t_given_velo * velo)


def min_shared(n_hits: np.ndarray, threshold: float) -> np.ndarray:
    """Smallest k with ``k / n >= threshold`` in floating point (as the recipe's cut evaluates it)."""
    n_hits = np.asarray(n_hits)
    table = {n: next(k for k in range(n + 1) if k / n >= threshold) for n in np.unique(n_hits).tolist()}
    return np.vectorize(table.__getitem__, otypes=[np.int64])(n_hits) if n_hits.size else n_hits.astype(np.int64)


def match_probability(n_hits: np.ndarray, q: float, threshold: float) -> np.ndarray:
    """P(Binomial(n_hits, q) ≥ k_min): the reconstructed long track passes the shared-fraction cut."""
    return stats.binom.sf(min_shared(n_hits, threshold) - 1, n_hits, q)


def _hits(rng: np.random.Generator, counts: np.ndarray, detector: np.ndarray | int, base: np.ndarray) -> np.ndarray:
    """Flat hit IDs, ``counts`` per track: ``detector << 28 | base + 1000·i + u``, u < 1000 random (unique)."""
    track = np.repeat(np.arange(len(counts)), counts)
    pos = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    det = np.broadcast_to(np.asarray(detector), (len(counts),))[track].astype(np.int64)
    return ((det << 28) | (base[track] + 1000 * pos + rng.integers(0, 1000, len(track)))).astype(np.int32)


def _tracks(rng: np.random.Generator, counts: np.ndarray, base: np.ndarray) -> ak.Array:
    """Unrelated long tracks (VELO hits), one list of hit IDs per track."""
    return ak.unflatten(_hits(rng, counts, DETECTOR["VP"], base), counts)


def generate_tracking(n: int, is_data: bool, rng: np.random.Generator, threshold: float) -> dict[str, Any]:
    """``n`` tag-and-probe candidates as flat numpy and jagged awkward branches (see the module docstring)."""
    per_event = rng.choice([1, 2], size=n, p=[0.85, 0.15])
    event = np.repeat(np.arange(n), per_event)[:n]
    n_events = int(event[-1]) + 1
    slot = np.arange(n) - np.searchsorted(event, event)
    method = rng.choice([1, 2, 3], size=n)
    block2_ev = rng.uniform(size=n_events) < (0.5 if is_data else 0.0)
    (lo1, hi1), (lo2, hi2) = BLOCK_RUNS
    run = (rng.integers(np.where(block2_ev, lo2, lo1), np.where(block2_ev, hi2, hi1)) if is_data
           else np.ones(n_events, np.int64))[event]
    block2 = block2_ev[event]
    signal = rng.uniform(size=n) < _per_method(SIGNAL_FRACTION[is_data], method)

    p, eta = gamma_on(rng, n, 1.6, 12.0, *P_RANGE), beta_on(rng, n, *ETA_RANGE, 2.0, 2.4)
    tag_p, tag_eta = gamma_on(rng, n, 1.6, 12.0, *P_RANGE), beta_on(rng, n, *ETA_RANGE, 2.0, 2.4)
    sigma = _per_method(RESOLUTION, method) * (1.0 + p / 100.0)
    radiative = (rng.uniform(size=n) < 0.12) * rng.exponential(30.0, n)
    mass = np.where(signal, rng.normal(JPSI_MASS, sigma) - radiative, _exponential(rng, n))

    eff = method_efficiency(method, p, eta, is_data, block2)
    reco = rng.uniform(size=n) < np.where(signal, eff, 0.5)
    n_hits = rng.integers(_per_method({m: r[0] for m, r in PROBE_HITS.items()}, method),
                          _per_method({m: r[1] for m, r in PROBE_HITS.items()}, method) + 1)
    q = HIT_EFFICIENCY[is_data]
    probe_hits = _hits(rng, n_hits, _per_method(PROBE_DETECTOR, method), slot * SLOT)
    hit_row = np.repeat(np.arange(n), n_hits)
    hit_pos = np.arange(len(hit_row)) - np.repeat(np.cumsum(n_hits) - n_hits, n_hits)
    clone = ~reco & (rng.uniform(size=n) < 0.3)
    clone_hit = clone[hit_row] & (hit_pos < (0.3 * n_hits)[hit_row])
    shared = np.where(reco[hit_row], rng.uniform(size=len(hit_row)) < q, clone_hit)
    with_track = reco | clone
    own = ak.unflatten(probe_hits[shared], np.bincount(hit_row[shared], minlength=n))[with_track]
    n_other = rng.integers(15, 26, int(with_track.sum()))
    other = ak.unflatten(_hits(rng, n_other, DETECTOR["UT"], (slot[with_track] + 2) * SLOT), n_other)
    n_fake = rng.poisson(2.0, n_events)
    fake_event = np.repeat(np.arange(n_events), n_fake)
    fake_counts = rng.integers(20, 36, len(fake_event))
    fakes = _tracks(rng, fake_counts, (8 + np.arange(len(fake_event)) % 64) * SLOT)
    # an unrelated track picks up one hit of the event's first probe now and then (fraction <= 0.2 < threshold)
    first = np.searchsorted(event, fake_event)
    steal = rng.uniform(size=len(fake_event)) < 0.3
    stolen = probe_hits[np.cumsum(n_hits)[first] - 1][steal]
    fakes = ak.concatenate([fakes, ak.unflatten(stolen, steal.astype(np.int64))], axis=1)
    tag_counts = rng.integers(25, 36, n)
    tracks = ak.concatenate([_tracks(rng, tag_counts, (slot + 4) * SLOT), ak.concatenate([own, other], axis=1), fakes])
    track_event = np.concatenate([event, event[with_track], fake_event])
    order = np.argsort(track_event, kind="stable")
    tracks = tracks[order]
    per_event_tracks = np.bincount(track_event, minlength=n_events)
    long_n = ak.unflatten(ak.to_numpy(ak.num(tracks, axis=1)).astype(np.int32), per_event_tracks)
    long_hits = ak.unflatten(ak.flatten(tracks), ak.to_numpy(ak.sum(long_n, axis=1)))

    out: dict[str, Any] = {
        "runNumber": run.astype(np.uint32),
        "eventNumber": (event + 1).astype(np.uint64),
        "J_psi_1S_M": mass,
        "tag_P": tag_p * 1e3, "tag_PT": tag_p / np.cosh(tag_eta) * 1e3, "tag_ETA": tag_eta,
        "tag_isMuon": (rng.uniform(size=n) < 0.97).astype(np.int32),
        "probe_P": p * 1e3, "probe_PT": p / np.cosh(eta) * 1e3, "probe_ETA": eta,
        "probe_PHI": rng.uniform(-np.pi, np.pi, n),
        "probe_type": method.astype(np.int32),
        "probe_hitIDs": ak.unflatten(probe_hits, n_hits),
        "long_hitIDs": ak.to_packed(long_hits[event]),
        "long": ak.zip({"nHits": ak.to_packed(long_n[event])}),
        "toy_true_eff": np.where(signal, eff, 0.5) * match_probability(n_hits, q, threshold),
        "toy_is_signal": signal.astype(np.int32),
    }
    if not is_data:
        out["J_psi_1S_BKGCAT"] = np.where(signal, 0, 60).astype(np.int32)
        out["probe_TRUEID"] = np.where(signal, 13, 211).astype(np.int32) * rng.choice([-1, 1], n)
    return out


def _per_method(table: dict[int, Any], method: np.ndarray) -> np.ndarray:
    """``table[method]`` elementwise for method codes 1, 2, 3."""
    return np.asarray([table[m] for m in METHODS])[np.asarray(method) - 1]


def _exponential(rng: np.random.Generator, n: int, slope: float = -1.0 / 900.0) -> np.ndarray:
    """Combinatorial background masses ∝ exp(slope·m) on :data:`MASS_WINDOW` (MeV)."""
    lo, hi = MASS_WINDOW
    ea, eb = np.exp(slope * lo), np.exp(slope * hi)
    return np.log(ea + rng.uniform(size=n) * (eb - ea)) / slope


def write_tracking_file(path: str, n: int, is_data: bool, seed: int, **options: Any) -> None:
    """LHCb J/ψ tracking toy: ``n`` candidates with ``seed`` into the ROOT file ``path`` (tree ``DecayTree``).

    Option ``match_threshold`` (default 0.7) must equal the shared-fraction cut of the recipe's ``pass``.
    """
    threshold = toy_options("lhcb_tracking_jpsi", options, TRACKING_DEFAULTS)["match_threshold"]
    if not 0.35 < threshold <= 1.0:
        raise ValueError(f"toy.options.match_threshold: must lie in (0.35, 1], got {threshold}")
    write_tree(path, generate_tracking(n, is_data, np.random.default_rng(seed), threshold), "DecayTree")
