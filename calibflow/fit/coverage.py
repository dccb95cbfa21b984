"""Coverage of the per-bin intervals: parametric toys of a bin's measurement, measured by the same procedure.

Per bin (:func:`bin_coverage`) N toys are generated from the result being checked, with its observed yields
(:func:`toy_inputs`):

* method ``fit``, binned: Poisson counts per mass bin of the fitted model's expectation
  (:meth:`calibflow.fit.passfail.PassFailModel.expected` with the result's parameters and accepted signal
  shape; ``fit.signal: template``: the templates stored with the result); weighted histograms get
  scaled-Poisson counts n/s with Σw² = n/s² (n ~ Poisson(ν·s), s = Σw/Σw² of the category), the
  approximation the fit itself makes. ``fit.constrain``: each toy is refitted with the same constraints, whose
  centres and widths stay those of the simulation fit (the simulation is not fluctuated: the coverage is that
  of the data fit given the simulation);
* method ``fit``, unbinned: candidates sampled from the fitted model (Poisson counts in :data:`FINE_BINS`
  mass bins of its expectation, uniform within each; weighted samples: weight 1/s each);
* methods ``count`` and ``sweighted``: binomial toys k ~ B(n, ε) of the bin's n candidates (weighted: n the
  effective number (Σw)²/Σw², each candidate of weight 1/s). Clopper-Pearson intervals over-cover by
  construction;
* method ``sideband``: Poisson (weighted: scaled-Poisson) counts per mass bin of the observed histograms, so
  of the signal window and the sidebands, whose expected subtraction gives the bin's ε;
* method ``tistos``: Poisson (weighted: scaled-Poisson) counts of the four disjoint classes (TIS only, TOS
  only, TIS and TOS, neither) of the observed, whose ratios give the bin's ε;
* method ``sweights``: candidates of the sPlot mass fit (signal and background: Poisson counts in
  :data:`FINE_BINS` mass bins, uniform within each), signal passing with probability ε, background with the
  observed background pass fraction (n_pass − ε·N_sig)/N_bkg (clipped to [0, 1]); unweighted samples only.

Each toy is measured by :func:`calibflow.fit.measure.measure_bin` with the bin's method, fit section, interval
and reference simulation (templates, constraints; starting values from the toy, as for the real fit).
Method ``yield`` has no efficiency: its bins are skipped with the reason, as are bins without a finite ε or
with an invalid minimum. A toy *fails* if the measurement raises, its ε or errors are not finite, or its
minimum is invalid (``invalid_minimum``); flagged toys (e.g. ``low_signal_significance``) count.

Conventions (ε₀: the generating value, the result's efficiency; toy i: ε_i − err_down_i, ε_i + err_up_i):
pull_i = (ε_i − ε₀)/σ_i with σ_i = err_up_i when ε_i < ε₀ (the truth above: the upper error), else
err_down_i, as the closure table's pulls; coverage = fraction of non-failed toys whose interval contains ε₀,
its error √(c(1−c)/n). A bin is ``coverage_off`` (:func:`is_off`) when |c − 0.6827| exceeds 3 binomial σ at
the nominal 68.27 % (3·√(0.6827·0.3173/n)), or when the pull width w (standard deviation) is outside
[0.8, 1.2] *and* more than 3 of its statistical errors w/√(2(n−1)) from 1 (so that few toys do not flag a
bin by chance; from about 100 toys on the range alone decides). Pulls all zero (every toy at ε₀, e.g. a
counted ε₀ = 1) leave only the coverage test. The scale factor's toys (:func:`calibflow.tables.coverage.sf_summary`) pair toy i of the
data bin with toy i of the simulation bin (independent samples, independent toys).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from calibflow.config import SIDEBAND, TISTOS, FitConfig
from calibflow.fit.histograms import BinCandidates, BinHistograms

COVERAGE_VERSION = 1
"""Version of the per-bin coverage record (part of its key)."""
NOMINAL = 0.6827
"""Probability content of a ±1σ interval."""
MAX_SIGMA = 3.0
"""Coverage further than this many binomial σ from :data:`NOMINAL` is ``coverage_off``."""
WIDTH_RANGE = (0.8, 1.2)
"""Pull widths outside this range are ``coverage_off``."""
FINE_BINS = 2000
"""Mass bins of the expectation candidates of unbinned and sWeights toys are drawn from."""
COUNTED = ("count", "sweighted")
"""Methods whose toys are binomial (:func:`toy_counts`)."""
COVERED = ("fit", *COUNTED, SIDEBAND, TISTOS, "sweights")
"""Methods with a generative model for toys (module docstring)."""
FITTED = ("fit", "sweights")
"""Methods whose results (and toys) can have an invalid minimum."""
FAILED_TAG = "invalid_minimum"


def toy_seed(key: str) -> int:
    """Seed of a bin's toys from its coverage key (reproducible, different per bin and sample)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16)


