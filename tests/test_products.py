"""Alternative probe definitions (methods) side by side, and their product (combined efficiency)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from calibflow.config import ConfigError, parse_config
from calibflow.plan import Plan
from calibflow.tables.products import product_rows
from calibflow.tables.rows import read_csv
from tasks import ExportTables
from tasks.runner import build

from .conftest import small_demo_dict


def test_product_rows_propagate_relative_errors() -> None:
    a = [{"sample": "d", "bin": 0, "x_lo": 0, "x_hi": 1, "efficiency": 0.9, "err_down": 0.01, "err_up": 0.02}]
    b = [{"sample": "d", "bin": 0, "x_lo": 0, "x_hi": 1, "efficiency": 0.8, "err_down": 0.04, "err_up": 0.03}]
    (r,) = product_rows([a, b], "efficiency", ("sample", "bin"), ["A", "B"])
    assert r["efficiency"] == pytest.approx(0.72)
    assert r["err_up"] == pytest.approx(0.72 * math.hypot(0.02 / 0.9, 0.03 / 0.8))
    assert r["efficiency_A"] == 0.9 and r["efficiency_B"] == 0.8
    b[0]["x_hi"] = 2
    with pytest.raises(ValueError, match="other boundaries"):
        product_rows([a, b], "efficiency", ("sample", "bin"), ["A", "B"])


def test_products_must_name_methods() -> None:
    d = small_demo_dict()
    d["methods"] = {"A": {"pass": "probe_score > 0.2"}}
    d["products"] = {"AB": ["A", "B"]}
    with pytest.raises(ConfigError, match=r"products.AB: needs two or more of the methods \['A'\]; unknown: \['B'\]"):
        parse_config(d)


def test_methods_and_product_through_the_graph(write_config, tmp_path: Path) -> None:
    d = small_demo_dict()
    d["methods"] = {"assoc": {"pass": "probe_Assoc == 1"}, "score": {"pass": "probe_score > 0.4"}}
    d["products"] = {"combined": ["assoc", "score"]}
    plan = Plan.create(write_config(d), tmp_path / "res")
    report = build(plan, [ExportTables(config=plan.config_path, result_dir=plan.result_dir)], workers=2)
    assert report.ok, report.failed
    out = Path(plan.workdir)
    nominal = read_csv(out / "efficiencies.csv")
    assoc = read_csv(out / "methods" / "assoc" / "efficiencies.csv")
    score = read_csv(out / "methods" / "score" / "efficiencies.csv")
    combined = read_csv(out / "methods" / "combined" / "efficiencies.csv")
    # the method with the nominal pass criterion reproduces the nominal table (content keys shared the fits)
    assert [r["efficiency"] for r in assoc] == [r["efficiency"] for r in nominal]
    for c, a, s in zip(combined, assoc, score, strict=True):
        assert c["efficiency"] == pytest.approx(a["efficiency"] * s["efficiency"], rel=1e-12)
    assert (out / "methods" / "combined" / "corrections.json").exists()
    assert report.ran["FitBin"] == 12 * 2  # nominal (= assoc) and score: the assoc fits were reused
