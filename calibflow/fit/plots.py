"""Per-bin fit figures: pass and fail mass panels with the fitted model and Poisson pulls below."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mplhep
import numpy as np

from calibflow.fit.diagnostics import poisson_pulls
from calibflow.fit.passfail import PassFailModel


def plot_pass_fail_fit(
    edges: np.ndarray, hp: np.ndarray, hf: np.ndarray, result: Mapping[str, Any], background: str,
    fail_width_shift: bool, path: str, title: str = "",
) -> None:
    """Data and fitted model of both categories (``result`` as written by a FitBin task)."""
    model = PassFailModel.create(result["signal_model"], background, edges[0], edges[-1], fail_width_shift)
    x = np.array([result["values"][n] for n in model.names])
    expected = model.expected(edges, x)
    centres = 0.5 * (edges[1:] + edges[:-1])
    plt.style.use(mplhep.style.ROOT)
    fig, axes = plt.subplots(2, 2, figsize=(12, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for col, (label, h, nu) in enumerate((("pass", hp, expected[0]), ("fail", hf, expected[1]))):
        ax, pax = axes[0, col], axes[1, col]
        ax.errorbar(centres, h, yerr=np.sqrt(np.maximum(h, 1.0)), fmt="ko", ms=3, label=f"{label} ({h.sum():.0f})")
        ax.stairs(nu, edges, color="C0", lw=2, label="fit")
        ax.set_ylabel("candidates / bin")
        ax.legend(fontsize=10)
        pax.bar(centres, poisson_pulls(h, nu), width=np.diff(edges), color="C1")
        pax.axhline(0, color="grey", lw=1)
        pax.set_ylim(-5, 5)
        pax.set_ylabel("pull")
        pax.set_xlabel("mass")
    eff = result["efficiency"]
    fig.suptitle(f"{title}  ε = {eff:.4f} -{result['err_down']:.4f} +{result['err_up']:.4f}  [{result['status']}]",
                 fontsize=12)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
