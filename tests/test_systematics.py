"""Systematic combination rules, checked against hand-computed numbers."""

from __future__ import annotations

import math

import pytest

from calibflow.config import Variation
from calibflow.tables.systematics import combine

B = {"p_lo": 2.0, "p_hi": 5.0}
NOMINAL = [{"sample": "data", "bin": 0, **B, "efficiency": 0.80, "err_down": 0.01, "err_up": 0.02}]
SOURCES = [Variation(name="sig", vary={"fit": {"signal": "gauss"}}),
           Variation(name="rng", up={"mass": {"bins": 50}}, down={"mass": {"bins": 200}})]
VARIED = {
    "sig": [{"sample": "data", "bin": 0, **B, "efficiency": 0.77}],
    "rngUp": [{"sample": "data", "bin": 0, **B, "efficiency": 0.81}],
    # an alternative binning: the nominal bin centre (3.5) falls in the second bin
    "rngDown": [{"sample": "data", "bin": 0, "p_lo": 2.0, "p_hi": 3.0, "efficiency": 0.5},
                {"sample": "data", "bin": 1, "p_lo": 3.0, "p_hi": 5.0, "efficiency": 0.78}],
}


def test_quadrature_of_per_source_maximum() -> None:
    (row,) = combine(NOMINAL, VARIED, SOURCES, "quadrature_max", "efficiency", ("sample", "bin"))
    assert row["sigUp"] == pytest.approx(0.83) and row["sigDown"] == pytest.approx(0.77)  # symmetrised
    assert row["rngUp"] == pytest.approx(0.81) and row["rngDown"] == pytest.approx(0.78)
    assert row["syst"] == pytest.approx(math.hypot(0.03, 0.02))
    assert row["total_up"] == pytest.approx(math.hypot(0.02, row["syst"]))
    assert row["total_down"] == pytest.approx(math.hypot(0.01, row["syst"]))


def test_egm_rms_convention() -> None:
    (row,) = combine(NOMINAL, VARIED, SOURCES, "egm_rms", "efficiency", ("sample", "bin"))
    assert row["syst"] == pytest.approx(math.sqrt((0.03**2 + 0.01**2 + 0.02**2) / 3))


def test_missing_variation_gives_nan_not_a_silent_zero() -> None:
    (row,) = combine(NOMINAL, {"sig": []}, SOURCES[:1], "quadrature_max", "efficiency", ("sample", "bin"))
    assert math.isnan(row["syst"])


def test_variation_needs_one_or_two_sides() -> None:
    with pytest.raises(ValueError, match="either 'vary'"):
        Variation(name="x")
    with pytest.raises(ValueError, match="needs both 'up' and 'down'"):
        Variation(name="x", up={"fit": {}})
    with pytest.raises(ValueError, match="'fitt' cannot be varied"):
        Variation(name="x", vary={"fitt": {}})