# ------------------------------------------------------------------------------------------ toy generation
def _model(result: Mapping[str, Any], fit: FitConfig, lo: float, hi: float) -> tuple[Any, np.ndarray]:
    """The fitted pass/fail model of ``result`` (its accepted signal shape, or the templates it was fitted with)
    and its parameter vector; KeyError/ValueError when the result does not give them."""
    from calibflow.fit.passfail import PassFailModel

    signal, signal_fail = result.get("signal_model") or fit.signal, None
    if result.get("template"):
        from calibflow.fit.templates import template_signals

        signal, signal_fail = template_signals(result["template"])
    model = PassFailModel.create(signal, fit.background, lo, hi, fit.fail_width_shift, fit.fail_gauss, signal_fail)
    return model, np.array([float(result["values"][n]) for n in model.names])


def _scales(sumw: np.ndarray, sumw2: np.ndarray, weighted: bool) -> np.ndarray:
    """Per category s = Σw/Σw² (1 unweighted, or without a positive sum): toys of n/s with Σw² = n/s²
    (scaled Poisson)."""
    if not weighted:
        return np.ones(len(sumw))
    return np.array([w / w2 if w2 > 0 and w > 0 else 1.0 for w, w2 in zip(sumw, sumw2, strict=True)])


def _scaled(edges: np.ndarray, k: np.ndarray, s: np.ndarray, weighted: bool) -> BinHistograms:
    """Histograms of counts ``k`` (pass, fail) of candidates of weight 1/s (per category, shape (2, 1))."""
    return BinHistograms(edges, k / s, k / (s * s), weighted)


def toy_histograms(result: Mapping[str, Any], fit: FitConfig, hist: BinHistograms, n_toys: int,
                   rng: np.random.Generator) -> list[BinHistograms]:
    """``n_toys`` pass/fail histograms (on ``hist``'s edges) drawn from the fitted model of ``result``."""
    edges = hist.edges
    model, x = _model(result, fit, float(edges[0]), float(edges[-1]))
    nu = np.maximum(np.stack(model.expected(edges, x)), 0.0)
    s = _scales(hist.sumw.sum(axis=1), hist.sumw2.sum(axis=1), hist.weighted)[:, None]
    k = rng.poisson(nu * s, size=(n_toys, *nu.shape)).astype(float)
    return [_scaled(edges, t, s, hist.weighted) for t in k]


def toy_sideband(hist: BinHistograms, n_toys: int, rng: np.random.Generator) -> Iterator[BinHistograms]:
    """``n_toys`` pass/fail histograms of Poisson counts per mass bin around the observed ones (weighted:
    scaled Poisson, candidates of weight 1/s per category), one at a time."""
    s = _scales(hist.sumw.sum(axis=1), hist.sumw2.sum(axis=1), hist.weighted)[:, None]
    nu = np.maximum(hist.sumw, 0.0) * s
    return (_scaled(hist.edges, rng.poisson(nu).astype(float), s, hist.weighted) for _ in range(n_toys))


