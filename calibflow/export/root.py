"""Tables as ROOT histograms (written with uproot), and the note ``corrections_root.txt`` saying what the
file holds or why it was not written.

Per table (:class:`calibflow.export.grid.Table`: ``eff_<sample>``, ``sf_<data>``) on the grid of the union
of the scheme's edges per variable (a product scheme: its bins; a nested one: every cell of a bin holds the
bin's value), TH1D/TH2D/TH3D for 1/2/3 binning variables:

* ``<name>``: the value with bin error max(total_down, total_up), the larger side of the total uncertainty;
* ``<name>_stat``: the value with bin error max(err_down, err_up), the statistical uncertainty;
* ``<name>_syst``: the value with bin error ``syst``, the total systematic uncertainty (0 without sources);
* ``<name>_<source>Up``, ``<name>_<source>Down``: the values of each systematic variation, bin errors 0.

A cell outside every bin, or of a bin without a row, is 0 ± 0. Titles: ``data efficiency``,
``data/mc scale factor`` (and ``, stat. uncertainty``, ``, syst. uncertainty``, ``, <source> up``); axis
titles: the variables' labels and units converted to ROOT's TLatex (``$p_\\mathrm{T}$ [GeV]`` →
``p_{T} [GeV]``), the last free axis (y of a TH1D, z of a TH2D) named after the quantity. More than three
variables: no file; a warning in the log and the note say why.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import uproot
from uproot.writing.identify import to_TAxis, to_TH1x, to_TH2x, to_TH3x

from calibflow.binning.scheme import BinningScheme
from calibflow.export.grid import Table, cell_bins, is_product, sources_in, stat, syst, total, union_edges
from calibflow.io.store import atomic_path
from calibflow.tables.rows import Row

log = logging.getLogger(__name__)

ROOT_NOTE = "corrections_root.txt"
MAX_AXES = 3
AXIS_NAMES = ("xaxis", "yaxis", "zaxis")

_FONT = re.compile(r"\\(mathrm|text|textrm|mathsf|operatorname|mathbf|mathit|boldsymbol)\s*\{")
_COMMAND = re.compile(r"\\([A-Za-z]+|.)")
_SCRIPT = re.compile(r"([_^])\s*(#[A-Za-z]+|[^{\s])")
_PLAIN = {"cos", "sin", "tan", "cot", "log", "ln", "exp", "min", "max", "arccos", "arcsin", "arctan", "cosh",
          "sinh", "tanh", "det", "dim"}
_RENAMED = {"to": "#rightarrow", "ell": "#font[12]{l}", "le": "#leq", "ge": "#geq", "ne": "#neq",
            "lvert": "|", "rvert": "|", "vert": "|", "left": "", "right": "", "rm": "", "displaystyle": "", ",": " ",
            ";": " ", ":": " ", "!": "", " ": " ", "%": "%", "$": "$", "_": "_", "&": "&", "#": "#"}


def root_latex(text: str) -> str:
    """A label in LaTeX (math between ``$``) as ROOT's TLatex: ``$p_\\mathrm{T}$`` → ``p_{T}``, ``$\\eta$`` →
    ``#eta``, ``$m(\\mu^+\\mu^-)$`` → ``m(#mu^{+}#mu^{-})``. Text outside ``$`` is kept; no backslash is left
    (ROOT hands any text with one to TMathText)."""
    parts = text.split("$")
    if len(parts) % 2 == 0:
        parts = [text]
    return "".join(_math_to_root(p) if i % 2 else p.replace("\\", "") for i, p in enumerate(parts))


def _math_to_root(math: str) -> str:
    def font(m: re.Match[str]) -> str:
        return {"mathbf": "#bf{", "boldsymbol": "#bf{", "mathit": "#it{"}.get(m.group(1), "{")

    def command(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in _PLAIN:
            return name
        return _RENAMED.get(name, f"#{name}" if name.isalpha() else name)

    out = _COMMAND.sub(command, _FONT.sub(font, math))
    return _SCRIPT.sub(lambda m: f"{m.group(1)}{{{m.group(2)}}}", out)


@dataclass(frozen=True)
class Hist:
    """One histogram before writing: title, edges per axis, values and errors (shape: bins per axis), and
    the axis titles (x, y[, z])."""

    title: str
    edges: tuple[np.ndarray, ...]
    values: np.ndarray
    errors: np.ndarray
    axis_titles: tuple[str, ...]


def table_histograms(
    table: Table, scheme: BinningScheme, axes: Mapping[str, str], sources: Sequence[str]
) -> dict[str, Hist]:
    """The histograms of one table (see the module docstring) on the union grid of ``scheme``; ``axes``: per
    variable its axis label (``label [unit]``, LaTeX allowed), ``sources``: the systematic sources."""
    edges = tuple(union_edges(scheme))
    if len(edges) > MAX_AXES:
        raise ValueError(f"{table.name}: ROOT histograms have at most {MAX_AXES} axes, not {len(edges)}")
    cells = cell_bins(scheme, list(edges))
    by_bin = table.by_bin()

    def grid(f: Callable[[Row], float]) -> np.ndarray:
        per_bin = np.zeros(len(scheme) + 1)  # the last slot, 0, is what cells without a bin (-1) read
        for b, row in by_bin.items():
            per_bin[b] = f(row)
        return per_bin[cells]

    titles = [root_latex(axes.get(v, v)) for v in scheme.variables]
    titles += [table.quantity] if len(titles) < MAX_AXES else []
    value = grid(lambda r: float(r[table.value]))
    zero = np.zeros_like(value)

    def hist(suffix: str, values: np.ndarray, errors: np.ndarray) -> Hist:
        return Hist(table.title + suffix, edges, values, errors, tuple(titles))

    out = {
        table.name: hist("", value, grid(lambda r: max(total(r)))),
        f"{table.name}_stat": hist(", stat. uncertainty", value, grid(lambda r: max(stat(r)))),
        f"{table.name}_syst": hist(", syst. uncertainty", value, grid(syst)),
    }
    for src in sources_in(table.rows, sources):
        for side in ("Up", "Down"):
            out[f"{table.name}_{src}{side}"] = hist(f", {src} {side.lower()}",
                                                    grid(lambda r, k=f"{src}{side}": float(r[k])), zero)
    return out


def _moments(h: Hist) -> dict[str, float]:
    """The sums of weights and weighted coordinates ROOT keeps for its statistics box (``fTsumw``, ...)."""
    centres = np.meshgrid(*[0.5 * (e[1:] + e[:-1]) for e in h.edges], indexing="ij")
    w = np.nan_to_num(h.values)
    out = {"fTsumw": float(w.sum()), "fTsumw2": float(np.nansum(h.errors**2))}
    named = list(zip("xyz", centres, strict=False))
    for a, x in named:
        out[f"fTsumw{a}"], out[f"fTsumw{a}2"] = float((w * x).sum()), float((w * x * x).sum())
    for (a, x), (b, y) in itertools.combinations(named, 2):
        out[f"fTsumw{a}{b}"] = float((w * x * y).sum())
    return out


def _with_flow(a: np.ndarray) -> np.ndarray:
    """``a`` with under/overflow cells (zero), in ROOT's order (first axis fastest), big-endian doubles."""
    return np.pad(a, 1).T.reshape(-1).astype(">f8")


