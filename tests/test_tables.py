"""Table arithmetic: ratio errors, pulls, CSV round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calibflow.tables.rows import pull, ratio_errors, read_csv, scale_factor_rows, write_csv


def test_ratio_errors_match_linear_propagation() -> None:
    down, up = ratio_errors(0.8, 0.02, 0.03, 0.9, 0.01, 0.04)
    r = 0.8 / 0.9
    assert up == pytest.approx(r * math.hypot(0.03 / 0.8, 0.01 / 0.9))
    assert down == pytest.approx(r * math.hypot(0.02 / 0.8, 0.04 / 0.9))


def test_ratio_error_coverage_by_toys() -> None:
    """Symmetric Gaussian errors: the propagated error equals the spread of toy ratios (small errors)."""
    rng = np.random.default_rng(3)
    num, den = rng.normal(0.8, 0.01, 200000), rng.normal(0.9, 0.012, 200000)
    down, up = ratio_errors(0.8, 0.01, 0.01, 0.9, 0.012, 0.012)
    assert np.std(num / den) == pytest.approx(up, rel=0.02)
    assert down == pytest.approx(up)


def test_pull_uses_the_side_of_the_truth() -> None:
    assert pull(0.5, 0.6, 0.1, 0.05) == pytest.approx(-2.0)
    assert pull(0.5, 0.4, 0.1, 0.05) == pytest.approx(1.0)


def test_scale_factor_rows_and_csv_round_trip(tmp_path) -> None:
    base = {"p_lo": 2.0, "p_hi": 5.0, "method": "fit", "n_pass": 1, "n_fail": 1}
    eff = [
        {"sample": "data", "bin": 0, **base, "efficiency": 0.8, "err_down": 0.01, "err_up": 0.01, "fit_status": "ok"},
        {"sample": "mc", "bin": 0, **base, "efficiency": 0.9, "err_down": 0.01, "err_up": 0.01, "fit_status": "ok"},
    ]
    rows = scale_factor_rows(eff, "data", "mc")
    assert len(rows) == 1 and rows[0]["scale_factor"] == pytest.approx(0.8 / 0.9)
    write_csv(tmp_path / "sf.csv", rows)
    back = read_csv(tmp_path / "sf.csv")
    assert back[0]["scale_factor"] == pytest.approx(rows[0]["scale_factor"], rel=1e-15)
    assert back[0]["bin"] == 0 and back[0]["status"] == "ok"