def _uniform_in(edges: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Masses: ``counts[j]`` uniform in mass bin j of the equal-width ``edges``."""
    lo_edge = np.repeat(edges[:-1], counts)
    return lo_edge + rng.random(lo_edge.size) * (edges[1] - edges[0])


def toy_candidates(result: Mapping[str, Any], fit: FitConfig, cands: BinCandidates, n_toys: int,
                   rng: np.random.Generator) -> Iterator[BinCandidates]:
    """``n_toys`` candidate sets drawn from the fitted model of ``result`` (:data:`FINE_BINS` mass bins of
    its expectation, uniform within each), one at a time (a set is as large as the bin)."""
    edges = np.linspace(cands.lo, cands.hi, FINE_BINS + 1)
    model, x = _model(result, fit, cands.lo, cands.hi)
    nu = np.maximum(np.stack(model.expected(edges, x)), 0.0)
    w = cands.weight
    s = _scales(np.array([w[cands.passed].sum(), w[~cands.passed].sum()]),
                np.array([(w[cands.passed] ** 2).sum(), (w[~cands.passed] ** 2).sum()]), cands.weighted)
    return (_draw_candidates(edges, nu, s, cands, rng) for _ in range(n_toys))


def _draw_candidates(edges: np.ndarray, nu: np.ndarray, s: np.ndarray, cands: BinCandidates,
                     rng: np.random.Generator) -> BinCandidates:
    """One candidate set: per category Poisson(ν·s) candidates per mass bin, uniform within it, weight 1/s."""
    parts = []
    for c in range(2):
        mass = _uniform_in(edges, rng.poisson(nu[c] * s[c]), rng)
        parts.append((mass, np.full(mass.size, c == 0), np.full(mass.size, 1.0 / s[c])))
    mass, passed, weight = (np.concatenate([p[k] for p in parts]) for k in range(3))
    return BinCandidates(mass, passed, weight, cands.weighted, cands.lo, cands.hi)


def toy_counts(result: Mapping[str, Any], hist: BinHistograms, n_toys: int,
               rng: np.random.Generator) -> list[BinHistograms]:
    """``n_toys`` one-mass-bin pass/fail counts k ~ B(n, ε₀) of the bin's n candidates (weighted: the effective
    number, each candidate of weight 1/s, s = Σw/Σw²)."""
    sw, sw2 = float(hist.sumw.sum()), float(hist.sumw2.sum())
    s = sw / sw2 if hist.weighted and sw2 > 0 and sw > 0 else 1.0
    n = round(sw * s)
    k = rng.binomial(n, min(max(float(result["efficiency"]), 0.0), 1.0), size=n_toys).astype(float)
    edges = hist.edges[[0, -1]]
    return [_scaled(edges, np.array([[kk], [n - kk]]), np.full((2, 1), s), hist.weighted) for kk in k]


def toy_tistos(cands: BinCandidates, n_toys: int, rng: np.random.Generator) -> Iterator[BinCandidates]:
    """``n_toys`` candidate sets of Poisson counts (weighted: scaled Poisson, weight 1/s per class) of the four
    disjoint TIS/TOS classes around the observed ones, one at a time (every toy candidate is triggered)."""
    from calibflow.fit.tistos import TisTosCounts

    if len(cands.flags) < 3:
        raise ValueError("method tistos needs the bin's candidates with their TIS, TOS and trigger decisions")
    counts = TisTosCounts.from_flags(cands.flags["tis"], cands.flags["tos"], cands.flags["trigger"],
                                     cands.weight if cands.weighted else None)
    sumw = np.maximum(np.array(counts.sumw), 0.0)
    s = _scales(sumw, np.array(counts.sumw2), cands.weighted)
    return (_tistos_candidates(rng.poisson(sumw * s), s, cands) for _ in range(n_toys))


def _tistos_candidates(k: np.ndarray, s: np.ndarray, cands: BinCandidates) -> BinCandidates:
    """Candidates of class counts ``k`` (TIS only, TOS only, both, neither), weight 1/s of their class, at the
    centre of the mass range (the method reads no mass)."""
    cls = np.repeat(np.arange(4), k)
    tis, tos = (cls == 0) | (cls == 2), (cls == 1) | (cls == 2)
    flags = {"tis": tis, "tos": tos, "trigger": np.ones(cls.size, bool)}
    return BinCandidates(np.full(cls.size, 0.5 * (cands.lo + cands.hi)), tis & tos, 1.0 / s[cls], cands.weighted,
                         cands.lo, cands.hi, flags)


def toy_sweights(result: Mapping[str, Any], fit: FitConfig, cands: BinCandidates, n_toys: int,
                 rng: np.random.Generator) -> Iterator[BinCandidates]:
    """``n_toys`` candidate sets of the sPlot mass fit of ``result`` (module docstring), one at a time."""
    if cands.weighted:
        raise ValueError("weighted candidates: the toys do not model per-candidate weights")
    edges = np.linspace(cands.lo, cands.hi, FINE_BINS + 1)
    model, x = _model({"values": result["values"]}, fit.model_copy(update={"fail_width_shift": False,
                                                                           "fail_gauss": False}),
                      cands.lo, cands.hi)
    x[1], x[3] = 1.0, 0.0  # the one category of the mass fit: every candidate in 'pass'
    sig, bkg, _, _ = (np.maximum(c, 0.0) for c in model.components(edges, x))
    eff = min(max(float(result["efficiency"]), 0.0), 1.0)
    n_bkg = float(bkg.sum())
    f_bkg = min(max((float(cands.passed.sum()) - eff * float(sig.sum())) / n_bkg, 0.0), 1.0) if n_bkg > 0 else 0.0
    return (_sweights_candidates(edges, sig, bkg, eff, f_bkg, cands, rng) for _ in range(n_toys))


def _sweights_candidates(edges: np.ndarray, sig: np.ndarray, bkg: np.ndarray, eff: float, f_bkg: float,
                         cands: BinCandidates, rng: np.random.Generator) -> BinCandidates:
    """Signal and background candidates (Poisson per mass bin, uniform in it), passing with ``eff`` and
    ``f_bkg``."""
    ms, mb = _uniform_in(edges, rng.poisson(sig), rng), _uniform_in(edges, rng.poisson(bkg), rng)
    passed = np.concatenate([rng.random(ms.size) < eff, rng.random(mb.size) < f_bkg])
    mass = np.concatenate([ms, mb])
    return BinCandidates(mass, passed, np.ones(mass.size), False, cands.lo, cands.hi)


def _need(data: Any, what: str, method: str) -> Any:
    """``data``, or ValueError when the bin's ``what`` (histograms, candidates) were not given."""
    if data is None:
        raise ValueError(f"method {method} needs the bin's {what}")
    return data


