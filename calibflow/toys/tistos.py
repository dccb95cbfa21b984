"""Toy for LHCb trigger efficiencies by TIS/TOS (LHCb-PUB-2014-039): triggered J/ψ → μμ candidates with their
TIS, TOS and trigger decisions, in a flat TTree ``DecayTree``.

Branches: ``Jpsi_PT`` (GeV), ``Jpsi_ETA``, ``nTracks``, ``Jpsi_L0MuonDecision_TOS`` (the signal muons fire the
muon trigger: probability ε_TOS(pT, η), a turn-on in pT, a few per cent lower in data),
``Jpsi_L0Global_TIS`` (the rest of the event fires it: probability rising with ``nTracks``, independent of the
signal's TOS at given kinematics, as the method assumes), ``Jpsi_L0Global_Dec`` (TIS or TOS, or triggered by
neither: 3 %). Only triggered candidates are written, as in real data. Truth for closure tables:
``toy_true_eff_tos`` = ε_TOS(pT, η) of the candidate; the TIS candidates are an unbiased sample of all
candidates (TIS is independent of TOS), so the mean of ``toy_true_eff_tos`` over them is the true ε_TOS of a bin.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from calibflow.io.root import write_ttrees
from calibflow.toys.common import TOY_COMPRESSION, beta_on, gamma_on, logistic, toy_options

TREE = "DecayTree"
PT_RANGE = (0.5, 30.0)  # GeV
ETA_RANGE = (2.0, 5.0)
TOB = 0.03
"""Probability that a candidate neither TIS nor TOS is triggered all the same."""


def tos_efficiency(pt: np.ndarray, eta: np.ndarray, is_data: bool) -> np.ndarray:
    """True ε_TOS at ``pt`` (GeV), ``eta``: a turn-on at 1.8 GeV (2.0 in data), plateau 0.93–0.96."""
    threshold = 2.0 if is_data else 1.8
    plateau = 0.93 if is_data else 0.96
    return plateau * logistic((np.asarray(pt) - threshold) / 0.45) * (1.0 - 0.01 * (np.asarray(eta) - 2.0))


def tis_probability(n_tracks: np.ndarray) -> np.ndarray:
    """Probability that the rest of the event fires the trigger (rises with the track multiplicity)."""
    return 0.15 + 0.45 * logistic((np.asarray(n_tracks) - 120.0) / 40.0)


def generate_candidates(n: int, is_data: bool, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``n`` produced candidates, of which the triggered ones are returned as flat branches."""
    pt = gamma_on(rng, n, 2.0, 2.0, *PT_RANGE)
    eta = beta_on(rng, n, *ETA_RANGE, 2.0, 2.5)
    n_tracks = rng.poisson(110.0 if is_data else 95.0, n)
    p_tos = tos_efficiency(pt, eta, is_data)
    tos = rng.uniform(size=n) < p_tos
    tis = rng.uniform(size=n) < tis_probability(n_tracks)
    dec = tis | tos | (rng.uniform(size=n) < TOB)
    return {
        "Jpsi_PT": pt[dec],
        "Jpsi_ETA": eta[dec],
        "nTracks": n_tracks[dec].astype(np.int32),
        "Jpsi_L0MuonDecision_TOS": tos[dec].astype(np.int32),
        "Jpsi_L0Global_TIS": tis[dec].astype(np.int32),
        "Jpsi_L0Global_Dec": dec[dec].astype(np.int32),
        "toy_true_eff_tos": p_tos[dec],
    }


def write_tistos_file(path: str, n: int, is_data: bool, seed: int, **options: Any) -> None:
    """TIS/TOS toy: ``n`` produced candidates with ``seed``, the triggered ones in tree ``DecayTree`` of ``path``
    (no options)."""
    toy_options("lhcb_trigger_tistos", options, {})
    rng = np.random.default_rng(seed)
    write_ttrees(path, {TREE: generate_candidates(n, is_data, rng)}, TOY_COMPRESSION)
