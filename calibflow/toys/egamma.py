"""Toy CMS NanoAOD ``Events`` of Z→ee for electron-ID tag-and-probe with simulation templates (recipe
``cms_egamma_id_template``), with known truth.

Electrons radiate: with probability 0.35 + 0.10·|η| an electron loses a fraction x ~ 0.3·Beta(1, 3) of its
momentum (bremsstrahlung in the tracker material), which gives the Z peak its low-mass tail. Radiating electrons
fail the identification more often: the failure probability is (1 − S(pT, |η|))·(1 + K·x), K larger for tighter
working points, so the fail mass shape has the longer tail, as in CMS data: the reason egm_tnp_analysis fits
per-category simulation templates. Data and simulation differ in S only, so the fail shapes of data and
simulation are the same (and the pass shapes nearly so): the template model is exact up to resolution. Data and simulation share the radiation and resolution; data have an extra 1 % Gaussian energy smearing
(the same for every electron), a +0.4 % energy scale and other identification efficiencies, so the data's
signal is, to a good approximation, the simulation's template convolved with a narrow Gaussian of positive
mean — the nominal model of the recipe.

Branches follow NanoAOD (see :mod:`calibflow.toys.nanoaod`): ``Electron_pt/eta/phi/mass/charge``,
``Electron_deltaEtaSC`` (supercluster η − η), ``Electron_cutBased`` (0 fail, 1 veto, 2 loose, 3 medium, 4 tight;
nested), ``Electron_genPartFlav`` (simulation: 1 prompt, 0 unmatched), ``HLT_Ele32_WPTight_Gsf`` and electron
trigger objects (id 11, filterBits bit 1 = WPTight). Truth (``toy_`` fields): per electron ``toy_effTight`` and
``toy_effMedium`` (probabilities of ``cutBased >= 4`` and ``>= 3``), ``toy_brem`` (x) and ``toy_fromZ``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from calibflow.toys.common import toy_options
from calibflow.toys.nanoaod import (
    ELECTRON_MASS,
    Surface,
    _lepton,
    collection,
    muon_trigger_objects,
    nonprompt_leptons,
    run_and_lumi,
    write_tree,
    z_decays,
)

TRIGGER = "HLT_Ele32_WPTight_Gsf"
W_MASS = 80.377  # GeV
WPTIGHT_BIT = 2
"""TrigObj_filterBits of electron objects: bit 1 (value 2) = the WPTight single-electron filter."""
WORKING_POINTS = ("veto", "loose", "medium", "tight")
"""Cut-based working points, loosest first (``cutBased`` = how many an electron passes)."""
ID_EFF = {
    True: {"veto": Surface(0.985, a=0.10, x0=5.0, scale=12.0, b=0.004), "loose": Surface(0.960, a=0.20, x0=5.0, scale=13.0, b=0.008),
           "medium": Surface(0.925, a=0.30, x0=5.0, scale=14.0, b=0.012), "tight": Surface(0.885, a=0.38, x0=5.0, scale=15.0, b=0.016)},
    False: {"veto": Surface(0.990, a=0.08, x0=5.0, scale=11.0, b=0.003), "loose": Surface(0.970, a=0.17, x0=5.0, scale=12.0, b=0.006),
            "medium": Surface(0.945, a=0.26, x0=5.0, scale=13.0, b=0.009), "tight": Surface(0.915, a=0.33, x0=5.0, scale=14.0, b=0.012)},
}
"""S: efficiency of each working point for non-radiating prompt electrons versus pT (GeV) and |η|, data (True)
and simulation (False); every surface lies below the looser one's."""
BREM_FAIL = {"veto": 1.0, "loose": 2.0, "medium": 3.0, "tight": 4.0}
"""K of the factor (1 + K·x) a radiated momentum fraction x (≤ 0.3) multiplies the failure probability by."""
FAKE_PASS = {"veto": 0.60, "loose": 0.40, "medium": 0.25, "tight": 0.15}
"""Working-point probabilities of non-prompt electrons."""
DEFAULTS = {"signal_fraction_data": 0.9, "extra_electron_rate": 0.10, "resolution": 0.015,
            "data_smear": 0.01, "data_energy_scale": 1.004}