def toy_inputs(method: str, fit: FitConfig, result: Mapping[str, Any], n_toys: int, rng: np.random.Generator,
               hist: BinHistograms | None = None, cands: BinCandidates | None = None) -> Iterable[dict[str, Any]]:
    """The ``hist``/``cands`` argument of :func:`calibflow.fit.measure.measure_bin` of each of ``n_toys`` toys of
    the bin (module docstring); the model is set up at once (KeyError/ValueError: none), the toys lazily."""
    if method in COUNTED:
        return ({"hist": h} for h in toy_counts(result, _need(hist, "histograms", method), n_toys, rng))
    if method == SIDEBAND:
        return ({"hist": h} for h in toy_sideband(_need(hist, "histograms", method), n_toys, rng))
    if method == TISTOS:
        return ({"cands": c} for c in toy_tistos(_need(cands, "candidates", method), n_toys, rng))
    if method == "sweights":
        return ({"cands": c} for c in toy_sweights(result, fit, _need(cands, "candidates", method), n_toys, rng))
    if cands is not None:
        return ({"cands": c} for c in toy_candidates(result, fit, cands, n_toys, rng))
    return ({"hist": h} for h in toy_histograms(result, fit, _need(hist, "histograms", method), n_toys, rng))


# ------------------------------------------------------------------------------------------ statistics
@dataclass
class Summary:
    """Pulls and coverage of toys of one quantity (ε or a scale factor) around its generating value."""

    n_toys: int
    n_failed: int
    pull_mean: float
    pull_mean_err: float
    pull_width: float
    pull_width_err: float
    coverage: float
    coverage_err: float
    off: bool
    reason: str = ""

    def to_dict(self, prefix: str = "") -> dict[str, Any]:
        """Fields as a flat dict, names prefixed."""
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any], prefix: str = "") -> Summary:
        """Inverse of :meth:`to_dict` (a coverage record: ``prefix`` ``eff_``)."""
        return cls(**{f.name: record[f"{prefix}{f.name}"] for f in fields(cls) if f"{prefix}{f.name}" in record})


