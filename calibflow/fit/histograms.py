"""Per-bin pass/fail mass histograms of one sample, filled in one pass over its prepared tuples."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import h5py
import numpy as np

from calibflow.binning.scheme import BinningScheme
from calibflow.config import MassConfig
from calibflow.io.integrity import CHECKSUM, LIBVER, reading
from calibflow.io.store import COMPRESSION, atomic_path, read_columns
from calibflow.kernels.histogram import fill_pass_fail
from calibflow.prep.spec import IS_SIGNAL, MASS, PASS, TISTOS_FLAGS, TRUE_EFF, WEIGHT


@dataclass
class BinHistograms:
    """Histograms of one bin: mass edges and (pass, fail) sums of weights and of squared weights;
    ``negative``: (pass, fail) numbers of candidates with a negative weight in the mass range (weighted
    samples; zeros otherwise)."""

    edges: np.ndarray
    sumw: np.ndarray  # shape (2, n_mass): pass, fail
    sumw2: np.ndarray
    weighted: bool
    negative: np.ndarray = field(default_factory=lambda: np.zeros(2))

    @property
    def empty(self) -> bool:
        """Whether no candidate is in the bin's mass range (Σw² = 0; Σw alone may be 0 or negative with
        signed weights)."""
        return float((self.sumw2 if self.weighted else self.sumw).sum()) <= 0.0


def fill_histograms(
    prep_paths: Sequence[str], scheme: BinningScheme, mass: MassConfig, out_path: str, pass_column: str = PASS
) -> None:
    """Fill sumw/sumw2 (n_bins, 2, n_mass) over all ``prep_paths`` and write them to ``out_path``.

    ``pass_column`` is the prepared pass decision to use (nominal or a working point). When the
    tuples carry toy truth, also stores per bin the signal count and the sum of the true
    efficiency over signal candidates in the mass range (for closure tables). Weighted samples also get
    ``negative`` (n_bins, 2): per bin and category the candidates in the mass range with a negative weight.
    """
    n_bins, n_mass = len(scheme), mass.bins
    lo, hi = mass.range
    sumw = np.zeros((n_bins, 2, n_mass))
    sumw2 = np.zeros((n_bins, 2, n_mass))
    truth_n = np.zeros(n_bins)
    truth_sum = np.zeros(n_bins)
    negative = np.zeros((n_bins, 2))
    weighted = has_truth = False
    for path in prep_paths:
        cols = read_columns(path)
        idx = scheme.locate(cols)
        m = cols[MASS]
        w = cols.get(WEIGHT)
        weighted |= w is not None
        if w is not None:
            neg = (idx >= 0) & (m >= lo) & (m < hi) & (w < 0)
            passed = np.broadcast_to(np.asarray(cols[pass_column], dtype=bool), m.shape)
            for c, sel in enumerate((neg & passed, neg & ~passed)):
                negative[:, c] += np.bincount(idx[sel], minlength=n_bins)
        w = np.ones_like(m) if w is None else w
        fill_pass_fail(idx, cols[pass_column], m, w, lo, hi, sumw, sumw2)
        if TRUE_EFF in cols:
            has_truth = True
            sel = cols[IS_SIGNAL] & (idx >= 0) & (m >= lo) & (m < hi)
            truth_n += np.bincount(idx[sel], weights=w[sel], minlength=n_bins)
            truth_sum += np.bincount(idx[sel], weights=(w * cols[TRUE_EFF])[sel], minlength=n_bins)
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w", libver=LIBVER) as h5:
        h5.create_dataset("sumw", data=sumw, **COMPRESSION)
        h5.create_dataset("sumw2", data=sumw2, **COMPRESSION)
        h5.create_dataset("mass_edges", data=np.linspace(lo, hi, n_mass + 1), **CHECKSUM)
        if weighted:
            h5.create_dataset("negative", data=negative, **CHECKSUM)
        if has_truth:
            h5.create_dataset("truth_n", data=truth_n, **CHECKSUM)
            h5.create_dataset("truth_sum", data=truth_sum, **CHECKSUM)
        h5.attrs["weighted"] = weighted
        h5.attrs["scheme_key"] = scheme.key
        h5.attrs["inputs"] = json.dumps([os.path.basename(p) for p in prep_paths])


def read_bin(path: str, index: int) -> BinHistograms:
    """Histograms of bin ``index`` from a file written by :func:`fill_histograms`."""
    return read_bins(path, index, index + 1)[0]


def read_bins(path: str, start: int, stop: int) -> list[BinHistograms]:
    """Histograms of bins ``start`` to ``stop - 1``, read in one go from a file of :func:`fill_histograms`
    (CorruptIntermediate if the file is damaged, as for every reader here)."""
    with reading(path), h5py.File(path, "r") as h5:
        edges = h5["mass_edges"][...]
        sumw, sumw2 = h5["sumw"][start:stop], h5["sumw2"][start:stop]
        weighted = bool(h5.attrs["weighted"])
        negative = h5["negative"][start:stop] if "negative" in h5 else np.zeros((len(sumw), 2))
    return [BinHistograms(edges=edges, sumw=w, sumw2=w2, weighted=weighted, negative=n)
            for w, w2, n in zip(sumw, sumw2, negative, strict=True)]


def read_truth(path: str) -> np.ndarray | None:
    """Per-bin true efficiency (mean over signal candidates) or None without toy truth."""
    with reading(path), h5py.File(path, "r") as h5:
        if "truth_n" not in h5:
            return None
        n, s = h5["truth_n"][...], h5["truth_sum"][...]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / n, np.nan)


@dataclass
class BinCandidates:
    """Candidates of one bin in the mass range: mass, pass decision and weight."""

    mass: np.ndarray
    passed: np.ndarray
    weight: np.ndarray
    weighted: bool
    lo: float
    hi: float
    flags: dict[str, np.ndarray] = field(default_factory=dict)
    """Per-candidate decisions of method ``tistos`` (``tis``, ``tos``, ``trigger``), when prepared."""


def split_by_bin(
    prep_paths: Sequence[str], scheme: BinningScheme, mass: MassConfig, out_path: str, pass_column: str = PASS
) -> None:
    """Store the in-range candidates of all ``prep_paths`` contiguously by bin (``offsets`` per bin),
    so that an unbinned per-bin fit reads only its slice."""
    lo, hi = mass.range
    parts: list[tuple[np.ndarray, ...]] = []
    weighted = False
    for path in prep_paths:
        cols = read_columns(path)
        idx = scheme.locate(cols)
        m = cols[MASS]
        keep = (idx >= 0) & (m >= lo) & (m < hi)
        w = cols.get(WEIGHT)
        weighted |= w is not None
        w = np.ones_like(m) if w is None else w
        flags = [cols[c][keep] for c in TISTOS_FLAGS.values() if c in cols]  # method tistos: all three
        parts.append((idx[keep], m[keep], cols[pass_column][keep], w[keep], *flags))
    idx, m, p, w, *flags = (np.concatenate([part[k] for part in parts]) for k in range(len(parts[0])))
    order = np.argsort(idx, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(idx, minlength=len(scheme)))])
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w", libver=LIBVER) as h5:
        named = [("mass", m), ("pass", p), ("weight", w), *zip(TISTOS_FLAGS, flags, strict=False)]
        for name, arr in named:
            h5.create_dataset(name, data=arr[order], **COMPRESSION)
        h5.create_dataset("offsets", data=offsets, **CHECKSUM)
        h5.attrs["weighted"] = weighted
        h5.attrs["range"] = (lo, hi)


def read_bin_candidates(path: str, index: int) -> BinCandidates:
    """Candidates of bin ``index`` from a file written by :func:`split_by_bin`."""
    with reading(path), h5py.File(path, "r") as h5:
        a, b = (int(x) for x in h5["offsets"][index : index + 2])
        lo, hi = (float(x) for x in h5.attrs["range"])
        flags = {k: h5[k][a:b].astype(bool) for k in TISTOS_FLAGS if k in h5}
        return BinCandidates(h5["mass"][a:b], h5["pass"][a:b].astype(bool), h5["weight"][a:b],
                             bool(h5.attrs["weighted"]), lo, hi, flags)
