"""Systematic combination rules, checked against hand-computed numbers."""

from __future__ import annotations

import math

import pytest

from calibflow.config import Variation
from calibflow.tables.systematics import Runs, combine

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
    (row,) = combine(NOMINAL, Runs(VARIED, SOURCES, "quadrature_max"), "efficiency", ("sample", "bin"))
    assert row["sigUp"] == pytest.approx(0.83) and row["sigDown"] == pytest.approx(0.77)  # symmetrised
    assert row["rngUp"] == pytest.approx(0.81) and row["rngDown"] == pytest.approx(0.78)
    assert row["syst"] == pytest.approx(math.hypot(0.03, 0.02))
    assert row["total_up"] == pytest.approx(math.hypot(0.02, row["syst"]))
    assert row["total_down"] == pytest.approx(math.hypot(0.01, row["syst"]))


def test_egm_rms_convention() -> None:
    (row,) = combine(NOMINAL, Runs(VARIED, SOURCES, "egm_rms"), "efficiency", ("sample", "bin"))
    assert row["syst"] == pytest.approx(math.sqrt((0.03**2 + 0.01**2 + 0.02**2) / 3))


def test_missing_variation_gives_nan_not_a_silent_zero() -> None:
    (row,) = combine(NOMINAL, Runs({"sig": []}, SOURCES[:1], "quadrature_max"), "efficiency", ("sample", "bin"))
    assert math.isnan(row["syst"])


def test_variation_needs_one_or_two_sides() -> None:
    with pytest.raises(ValueError, match="either 'vary'"):
        Variation(name="x")
    with pytest.raises(ValueError, match="needs both 'up' and 'down'"):
        Variation(name="x", up={"fit": {}})
    with pytest.raises(ValueError, match="'fitt' cannot be varied"):
        Variation(name="x", vary={"fitt": {}})


# ---------------------------------------------------------------- applies_to and the EGM conventions -------
# One bin, data and simulation efficiencies with asymmetric statistical errors; each alternative run changes
# the efficiencies below. Expected values are computed by hand from these numbers, not by the code.

BIN = {"bin": 0, "p_lo": 2.0, "p_hi": 5.0}
EFF = {"data": (0.90, 0.010, 0.012), "mc": (0.95, 0.004, 0.005)}  # efficiency, err_down, err_up
STAT_DATA, STAT_MC = 0.012, 0.005  # max(err_down, err_up): EGM's symmetric errors
ALT = {  # alternative run -> (data efficiency, simulation efficiency)
    "altSig": (0.93, 0.95), "altBkg": (0.88, 0.95), "altSigBkg": (0.91, 0.95), "altMC": (0.90, 0.97),
    "altTag": (0.89, 0.94),
}


def _eff_rows(data: float, mc: float) -> list[dict]:
    return [{"sample": s, **BIN, "method": "fit", "efficiency": e, "err_down": EFF[s][1], "err_up": EFF[s][2],
             "fit_status": "ok"} for s, e in (("data", data), ("mc", mc))]


def _combined(method: str, roles: tuple[str, ...], alt: dict | None = None, **extra) -> tuple[dict, dict, dict]:
    """(data efficiency row, simulation efficiency row, scale-factor row) combined by ``method``."""
    from calibflow.tables.rows import scale_factor_rows

    alt = {**ALT, **(alt or {})}
    sources = [Variation(name=r, vary={"fit": {}}, **extra.get(r, {})) for r in roles]
    nominal = _eff_rows(EFF["data"][0], EFF["mc"][0])
    varied = {r: _eff_rows(*alt[r]) for r in roles}
    sides = {"data": "data", "mc": "mc"}
    data_row, mc_row = combine(nominal, Runs(varied, sources, method, sides), "efficiency", ("sample", "bin"))
    sf_varied = {r: scale_factor_rows(rows, "data", "mc") for r, rows in varied.items()}
    (sf_row,) = combine(scale_factor_rows(nominal, "data", "mc"), Runs(sf_varied, sources, method), "scale_factor",
                        ("data", "bin"))
    return data_row, mc_row, sf_row


