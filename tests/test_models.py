"""Shapes: primitives against numerical integrals, densities against scipy / independent formulae."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, interpolate, special, stats

from calibflow.fit import models as M

LO, HI = 2900.0, 3300.0

# name -> (kind, parameters, independent density up to a constant, or None)
CASES = {
    "gauss": ("signal", (3100.0, 12.0), lambda x: stats.norm(3100.0, 12.0).pdf(x)),
    "double_gauss": ("signal", (3097.0, 10.0, 30.0, 0.6),
                     lambda x: 0.6 * stats.norm(3097, 10).pdf(x) + 0.4 * stats.norm(3097, 30).pdf(x)),
    "crystalball": ("signal", (3097.0, 13.0, 1.3, 4.0), lambda x: stats.crystalball(1.3, 4.0, 3097.0, 13.0).pdf(x)),
    "double_crystalball": ("signal", (3097.0, 13.0, 1.3, 4.0, 2.0, 6.0), None),
    "voigt": ("signal", (3097.0, 8.0, 5.0), lambda x: special.voigt_profile(x - 3097.0, 8.0, 5.0)),
    "johnsonsu": ("signal", (3090.0, 25.0, -0.5, 2.0), lambda x: stats.johnsonsu(-0.5, 2.0, 3090.0, 25.0).pdf(x)),
    "exponential": ("background", (-0.003,), lambda x: stats.expon(scale=1 / 0.003).pdf(x - LO)),
    "linear": ("background", (0.4,), lambda x: 1.0 + 0.4 * (2 * (x - LO) / (HI - LO) - 1)),
    "chebyshev3": ("background", (0.3, -0.2, 0.1),
                   lambda x: np.polynomial.chebyshev.Chebyshev([1, 0.3, -0.2, 0.1], domain=[LO, HI])(x)),
    "bernstein3": ("background", (2.0, 0.5, 3.0),
                   lambda x: interpolate.BPoly(np.array([1.0, 2.0, 0.5, 3.0])[:, None], [LO, HI])(x)),
    "cms": ("background", (2950.0, 0.02, 0.01),
            lambda x: special.erfc(0.02 * (2950.0 - x)) * np.exp(-0.01 * (x - 2950.0))),
    "argus": ("background", (3400.0, 2.0, 0.5), lambda x: stats.argus(2.0, scale=3400.0).pdf(x)),
    "dstar_threshold": ("background", (2890.0, 0.7, 0.004),
                        lambda x: stats.gamma(1.7, loc=2890.0, scale=1 / 0.004).pdf(x)),
}


def _dcb_reference(x: np.ndarray) -> np.ndarray:
    """Two one-sided scipy Crystal Balls (right one mirrored), each scaled to 1 at the mode."""
    left, right = stats.crystalball(1.3, 4.0, 3097.0, 13.0), stats.crystalball(2.0, 6.0, 3097.0, 13.0)
    x = np.asarray(x, dtype=float)
    return np.where(x < 3097.0, left.pdf(x) / left.pdf(3097.0), right.pdf(2 * 3097.0 - x) / right.pdf(3097.0))


def _template() -> M.Shape:
    e = np.linspace(3000.0, 3200.0, 81)
    return M.template_shape(e, stats.norm(3097.0, 10.0).pdf(0.5 * (e[1:] + e[:-1])))


def _quad(f, a: float, b: float) -> float:
    return integrate.quad(f, a, b, points=[3097.0, 3100.0], limit=400, epsabs=1e-13, epsrel=1e-12)[0]


@pytest.mark.parametrize("name", sorted(CASES))
def test_cdf_is_primitive_of_normalised_pdf(name: str) -> None:
    kind, p, _ = CASES[name]
    shape = M.get_shape(kind, name)
    pdf = lambda u: M.normalised_pdf(shape, np.array([u]), LO, HI, *p)[0]  # noqa: E731
    assert _quad(pdf, LO, HI) == pytest.approx(1.0, rel=1e-6)
    for a, b in [(LO, 3060.0), (3060.0, 3120.0), (3085.0, HI)]:
        frac = np.diff(M.normalised_cdf(shape, np.array([a, b]), LO, HI, *p))[0]
        assert frac == pytest.approx(_quad(pdf, a, b), rel=1e-7, abs=1e-10)


@pytest.mark.parametrize("name", sorted(CASES))
def test_pdf_matches_independent_reference(name: str) -> None:
    kind, p, ref = CASES[name]
    ref = ref or _dcb_reference
    shape = M.get_shape(kind, name)
    x = np.linspace(LO, HI, 41)
    expected = ref(x) / _quad(ref, LO, HI)
    np.testing.assert_allclose(M.normalised_pdf(shape, x, LO, HI, *p), expected, rtol=1e-7)


def test_template_matches_numerical_convolution() -> None:
    t = _template()
    shift, smear = 1.5, 6.0
    e = np.linspace(3000.0, 3200.0, 81)
    h = stats.norm(3097.0, 10.0).pdf(0.5 * (e[1:] + e[:-1]))
    dens = h / (h.sum() * (e[1] - e[0]))

    def conv(x: float) -> float:  # ∫ template(t)·N(x − shift − t; 0, smear) dt, bin by bin
        y = x - shift
        return float(np.sum(dens * (special.ndtr((y - e[:-1]) / smear) - special.ndtr((y - e[1:]) / smear))))

    x = np.linspace(LO, HI, 33)
    norm = _quad(conv, LO, HI)
    np.testing.assert_allclose(M.normalised_pdf(t, x, LO, HI, shift, smear), [conv(v) / norm for v in x],
                               rtol=1e-9, atol=1e-15)
    pdf = lambda u: M.normalised_pdf(t, np.array([u]), LO, HI, shift, smear)[0]  # noqa: E731
    assert np.diff(M.normalised_cdf(t, np.array([3050.0, 3110.0]), LO, HI, shift, smear))[0] == pytest.approx(
        _quad(pdf, 3050.0, 3110.0), rel=1e-9)


def test_template_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="template"):
        M.template_shape(np.array([0.0, 1.0, 0.5]), np.array([1.0, 2.0]))


def test_voigt_primitive_accurate_for_narrow_and_wide_profiles() -> None:
    v = M.get_shape("signal", "voigt")
    for sigma, gamma in [(0.5, 20.0), (20.0, 0.01), (3.0, 3.0)]:
        f = lambda u, s=sigma, g=gamma: special.voigt_profile(u - 3097.0, s, g)  # noqa: E731
        expected = _quad(f, 3000.0, 3150.0) / _quad(f, LO, HI)
        got = np.diff(M.normalised_cdf(v, np.array([3000.0, 3150.0]), LO, HI, 3097.0, sigma, gamma))[0]
        assert got == pytest.approx(expected, rel=1e-7)


def test_bound_shapes_follow_the_range() -> None:
    cheb = M.get_shape("background", "chebyshev2")
    bound = cheb.on(0.0, 10.0)
    assert bound.domain == (0.0, 10.0) and bound.on(0.0, 10.0) is bound
    assert M.get_shape("signal", "gauss").on(0.0, 10.0) is M.get_shape("signal", "gauss")
    # the same shape on different ranges: linear with c1 = 1 vanishes at lo in both
    for lo, hi in [(0.0, 10.0), (100.0, 300.0)]:
        assert M.normalised_pdf(M.get_shape("background", "linear"), np.array([lo]), lo, hi, 1.0)[0] == pytest.approx(
            0.0, abs=1e-12)


def test_every_shape_has_consistent_starts() -> None:
    for table in (M.SIGNALS, M.BACKGROUNDS):
        for shape in table.values():
            start = shape.start(LO, HI, 3097.0, 12.0)
            assert set(start) == set(shape.params), shape.name
            for value, (a, b) in start.values():
                assert a <= value <= b, shape.name
            assert set(shape.fixed) <= set(shape.params) and set(shape.widths) <= set(shape.params)
            assert shape.simpler is None or shape.simpler in M.SIGNALS


def test_get_shape_errors_name_the_known_models() -> None:
    with pytest.raises(ValueError, match=r"known: .*gauss"):
        M.get_shape("signal", "lorentz")
    with pytest.raises(ValueError, match="orders go from 1 to"):
        M.get_shape("background", "chebyshev12")
    t = _template()
    assert M.get_shape("signal", t) is t


def test_normalised_cdf_nan_for_invalid_parameters() -> None:
    assert np.all(np.isnan(M.normalised_cdf(M.get_shape("background", "argus"), np.array([3000.0]), LO, HI,
                                            2000.0, 1.0, 0.5)))


def test_vectorised_exp_and_log_match_numpy() -> None:
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.uniform(-708.0, 709.0, 20000), rng.uniform(-1.0, 1.0, 20000), [0.0, -0.0, 1e-300]])
    out = np.empty_like(x)
    M.vexp_array(x, out)
    np.testing.assert_allclose(out, np.exp(x), rtol=3e-16, atol=0.0)
    y = np.concatenate([np.exp(rng.uniform(-700.0, 700.0, 20000)), rng.uniform(0.5, 2.0, 20000), [1.0, 5e-324, 1e-310]])
    M.vlog_array(y, out[: y.size])
    np.testing.assert_allclose(out[: y.size], np.log(y), rtol=5e-16, atol=5e-16)
    special_x = np.array([np.nan, np.inf, -np.inf, 800.0, -800.0])
    M.vexp_array(special_x, out[:5])
    np.testing.assert_array_equal(out[:5], [np.nan, np.inf, 0.0, np.inf, 0.0])
    special_y = np.array([np.nan, np.inf, 0.0, -1.0])
    M.vlog_array(special_y, out[:4])
    np.testing.assert_array_equal(out[:4], [np.nan, np.inf, -np.inf, -np.inf])


@pytest.mark.parametrize("name", ["gauss", "crystalball", "double_crystalball", "exponential", "double_gauss",
                                  "chebyshev3", "bernstein3"])
def test_add_density_matches_exp_of_logpdf(name: str) -> None:
    kind, p, _ = CASES[name]
    shape = M.get_shape(kind, name).on(LO, HI)
    x = np.sort(np.random.default_rng(3).uniform(LO, HI, 5000))
    out = np.full(x.size, 0.5)
    M.add_density(shape.code, x, np.array([9.0, *p]), 1, len(p), LO, HI, 3.0, out)
    np.testing.assert_allclose(out, 0.5 + 3.0 * np.exp(shape.logpdf(x, *p)), rtol=1e-13)