def radiate(rng: np.random.Generator, pt: np.ndarray, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pT after radiation in GeV, radiated fraction x) of electrons of ``pt``, ``eta`` (module docstring)."""
    rad = rng.uniform(size=pt.shape) < 0.35 + 0.10 * np.abs(eta)
    x = np.where(rad, 0.3 * rng.beta(1.0, 3.0, pt.shape), 0.0)
    return pt * (1.0 - x), x


def w_electrons(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """``n`` prompt electrons of W→eν decays (the tags of the W+jets background of Z→ee tag-and-probe): pT at
    the Jacobian peak, (m_W/2)·sin θ* smeared by 4 GeV (≥ 5 GeV), |η| < 2.5, random charge."""
    eta, phi = rng.uniform(-2.5, 2.5, n), rng.uniform(-math.pi, math.pi, n)
    pt = np.maximum(0.5 * W_MASS * np.sqrt(1.0 - rng.uniform(-1.0, 1.0, n) ** 2) + rng.normal(0.0, 4.0, n), 5.0)
    return pt, eta, phi, rng.choice(np.array([-1, 1], np.int32), n)


def working_point_probabilities(pt: np.ndarray, eta: np.ndarray, brem: np.ndarray, prompt: np.ndarray,
                                is_data: bool) -> dict[str, np.ndarray]:
    """Probability of each working point per electron (nested: each ≤ the looser one's)."""
    out = {}
    for wp in WORKING_POINTS:
        eff = np.clip(1.0 - (1.0 - ID_EFF[is_data][wp](pt, np.abs(eta))) * (1.0 + BREM_FAIL[wp] * brem), 0.0, 1.0)
        out[wp] = np.where(prompt, eff, FAKE_PASS[wp])
    return out


def _electron_fields(rng: np.random.Generator, pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, charge: np.ndarray,
                     brem: np.ndarray, prompt: np.ndarray, from_z: np.ndarray, is_data: bool) -> dict[str, np.ndarray]:
    """Electron collection fields; ``cutBased`` from one uniform number per electron against the nested
    working-point probabilities."""
    probs = working_point_probabilities(pt, eta, brem, prompt, is_data)
    u = rng.uniform(size=len(pt))
    cut_based = sum((u < probs[wp]).astype(np.int32) for wp in WORKING_POINTS)
    out = {**_lepton(pt, eta, phi, charge, ELECTRON_MASS),
           "deltaEtaSC": rng.normal(0.0, 0.004, len(pt)).astype(np.float32), "cutBased": cut_based.astype(np.int32)}
    if not is_data:
        out["genPartFlav"] = np.where(prompt, 1, 0).astype(np.uint8)
    return {**out, "toy_effTight": probs["tight"], "toy_effMedium": probs["medium"], "toy_brem": brem,
            "toy_fromZ": from_z}


def write_z_ee_file(path: str, n: int, is_data: bool, seed: int, **options: Any) -> None:
    """Z→ee NanoAOD toy with ``n`` events (options: ``signal_fraction_data``, ``extra_electron_rate``, ``resolution``
    (relative pT resolution at η = 0), ``data_smear`` (the data's extra relative energy smearing) and
    ``data_energy_scale``).

    Data mix Z events with W+jets-like background: a prompt W electron (:func:`w_electrons`) and a fake (a jet
    taken for an electron, pT 5 + Exp(15 GeV), random direction); simulation is Drell-Yan only. Both may hold an
    extra non-prompt electron. Truth per electron: ``Electron_toy_effTight``, ``Electron_toy_effMedium``,
    ``Electron_toy_brem``, ``Electron_toy_fromZ`` (module docstring).
    """
    opt = toy_options("z_ee_nanoaod", options, DEFAULTS)
    rng = np.random.default_rng(seed)
    is_z = rng.uniform(size=n) < (opt["signal_fraction_data"] if is_data else 1.0)
    nz = int(is_z.sum())
    z = z_decays(rng, nz, 1.0, ELECTRON_MASS, opt["resolution"])
    bkg = [np.stack(cols, axis=1) for cols in zip(w_electrons(rng, n - nz), nonprompt_leptons(rng, n - nz, 15.0),
                                                     strict=True)]
    n_extra = int((extra := rng.uniform(size=n) < opt["extra_electron_rate"]).sum())
    extra_e = nonprompt_leptons(rng, n_extra)
    ev_z, ev_b = np.flatnonzero(is_z), np.flatnonzero(~is_z)
    event = np.concatenate([np.repeat(ev_z, 2), np.repeat(ev_b, 2), np.flatnonzero(extra)])
    pt, eta, phi, charge = (np.concatenate([zc.ravel(), bc.ravel(), ec]) for zc, bc, ec in zip(z, bkg, extra_e, strict=True))
    from_z = np.concatenate([np.ones(2 * nz, bool), np.zeros(2 * (n - nz) + n_extra, bool)])
    prompt = from_z.copy()
    prompt[2 * nz:2 * n:2] = True  # the first electron of each background pair; the second is a fake
    if is_data:  # the data's extra energy smearing and scale: the signal is the simulation's (x) a Gaussian
        pt = pt * opt["data_energy_scale"] * (1.0 + rng.normal(0.0, opt["data_smear"], len(pt)))
    radiated, brem = radiate(rng, pt, eta)
    pt, brem = np.where(prompt, radiated, pt), np.where(prompt, brem, 0.0)  # non-prompt: already soft
    electrons = _electron_fields(rng, pt, eta, phi, charge, brem, prompt, from_z, is_data)
    trig = muon_trigger_objects(rng, event, pt, eta, phi, 0.93 if is_data else 0.96, n, obj_id=11,
                                bits=WPTIGHT_BIT, x50=33.0, others=(1, 13))
    trig_ev = trig.pop("event")
    fired = (trig["id"] == 11) & (trig["filterBits"] & WPTIGHT_BIT > 0) & (trig["pt"] > 32.0)
    write_tree(path, {
        **run_and_lumi(rng, n, is_data),
        TRIGGER: np.bincount(trig_ev[fired], minlength=n) > 0,
        "PuppiMET_pt": rng.gamma(2.0, 8.0, n).astype(np.float32),
        "PuppiMET_phi": rng.uniform(-math.pi, math.pi, n).astype(np.float32),
        "Electron": collection(event, n, electrons), "TrigObj": collection(trig_ev, n, trig),
    })
