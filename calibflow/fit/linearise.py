"""A fitted pass/fail bin as a ratio of sums over its candidates, for the bootstrap over events.

A pass/fail fit gives its efficiency as ε = N_s^pass / (N_s^pass + N_s^fail). With each category's fitted signal and
background shapes and yields, the sPlot weights w_s(m) of that category (:func:`calibflow.fit.sweights.sweights_from_fit`)
sum to its fitted signal yield over its candidates (exactly at the likelihood maximum of the yields), so
ε ≈ Σ_pass w_s / Σ_all w_s: a weighted count whose per-event bootstrap (:mod:`calibflow.tables.bootstrap`) estimates
the statistical correlation of the fitted efficiencies of different bins — the linearisation of the fit about its
minimum with the shapes held at their fitted values. The model is taken per mass bin of the fit's histogram (its
expected counts there, :meth:`PassFailModel.components`); candidate weights are left out of W (the correlation,
not the size of the errors, is what the bootstrap gives).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from calibflow.fit.passfail import fitted_model
from calibflow.fit.sweights import sweights_from_fit

NO_BACKGROUND = 1e-9
"""A category whose fitted background is below this fraction of its signal is signal only: weight 1."""


def category_signal_weights(mass: np.ndarray, edges: np.ndarray, signal: np.ndarray,
                            background: np.ndarray) -> np.ndarray:
    """sPlot signal weights of candidates at ``mass`` in one category whose fitted model expects ``signal`` and
    ``background`` counts in the mass bins ``edges``; candidates outside the edges get 0."""
    ns, nb = float(signal.sum()), float(background.sum())
    j = np.searchsorted(edges, mass, side="right") - 1
    inside = (j >= 0) & (j < len(edges) - 1)
    out = np.zeros(mass.size)
    if ns <= 0 or not inside.any():
        return out
    if nb <= NO_BACKGROUND * ns:
        out[inside] = 1.0
        return out
    width = np.diff(edges)
    dens = {"signal": signal / ns / width, "background": background / nb / width}
    pdfs = {k: (lambda m, d=d: d[np.searchsorted(edges, m, side="right") - 1]) for k, d in dens.items()}
    try:
        out[inside] = sweights_from_fit(mass[inside], {"signal": ns, "background": nb}, pdfs)["signal"]
    except np.linalg.LinAlgError:  # one candidate, or signal and background alike: the signal probability
        jj = j[inside]
        out[inside] = signal[jj] / np.where(signal[jj] + background[jj] > 0, signal[jj] + background[jj], 1.0)
    return out


def fitted_signal_weights(mass: np.ndarray, passed: np.ndarray, edges: np.ndarray, result: Mapping[str, Any],
                          background: str, fail_width_shift: bool) -> np.ndarray | None:
    """Per candidate of one bin (its ``mass`` and pass decision ``passed``), its signal weight under the bin's fit
    ``result`` (as written by ``measure_bin``) on the mass bins ``edges`` (module docstring); None when the bin was
    not fitted."""
    fitted = fitted_model(result, background, fail_width_shift, float(edges[0]), float(edges[-1]))
    if fitted is None:
        return None
    model, x = fitted
    sig_p, bkg_p, sig_f, bkg_f = model.components(edges, x)
    passed = np.asarray(passed, dtype=bool)
    out = np.zeros(mass.size)
    out[passed] = category_signal_weights(mass[passed], edges, sig_p, bkg_p)
    out[~passed] = category_signal_weights(mass[~passed], edges, sig_f, bkg_f)
    return out
