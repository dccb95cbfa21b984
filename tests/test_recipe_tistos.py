"""lhcb_trigger_tistos recipe end to end on its CI-size toy (issue 18, item 7): ε_TOS by TIS/TOS closes on the toy
truth over 162 bins × 2 samples, its counts equal numpy's, and the scale factors close too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import uproot

from calibflow.fit.counting import clopper_pearson

from .recipe_helpers import bin_index, efficiencies, pulls, recipe, run, shrink, toy_inputs

EDGES = {"pt": [0.5, 0.8, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0, 10.0, 14.0, 30.0],
         "eta": [2.0, 2.3, 2.6, 2.9, 3.2, 3.5, 3.8, 4.1, 4.4, 5.0]}  # 18 x 9 = 162 bins


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = shrink(recipe("lhcb_trigger_tistos"), {"data": 2500000, "mc": 2500000}, EDGES)
    return run(d, tmp_path_factory.mktemp("tistos"))


def test_closure_of_the_tos_efficiency(out: Path) -> None:
    """Pull mean |μ| ≤ 0.1 and width 0.9–1.1 over ≥ 100 bins (the issue's bar), for ε and the scale factor."""
    p = pulls(out)
    assert p.size == 324 and np.all(np.isfinite(p))
    assert abs(p.mean()) <= 0.1 and 0.9 <= p.std() <= 1.1, (p.mean(), p.std())
    sf = pulls(out, "scale_factor")
    assert sf.size == 162 and abs(sf.mean()) <= 0.15 and 0.85 <= sf.std() <= 1.15, (sf.mean(), sf.std())


def test_counts_equal_numpy(out: Path) -> None:
    eff = efficiencies(out)
    for sample in ("data", "mc"):
        with uproot.open(toy_inputs(out, sample)[0]) as f:
            t = f["DecayTree"].arrays(library="np")
        pt, eta = t["Jpsi_PT"], t["Jpsi_ETA"]
        keep = (pt > 0.5) & (eta > 2) & (eta < 5) & (t["Jpsi_L0Global_TIS"] == 1)
        idx = bin_index([EDGES["pt"], EDGES["eta"]], [pt, eta])
        keep &= idx >= 0
        tis = np.bincount(idx[keep], minlength=162)
        both = np.bincount(idx[keep & (t["Jpsi_L0MuonDecision_TOS"] == 1)], minlength=162)
        for b in range(162):
            r = eff[(sample, b)]
            assert (r["n_pass"], r["n_fail"]) == (both[b], tis[b] - both[b]), (sample, b)
            assert r["efficiency"] == pytest.approx(both[b] / tis[b], rel=1e-12)
            lo, hi = clopper_pearson(both[b], tis[b])  # the sample's interval, as method count
            assert (r["err_down"], r["err_up"]) == pytest.approx((both[b] / tis[b] - lo, hi - both[b] / tis[b]))
