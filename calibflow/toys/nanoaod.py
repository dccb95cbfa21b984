"""Toy CMS NanoAOD ``Events`` trees with known truth: Z→μμ for muon ID/isolation tag-and-probe and eμ
events for dilepton-trigger efficiencies; plus the jagged-tree writer and smooth efficiency surfaces
shared with the LHCb tracking toy (:mod:`calibflow.toys.lhcb`).

NanoAOD conventions: one row per event, collections as ``<Coll>_<field>`` branches with a counter
``n<Coll>``, objects sorted by decreasing pT, momenta in GeV, angles in rad, ``run``/``luminosityBlock``
for the golden-JSON lumi mask (data: the runs of :data:`RUNS`; simulation: run 1), ``PuppiMET_pt/phi``.
Simulation carries ``Muon_genPartFlav``/``Electron_genPartFlav`` (1 = prompt), data do not.

Truth, read only by closure tables, is stored in branches whose field starts with ``toy_``: per muon
``Muon_toy_effId`` (probability of ``tightId``), ``Muon_toy_effIso`` (of ``pfRelIso04_all < iso_cut``),
``Muon_toy_fromZ``; per event ``toy_true_eff`` (probability of the OR of the two Mu-Ele HLT paths) and
``toy_is_signal``.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np
from scipy import special

from calibflow.io.store import atomic_path
from calibflow.toys.common import TOY_COMPRESSION, toy_options

MUON_MASS = 0.1056584  # GeV
ELECTRON_MASS = 0.000511  # GeV
Z_MASS, Z_HALF_WIDTH = 91.1876, 1.2476  # GeV: pole mass and Γ/2
RUNS = (316187, 316199, 316216, 316218)
"""Data runs of the toys; ``task_configs/data/Cert_toy_golden.json`` certifies part of them."""
LUMI_SECTIONS = 200
"""Luminosity sections 1..200 per toy run."""
TRIGGER_BITS = {"iso": 2, "single_mu": 8}
"""TrigObj_filterBits of muon trigger objects: 2 = isolation filter, 8 = single-muon (IsoMu24) leg."""
EMU_PATHS = ("HLT_Mu8_TrkIsoVVL_Ele23_CaloIdL_TrackIdL_IsoVL_DZ", "HLT_Mu23_TrkIsoVVL_Ele12_CaloIdL_TrackIdL_IsoVL_DZ")
REFERENCE_TRIGGER = "HLT_PFMET120_PFMHT120_IDTight"
"""Lepton-independent reference trigger of the eμ toy (data efficiencies are measured on its events)."""
TREE = "Events"


# --- shared helpers (also used by calibflow.toys.lhcb) ------------------------------------------------
def basket_edges(n: int, basket_rows: int | Sequence[int]) -> list[int]:
    """Entry edges ``[0, ..., n]`` of the baskets of ``n`` entries: ``basket_rows`` entries each, or given a
    sequence, the first baskets of those sizes and the last size repeated to the end (NanoAOD: ``(1000, N)``)."""
    sizes = [basket_rows] if isinstance(basket_rows, int | np.integer) else list(basket_rows)
    if not sizes or min(sizes) < 1:
        raise ValueError(f"basket_rows must be positive, got {basket_rows!r}")
    edges = [0]
    while edges[-1] < n:
        edges.append(min(edges[-1] + int(sizes[min(len(edges) - 1, len(sizes) - 1)]), n))
    return edges


def write_tree(path: str | os.PathLike[str], branches: Mapping[str, Any], tree: str = TREE,
               basket_rows: int | Sequence[int] = 100_000, compression: object | None = None) -> None:
    """Write a TTree of flat numpy branches, jagged awkward branches (counter ``n<name>``) and awkward record
    arrays (a collection: ``<name>_<field>`` branches sharing the counter ``n<name>``), atomically;
    ``basket_rows``: entries per basket (every branch alike: one cluster per basket), or the sizes of the
    first baskets, the last repeated (:func:`basket_edges`); ``compression``: an uproot compression object
    (default the toys' own)."""
    import uproot

    n = len(next(iter(branches.values())))
    types = {k: (v.type.content if isinstance(v, ak.Array) else np.asarray(v).dtype) for k, v in branches.items()}
    edges = basket_edges(n, basket_rows)
    with atomic_path(path) as tmp, uproot.recreate(tmp, compression=compression or TOY_COMPRESSION) as f:
        t = f.mktree(tree, types)
        for start, stop in itertools.pairwise(edges):
            t.extend({k: v[start:stop] for k, v in branches.items()})


@dataclass(frozen=True)
class Surface:
    """Smooth efficiency surface ε(x, y) = top·(1 − a·exp(−(x − x0)/scale))·(1 − b·(y − y0)²), clipped
    to [0, 1]: a rise with x (momentum or pT in GeV) and a parabola in y (η or |η|)."""

    top: float
    a: float = 0.0
    x0: float = 0.0
    scale: float = 1.0
    b: float = 0.0
    y0: float = 0.0

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        eff = self.top * (1.0 - self.a * np.exp(-(x - self.x0) / self.scale)) * (1.0 - self.b * (y - self.y0) ** 2)
        return np.clip(eff, 0.0, 1.0)


def turn_on(x: np.ndarray, plateau: float, x50: float, width: float) -> np.ndarray:
    """Trigger turn-on plateau·Φ((x − x50)/width) (x, x50, width in GeV)."""
    return plateau * special.ndtr((np.asarray(x, dtype=float) - x50) / width)


def collection(event: np.ndarray, n_events: int, fields: Mapping[str, np.ndarray], sort_by: str | None = "pt"
               ) -> ak.Array:
    """Jagged record array (one list per event) of objects given per object with their ``event`` index;
    objects are ordered by event, then by decreasing ``sort_by`` (NanoAOD orders by pT)."""
    keys = [event] if sort_by is None else [-np.asarray(fields[sort_by]), event]
    order = np.lexsort(keys)
    counts = np.bincount(event, minlength=n_events)
    return ak.zip({k: ak.unflatten(np.asarray(v)[order], counts) for k, v in fields.items()})


def run_and_lumi(rng: np.random.Generator, n: int, is_data: bool) -> dict[str, np.ndarray]:
    """``run``, ``luminosityBlock`` and ``event`` numbers: data spread over :data:`RUNS` and lumi sections
    1..:data:`LUMI_SECTIONS`; simulation run 1."""
    run = rng.choice(np.asarray(RUNS, np.uint32), n) if is_data else np.ones(n, np.uint32)
    return {"run": run, "luminosityBlock": rng.integers(1, LUMI_SECTIONS + 1, n).astype(np.uint32),
            "event": rng.integers(1, 2**40, n).astype(np.uint64)}


def _angles(rng: np.random.Generator, n: int, eta_max: float) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(-eta_max, eta_max, n), rng.uniform(-math.pi, math.pi, n)


def _lepton(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, charge: np.ndarray, mass: float) -> dict[str, np.ndarray]:
    """The NanoAOD kinematic fields of leptons (float32 like NanoAOD, charge int32)."""
    return {"pt": pt.astype(np.float32), "eta": eta.astype(np.float32), "phi": phi.astype(np.float32),
            "mass": np.full(len(pt), mass, np.float32), "charge": charge.astype(np.int32)}


def _isolation(rng: np.random.Generator, eff: np.ndarray, cut: float) -> np.ndarray:
    """Relative isolation, exponential with the scale giving P(iso < cut) = ``eff`` exactly."""
    scale = -cut / np.log1p(-np.clip(eff, 1e-9, 1.0 - 1e-9))
    return rng.exponential(scale).astype(np.float32)


# --- Z -> mu mu ----------------------------------------------------------------------------------------
ID_EFF = {True: Surface(0.975, a=0.10, x0=10.0, scale=12.0, b=0.012, y0=0.3),
          False: Surface(0.990, a=0.06, x0=10.0, scale=10.0, b=0.006, y0=0.3)}
"""Tight-ID efficiency of prompt muons versus pT (GeV) and |η|, data (True) and simulation (False)."""
ISO_EFF = {True: Surface(0.985, a=0.30, x0=10.0, scale=15.0, b=0.010, y0=0.0),
           False: Surface(0.990, a=0.25, x0=10.0, scale=13.0, b=0.006, y0=0.0)}
"""Efficiency of the relative-isolation cut for prompt muons versus pT (GeV) and |η|."""
FAKE_ID, FAKE_ISO_SCALE = 0.55, 0.5
"""Non-prompt muons: tight-ID probability and mean relative isolation."""
Z_DEFAULTS = {"iso_cut": 0.15, "signal_fraction_data": 0.80, "extra_muon_rate": 0.15}


def _boost(e: np.ndarray, p: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lorentz boost of 4-vectors (energy ``e``, momentum ``p`` of shape (n, 3)) by velocities ``beta`` (n, 3)."""
    b2 = np.sum(beta * beta, axis=1)
    gamma = 1.0 / np.sqrt(1.0 - b2)
    bp = np.sum(beta * p, axis=1)
    g2 = np.where(b2 > 0, (gamma - 1.0) / np.where(b2 > 0, b2, 1.0), 0.0)
    p_new = p + (g2 * bp + gamma * e)[:, None] * beta
    return gamma * (e + bp), p_new


def _pt_eta_phi(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pt = np.hypot(p[:, 0], p[:, 1])
    return pt, np.arcsinh(p[:, 2] / pt), np.arctan2(p[:, 1], p[:, 0])


def z_decays(rng: np.random.Generator, n: int, resolution_scale: float, lepton_mass: float = MUON_MASS,
             resolution: float = 0.011) -> tuple[np.ndarray, ...]:
    """``n`` Z→ℓℓ decays: Breit-Wigner mass on [50, 130] GeV, pT(Z) ~ Γ(1.5, 6 GeV), rapidity ~ N(0, 1.6),
    isotropic decay, lepton pT smeared by (1 + |η|)·``resolution``·``resolution_scale`` (relative; 1.1 % for
    muons). Returns pt, eta, phi, charge of shape (n, 2)."""
    lo, hi = (math.atan((m - Z_MASS) / Z_HALF_WIDTH) for m in (50.0, 130.0))
    mass = Z_MASS + Z_HALF_WIDTH * np.tan(rng.uniform(lo, hi, n))
    pt_z, y_z, phi_z = rng.gamma(1.5, 6.0, n), rng.normal(0.0, 1.6, n), rng.uniform(-math.pi, math.pi, n)
    mt_z = np.hypot(mass, pt_z)
    e_z = mt_z * np.cosh(y_z)
    p_z = np.stack([pt_z * np.cos(phi_z), pt_z * np.sin(phi_z), mt_z * np.sinh(y_z)], axis=1)
    cos_t, phi_s = rng.uniform(-1.0, 1.0, n), rng.uniform(-math.pi, math.pi, n)
    sin_t = np.sqrt(1.0 - cos_t**2)
    p_star = np.sqrt(mass**2 / 4.0 - lepton_mass**2)
    direction = np.stack([sin_t * np.cos(phi_s), sin_t * np.sin(phi_s), cos_t], axis=1)
    out = []
    for sign in (1.0, -1.0):
        _, p = _boost(mass / 2.0, sign * p_star[:, None] * direction, p_z / e_z[:, None])
        pt, eta, phi = _pt_eta_phi(p)
        pt = pt * (1.0 + rng.normal(0.0, resolution * resolution_scale * (1.0 + np.abs(eta)), n))
        out.append((pt, eta, phi))
    pt, eta, phi = (np.stack([a[i] for a in out], axis=1) for i in range(3))
    charge = np.stack([-np.ones(n), np.ones(n)], axis=1).astype(np.int32)
    return pt, eta, phi, charge


def muon_trigger_objects(rng: np.random.Generator, event: np.ndarray, pt: np.ndarray, eta: np.ndarray,
                         phi: np.ndarray, plateau: float, n_events: int, obj_id: int = 13,
                         bits: int = TRIGGER_BITS["iso"] | TRIGGER_BITS["single_mu"], x50: float = 25.0,
                         others: tuple[int, int] = (1, 11)) -> dict[str, np.ndarray]:
    """HLT lepton objects (default: muons, id 13, filterBits 2|8) for leptons firing the single-lepton path
    (probability turn-on in pT at ``x50`` GeV, default IsoMu24's), slightly smeared, plus unrelated objects of
    the ids ``others`` (jets 1, electrons 11); per object with ``event``."""
    fired = rng.uniform(size=len(pt)) < turn_on(pt, plateau, x50, 1.5)
    n_other = rng.poisson(1.0, n_events)
    ev_other = np.repeat(np.arange(n_events), n_other)
    m, k = int(fired.sum()), len(ev_other)
    o_eta, o_phi = _angles(rng, k, 2.5)
    return {"event": np.concatenate([event[fired], ev_other]),
            "id": np.concatenate([np.full(m, obj_id), rng.choice(list(others), k)]).astype(np.int32),
            "filterBits": np.concatenate([np.full(m, bits), rng.integers(0, 64, k)]).astype(np.int32),
            "pt": np.concatenate([pt[fired] * rng.normal(1.0, 0.02, m),
                                  10.0 + rng.exponential(20.0, k)]).astype(np.float32),
            "eta": np.concatenate([eta[fired] + rng.normal(0.0, 0.005, m), o_eta]).astype(np.float32),
            "phi": np.concatenate([phi[fired] + rng.normal(0.0, 0.005, m), o_phi]).astype(np.float32)}


def _muon_fields(rng: np.random.Generator, pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, charge: np.ndarray,
                 prompt: np.ndarray, from_z: np.ndarray, is_data: bool, iso_cut: float) -> dict[str, np.ndarray]:
    """Muon collection fields with tight ID and isolation drawn from their known probabilities (stored)."""
    eff_id = np.where(prompt, ID_EFF[is_data](pt, np.abs(eta)), FAKE_ID)
    eff_iso = np.where(prompt, ISO_EFF[is_data](pt, np.abs(eta)), -np.expm1(-iso_cut / FAKE_ISO_SCALE))
    out = {**_lepton(pt, eta, phi, charge, MUON_MASS), "tightId": rng.uniform(size=len(pt)) < eff_id,
           "pfRelIso04_all": _isolation(rng, eff_iso, iso_cut)}
    if not is_data:
        out["genPartFlav"] = np.where(prompt, 1, 5).astype(np.uint8)
    return {**out, "toy_effId": eff_id, "toy_effIso": eff_iso, "toy_fromZ": from_z}


def nonprompt_leptons(rng: np.random.Generator, n: int, scale: float = 10.0) -> tuple[np.ndarray, ...]:
    """``n`` non-prompt leptons: pt = 5 + Exp(``scale`` GeV), |η| < 2.5, random charge."""
    eta, phi = _angles(rng, n, 2.5)
    return 5.0 + rng.exponential(scale, n), eta, phi, rng.choice(np.array([-1, 1], np.int32), n)


_PAD_COLLECTIONS = {"Electron": 62, "Jet": 48, "Photon": 44, "Tau": 52, "FatJet": 42, "LowPtElectron": 32,
                    "boostedTau": 30, "IsoTrack": 16, "SV": 16, "SubJet": 14, "GenPart": 10, "GenJet": 8,
                    "CorrT1METJet": 6, "SoftActivityJet": 4, "OtherPV": 2}
"""Collections of real NanoAOD (v12) and about their numbers of fields."""
_PAD_FIELDS = ("pt", "eta", "phi", "mass", "charge", "pdgId", "jetIdx", "genPartIdx", "cutBased", "tightCharge",
               "dxy", "dz", "sip3d", "pfRelIso03_all", "miniPFRelIso_all", "mvaIso_WP90", "convVeto", "lostHits")
_PAD_FLAGS = {"HLT": 640, "L1": 460, "Flag": 30}
"""Trigger bits and event filters of real NanoAOD (one bool branch each), about their numbers."""


def _pad_type(field: str, k: int) -> str:
    """NanoAOD's storage type of a collection field (by its name; cycled for generic fields)."""
    if field.endswith("Idx"):
        return "i2"
    if field in ("charge", "pdgId"):
        return "i4"
    if field in ("cutBased", "tightCharge", "lostHits"):
        return "u1"
    if field.startswith(("mva", "conv")):
        return "?"
    return ("f4", "f4", "f4", "i4", "u1", "?")[k % 6]


def nanoaod_padding(rng: np.random.Generator, n: int, branches: int, taken: Collection[str] = ()
                    ) -> dict[str, Any]:
    """About ``branches`` more branches of ``n`` events with NanoAOD's names and types (collections with a
    counter ``n<Coll>`` and ``<Coll>_<field>`` fields, ``HLT_``/``L1_``/``Flag_`` bools, event floats), none of
    the names in ``taken``: the width of a real NanoAOD tree (1500-2500 branches) around a toy's own."""
    budget = {**_PAD_COLLECTIONS, **_PAD_FLAGS}
    scale = branches / (sum(budget.values()) + len(_PAD_COLLECTIONS))
    out: dict[str, Any] = {}
    for coll, width in _PAD_COLLECTIONS.items():
        counts = rng.poisson(1.5, n)
        m = int(counts.sum())
        fields = [*_PAD_FIELDS, *(f"var{k}" for k in range(100))][: max(round(width * scale), 1)]
        values = {f: (rng.random(m) * 50).astype(_pad_type(f, k)) if _pad_type(f, k) != "?" else rng.random(m) < 0.5
                  for k, f in enumerate(fields) if f"{coll}_{f}" not in taken}
        if values and f"n{coll}" not in taken:
            out[coll] = ak.zip({f: ak.unflatten(v, counts) for f, v in values.items()})
    for prefix, width in _PAD_FLAGS.items():
        out.update({f"{prefix}_path{k}": rng.random(n) < 0.5 for k in range(round(width * scale))
                    if f"{prefix}_path{k}" not in taken})
    return out


def write_z_mumu_file(path: str, n: int, is_data: bool, seed: int, pad_to: int = 0, *,
                      compression: object | None = None, basket_rows: int | Sequence[int] = 100_000,
                      **options: Any) -> None:
    """Z→μμ NanoAOD toy with ``n`` events (options: ``iso_cut``, ``signal_fraction_data``, ``extra_muon_rate``);
    ``pad_to``: as many branches in all, the toy's own plus :func:`nanoaod_padding` (benchmarks);
    ``compression`` (an uproot compression object; default the toys' ZSTD-1) and ``basket_rows`` (see
    :func:`write_tree`) choose the file's layout, e.g. NanoAOD's LZMA and baskets (``benchmarks/nanoaod.py``).

    Data mix Z events with non-prompt dimuon background (continuum mass); simulation is Drell-Yan only.
    Both may hold an extra non-prompt muon. Tag-and-probe truth per muon: ``Muon_toy_effId``,
    ``Muon_toy_effIso`` and ``Muon_toy_fromZ`` (the pair is signal when both muons are from the Z).
    """
    opt = toy_options("z_mumu_nanoaod", options, Z_DEFAULTS)
    rng = np.random.default_rng(seed)
    is_z = rng.uniform(size=n) < (opt["signal_fraction_data"] if is_data else 1.0)
    nz = int(is_z.sum())
    z = z_decays(rng, nz, 1.15 if is_data else 1.0)
    bkg = [np.stack(cols, axis=1) for cols in zip(*(nonprompt_leptons(rng, n - nz) for _ in range(2)), strict=True)]
    n_extra = int((extra := rng.uniform(size=n) < opt["extra_muon_rate"]).sum())
    ev_extra = np.flatnonzero(extra)
    extra_mu = nonprompt_leptons(rng, n_extra)
    ev_z, ev_b = np.flatnonzero(is_z), np.flatnonzero(~is_z)
    event = np.concatenate([np.repeat(ev_z, 2), np.repeat(ev_b, 2), ev_extra])
    pt, eta, phi, charge = (np.concatenate([zc.ravel(), bc.ravel(), ec])
                            for zc, bc, ec in zip(z, bkg, extra_mu, strict=True))
    from_z = np.concatenate([np.ones(2 * nz, bool), np.zeros(2 * (n - nz) + n_extra, bool)])
    muons = _muon_fields(rng, pt, eta, phi, charge, from_z, from_z, is_data, opt["iso_cut"])
    trig = muon_trigger_objects(rng, event, pt, eta, phi, 0.92 if is_data else 0.95, n)
    trig_ev = trig.pop("event")
    single_mu = (trig["id"] == 13) & (trig["filterBits"] & TRIGGER_BITS["single_mu"] > 0) & (trig["pt"] > 24.0)
    met_phi = rng.uniform(-math.pi, math.pi, n)
    branches = {
        **run_and_lumi(rng, n, is_data),
        "HLT_IsoMu24": np.bincount(trig_ev[single_mu], minlength=n) > 0,
        "PuppiMET_pt": rng.gamma(2.0, 8.0, n).astype(np.float32), "PuppiMET_phi": met_phi.astype(np.float32),
        "Muon": collection(event, n, muons), "TrigObj": collection(trig_ev, n, trig),
    }
    own = len(branches) - 2 + len(muons) + len(trig) + 2  # a collection is its fields and its counter
    if pad_to > own:
        branches.update(nanoaod_padding(np.random.default_rng(seed + 1), n, pad_to - own, set(branches)))
    write_tree(path, branches, basket_rows=basket_rows, compression=compression)


# --- e mu (H -> WW) dilepton trigger -----------------------------------------------------------------------
@dataclass(frozen=True)
class EmuTrigger:
    """Leg efficiencies (turn-ons in the offline pT, GeV) of the two Mu-Ele paths and the dZ filter.

    Nested legs share one uniform number per lepton, so Mu23 ⊂ Mu8 and Ele23 ⊂ Ele12; with a = P(Mu8),
    a' = P(Mu23), b = P(Ele12), b' = P(Ele23) the OR fires with probability dz·(a·b' + a'·b − a'·b').
    """

    plateau_mu: float
    plateau_e: float
    width: float
    dz: float

    def legs(self, pt_mu: np.ndarray, pt_e: np.ndarray) -> tuple[np.ndarray, ...]:
        """P(Mu8), P(Mu23), P(Ele12), P(Ele23) leg probabilities."""
        mu, e, w = self.plateau_mu, self.plateau_e, self.width
        return (turn_on(pt_mu, mu, 8.0, w), turn_on(pt_mu, mu, 23.5, w),
                turn_on(pt_e, e, 12.5, 1.5 * w), turn_on(pt_e, e, 24.0, 1.5 * w))

    def probability(self, pt_mu: np.ndarray, pt_e: np.ndarray) -> np.ndarray:
        """Exact probability that either path fires."""
        a, a23, b, b23 = self.legs(pt_mu, pt_e)
        return self.dz * (a * b23 + a23 * b - a23 * b23)

    def fire(self, rng: np.random.Generator, pt_mu: np.ndarray, pt_e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decisions of (Mu8_Ele23, Mu23_Ele12)."""
        a, a23, b, b23 = self.legs(pt_mu, pt_e)
        u_mu, u_e, dz = (rng.uniform(size=len(pt_mu)) for _ in range(3))
        dz_ok = dz < self.dz
        return dz_ok & (u_mu < a) & (u_e < b23), dz_ok & (u_mu < a23) & (u_e < b)


EMU_TRIGGER = {True: EmuTrigger(plateau_mu=0.96, plateau_e=0.95, width=1.8, dz=0.985),
               False: EmuTrigger(plateau_mu=0.985, plateau_e=0.975, width=1.3, dz=0.995)}
EMU_DEFAULTS = {"same_sign_fraction": 0.08, "extra_muon_rate": 0.12, "extra_electron_rate": 0.10}


def _prompt_pt(rng: np.random.Generator, n: int) -> np.ndarray:
    return 10.0 + rng.gamma(2.0, 14.0, n)


def write_emu_file(path: str, n: int, is_data: bool, seed: int, **options: Any) -> None:
    """eμ NanoAOD toy (WW/tt̄-like) with ``n`` events (options: ``same_sign_fraction``, ``extra_muon_rate``,
    ``extra_electron_rate``): one prompt electron and muon, sometimes an extra non-prompt lepton, PuppiMET
    roughly opposite to the dilepton, the two Mu-Ele HLT bits from :class:`EmuTrigger` (data and simulation
    differ) and the lepton-independent :data:`REFERENCE_TRIGGER` (probability 0.9·(1 − e^(−MET/60 GeV))).
    Truth: ``toy_true_eff`` = P(either Mu-Ele path fires), ``toy_is_signal`` = 1.
    """
    opt = toy_options("emu_nanoaod", options, EMU_DEFAULTS)
    rng = np.random.default_rng(seed)
    ev = np.arange(n)
    e_eta, e_phi = _angles(rng, n, 2.7)
    m_eta, m_phi = _angles(rng, n, 2.6)
    e_pt, m_pt = _prompt_pt(rng, n), _prompt_pt(rng, n)
    e_q = rng.choice(np.array([-1, 1], np.int32), n)
    m_q = np.where(rng.uniform(size=n) < opt["same_sign_fraction"], e_q, -e_q)
    extra_m, extra_e = (rng.uniform(size=n) < opt[k] for k in ("extra_muon_rate", "extra_electron_rate"))
    xm, xe = (nonprompt_leptons(rng, int(x.sum())) for x in (extra_m, extra_e))
    mu_prompt = np.concatenate([np.ones(n, bool), np.zeros(int(extra_m.sum()), bool)])
    mu_kin = [np.concatenate(p) for p in zip((m_pt, m_eta, m_phi, m_q), xm, strict=True)]
    muons = _muon_fields(rng, *mu_kin, mu_prompt, np.zeros(len(mu_prompt), bool), is_data, 0.15)
    el_prompt = np.concatenate([np.ones(n, bool), np.zeros(int(extra_e.sum()), bool)])
    el_kin = [np.concatenate(p) for p in zip((e_pt, e_eta, e_phi, e_q), xe, strict=True)]
    electrons = {**_lepton(*el_kin, ELECTRON_MASS),
                 "mvaFall17V2Iso_WP90": rng.uniform(size=len(el_prompt)) < np.where(el_prompt, 0.92, 0.25),
                 "pfRelIso03_all": _isolation(rng, np.where(el_prompt, 0.9, 0.3), 0.1)}
    if not is_data:
        electrons["genPartFlav"] = np.where(el_prompt, 1, 0).astype(np.uint8)
    px, py = e_pt * np.cos(e_phi) + m_pt * np.cos(m_phi), e_pt * np.sin(e_phi) + m_pt * np.sin(m_phi)
    met = rng.gamma(2.5, 18.0, n)
    met_phi = np.arctan2(-py, -px) + rng.normal(0.0, 0.9, n)
    path_a, path_b = EMU_TRIGGER[is_data].fire(rng, m_pt, e_pt)
    write_tree(path, {
        **run_and_lumi(rng, n, is_data),
        EMU_PATHS[0]: path_a, EMU_PATHS[1]: path_b,
        REFERENCE_TRIGGER: rng.uniform(size=n) < 0.9 * -np.expm1(-met / 60.0),
        "PuppiMET_pt": met.astype(np.float32),
        "PuppiMET_phi": np.angle(np.exp(1j * met_phi)).astype(np.float32),
        "Muon": collection(np.concatenate([ev, np.flatnonzero(extra_m)]), n, muons),
        "Electron": collection(np.concatenate([ev, np.flatnonzero(extra_e)]), n, electrons),
        "toy_true_eff": EMU_TRIGGER[is_data].probability(m_pt, e_pt),
        "toy_is_signal": np.ones(n, np.int32),
    })
