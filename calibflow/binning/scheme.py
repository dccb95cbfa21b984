"""Binning schemes: nested-rectangular N-D binnings with stable per-bin content keys.

A scheme is a tree: the outer variable has edges; each of its intervals either is a bin (leaf) or holds
its own binning of the next variable, recursively. A product of 1D binnings is the special case where
every outer interval has the same inner edges. Every in-range point falls in exactly one bin; points out
of range get bin index -1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from calibflow.hashing import content_key
from calibflow.io.jsonio import read_record, write_record
from calibflow.kernels.binindex import FlatScheme, flatten, locate

SCHEME_VERSION = 1


@dataclass(frozen=True)
class Node:
    """One level of a nested scheme: ``variable`` cut at ``edges``; ``children`` per interval or None."""

    variable: str
    edges: tuple[float, ...]
    children: tuple[Node, ...] | None = None

    def __post_init__(self) -> None:
        e = np.asarray(self.edges, dtype=float)
        if e.size < 2 or np.any(np.diff(e) <= 0):
            raise ValueError(f"binning of {self.variable!r}: edges must be strictly increasing, got {self.edges}")
        if self.children is not None and len(self.children) != e.size - 1:
            raise ValueError(f"binning of {self.variable!r}: {e.size - 1} intervals but {len(self.children)} children")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict."""
        d: dict[str, Any] = {"variable": self.variable, "edges": list(self.edges)}
        if self.children is not None:
            d["children"] = [c.to_dict() for c in self.children]
        return d

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Node:
        """Inverse of :meth:`to_dict`."""
        children = d.get("children")
        return Node(
            variable=d["variable"],
            edges=tuple(float(x) for x in d["edges"]),
            children=None if children is None else tuple(Node.from_dict(c) for c in children),
        )


@dataclass(frozen=True)
class Bin:
    """One bin: its index in the scheme, bounds per variable (outer first) and content key."""

    index: int
    bounds: tuple[tuple[str, float, float], ...]

    @property
    def key(self) -> str:
        """Stable key of the bin's boundaries: equal bins in different schemes share it."""
        return content_key([[v, lo, hi] for v, lo, hi in self.bounds])

    @property
    def center(self) -> dict[str, float]:
        """Bin centre per variable."""
        return {v: 0.5 * (lo + hi) for v, lo, hi in self.bounds}

    def label(self) -> str:
        """Readable label, e.g. ``p in [5, 10), eta in [2, 3)``."""
        return ", ".join(f"{v} in [{lo:g}, {hi:g})" for v, lo, hi in self.bounds)


class BinningScheme:
    """A nested-rectangular binning over named variables (outer first)."""

    def __init__(self, root: Node) -> None:
        self.root = root
        self.variables = self._variables(root)
        self.bins = self._enumerate(root, ())
        self._flat: FlatScheme | None = None

    @staticmethod
    def product(edges: Mapping[str, Sequence[float]] | Sequence[tuple[str, Sequence[float]]]) -> BinningScheme:
        """Scheme of the product of 1D binnings, given as (variable, edges) pairs, outer first."""
        items = list(edges.items()) if isinstance(edges, Mapping) else list(edges)

        def build(level: int) -> Node:
            var, e = items[level]
            n = len(e) - 1
            kids = None if level == len(items) - 1 else tuple(build(level + 1) for _ in range(n))
            return Node(var, tuple(float(x) for x in e), kids)

        return BinningScheme(build(0))

    @staticmethod
    def _variables(root: Node) -> tuple[str, ...]:
        out: list[str] = []
        node: Node | None = root
        while node is not None:
            out.append(node.variable)
            node = node.children[0] if node.children else None
        return tuple(out)

    def _enumerate(self, node: Node, prefix: tuple[tuple[str, float, float], ...]) -> list[Bin]:
        bins: list[Bin] = []
        for i in range(len(node.edges) - 1):
            b = (*prefix, (node.variable, node.edges[i], node.edges[i + 1]))
            if node.children is None:
                bins.append(Bin(0, b))
            else:
                bins.extend(self._enumerate(node.children[i], b))
        if not prefix:
            bins = [Bin(i, b.bounds) for i, b in enumerate(bins)]
        return bins

    def __len__(self) -> int:
        return len(self.bins)

    def flatten(self) -> FlatScheme:
        """The scheme as flat arrays for the numba kernels of :mod:`calibflow.kernels.binindex` (cached)."""
        if self._flat is None:
            self._flat = flatten(self.root)
        return self._flat

    def locate(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Bin index (int64) of every row; -1 where any variable is out of range or not finite.

        One numba pass over the rows (:func:`calibflow.kernels.binindex.locate`); equal to
        :meth:`locate_reference`.
        """
        return locate(self.flatten(), columns)

    def locate_reference(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Plain-numpy version of :meth:`locate` (recursive searchsorted per node)."""
        n = len(next(iter(columns.values()))) if columns else 0
        out = np.full(n, -1, dtype=np.int64)
        self._locate(self.root, columns, np.arange(n), out, [0])
        return out

    def _locate(
        self, node: Node, columns: Mapping[str, np.ndarray], rows: np.ndarray, out: np.ndarray, counter: list[int]
    ) -> None:
        try:
            x = np.asarray(columns[node.variable])[rows]
        except KeyError:
            raise KeyError(f"binning variable {node.variable!r} is not a column of the input") from None
        edges = np.asarray(node.edges)
        idx = np.searchsorted(edges, x, side="right") - 1
        inside = (idx >= 0) & (idx < edges.size - 1) & np.isfinite(x)
        for i in range(edges.size - 1):
            sel = rows[inside & (idx == i)]
            if node.children is None:
                out[sel] = counter[0]
                counter[0] += 1
            else:
                self._locate(node.children[i], columns, sel, out, counter)

    @property
    def key(self) -> str:
        """Content key of the whole scheme."""
        return content_key(self.root.to_dict())

    def to_json(self) -> dict[str, Any]:
        """Readable, versioned description: the tree plus the flat list of bins with their keys."""
        return {
            "version": SCHEME_VERSION,
            "variables": list(self.variables),
            "key": self.key,
            "scheme": self.root.to_dict(),
            "bins": [
                {"index": b.index, "key": b.key, "bounds": {v: [lo, hi] for v, lo, hi in b.bounds}} for b in self.bins
            ],
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> BinningScheme:
        """Inverse of :meth:`to_json` (checks the version)."""
        if data.get("version") != SCHEME_VERSION:
            raise ValueError(f"binning file version {data.get('version')!r} is not {SCHEME_VERSION}")
        return BinningScheme(Node.from_dict(data["scheme"]))

    def save(self, path: str) -> None:
        """Write :meth:`to_json` to ``path`` (atomically, with its digest: a verified intermediate)."""
        write_record(path, self.to_json(), indent=1)

    @staticmethod
    def load(path: str) -> BinningScheme:
        """Read a scheme written by :meth:`save` (CorruptIntermediate if its digest does not match)."""
        return BinningScheme.from_json(read_record(path))