def pulls(truth: float, value: np.ndarray, down: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(value − truth)/σ with σ the error on the side of the truth (up when value < truth); NaN without."""
    sigma = np.where(value < truth, up, down)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sigma > 0, (value - truth) / sigma, np.where(value == truth, 0.0, np.nan))


def off_reasons(coverage: float, n: int, width: float, width_err: float) -> list[str]:
    """Why toys are ``coverage_off`` (module docstring; empty: they are not): ``under_coverage`` or
    ``over_coverage`` (coverage of ``n`` toys beyond 3 binomial σ of 68.27 %), ``pull_width`` (outside
    :data:`WIDTH_RANGE` and beyond 3 of its errors ``width_err`` from 1; NaN: not tested)."""
    if n == 0:
        return []
    out = []
    if abs(coverage - NOMINAL) > MAX_SIGMA * math.sqrt(NOMINAL * (1.0 - NOMINAL) / n):
        out.append("under_coverage" if coverage < NOMINAL else "over_coverage")
    if (math.isfinite(width_err) and not WIDTH_RANGE[0] <= width <= WIDTH_RANGE[1]
            and abs(width - 1.0) > MAX_SIGMA * width_err):
        out.append("pull_width")
    return out


def is_off(coverage: float, n: int, width: float, width_err: float) -> bool:
    """Whether toys are ``coverage_off`` (:func:`off_reasons`)."""
    return bool(off_reasons(coverage, n, width, width_err))


def summarise(truth: float, value: np.ndarray, down: np.ndarray, up: np.ndarray) -> Summary:
    """:class:`Summary` of toys (``value`` with intervals [value − down, value + up]; NaN: a failed toy)."""
    value, down, up = (np.asarray(a, dtype=float) for a in (value, down, up))
    good = np.isfinite(value) & np.isfinite(down) & np.isfinite(up)
    n = int(good.sum())
    nan = math.nan
    if n == 0:
        return Summary(int(value.size), int(value.size), nan, nan, nan, nan, nan, nan, False)
    v, d, u = value[good], down[good], up[good]
    p = pulls(truth, v, d, u)
    p = p[np.isfinite(p)]
    mean = float(p.mean()) if p.size else nan
    width = float(p.std(ddof=1)) if p.size > 1 else nan
    width_err = width / math.sqrt(2.0 * (p.size - 1)) if p.size > 1 and np.any(p != 0) else nan
    c = float(np.mean((v - d <= truth) & (truth <= v + u)))
    reasons = off_reasons(c, n, width, width_err)
    return Summary(int(value.size), int(value.size) - n, mean, width / math.sqrt(p.size) if p.size > 1 else nan,
                   width, width_err, c, math.sqrt(c * (1.0 - c) / n), bool(reasons), ",".join(reasons))


# ------------------------------------------------------------------------------------------ one bin
def skipped(result: Mapping[str, Any], method: str, fit: FitConfig | None = None) -> str:
    """Why the bin of ``result`` gets no toys ("" when it does)."""
    if method == "yield":
        return "method yield: a signal yield, no efficiency interval to cover"
    if method not in COVERED:
        return f"method {method}: no generative model for toys"
    if not math.isfinite(float(result.get("efficiency", math.nan))):
        return f"no efficiency ({result.get('status', '')})"
    if method in FITTED and FAILED_TAG in str(result.get("status", "")):
        return f"fit not valid ({result['status']})"
    return ""


def _toy_failed(r: Mapping[str, Any]) -> bool:
    """Whether a toy's measurement failed (module docstring)."""
    numbers = (r["efficiency"], r["err_down"], r["err_up"])
    return not all(math.isfinite(float(v)) for v in numbers) or FAILED_TAG in str(r["status"])


def bin_coverage(method: str, fit: FitConfig, result: Mapping[str, Any], n_toys: int, seed: int,
                 hist: BinHistograms | None = None, cands: BinCandidates | None = None,
                 interval: str = "clopper_pearson", measure: Callable[..., dict[str, Any]] | None = None,
                 reference: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Coverage record of one bin: ``n_toys`` toys of ``result`` (module docstring) from ``seed``, each measured
    like the bin (``measure``: :func:`calibflow.fit.measure.measure_bin` by default; a test may wrap it) with its
    ``reference`` simulation (templates, constraint fit: as the bin's fit had them).

    The record holds the generating ε₀, every toy's efficiency, err_down and err_up (NaN: failed), the
    :class:`Summary` fields of ε (``eff_``-prefixed) and ``skipped`` (the reason, or "")."""
    from calibflow.fit.measure import measure_bin

    measure = measure or measure_bin
    eff0 = float(result.get("efficiency", math.nan))
    base = {"method": method, "n_toys": n_toys, "seed": seed, "generating_efficiency": eff0,
            "version": COVERAGE_VERSION}
    reason = skipped(result, method, fit)
    toys: list[dict[str, Any]] = []
    more = {"reference": reference} if reference else {}
    if not reason:
        try:
            data = toy_inputs(method, fit, result, n_toys, np.random.default_rng(seed), hist, cands)
        except (KeyError, ValueError) as exc:  # e.g. a model without an expectation here
            reason = f"no generative model: {type(exc).__name__}: {exc}"
            data = ()
        for d in data:
            try:
                toys.append(measure(method, fit, interval=interval, **d, **more))
            except Exception as exc:  # a toy whose fit raises is a failed toy
                toys.append({"efficiency": math.nan, "err_down": math.nan, "err_up": math.nan,
                             "status": f"{type(exc).__name__}: {exc}"})
    if reason:
        return {**base, "n_toys": 0, "skipped": reason, "efficiency": [], "err_down": [], "err_up": [],
                **Summary(0, 0, *(math.nan,) * 6, False).to_dict("eff_")}
    arrays = {k: [math.nan if _toy_failed(t) else float(t[k]) for t in toys] for k in ("efficiency", "err_down", "err_up")}
    summary = summarise(eff0, *(np.array(arrays[k]) for k in ("efficiency", "err_down", "err_up")))
    statuses = Counter(str(t["status"]) for t in toys)
    return {**base, "skipped": "", **arrays, **summary.to_dict("eff_"), "toy_statuses": dict(statuses)}
