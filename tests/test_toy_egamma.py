"""The Z→ee NanoAOD toy (``z_ee_nanoaod``, calibflow/toys/egamma.py): its truth is the probability the identification
is drawn with, working points are nested, and radiating electrons fail more often (the pass and fail mass shapes
differ, which the template fits of the EGM recipe rely on)."""

from __future__ import annotations

import itertools
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from calibflow.toys.egamma import BREM_FAIL, ID_EFF, TRIGGER, working_point_probabilities, write_z_ee_file


@pytest.fixture(scope="module")
def electrons(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    path = tmp_path_factory.mktemp("zee") / "data.root"
    write_z_ee_file(str(path), 60000, True, seed=5)
    with uproot.open(path) as f:
        t = f["Events"]
        assert TRIGGER in t and "Electron_genPartFlav" not in t  # data: no generator truth
        a = t.arrays(library="ak")
    return {k[len("Electron_"):]: ak.to_numpy(ak.flatten(a[k])) for k in a.fields if k.startswith("Electron_")}


def test_identification_follows_its_stored_probability(electrons: dict[str, np.ndarray]) -> None:
    """In slices of the stored tight probability, the tight fraction equals the slice's mean probability (4σ)."""
    p, tight = electrons["toy_effTight"], electrons["cutBased"] >= 4
    edges = np.quantile(p, np.linspace(0.0, 1.0, 9))
    for lo, hi in itertools.pairwise(edges):
        sel = (p >= lo) & (p < hi)
        mean = p[sel].mean()
        assert abs(tight[sel].mean() - mean) < 4.0 * np.sqrt(mean * (1.0 - mean) / sel.sum()), (lo, hi)
    assert np.all(electrons["toy_effMedium"] >= p) and np.all((electrons["cutBased"] >= 3) >= tight)


def test_radiating_electrons_fail_more_often() -> None:
    """1 − ε = (1 − S)(1 + K·x): the failure probability of a radiating electron grows with the fraction x it
    radiated, the same way in data and simulation (only S differs), for every working point."""
    pt, eta, x = np.full(3, 40.0), np.full(3, 0.5), np.array([0.0, 0.1, 0.3])
    for is_data in (True, False):
        probs = working_point_probabilities(pt, eta, x, np.ones(3, bool), is_data)
        for wp, eff in probs.items():
            s = ID_EFF[is_data][wp](pt[:1], eta[:1])[0]
            assert eff == pytest.approx(1.0 - (1.0 - s) * (1.0 + BREM_FAIL[wp] * x))
            assert eff[0] > eff[1] > eff[2]


def test_simulation_has_generator_truth(tmp_path: Path) -> None:
    write_z_ee_file(str(tmp_path / "mc.root"), 2000, False, seed=6)
    with uproot.open(tmp_path / "mc.root") as f:
        a = f["Events"].arrays(["Electron_genPartFlav", "Electron_toy_fromZ"], library="np")
    flav, from_z = np.concatenate(a["Electron_genPartFlav"]), np.concatenate(a["Electron_toy_fromZ"])
    assert np.array_equal(flav == 1, from_z) and from_z.mean() > 0.9  # Drell-Yan only, a few extra fakes
