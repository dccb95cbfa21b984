"""Strict JSON: every JSON file calibflow writes is valid JSON (RFC 8259), without the ``NaN``, ``Infinity``
and ``-Infinity`` tokens Python's ``json`` writes by default and strict readers (``JSON.parse``, jq, Go,
serde) reject.

Convention: a NaN is written as ``null``; +inf and -inf as the strings ``"inf"`` and ``"-inf"``
(correctionlib's spelling of infinite bin edges). Readers of calibflow's own numeric records (per-bin
results, cached sPlot fits), in which ``null`` only ever stands for a NaN, map both back with
:func:`numbers` before computing.

Intermediate records (binning, per-bin results, sPlot caches) are written with :func:`write_record`, which
adds their SHA-256 digest, and read with :func:`read_record` or :func:`load_numbers`, which check it
(:mod:`calibflow.io.integrity`).
"""

from __future__ import annotations

import json
import math
import os
from typing import IO, Any

import numpy as np

from calibflow.io.integrity import read_json, seal

INF, NEG_INF = "inf", "-inf"
"""How +inf and -inf are written."""
_INFINITIES = {INF: math.inf, "+inf": math.inf, NEG_INF: -math.inf}


def strict(value: Any) -> Any:
    """``value`` with every non-finite float (in mappings, lists and tuples, at any depth) replaced by the
    convention: NaN -> None, ±inf -> ``"inf"``/``"-inf"``; everything else unchanged."""
    if isinstance(value, float | np.floating):
        number = float(value)
        if math.isnan(number):
            return None
        return value if math.isfinite(number) else INF if number > 0 else NEG_INF
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`strict` ``(value)``; never writes NaN or Infinity."""
    return json.dumps(strict(value), allow_nan=False, **kwargs)


def dump(value: Any, f: IO[str], **kwargs: Any) -> None:
    """``json.dump`` of :func:`strict` ``(value)`` to ``f``; never writes NaN or Infinity."""
    json.dump(strict(value), f, allow_nan=False, **kwargs)


def numbers(value: Any) -> Any:
    """The inverse of :func:`strict` for calibflow's numeric records: ``None`` -> NaN, ``"inf"``/``"-inf"`` ->
    ±inf, at any depth (numbers of records written before the convention, NaN tokens included, unchanged)."""
    if value is None:
        return math.nan
    if isinstance(value, str):
        return _INFINITIES.get(value, value)
    if isinstance(value, dict):
        return {k: numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [numbers(v) for v in value]
    return value


def write_record(path: str | os.PathLike[str], record: dict[str, Any], **kwargs: Any) -> None:
    """Write the JSON object ``record`` (strict, :func:`dump`'s ``kwargs``) to ``path`` atomically, with the
    digest of its content (:func:`calibflow.io.integrity.seal`)."""
    from calibflow.io.store import atomic_path

    plain = json.loads(dumps(record, default=kwargs.pop("default", None)))  # the digest: of what a reader parses
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(seal(plain), f, allow_nan=False, **kwargs)


def read_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The record written by :func:`write_record` at ``path``, its digest checked and left out
    (CorruptIntermediate naming the path if it does not match, is missing or the file is not JSON)."""
    return read_json(path)


def load_numbers(path: str | os.PathLike[str]) -> Any:
    """The numeric record at ``path`` (written by :func:`write_record`), its digest checked
    (:func:`read_record`), NaN and ±inf restored (:func:`numbers`)."""
    return numbers(read_record(path))
