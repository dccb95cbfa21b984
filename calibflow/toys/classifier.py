"""Toy simulation for classifier working points: reconstructed track candidates with a fake-rejection
score, truth-matched (real) or fake, in a flat TTree ``tracks``.

Branches: ``event``, ``trk_pt`` (GeV), ``trk_eta``, ``trk_phi`` (rad), ``trk_nHits``, ``trk_score`` in
(0, 1), ``trk_isMatched`` (1 for a real track). The score of real tracks rises with pT and falls
towards large |η|; fakes score low, less so at low pT (see :mod:`calibflow.toys.common`). Truth, read
only by closure tables: ``toy_true_eff``, the exact probability that the candidate passes the nominal
cut ``trk_score > score_cut`` (option, default 0.5), and ``toy_is_signal`` (= ``trk_isMatched``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from calibflow.io.root import write_ttrees
from calibflow.toys.common import TOY_COMPRESSION, Response, beta_on, gamma_on, toy_options

TREE = "tracks"
PT_RANGE = (0.5, 50.0)  # GeV
ETA_RANGE = (-2.5, 2.5)
FAKE_FRACTION = {True: 0.4, False: 0.3}
"""Fraction of fake candidates in data-like (``is_data``) and simulated samples."""

RESPONSES: dict[tuple[bool, bool], Response] = {
    # (is_real_track, is_data)
    (True, False): Response(1.5, a_logx=0.6, a_y2=-0.15),
    (True, True): Response(1.3, a_logx=0.55, a_y2=-0.20),
    (False, False): Response(-1.8, a_logx=-0.3, a_y2=0.12),
    (False, True): Response(-1.6, a_logx=-0.3, a_y2=0.15),
}


def score_efficiency(real: bool, is_data: bool, pt: np.ndarray, eta: np.ndarray, cut: float) -> np.ndarray:
    """True probability that a real (``real``) or fake track at ``pt`` (GeV), ``eta`` has score > ``cut``."""
    return RESPONSES[(real, is_data)].pass_probability(pt, eta, cut)


def generate_tracks(n: int, is_data: bool, rng: np.random.Generator, score_cut: float = 0.5
                    ) -> dict[str, np.ndarray]:
    """``n`` track candidates as flat branches (see the module docstring)."""
    real = rng.uniform(size=n) >= FAKE_FRACTION[is_data]
    pt = gamma_on(rng, n, 1.0, 4.0, *PT_RANGE)
    eta = beta_on(rng, n, *ETA_RANGE, 1.3, 1.3)
    score = np.empty(n)
    true_eff = np.empty(n)
    for flag in (True, False):
        sel = real == flag
        response = RESPONSES[(flag, is_data)]
        score[sel] = response.sample(rng, pt[sel], eta[sel])
        true_eff[sel] = response.pass_probability(pt[sel], eta[sel], score_cut)
    n_hits = np.where(real, rng.poisson(11.0, n), rng.poisson(7.0, n)) + 3
    return {
        "event": (np.arange(n) // 8).astype(np.int64),
        "trk_pt": pt,
        "trk_eta": eta,
        "trk_phi": rng.uniform(-np.pi, np.pi, n),
        "trk_nHits": n_hits.astype(np.int32),
        "trk_score": score,
        "trk_isMatched": real.astype(np.int32),
        "toy_true_eff": true_eff,
        "toy_is_signal": real.astype(np.int32),
    }


def write_classifier_file(path: str, n: int, is_data: bool, seed: int, **options: Any) -> None:
    """Classifier toy: ``n`` track candidates with ``seed`` in tree ``tracks`` of the ROOT file ``path``.

    Option ``score_cut`` (default 0.5): the nominal cut of the ``toy_true_eff`` truth.
    """
    opts = toy_options("classifier_tracks", options, {"score_cut": 0.5})
    rng = np.random.default_rng(seed)
    write_ttrees(path, {TREE: generate_tracks(n, is_data, rng, opts["score_cut"])}, TOY_COMPRESSION)
