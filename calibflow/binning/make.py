"""Make the binning scheme of a calibration: fine 1-D binnings (given, uniform, log or equal-population
from the data), their product, optionally merged until every fitted category has enough candidates."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from calibflow.binning.scheme import BinningScheme
from calibflow.config import BinningConfig, BinVariable, MassConfig
from calibflow.io.store import atomic_path, read_columns
from calibflow.prep.spec import MASS, WEIGHT


def fine_edges(var: BinVariable, values: np.ndarray | None = None, weights: np.ndarray | None = None) -> np.ndarray:
    """Fine edges of one variable; equal-population edges need the variable's ``values``."""
    from calibflow.binning.optimise import equal_population_edges, log_edges, uniform_edges

    if var.edges is not None:
        return np.asarray(var.edges, dtype=float)
    lo, hi = var.limits
    if var.uniform is not None:
        return uniform_edges(lo, hi, var.uniform)
    if var.log is not None:
        return log_edges(lo, hi, var.log)
    if values is None:
        raise ValueError(f"binning variable {var.name!r}: equal-population edges need the prepared data")
    return equal_population_edges(values, var.equal_population, lo, hi, weights=weights)


def static_scheme(binning: BinningConfig) -> BinningScheme:
    """Product scheme of a binning that needs no data."""
    return BinningScheme.product([(v.name, fine_edges(v)) for v in binning.variables])


def data_scheme(
    binning: BinningConfig,
    prep_paths: Mapping[str, Sequence[str]],
    pass_columns: Sequence[str],
    mass: MassConfig,
    whole: Collection[str] = (),
) -> tuple[BinningScheme, np.ndarray, list[str]]:
    """Scheme from the prepared tuples of every sample: returns it with the per-bin counts of every
    category (n_categories, n_bins) and the category names (``<sample> <pass column> pass|fail``, or
    ``<sample> all``).

    Categories: for each sample and pass column, the candidates in the mass range that pass or fail; for the
    samples in ``whole`` (method ``yield``: one mass spectrum per bin) all their candidates in the mass range.
    Equal-population edges use all samples together. Raises optimise.BinningError (with the counts of
    every category and the minimum asked) when the criteria cannot be met.
    """
    from calibflow.binning.optimise import Category, Criteria, bin_counts, optimise_scheme

    names = [v.name for v in binning.variables]
    lo, hi = mass.range
    columns: dict[str, dict[str, np.ndarray]] = {}
    for sample, paths in prep_paths.items():
        parts = [read_columns(p) for p in paths]
        keys = [*names, MASS, *([] if sample in whole else pass_columns)] + (
            [WEIGHT] if parts and WEIGHT in parts[0] else [])
        columns[sample] = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    fine = []
    for v in binning.variables:
        values = np.concatenate([c[v.name] for c in columns.values()]) if v.data_driven else None
        fine.append((v.name, fine_edges(v, values)))
    categories = []
    for sample, c in columns.items():
        in_range = (c[MASS] >= lo) & (c[MASS] < hi)
        if sample in whole:
            categories.append(Category(f"{sample} all", {n: c[n] for n in names}, c.get(WEIGHT), mask=in_range))
            continue
        for col in pass_columns:
            for label, sel in (("pass", c[col]), ("fail", ~c[col])):
                categories.append(Category(f"{sample} {col} {label}", {n: c[n] for n in names}, c.get(WEIGHT),
                                           mask=in_range & sel))
    opt = binning.optimise
    if opt is None:
        scheme = BinningScheme.product(fine)
        return scheme, bin_counts(scheme, categories, True), [c.name for c in categories]
    split = [c.name for c in categories if not c.name.endswith(" all")]
    efficiency = tuple((split[i], split[i + 1]) for i in range(0, len(split), 2)) if opt.efficiency else ()
    criteria = Criteria(min_count=opt.min_count, use_effective=opt.use_effective, max_intervals=opt.max_intervals,
                        efficiency=efficiency)
    scheme = optimise_scheme(fine, categories, criteria)
    return scheme, bin_counts(scheme, categories, opt.use_effective), [c.name for c in categories]


def write_scheme(scheme: BinningScheme, path: str, counts: np.ndarray | None = None,
                 categories: Sequence[str] = ()) -> None:
    """Binning JSON (atomic) and, with counts, ``<stem>.png``: the scheme with the smallest category
    count written in each bin."""
    scheme.save(path)
    if counts is not None and len(scheme.variables) <= 2:
        import matplotlib.pyplot as plt

        from calibflow.binning.plot import plot_scheme

        fig = plot_scheme(scheme, counts.min(axis=0), title=f"min. count over {len(categories)} categories")
        png = os.path.splitext(path)[0] + ".png"
        with atomic_path(png) as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")
        plt.close(fig)