def to_root(name: str, h: Hist) -> object:
    """``h`` as an uproot-writable TH1D, TH2D or TH3D named ``name``."""
    n = len(h.edges)

    def axis(i: int) -> object:
        e = np.asarray(h.edges[i] if i < n else (0.0, 1.0), dtype=">f8")
        return to_TAxis(fName=AXIS_NAMES[i], fTitle=h.axis_titles[i] if i < len(h.axis_titles) else "",
                        fNbins=len(e) - 1, fXmin=float(e[0]), fXmax=float(e[-1]), fXbins=e if i < n else None)

    axes = [axis(i) for i in range(MAX_AXES)]
    common = {"fName": name, "fTitle": h.title, "data": _with_flow(h.values),
              "fEntries": float(h.values.size), "fSumw2": _with_flow(h.errors**2), **_moments(h)}
    if n == 1:
        return to_TH1x(**common, fXaxis=axes[0], fYaxis=axes[1], fZaxis=axes[2])
    if n == 2:
        return to_TH2x(**common, fXaxis=axes[0], fYaxis=axes[1], fZaxis=axes[2])
    return to_TH3x(**common, fXaxis=axes[0], fYaxis=axes[1], fZaxis=axes[2])


def write_root(path: str | os.PathLike[str], hists: Mapping[str, Hist]) -> None:
    """Write ``hists`` to the ROOT file ``path`` atomically."""
    with atomic_path(path) as tmp, uproot.recreate(tmp) as f:
        for name, h in hists.items():
            f[name] = to_root(name, h)


def export_root(
    out_dir: str, file_name: str, heading: str, scheme: BinningScheme, tables: Sequence[Table],
    axes: Mapping[str, str], sources: Sequence[str],
) -> list[str]:
    """Write ``file_name`` with the histograms of every table and the note :data:`ROOT_NOTE` to ``out_dir``;
    with more than :data:`MAX_AXES` binning variables only the note, which says why. Returns the paths."""
    variables = list(scheme.variables)
    note = [f"{file_name} of {heading}"]
    written = []
    if len(variables) > MAX_AXES:
        why = (f"{file_name} not written: the binning has {len(variables)} variables ({', '.join(variables)}) and "
               f"ROOT histograms have at most {MAX_AXES} axes; use corrections.json or the CSV tables")
        log.warning("%s: %s", heading, why)
        note = [why]
    else:
        hists = {k: v for t in tables for k, v in table_histograms(t, scheme, axes, sources).items()}
        path = os.path.join(out_dir, file_name)
        write_root(path, hists)
        written.append(path)
        note += _note(scheme, axes, hists, sources)
    path = os.path.join(out_dir, ROOT_NOTE)
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write("\n".join(note) + "\n")
    return [*written, path]


def _note(scheme: BinningScheme, axes: Mapping[str, str], hists: Mapping[str, Hist], sources: Sequence[str]) -> list[str]:
    edges = union_edges(scheme)
    grid = ", ".join(f"{a} {v} ({len(e) - 1} bins, title {root_latex(axes.get(v, v))!r})"
                     for a, v, e in zip("xyz", scheme.variables, edges, strict=False))
    cells = cell_bins(scheme, edges)
    kind = ("a product binning: every cell is one bin" if is_product(cells) else
            "a nested binning: the grid is the union of each variable's edges and every cell of a bin holds its value")
    lines = [f"grid: {grid}; {kind}" + ("; cells outside every bin are 0" if np.any(cells < 0) else ""),
             "errors: <name> max(total_down, total_up); <name>_stat max(err_down, err_up); <name>_syst syst; "
             "<name>_<source>Up/Down the varied values, no errors",
             f"systematic sources: {', '.join(sources) or 'none'}; asymmetric errors: the CSV tables and corrections.json",
             "histograms:"]
    kinds = {1: "TH1D", 2: "TH2D", 3: "TH3D"}
    return lines + [f"  {name}  {kinds[len(h.edges)]}  {h.title}" for name, h in hists.items()]