def test_egm_classic_by_hand() -> None:
    data, mc, sf = _combined("egm_classic", ("altSig", "altBkg", "altMC", "altTag"))
    # data efficiency: its own statistical error and the data-side roles (altSig +0.03, altBkg -0.02)
    assert data["syst"] == pytest.approx(math.sqrt(0.03**2 + 0.02**2))
    assert data["total_up"] == data["total_down"] == pytest.approx(math.sqrt(0.012**2 + 0.03**2 + 0.02**2))
    assert (data["altSigUp"], data["altSigDown"]) == (pytest.approx(0.93), pytest.approx(0.87))
    assert data["altMCUp"] == data["altMCDown"] == 0.90  # a simulation-side role: not a data systematic
    # simulation efficiency: altMC +0.02 and altTag -0.01 against the nominal simulation efficiency
    assert mc["syst"] == pytest.approx(math.sqrt(0.02**2 + 0.01**2))
    assert mc["total_up"] == pytest.approx(math.sqrt(0.005**2 + 0.02**2 + 0.01**2))
    assert mc["altSigUp"] == 0.95
    # scale factor: sigma / eff_MC with every term, EGM's SF error
    sigma2 = 0.012**2 + 0.005**2 + 0.03**2 + 0.02**2 + 0.02**2 + 0.01**2
    assert sf["scale_factor"] == pytest.approx(0.90 / 0.95)
    assert sf["total_up"] == sf["total_down"] == pytest.approx(math.sqrt(sigma2) / 0.95)
    assert sf["syst"] == pytest.approx(math.sqrt(0.03**2 + 0.02**2 + 0.02**2 + 0.01**2) / 0.95)
    assert sf["altTagUp"] == pytest.approx(0.90 / 0.95 + 0.01 / 0.95)


def test_egm_2023_by_hand() -> None:
    data, mc, sf = _combined("egm_2023", ("altSig", "altBkg", "altSigBkg", "altMC"))
    # mean of the nominal 0.90 and the fits 0.93, 0.88, 0.91 is 0.905; terms 0.025, 0.025, 0.005
    spread = (0.025**2 + 0.025**2 + 0.005**2) / 3
    assert data["syst"] == pytest.approx(math.sqrt(spread / 2))
    assert data["total_up"] == pytest.approx(math.sqrt(spread / 2 + 0.012**2))
    assert data["altSigUp"] == pytest.approx(0.925) and data["altSigBkgDown"] == pytest.approx(0.895)
    assert mc["syst"] == pytest.approx(0.02)  # altMC: 0.97 - 0.95 is above the simulation's error 0.005
    sigma2 = spread / 2 + 0.02**2 + 0.012**2 + 0.005**2
    assert sf["total_up"] == sf["total_down"] == pytest.approx(math.sqrt(sigma2) / 0.95)
    assert sf["syst"] == pytest.approx(math.sqrt(spread / 2 + 0.02**2) / 0.95)


def test_egm_2023_alt_mc_below_the_simulation_error_is_dropped() -> None:
    roles = ("altSig", "altBkg", "altSigBkg", "altMC")
    _, mc, sf = _combined("egm_2023", roles, {"altMC": (0.90, 0.953)})  # |0.003| < 0.005
    assert mc["syst"] == 0.0 and mc["altMCUp"] == 0.95
    spread = (0.025**2 + 0.025**2 + 0.005**2) / 3
    assert sf["syst"] == pytest.approx(math.sqrt(spread / 2) / 0.95)
    _, mc, _ = _combined("egm_2023", roles, {"altMC": (0.90, 0.93)})  # -0.02: |d| is compared
    assert mc["syst"] == pytest.approx(0.02)


def test_applies_to_counts_a_source_only_on_its_quantities() -> None:
    extra = {"altSig": {"applies_to": ["sf"]}, "altMC": {"applies_to": ["mc", "sf"]}}
    data, mc, sf = _combined("quadrature_max", ("altSig", "altMC"), **extra)
    assert data["syst"] == 0.0 and data["altSigUp"] == data["altSigDown"] == 0.90  # neither counts on data
    assert mc["syst"] == pytest.approx(0.02)  # altMC on the simulation efficiency; altSig left it unchanged
    sf_sig, sf_mc = 0.93 / 0.95 - 0.90 / 0.95, 0.90 / 0.97 - 0.90 / 0.95
    assert sf["syst"] == pytest.approx(math.hypot(sf_sig, sf_mc))
    data, mc, sf = _combined("egm_rms", ("altSig", "altMC"), **extra)
    assert mc["syst"] == pytest.approx(0.02)  # the mean over counted runs only: altMC alone
    assert sf["syst"] == pytest.approx(math.sqrt((sf_sig**2 + sf_mc**2) / 2))


def test_egm_applies_to_leaves_a_term_out() -> None:
    data, _, sf = _combined("egm_classic", ("altSig", "altBkg"), altBkg={"applies_to": ["data"]})
    assert data["syst"] == pytest.approx(math.sqrt(0.03**2 + 0.02**2))
    assert sf["syst"] == pytest.approx(0.03 / 0.95) and sf["altBkgUp"] == pytest.approx(0.90 / 0.95)
