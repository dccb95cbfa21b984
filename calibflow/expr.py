"""Safe expression compiler for cuts, aliases and derived variables in YAML configs.

User text is parsed with :func:`ast.parse` and checked against a strict whitelist; the
accepted tree is compiled once into a tree of Python closures that call vectorised numpy /
awkward operations. User text is never passed to ``eval``, ``exec`` or ``compile``.

Language
--------
* numbers (``int``/``float``), ``True``, ``False``, the constant ``pi``;
* names: an alias (expanded recursively, cycles are reported), otherwise an input branch;
* arithmetic ``+ - * / // % **``, unary ``- +``;
* comparisons ``== != < <= > >=``, chained (``1 < x < 2``);
* string comparisons: a branch (or an alias of one) ``==`` / ``!=`` a string literal, or ``in`` /
  ``not in`` a tuple or list of string literals (``Type == "GG"``, ``Type in ("GG", "GE")``), one
  comparison each (no chains); see :func:`text_match` for the values compared;
* ``and`` / ``or`` / ``not`` -- elementwise (``np.logical_and`` / ``logical_or`` / ``logical_not``),
  so they work for numpy arrays, awkward arrays and python scalars alike;
* bitwise ``& | ^ ~ << >>`` on integers, e.g. ``(TrigObj_filterBits & 2) != 0``;
* calls of the whitelisted functions in :data:`FUNCTIONS` (positional arguments only).

Jagged (awkward, NanoAOD-style) and flat (numpy) columns can be mixed freely; a per-event
value broadcasts against the entries of that event (``Muon_pt > MET_pt``).

Reductions ``any all count sum`` and one-argument ``min``/``max`` reduce a jagged collection
per event (``axis=1``); a flat column is rejected because it already holds one value per event.
Empty events give ``False`` (any), ``True`` (all), ``0`` (count, sum), ``+inf`` (min) and
``-inf`` (max) for floating-point collections (the extreme integer for integer ones), so results
never contain missing values.

Subscripts (``Muon_pt[0]``) are rejected: per-event element access on jagged collections
needs a policy for events that are too short, which is better made explicit in the input
ntuple (or via a reduction such as ``max(Muon_pt)``).

Rejected with :class:`ExprError` (naming the column of the offending token): attribute access,
imports, dunder names, lambdas, comprehensions, non-whitelisted calls, keyword/starred
arguments, strings anywhere but in a string comparison, bytes literals, f-strings, container
literals, ``:=``, ``a if c else b`` (use ``where(c, a, b)``), statements, ``is`` comparisons,
syntax errors, empty text, wrong argument counts and unknown functions (with a did-you-mean
suggestion).

Evaluation runs under ``np.errstate(divide/invalid/over="ignore")``: ``log(0)`` gives ``-inf``
and ``0/0`` gives ``nan`` silently, as is customary for per-event cuts.

Integers never wrap silently:

* integer constants -- literals, and ``+ - * // % ** << >> & | ^ ~`` of them (aliases of such constants
  included) -- are computed exactly when the expression is compiled; a result outside the range of int64 and
  uint64 (``-2**63`` to ``2**64 - 1``) becomes the nearest float64 (``2**64`` is ``1.8446744073709552e19``,
  beyond float64's range ``±inf``);
* ``+ - * // % **``, ``<<``, unary ``-`` and ``abs`` of integer or boolean operands compute in 64 bits (narrower
  integers and booleans as int64: ``nA + nB`` of 8-bit counters does not wrap at 256, and ``(a > 1) + (b > 1)``
  counts), and a row whose exact result does not fit the 64-bit type (int64, or uint64 for unsigned 64-bit
  operands) is an :class:`ExprError` ("integer overflow"; compute in floating point instead: ``1.0 * x``).
  Integer division by zero gives 0, as in numpy.

Limits, checked when an expression is compiled (an :class:`ExprError`, i.e. a config error): at most
:data:`MAX_LENGTH` characters and :data:`MAX_DEPTH` levels of nesting, both counted with every alias written
out (in parentheses; an alias adds one level), where a chain of binary operators evaluated left to right
(``a + b - c``, ``(a + b) * c``) is one level, as are ``and``/``or`` and comparison chains; and at most
:data:`MAX_CHAIN` operands in one chain of binary operators in one text (Python's own parser stops at a few
thousand). Every walk over an expression handles such chains iteratively, so no limit depends on the
interpreter's recursion limit beyond these.
"""

from __future__ import annotations

import ast
import builtins
import copy
import difflib
import functools
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import awkward as ak
import numpy as np

__all__ = [
    "FUNCTIONS",
    "MAX_CHAIN",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "ExprError",
    "Expression",
    "MissingBranchError",
    "compile_expression",
    "referenced_branches",
    "text_match",
]


#: Longest expression, in characters, with every alias written out in parentheses.
MAX_LENGTH = 100_000
#: Deepest nesting of operations, calls and aliases (aliases written out; a chain ``a + b - c`` is one level).
MAX_DEPTH = 64
#: Most operands of one chain of binary operators (``a + b + ...``) in one text.
MAX_CHAIN = 1000

# --------------------------------------------------------------------------------------------
# errors


class ExprError(ValueError):
    """Bad expression; str() is one line: '<where>: <message> at column <c>: <text>'.

    ``column`` is 1-based (characters, in the text with line breaks replaced by spaces) or
    ``None`` when the problem has no position. :attr:`caret` gives a two-line rendering with a
    ``^`` under the offending token for terminal output.
    """

    def __init__(
        self, message: str, where: str = "expression", column: int | None = None, text: str | None = None
    ) -> None:
        self.message = message
        self.where = where
        self.column = column
        self.text = text
        super().__init__(self._format())

    def _format(self) -> str:
        out = f"{self.where}: {self.message}"
        if self.column is not None:
            out += f" at column {self.column}"
        if self.text is not None:
            out += f": {_excerpt(self.text, self.column)}"
        return out

    def __str__(self) -> str:
        return self._format()

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.where, self.column, self.text))

    @property
    def caret(self) -> str:
        """The offending text with a ``^`` marker line below it (two lines), or ``str(self)``."""
        if self.text is None or self.column is None:
            return str(self)
        return f"{self.text}\n{' ' * (self.column - 1)}^"


_EXCERPT = 160


def _excerpt(text: str, column: int | None) -> str:
    """``repr`` of ``text``, or for a long one of the part around ``column`` (so that an error stays short)."""
    if len(text) <= _EXCERPT + 40:
        return repr(text)
    start = max(0, min((column or 1) - 1 - _EXCERPT // 2, len(text) - _EXCERPT))
    return f"{text[start:start + _EXCERPT]!r} (characters {start + 1}-{start + _EXCERPT} of {len(text):,})"


class MissingBranchError(ExprError, KeyError):
    """A branch referenced by the expression is not among the evaluated columns."""

    def __init__(
        self, branch: str, where: str = "expression", column: int | None = None, text: str | None = None
    ) -> None:
        self.branch = branch
        super().__init__(f"branch {branch!r} not found in the input columns", where, column, text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.branch, self.where, self.column, self.text))


class _EvalProblem(Exception):
    """Raised by function implementations; converted to ExprError with position by the caller."""


def _one_line(exc: BaseException) -> str:
    """First non-empty line of an exception message (awkward errors span many lines)."""
    for line in str(exc).splitlines():
        if line.strip():
            return " ".join(line.split())
    return type(exc).__name__


# --------------------------------------------------------------------------------------------
# function implementations (vectorised; numpy, awkward and python scalars)


def _is_jagged(x: Any) -> bool:
    return isinstance(x, ak.Array) and x.ndim >= 2


def _as_f64(x: Any) -> Any:
    """Promote to float64 (NanoAOD kinematics are float32; invariant masses need the precision)."""
    if isinstance(x, ak.Array):
        return ak.values_astype(x, np.float64)
    return np.asarray(x, dtype=np.float64)


# --- integer arithmetic: in 64 bits, never wrapping silently

_INT64_MIN = int(np.iinfo(np.int64).min)
WIDENED_FUNCTIONS: frozenset[Callable[..., Any]] = frozenset(
    {np.add, np.subtract, np.multiply, np.floor_divide, np.remainder, np.power, np.left_shift, np.negative, np.abs})
"""The numpy functions that compute integer and boolean operands in 64 bits (:func:`widened`) and check the
result (:func:`arithmetic`)."""


def _leaf_dtype(x: Any) -> np.dtype | None:
    """dtype of the numbers ``x`` holds (Python number, numpy value or array, awkward array of numbers; a Python
    int as int64); None for anything else (strings, records)."""
    if isinstance(x, bool | int | float):
        return np.dtype(bool if isinstance(x, bool) else np.int64 if isinstance(x, int) else np.float64)
    if isinstance(x, np.ndarray | np.generic):
        return x.dtype
    if isinstance(x, ak.Array) and x.layout.purelist_parameter("__array__") is None:
        t = ak.type(x).content
        while hasattr(t, "content"):  # list / regular / option types
            t = t.content
        try:
            return np.dtype(getattr(t, "primitive", None) or "O")
        except TypeError:
            return None
    return None


def widened(*values: Any) -> tuple[Any, ...]:
    """``values`` as integer arithmetic takes them: when all are integers or booleans, each one narrower than 64
    bits as int64 (a Python bool as a Python int, which numpy treats like a literal); otherwise unchanged."""
    dtypes = [_leaf_dtype(v) for v in values]
    if not all(d is not None and d.kind in "biu" for d in dtypes):
        return values
    out = []
    for v, d in zip(values, dtypes, strict=True):
        if isinstance(v, bool):
            v = int(v)
        elif not isinstance(v, int) and (d.itemsize < 8 or d.kind == "b"):
            v = ak.values_astype(v, np.int64) if isinstance(v, ak.Array) else np.asarray(v).astype(np.int64)[()]
        out.append(v)
    return tuple(out)


def _float(x: Any) -> Any:
    """Integers ``x`` (Python, numpy or awkward) as float64 (a numpy scalar, not a 0-d array: awkward refuses
    those as operands)."""
    return ak.values_astype(x, np.float64) if isinstance(x, ak.Array) else np.asarray(x, np.float64)[()]


def _anywhere(mask: Any) -> bool:
    """Whether any element of the boolean ``mask`` (numpy, awkward or Python) is true."""
    return bool(ak.any(mask, axis=None)) if isinstance(mask, ak.Array) else bool(np.any(mask))


def _overflows(ufunc: Callable[..., Any], values: Sequence[Any], r: Any, signed: bool) -> Any:
    """Per row, whether the exact result of ``ufunc(*values)`` (64-bit integers) differs from its wrapped
    result ``r`` (int64 if ``signed``, else uint64)."""
    a = values[0]
    if ufunc is np.negative:
        return a == _INT64_MIN if signed else a != 0
    if ufunc is np.abs:
        return a == _INT64_MIN if signed else False
    b = values[1]
    if ufunc is np.add:
        return ((a ^ r) & (b ^ r)) < 0 if signed else r < a
    if ufunc is np.subtract:
        return ((a ^ b) & (a ^ r)) < 0 if signed else a < b
    if ufunc is np.floor_divide:
        return np.logical_and(a == _INT64_MIN, b == -1) if signed else False
    if ufunc is np.multiply or ufunc is np.power:  # the float result decides, except near the limit: there the
        f = ufunc(_float(a), _float(b))  # (wrapped) sign does; the float is within 2**-40 (relative) of the exact result
        limit = 2.0**63 if signed else 2.0**64
        near, beyond = np.abs(f) >= limit * (1 - 2**-20), np.abs(f) > limit * (1 + 2**-20)
        wrapped = np.not_equal(r < 0, f < 0) if signed else r < 2**63
        return np.logical_or(beyond, np.logical_and(near, wrapped))
    if ufunc is np.left_shift:  # exact iff shifting back gives the operand (also for counts < 0 or >= 64)
        return np.right_shift(r, b) != a
    return False  # remainder: never overflows


def arithmetic(ufunc: Callable[..., Any], *values: Any, name: str = "") -> Any:
    """``ufunc(*values)``; for the functions of :data:`WIDENED_FUNCTIONS` with integer and boolean operands in 64 bits
    (:func:`widened`), raising :class:`_EvalProblem` ("integer overflow in <name>") when a row's exact result
    does not fit the 64-bit type of the result."""
    if ufunc not in WIDENED_FUNCTIONS:
        return ufunc(*values)
    values = widened(*values)
    result = ufunc(*values)
    dtype = _leaf_dtype(result)
    if dtype is not None and dtype.kind in "iu" and _anywhere(_overflows(ufunc, values, result, dtype.kind == "i")):
        raise _EvalProblem(f"integer overflow in {name or ufunc.__name__}: the exact result of a row does not fit "
                           f"in {dtype} (compute in floating point instead, e.g. 1.0 * x)")
    return result


def _fn_abs(x: Any) -> Any:
    """Absolute value (integers in 64 bits, checked)."""
    return arithmetic(np.abs, x, name="abs()")


def _reduction(name: str, x: Any, fn: Callable[[ak.Array], Any]) -> Any:
    """Apply an awkward axis=1 reduction; numpy arrays with ndim >= 2 are accepted too."""
    if isinstance(x, np.ndarray) and x.ndim >= 2:
        return ak.to_numpy(fn(ak.from_numpy(x)))
    if not _is_jagged(x):
        raise _EvalProblem(
            f"{name}() reduces a jagged collection per event (axis=1), but its argument has one value "
            "per event"
        )
    return fn(x)


def _leaf_is_bool(x: ak.Array) -> bool:
    t = ak.type(x).content
    while hasattr(t, "content"):  # list / regular / option types
        t = t.content
    return getattr(t, "primitive", None) == "bool"


def _fn_any(x: Any) -> Any:
    """True if any entry of the event's collection is true (False for empty events)."""
    return _reduction("any", x, lambda a: ak.any(a, axis=1))


def _fn_all(x: Any) -> Any:
    """True if all entries of the event's collection are true (True for empty events)."""
    return _reduction("all", x, lambda a: ak.all(a, axis=1))


def _fn_count(x: Any) -> Any:
    """Number of true entries (boolean collection) or of entries (numeric collection) per event."""

    def count(a: ak.Array) -> Any:
        return ak.count_nonzero(a, axis=1) if _leaf_is_bool(a) else ak.count(a, axis=1)

    return _reduction("count", x, count)


def _fn_sum(x: Any) -> Any:
    """Sum of the event's collection (0 for empty events)."""
    return _reduction("sum", x, lambda a: ak.sum(a, axis=1))


def _fn_min(*args: Any) -> Any:
    """min(a, b, ...) elementwise (np.minimum); min(x) per-event minimum of a jagged collection."""
    if len(args) == 1:
        return _reduction("min", args[0], lambda a: ak.min(a, axis=1, mask_identity=False))
    return functools.reduce(np.minimum, args)


def _fn_max(*args: Any) -> Any:
    """max(a, b, ...) elementwise (np.maximum); max(x) per-event maximum of a jagged collection."""
    if len(args) == 1:
        return _reduction("max", args[0], lambda a: ak.max(a, axis=1, mask_identity=False))
    return functools.reduce(np.maximum, args)


def _fn_where(cond: Any, a: Any, b: Any) -> Any:
    """``a`` where ``cond`` is true, else ``b`` (elementwise, broadcasting)."""
    if any(isinstance(v, ak.Array) for v in (cond, a, b)):
        return ak.where(cond, a, b)
    return np.where(cond, a, b)


def _fn_clip(x: Any, lo: Any, hi: Any) -> Any:
    """``x`` limited to ``[lo, hi]`` elementwise."""
    return np.minimum(np.maximum(x, lo), hi)


def delta_phi(phi1: Any, phi2: Any) -> Any:
    """Azimuthal difference ``phi1 - phi2`` in rad, wrapped to ``[-pi, pi)``."""
    d = np.remainder(np.add(np.subtract(phi1, phi2), math.pi), 2.0 * math.pi) - math.pi
    # rounding can make the remainder exactly 2*pi for tiny negative inputs: fold pi to -pi
    return d - 2.0 * math.pi * np.greater_equal(d, math.pi)


def delta_r(eta1: Any, phi1: Any, eta2: Any, phi2: Any) -> Any:
    """Angular distance ``sqrt(deta**2 + dphi**2)`` (pseudorapidity, azimuth in rad)."""
    return np.hypot(np.subtract(eta1, eta2), delta_phi(phi1, phi2))


def inv_mass(pt1: Any, eta1: Any, phi1: Any, m1: Any, pt2: Any, eta2: Any, phi2: Any, m2: Any) -> Any:
    """Invariant mass in GeV of two massive 4-vectors given as (pt [GeV], eta, phi [rad], m [GeV]).

    Computed in float64 as ``sqrt(max(m1**2 + m2**2 + 2*(E1*E2 - p1.p2), 0))``.
    """
    pt1, eta1, phi1, m1, pt2, eta2, phi2, m2 = map(_as_f64, (pt1, eta1, phi1, m1, pt2, eta2, phi2, m2))
    px1, py1, pz1 = pt1 * np.cos(phi1), pt1 * np.sin(phi1), pt1 * np.sinh(eta1)
    px2, py2, pz2 = pt2 * np.cos(phi2), pt2 * np.sin(phi2), pt2 * np.sinh(eta2)
    e1 = np.sqrt(px1**2 + py1**2 + pz1**2 + m1**2)
    e2 = np.sqrt(px2**2 + py2**2 + pz2**2 + m2**2)
    msq = m1**2 + m2**2 + 2.0 * (e1 * e2 - px1 * px2 - py1 * py2 - pz1 * pz2)
    return np.sqrt(np.maximum(msq, 0.0))


def mt(pt1: Any, phi1: Any, pt2: Any, phi2: Any) -> Any:
    """Transverse mass in GeV, ``sqrt(2 pt1 pt2 (1 - cos(phi1 - phi2)))`` (pt in GeV, phi in rad)."""
    pt1, phi1, pt2, phi2 = map(_as_f64, (pt1, phi1, pt2, phi2))
    return np.sqrt(np.maximum(2.0 * pt1 * pt2 * (1.0 - np.cos(phi1 - phi2)), 0.0))


def pt_sum(pt1: Any, phi1: Any, pt2: Any, phi2: Any) -> Any:
    """Magnitude in GeV of the vector sum of two transverse momenta (pt in GeV, phi in rad)."""
    pt1, phi1, pt2, phi2 = map(_as_f64, (pt1, phi1, pt2, phi2))
    return np.hypot(pt1 * np.cos(phi1) + pt2 * np.cos(phi2), pt1 * np.sin(phi1) + pt2 * np.sin(phi2))


def _type_text(values: Any) -> str:
    """Short type of non-string values for error messages: ``float64``, ``var * int32``."""
    if isinstance(values, ak.Array):
        return str(ak.type(values).content)
    return np.asarray(values).dtype.name


def _typed_objects(values: np.ndarray) -> Any:
    """A numpy object array as a numpy string array (numpy >= 2, ``str`` objects only: a checked conversion
    in C), else as an awkward array of the objects' common type (bytes, numbers, lists)."""
    if values.size == 0:
        return values.astype(str)
    string_dtype = getattr(np.dtypes, "StringDType", None)
    if string_dtype is not None:
        try:
            return values.astype(string_dtype(coerce=False))
        except (TypeError, ValueError):
            pass
    try:
        return ak.from_iter(values)
    except (TypeError, ValueError):
        raise _EvalProblem("objects of no common type") from None


def text_match(values: Any, literals: Sequence[str]) -> Any:
    """Elementwise whether ``values`` equal one of the strings ``literals``, without a Python loop per row.

    ``values``: what uproot gives for string branches (``TString``, ``std::string``, ``char*``): a numpy
    object array of ``str`` (library "np"), an awkward string array, flat or jagged (library "ak"), or a
    numpy ``str``/``StringDType`` array. Bytes values (numpy ``S`` arrays, object arrays of ``bytes``,
    awkward bytestrings) are compared with the UTF-8 encoding of the literals. Returns a numpy or awkward
    boolean array of the shape of ``values``; raises :class:`_EvalProblem` naming the type of non-string
    values.
    """
    numpy_in = isinstance(values, np.ndarray)
    if numpy_in and values.dtype == object:
        values = _typed_objects(values)
    if isinstance(values, ak.Array):
        if values.layout.purelist_parameter("__array__") not in ("string", "bytestring"):
            raise _EvalProblem(f"{_type_text(values)} values")
        result = _awkward_text_match(values, [t.encode("utf-8") for t in literals])
        return ak.to_numpy(result) if numpy_in and result.ndim == 1 else result  # numpy in, numpy out
    values = np.asarray(values)
    if values.dtype.kind not in "UTS":
        raise _EvalProblem(f"{_type_text(values)} values")
    wanted = [t.encode("utf-8") for t in literals] if values.dtype.kind == "S" else list(literals)
    return functools.reduce(np.logical_or, [values == w for w in wanted])


def _awkward_text_match(values: ak.Array, literals: Sequence[bytes]) -> ak.Array:
    """:func:`text_match` of an awkward array of (byte)strings, flat or in lists: each string's UTF-8 bytes
    are compared with those of the literals in a few numpy operations (awkward's own ``==`` on strings
    takes ~200 ns per string)."""

    def match(layout: Any, **kwargs: Any) -> Any:
        if layout.parameter("__array__") not in ("string", "bytestring"):
            return None
        if not hasattr(layout, "starts"):  # fixed-size strings
            layout = layout.to_ListOffsetArray64(False)
        starts, data = np.asarray(layout.starts.data), np.asarray(layout.content.data)
        lengths = np.asarray(layout.stops.data) - starts
        found = np.zeros(len(starts), bool)
        for literal in literals:
            same = np.flatnonzero(lengths == len(literal))  # then byte by byte, on the rows still equal
            for i, byte in enumerate(literal):
                same = same[data[starts[same] + i] == byte]
            found[same] = True
        return ak.contents.NumpyArray(found)

    return ak.transform(match, values)


class FunctionSpec(NamedTuple):
    """A whitelisted function: implementation and allowed positional argument counts."""

    impl: Callable[..., Any]
    min_args: int
    max_args: int | None  # None: unbounded


def _unary(ufunc: Callable[..., Any]) -> FunctionSpec:
    return FunctionSpec(ufunc, 1, 1)


#: Whitelisted functions callable from expressions.
FUNCTIONS: Mapping[str, FunctionSpec] = {
    "abs": FunctionSpec(_fn_abs, 1, 1),
    "sqrt": _unary(np.sqrt),
    "log": _unary(np.log),
    "log10": _unary(np.log10),
    "exp": _unary(np.exp),
    "sin": _unary(np.sin),
    "cos": _unary(np.cos),
    "tan": _unary(np.tan),
    "arctan2": FunctionSpec(np.arctan2, 2, 2),
    "atan2": FunctionSpec(np.arctan2, 2, 2),
    "sinh": _unary(np.sinh),
    "cosh": _unary(np.cosh),
    "tanh": _unary(np.tanh),
    "arcsinh": _unary(np.arcsinh),
    "arccosh": _unary(np.arccosh),
    "min": FunctionSpec(_fn_min, 1, None),
    "max": FunctionSpec(_fn_max, 1, None),
    "where": FunctionSpec(_fn_where, 3, 3),
    "clip": FunctionSpec(_fn_clip, 3, 3),
    "isfinite": _unary(np.isfinite),
    "any": _unary(_fn_any),
    "all": _unary(_fn_all),
    "count": _unary(_fn_count),
    "sum": _unary(_fn_sum),
    "delta_phi": FunctionSpec(delta_phi, 2, 2),
    "delta_r": FunctionSpec(delta_r, 4, 4),
    "inv_mass": FunctionSpec(inv_mass, 8, 8),
    "mt": FunctionSpec(mt, 4, 4),
    "pt_sum": FunctionSpec(pt_sum, 4, 4),
}

_CONSTANTS: Mapping[str, float] = {"pi": math.pi}

_BINOPS: Mapping[type[ast.operator], tuple[Callable[[Any, Any], Any], str]] = {
    ast.Add: (np.add, "+"),
    ast.Sub: (np.subtract, "-"),
    ast.Mult: (np.multiply, "*"),
    ast.Div: (np.true_divide, "/"),
    ast.FloorDiv: (np.floor_divide, "//"),
    ast.Mod: (np.remainder, "%"),
    ast.Pow: (np.power, "**"),
    ast.BitAnd: (np.bitwise_and, "&"),
    ast.BitOr: (np.bitwise_or, "|"),
    ast.BitXor: (np.bitwise_xor, "^"),
    ast.LShift: (np.left_shift, "<<"),
    ast.RShift: (np.right_shift, ">>"),
}

_CMPOPS: Mapping[type[ast.cmpop], tuple[Callable[[Any, Any], Any], str]] = {
    ast.Eq: (np.equal, "=="),
    ast.NotEq: (np.not_equal, "!="),
    ast.Lt: (np.less, "<"),
    ast.LtE: (np.less_equal, "<="),
    ast.Gt: (np.greater, ">"),
    ast.GtE: (np.greater_equal, ">="),
}

_REJECTED_CMPOPS: Mapping[type[ast.cmpop], tuple[str, str]] = {
    ast.Is: ("is", "'is' comparisons are not allowed; use '==' or '!='"),
    ast.IsNot: ("is", "'is not' comparisons are not allowed; use '==' or '!='"),
}

_TEXT_CMPOPS: Mapping[type[ast.cmpop], tuple[str, bool]] = {
    ast.Eq: ("==", False),
    ast.NotEq: ("!=", True),
    ast.In: ("in", False),
    ast.NotIn: ("not", True),
}
"""Operators of string comparisons: (token where the operator starts, whether the result is negated)."""

_REJECTED_NODES: Mapping[type[ast.AST], str] = {
    ast.Lambda: "lambda expressions are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "generator expressions are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed",
    ast.Dict: "dict literals are not allowed",
    ast.List: "list literals are not allowed",
    ast.Set: "set literals are not allowed",
    ast.Tuple: "tuple literals are not allowed",
    ast.Starred: "starred arguments are not allowed",
    ast.Slice: "slices are not allowed",
    ast.Await: "'await' is not allowed",
    ast.Yield: "'yield' is not allowed",
    ast.YieldFrom: "'yield' is not allowed",
}

# --------------------------------------------------------------------------------------------
# compiler

# A compiled node: takes the evaluation environment and returns a value.
_Node = Callable[["_Env"], Any]


class _Env:
    """Per-evaluation state: the input columns and a cache of fetched branches and aliases."""

    __slots__ = ("cache", "columns")

    def __init__(self, columns: Mapping[str, Any]) -> None:
        self.columns = columns
        self.cache: dict[tuple[str, str], Any] = {}


class _Ctx(NamedTuple):
    """Position of a node, kept by closures to report evaluation-time errors."""

    where: str
    column: int | None
    text: str


class _Source:
    """Expression text prepared for parsing, with byte-offset -> column conversion."""

    def __init__(self, text: str, where: str) -> None:
        if not isinstance(text, str):
            raise ExprError(f"expression must be a string, got {type(text).__name__}", where)
        # YAML block scalars may contain line breaks: replace them by spaces (same length), so
        # the expression is one line, columns are unambiguous and error messages stay one line.
        self.display = text.replace("\r", " ").replace("\n", " ")
        self.where = where
        body = self.display.lstrip()
        self.shift = len(self.display) - len(body)  # leading whitespace (would be an indent)
        self.body = body
        self.raw = body.encode("utf-8")
        self.ascii = len(self.raw) == len(body)

    def column(self, byte_offset: int) -> int:
        """1-based character column in ``display`` of a byte offset into ``body``."""
        offset = max(byte_offset, 0)
        chars = offset if self.ascii else len(self.raw[:offset].decode("utf-8", errors="ignore"))
        return self.shift + chars + 1

    def parse(self) -> ast.expr:
        """The syntax tree of the one expression of the text; ExprError for an empty, too long or unparsable
        text and for statements."""
        if not self.body.strip():
            raise self.error("empty expression", None)
        if len(self.display) > MAX_LENGTH:
            raise ExprError(f"expression is {len(self.display):,} characters long (the limit is {MAX_LENGTH:,})",
                            self.where)
        try:
            module = ast.parse(self.body, mode="exec")
        except SyntaxError as exc:
            col = None if exc.offset is None else self.shift + max(exc.offset, 1)
            raise ExprError(f"syntax error: {exc.msg}", self.where, col, self.display) from None
        except RecursionError:
            raise ExprError(f"expression is too deeply nested or has too long a chain of operators to be parsed "
                            f"(the limits are {MAX_DEPTH} levels and chains of {MAX_CHAIN:,} operands)",
                            self.where) from None
        except (ValueError, MemoryError) as exc:
            raise self.error(f"cannot parse expression: {_one_line(exc)}", None) from None
        if not module.body:
            raise self.error("empty expression", None)
        if len(module.body) > 1:
            pos = self.find(";", _end(module.body[0]), _start(module.body[1]))
            if pos is None:
                pos = _start(module.body[1])
            raise self.error("only a single expression is allowed (found several statements)", pos)
        stmt = module.body[0]
        if not isinstance(stmt, ast.Expr):
            raise _statement_error(self, stmt)
        return stmt.value

    def ctx(self, byte_offset: int | None) -> _Ctx:
        """Error context (where, column, text) of a byte offset, for evaluation-time errors."""
        col = None if byte_offset is None else self.column(byte_offset)
        return _Ctx(self.where, col, self.display)

    def error(self, message: str, byte_offset: int | None) -> ExprError:
        return ExprError(message, *self.ctx(byte_offset))

    def find(self, token: str, start: int | None, end: int | None = None) -> int | None:
        """Byte offset of ``token`` in ``body[start:end]`` (None if not found / no start)."""
        if start is None:
            return None
        pos = self.raw.find(token.encode(), start, len(self.raw) if end is None else end)
        return None if pos < 0 else pos


def _statement_error(src: _Source, stmt: ast.stmt) -> ExprError:
    """The error for a statement where an expression is expected."""
    if isinstance(stmt, ast.Assign):
        pos = src.find("=", _end(stmt.targets[-1]))
        return src.error("assignment is not allowed (use '==' to compare)", pos)
    if isinstance(stmt, ast.AugAssign):
        symbol = _BINOPS.get(type(stmt.op), (None, "@"))[1]
        return src.error("assignment is not allowed", src.find(symbol + "=", _end(stmt.target)))
    if isinstance(stmt, ast.AnnAssign):
        return src.error("assignment is not allowed", src.find(":", _end(stmt.target)))
    if isinstance(stmt, ast.Import | ast.ImportFrom):
        return src.error("imports are not allowed", _start(stmt))
    keyword = type(stmt).__name__.lower()
    return src.error(f"statements are not allowed ('{keyword}')", _start(stmt))


def _start(node: ast.AST) -> int | None:
    return getattr(node, "col_offset", None)


def _end(node: ast.AST) -> int | None:
    return getattr(node, "end_col_offset", None)


class _Compiler:
    """Checks an AST against the whitelist and builds the closure tree; collects branches."""

    def __init__(self, source: _Source, unit: _Unit) -> None:
        self.src = source
        self.unit = unit
        self.branches: set[str] = set()

    # -- entry ---------------------------------------------------------------------------------

    def compile_tree(self, tree: ast.expr) -> _Node:
        """The closure of ``tree`` (this compiler's text, parsed and folded by :meth:`_Unit.prepare`)."""
        try:
            return self.visit(tree)
        except RecursionError:  # pragma: no cover - the limits keep walks far from the recursion limit
            raise self.src.error("expression is too deeply nested", None) from None

    # -- dispatch ------------------------------------------------------------------------------

    def visit(self, node: ast.AST) -> _Node:
        method = getattr(self, f"visit_{type(node).__name__}", None)
        if method is not None:
            return method(node)
        message = _REJECTED_NODES.get(type(node))
        if message is None:
            message = f"'{type(node).__name__}' expressions are not allowed"
        return self._reject(message, _start(node))

    def _reject(self, message: str, byte_offset: int | None) -> _Node:
        raise self.src.error(message, byte_offset)

    # -- leaves --------------------------------------------------------------------------------

    def visit_Constant(self, node: ast.Constant) -> _Node:
        value = node.value
        if isinstance(value, str | bytes):
            return self._reject("strings are not allowed", _start(node))
        if value is None or value is Ellipsis or isinstance(value, complex):
            return self._reject(f"constant {value!r} is not allowed", _start(node))
        if not isinstance(value, bool | int | float):  # pragma: no cover - defensive
            return self._reject(f"constant of type {type(value).__name__} is not allowed", _start(node))
        return _const(value)

    def visit_Name(self, node: ast.Name) -> _Node:
        name = node.id
        pos = _start(node)
        if name.startswith("__"):
            return self._reject(f"dunder name {name!r} is not allowed", pos)
        if name in _CONSTANTS:
            return _const(_CONSTANTS[name])
        if name in self.unit.aliases:
            fn, branches = self.unit.alias(name, self.src, pos)
            self.branches |= branches
            return fn
        if name in FUNCTIONS:
            return self._reject(f"function {name!r} must be called, e.g. {name}(...)", pos)
        self.branches.add(name)
        return _branch(name, self.src.ctx(pos))

    # -- operators -----------------------------------------------------------------------------

    def visit_BinOp(self, node: ast.BinOp) -> _Node:
        """A chain of binary operators along the left (``a + b - c``: Python's tree is as deep as the chain is
        long) as one closure that applies them in turn: no recursion per operator."""
        chain = []
        while isinstance(node, ast.BinOp):
            chain.append(node)
            node = node.left
        first = self.visit(node)
        steps = []
        for op_node in reversed(chain):
            entry = _BINOPS.get(type(op_node.op))
            if entry is None:
                pos = self.src.find("@", _end(op_node.left))
                return self._reject("matrix multiplication '@' is not allowed", pos)
            ufunc, symbol = entry
            right = self.visit(op_node.right)
            steps.append((ufunc, symbol, right, self.src.ctx(self.src.find(symbol, _end(op_node.left),
                                                                          _start(op_node.right)))))

        def binop(env: _Env) -> Any:
            value = first(env)
            for ufunc, symbol, right, ctx in steps:
                b = right(env)
                try:
                    value = arithmetic(ufunc, value, b, name=f"'{symbol}'")
                except _EvalProblem as exc:
                    raise _eval_error(ctx, str(exc), None) from None
                except _ARRAY_ERRORS as exc:
                    raise _eval_error(ctx, f"cannot evaluate '{symbol}'", exc) from exc
            return value

        return binop

    def visit_UnaryOp(self, node: ast.UnaryOp) -> _Node:
        operand = self.visit(node.operand)
        if isinstance(node.op, ast.UAdd):
            return operand
        ufunc, symbol = {
            ast.USub: (np.negative, "-"),
            ast.Invert: (np.invert, "~"),
            ast.Not: (np.logical_not, "not"),
        }[type(node.op)]
        ctx = self.src.ctx(_start(node))

        def unary(env: _Env) -> Any:
            a = operand(env)
            try:
                return arithmetic(ufunc, a, name=f"'{symbol}'")
            except _EvalProblem as exc:
                raise _eval_error(ctx, str(exc), None) from None
            except _ARRAY_ERRORS as exc:
                raise _eval_error(ctx, f"cannot evaluate '{symbol}'", exc) from exc

        return unary

    def visit_BoolOp(self, node: ast.BoolOp) -> _Node:
        ufunc, symbol = (np.logical_and, "and") if isinstance(node.op, ast.And) else (np.logical_or, "or")
        values = [self.visit(v) for v in node.values]
        ctx = self.src.ctx(self.src.find(symbol, _end(node.values[0])))

        def boolop(env: _Env) -> Any:
            result = values[0](env)
            for value in values[1:]:
                b = value(env)
                try:
                    result = ufunc(result, b)
                except _ARRAY_ERRORS as exc:
                    raise _eval_error(ctx, f"cannot evaluate '{symbol}'", exc) from exc
            return result

        return boolop

    def visit_Compare(self, node: ast.Compare) -> _Node:
        operands = [node.left, *node.comparators]
        for i, op in enumerate(node.ops):
            rejected = _REJECTED_CMPOPS.get(type(op))
            if rejected is not None:
                token, message = rejected
                pos = self.src.find(token, _end(operands[i]), _start(operands[i + 1]))
                return self._reject(message, pos)
        if any(isinstance(o, ast.Constant) and isinstance(o.value, str | bytes) for o in operands) or any(
                isinstance(op, ast.In | ast.NotIn) for op in node.ops):
            return self._text_compare(node)
        compiled = [self.visit(o) for o in operands]
        steps = []
        for i, op in enumerate(node.ops):
            ufunc, symbol = _CMPOPS[type(op)]
            pos = self.src.find(symbol, _end(operands[i]), _start(operands[i + 1]))
            steps.append((ufunc, symbol, self.src.ctx(pos)))

        def compare(env: _Env) -> Any:
            left = compiled[0](env)
            result = None
            for (ufunc, symbol, ctx), right_fn in zip(steps, compiled[1:], strict=True):
                right = right_fn(env)
                try:
                    step = ufunc(left, right)
                    result = step if result is None else np.logical_and(result, step)
                except _ARRAY_ERRORS as exc:
                    raise _eval_error(ctx, f"cannot evaluate '{symbol}'", exc) from exc
                left = right
            return result

        return compare

    # -- string comparisons --------------------------------------------------------------------

    def _text_compare(self, node: ast.Compare) -> _Node:
        """``branch == "text"`` (either side), ``!=``, ``branch in ("a", "b")``, ``not in``: one
        comparison."""
        left, right = node.left, node.comparators[0]
        if len(node.ops) > 1:
            second = type(node.ops[1])
            token = _TEXT_CMPOPS[second][0] if second in _TEXT_CMPOPS else _CMPOPS[second][1]
            pos = self.src.find(token, _end(right), _start(node.comparators[1]))
            return self._reject("a string comparison must be a single comparison (no chains such as "
                                "a == 'x' == b; combine them with 'and')", pos)
        op = type(node.ops[0])
        entry = _TEXT_CMPOPS.get(op)
        if entry is None:
            symbol = _CMPOPS[op][1]
            message = f"strings can only be compared with '==', '!=', 'in' or 'not in', not '{symbol}'"
            return self._reject(message, self.src.find(symbol, _end(left), _start(right)))
        _, negate = entry
        if op in (ast.In, ast.NotIn):
            if not isinstance(right, ast.Tuple | ast.List) or not right.elts:
                message = "'in' takes a tuple or list of string literals, e.g. Type in ('GG', 'GE')"
                return self._reject(message, _start(right))
            subject = left
            literals = tuple(self._text_literal(e, "'in' takes string literals only") for e in right.elts)
        else:
            is_text = isinstance(left, ast.Constant) and isinstance(left.value, str | bytes)
            subject, literal = (right, left) if is_text else (left, right)
            literals = (self._text_literal(literal, ""),)
        values, branch = self._text_subject(subject)
        ctx = self.src.ctx(_start(subject))

        def text_compare(env: _Env) -> Any:
            try:
                result = text_match(values(env), literals)
            except _EvalProblem as exc:
                message = f"branch {branch!r} holds {exc}, not strings: it cannot be compared with {literals[0]!r}"
                raise _eval_error(ctx, message, None) from None
            return np.logical_not(result) if negate else result

        return text_compare

    def _text_literal(self, node: ast.expr, message: str) -> str:
        """The text of a string literal; a bytes literal, or anything else (with ``message``), is rejected."""
        if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
            text = node.value.decode("utf-8", errors="replace")
            raise self.src.error(f"bytes literals are not allowed; strings are compared as UTF-8 text, write "
                                 f"{text!r}", _start(node))
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            raise self.src.error(message, _start(node))
        return node.value

    def _text_subject(self, node: ast.expr) -> tuple[_Node, str]:
        """Compiled values and branch name of the side of a string comparison that is not a literal: a
        branch, or an alias of one."""
        message = "a string can only be compared with a branch or an alias of one"
        if not isinstance(node, ast.Name) or node.id in _CONSTANTS:
            raise self.src.error(message, _start(node))
        values = self.visit(node)  # rejects dunder and function names, compiles an alias
        if node.id not in self.unit.aliases:
            return values, node.id
        tree = self.unit.alias_tree(node.id)
        if not isinstance(tree, ast.Name) or tree.id in _CONSTANTS:
            raise self.src.error(f"{message} (alias {node.id!r} is an expression)", _start(node))
        return values, tree.id

    # -- calls ---------------------------------------------------------------------------------

    def visit_Call(self, node: ast.Call) -> _Node:
        func = node.func
        if not isinstance(func, ast.Name):
            if isinstance(func, ast.Attribute):
                return self.visit(func)  # reports the attribute access
            return self._reject("only whitelisted functions can be called, by name", _start(func))
        name = func.id
        pos = _start(func)
        if name.startswith("__"):
            return self._reject(f"dunder name {name!r} is not allowed", pos)
        spec = FUNCTIONS.get(name)
        if spec is None:
            return self._reject(_unknown_function_message(name), pos)
        for kw in node.keywords:
            if kw.arg is None:
                return self._reject("keyword argument unpacking ('**') is not allowed", _start(kw))
            return self._reject(
                f"keyword arguments are not allowed ({name}() takes positional arguments only)", _start(kw)
            )
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                return self._reject("starred arguments are not allowed", _start(arg))
        nargs = len(node.args)
        if nargs < spec.min_args or (spec.max_args is not None and nargs > spec.max_args):
            return self._reject(f"{name}() takes {_arity_text(spec)} ({nargs} given)", pos)
        args = [self.visit(a) for a in node.args]
        impl = spec.impl
        ctx = self.src.ctx(pos)

        def call(env: _Env) -> Any:
            values = [a(env) for a in args]
            try:
                return impl(*values)
            except _EvalProblem as exc:
                raise _eval_error(ctx, str(exc), None) from None
            except _ARRAY_ERRORS as exc:
                raise _eval_error(ctx, f"cannot evaluate {name}()", exc) from exc

        return call

    # -- rejections with a more precise position / message ---------------------------------------

    def visit_Attribute(self, node: ast.Attribute) -> _Node:
        end = _end(node)
        pos = None if end is None else end - len(node.attr.encode())
        return self._reject("attribute access is not allowed", pos)

    def visit_Subscript(self, node: ast.Subscript) -> _Node:
        pos = self.src.find("[", _end(node.value))
        return self._reject(
            "subscripts are not supported; use a per-event reduction such as max(...) or any(...)", pos
        )

    def visit_IfExp(self, node: ast.IfExp) -> _Node:
        pos = self.src.find("if", _end(node.body), _start(node.test))
        return self._reject("conditional expressions are not allowed; use where(cond, a, b)", pos)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> _Node:
        pos = self.src.find(":=", _end(node.target))
        return self._reject("assignment expressions (':=') are not allowed", pos)


_ARRAY_ERRORS = (TypeError, ValueError, ArithmeticError, IndexError)


def _eval_error(ctx: _Ctx, message: str, exc: BaseException | None) -> ExprError:
    """Evaluation-time error at the position stored in ``ctx``."""
    if exc is not None:
        message = f"{message}: {_one_line(exc)}"
    return ExprError(message, ctx.where, ctx.column, ctx.text)


def _const(value: Any) -> _Node:
    def const(env: _Env) -> Any:
        return value

    return const


def _branch(name: str, ctx: _Ctx) -> _Node:
    key = ("branch", name)

    def branch(env: _Env) -> Any:
        cache = env.cache
        try:
            return cache[key]
        except KeyError:
            pass
        try:
            value = env.columns[name]
        except (KeyError, IndexError):  # IndexError: awkward FieldNotFoundError
            raise MissingBranchError(name, ctx.where, ctx.column, ctx.text) from None
        cache[key] = value
        return value

    return branch


def _arity_text(spec: FunctionSpec) -> str:
    lo, hi = spec.min_args, spec.max_args
    if hi is None:
        return f"at least {lo} argument{'s' if lo != 1 else ''}"
    if lo == hi:
        return f"{lo} argument{'s' if lo != 1 else ''}"
    return f"{lo} to {hi} arguments"


def _unknown_function_message(name: str) -> str:
    match = difflib.get_close_matches(name, list(FUNCTIONS), n=1, cutoff=0.6)
    if match:
        return f"unknown function {name!r} (did you mean {match[0]!r}?)"
    if hasattr(builtins, name):
        return f"function {name!r} is not allowed"
    return f"unknown function {name!r}"


# --- walks without recursion: alias expansion, integer constants, limits

def _operands(node: ast.AST) -> list[ast.expr]:
    """The sub-expressions of ``node`` (not the name of a called function)."""
    func = node.func if isinstance(node, ast.Call) else None
    return [c for c in ast.iter_child_nodes(node) if isinstance(c, ast.expr) and c is not func]


def _post_order(tree: ast.expr) -> list[ast.expr]:
    """The nodes of ``tree``, each after its operands (an explicit stack: chains of any length)."""
    out: list[ast.expr] = []
    stack: list[tuple[ast.expr, bool]] = [(tree, False)]
    while stack:
        node, ready = stack.pop()
        kids = _operands(node)
        if ready or not kids:
            out.append(node)
        else:
            stack.append((node, True))
            stack.extend((k, False) for k in reversed(kids))
    return out


def _transform(tree: ast.expr, change: Callable[[ast.expr], ast.expr | None]) -> ast.expr:
    """``tree`` rebuilt bottom-up: a node whose operands changed is copied with the new ones, then ``change(node)``
    may replace it (None: keep it). Unchanged parts are shared, not copied."""
    new: dict[int, ast.expr] = {}
    for node in _post_order(tree):
        out = node
        if any(new[id(k)] is not k for k in _operands(node)):
            out = copy.copy(node)
            for name, value in ast.iter_fields(node):
                if isinstance(value, ast.expr):
                    setattr(out, name, new.get(id(value), value))
                elif isinstance(value, list):
                    setattr(out, name, [new.get(id(v), v) if isinstance(v, ast.expr) else v for v in value])
        new[id(node)] = change(out) or out
    return new[id(tree)]


_EXACT: Mapping[type[ast.operator], Callable[[int, int], int]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod, ast.Pow: operator.pow, ast.LShift: operator.lshift, ast.RShift: operator.rshift,
    ast.BitAnd: operator.and_, ast.BitOr: operator.or_, ast.BitXor: operator.xor,
}
_LOGICAL_ON_BOOLS = (ast.RShift, ast.BitAnd, ast.BitOr, ast.BitXor, ast.Invert)
"""Operators that numpy applies to booleans as logic (not widened): booleans are not folded as integers there."""
_HUGE_BITS = 4096  # an exact integer beyond this is infinite as a float anyway


def _constant_value(value: int | float) -> int | float:
    """An integer constant in the range of int64 and uint64 as it is, beyond it the nearest float64 (or ±inf)."""
    if isinstance(value, float) or -(2**63) <= value < 2**64:
        return value
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _exact(op: type[ast.operator], a: int, b: int) -> int | float | None:
    """``a op b`` computed exactly (:func:`_constant_value`); None where numpy is left to decide (a division by
    zero, negative exponents and shift counts)."""
    if (op in (ast.FloorDiv, ast.Mod) and b == 0) or (op in (ast.Pow, ast.LShift, ast.RShift) and b < 0):
        return None
    if op is ast.Pow and abs(a) > 1 and b * a.bit_length() > _HUGE_BITS:
        return -math.inf if a < 0 and b % 2 else math.inf
    if op is ast.LShift and a != 0 and b > _HUGE_BITS:
        return math.inf if a > 0 else -math.inf
    return _constant_value(_EXACT[op](a, b))


def _integer_operand(node: ast.expr, logical: bool) -> int | None:
    """The value of an integer literal (a boolean as 0 or 1 unless the operator is ``logical`` on booleans)."""
    if not isinstance(node, ast.Constant) or not isinstance(node.value, int):
        return None
    if isinstance(node.value, bool):
        return None if logical else int(node.value)
    return node.value


def _folded(node: ast.expr, constants: Mapping[str, int]) -> ast.expr | None:
    """``node`` as a constant where it is an integer constant or an integer operation of constants (an alias of
    one included), computed exactly; None to keep it."""
    if isinstance(node, ast.Name) and node.id in constants:
        value: int | float | None = constants[node.id]
    elif isinstance(node, ast.Constant) and type(node.value) is int:
        value = _constant_value(node.value)
        if isinstance(value, int):
            return None
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.Invert):
        x = _integer_operand(node.operand, isinstance(node.op, _LOGICAL_ON_BOOLS))
        value = None if x is None else _constant_value(-x if isinstance(node.op, ast.USub) else ~x)
    elif isinstance(node, ast.BinOp) and type(node.op) in _EXACT:
        logical = isinstance(node.op, _LOGICAL_ON_BOOLS)
        a, b = _integer_operand(node.left, logical), _integer_operand(node.right, logical)
        value = None if a is None or b is None else _exact(type(node.op), a, b)
    else:
        return None
    return None if value is None else ast.copy_location(ast.Constant(value), node)


class _Shape(NamedTuple):
    """Size of an expression with its aliases written out: characters (aliases in parentheses) and levels."""

    length: int
    depth: int


def _measure(tree: ast.expr, length: int, aliases: Mapping[str, _Shape]) -> tuple[_Shape, int]:
    """(shape of a text of ``length`` characters with syntax tree ``tree``, given the shapes of the aliases it
    uses; the most operands of one chain of binary operators in it). A leaf is one level, an operation one more
    than its deepest operand, except that a binary operation continues the level of one on its left."""
    depth: dict[int, int] = {}
    spine: dict[int, int] = {}
    longest = 0
    for node in _post_order(tree):
        if isinstance(node, ast.Name) and node.id in aliases:
            length += aliases[node.id].length + 2 - len(node.id)
            depth[id(node)] = aliases[node.id].depth + 1
        elif isinstance(node, ast.BinOp):
            chained = isinstance(node.left, ast.BinOp)
            spine[id(node)] = spine[id(node.left)] + 1 if chained else 1
            longest = max(longest, spine[id(node)] + 1)
            depth[id(node)] = max(depth[id(node.left)] + (not chained), depth[id(node.right)] + 1)
        else:
            depth[id(node)] = 1 + max((depth[id(k)] for k in _operands(node)), default=0)
    return _Shape(length, depth[id(tree)]), longest


def _amount(n: int) -> str:
    return f"{n:,}" if n < 10**15 else f"more than 10^{len(str(n)) - 1}"


class _Unit:
    """One compile_expression call: alias table, the aliases' folded trees and shapes, compiled-alias cache and
    cycle detection."""

    def __init__(self, aliases: Mapping[str, Any], where: str) -> None:
        self.where = where
        self.aliases = dict(aliases)
        self._compiled: dict[str, tuple[_Node, frozenset[str]]] = {}
        self._stack: list[str] = []
        self._folded: dict[str, ast.expr] = {}
        self._shapes: dict[str, _Shape] = {}
        self._order: list[str] = []  # prepared aliases, each after the aliases it uses
        self._expanded: dict[str, ast.expr] = {}
        for name in self.aliases:
            self._check_alias_name(name)

    def _check_alias_name(self, name: Any) -> None:
        where = f"aliases.{name}"
        if not isinstance(name, str) or not name.isidentifier():
            raise ExprError(f"alias name {name!r} is not a valid identifier", where)
        if name.startswith("__"):
            raise ExprError(f"alias name {name!r} is a dunder name", where)
        if name in FUNCTIONS:
            raise ExprError(f"alias name {name!r} shadows a function", where)
        if name in _CONSTANTS or name in ("True", "False", "None"):
            raise ExprError(f"alias name {name!r} shadows a constant", where)

    def _alias_source(self, name: str) -> _Source:
        text = self.aliases[name]
        where = f"{self.where} -> alias {name!r}"
        if isinstance(text, int | float) and not isinstance(text, bool):
            text = repr(text)
        if not isinstance(text, str):
            raise ExprError(f"alias expression must be a string, got {type(text).__name__}", where)
        return _Source(text, where)

    def _alias_names(self, tree: ast.expr) -> list[str]:
        return list(dict.fromkeys(n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in self.aliases))

    def prepare(self, src: _Source) -> ast.expr:
        """The folded tree of ``src``, after parsing every alias it uses, each after the aliases it uses in turn
        (an explicit stack: alias chains of any length), and checking the limits of each
        (:meth:`_checked`)."""
        tree = src.parse()
        parsed: dict[str, tuple[_Source, ast.expr]] = {}
        seen = set(self._shapes)
        stack = [(name, False) for name in reversed(self._alias_names(tree))]
        while stack:
            name, ready = stack.pop()
            if ready:
                alias_src, alias_tree = parsed.pop(name)
                self._folded[name], self._shapes[name] = self._checked(alias_src, alias_tree)
                self._order.append(name)
            elif name not in seen:  # seen and not ready: a cycle, which the compiler reports
                seen.add(name)
                alias_src = self._alias_source(name)
                parsed[name] = alias_src, alias_src.parse()
                stack.append((name, True))
                stack.extend((n, False) for n in reversed(self._alias_names(parsed[name][1])) if n not in seen)
        return self._checked(src, tree)[0]

    def _checked(self, src: _Source, tree: ast.expr) -> tuple[ast.expr, _Shape]:
        """(folded tree, shape) of the text of ``src`` parsed as ``tree``; ExprError if it exceeds a limit."""
        shape, chain = _measure(tree, len(src.display), self._shapes)
        written_out = " with its aliases written out" if shape.length != len(src.display) else ""
        if chain > MAX_CHAIN:
            raise ExprError(f"a chain of {chain:,} operands of binary operators (the limit is {MAX_CHAIN:,}; split "
                            "it into aliases)", src.where)
        if shape.length > MAX_LENGTH:
            raise ExprError(f"expression is {_amount(shape.length)} characters long{written_out} (the limit is "
                            f"{MAX_LENGTH:,})", src.where)
        if shape.depth > MAX_DEPTH:
            raise ExprError(f"expression is nested {shape.depth} levels deep{written_out} (the limit is {MAX_DEPTH}; "
                            "a chain such as a + b - c is one level)", src.where)
        constants = {name: t.value for name, t in self._folded.items()
                     if isinstance(t, ast.Constant) and type(t.value) is int}
        return _transform(tree, lambda node: _folded(node, constants)), shape

    def alias(self, name: str, ref_src: _Source, ref_pos: int | None) -> tuple[_Node, frozenset[str]]:
        """Compiled closure and branches of alias ``name`` referenced at ``ref_pos`` in ``ref_src``."""
        if name in self._compiled:
            return self._compiled[name]
        if name in self._stack:
            cycle = " -> ".join([*self._stack[self._stack.index(name) :], name])
            raise ref_src.error(f"alias cycle: {cycle}", ref_pos)
        self._stack.append(name)
        try:
            compiler = _Compiler(self._alias_source(name), self)
            inner = compiler.compile_tree(self._folded[name])
        finally:
            self._stack.pop()
        key = ("alias", name)

        def alias_value(env: _Env) -> Any:
            cache = env.cache
            try:
                return cache[key]
            except KeyError:
                value = cache[key] = inner(env)
                return value

        result = (alias_value, frozenset(compiler.branches))
        self._compiled[name] = result
        return result

    def expand(self, tree: ast.expr) -> ast.expr:
        """``tree`` (folded) with every alias replaced by its expanded tree: shared, not copied (read only)."""
        for name in self._order:
            if name not in self._expanded:
                self._expanded[name] = _transform(self._folded[name], self._expansion)
        return _transform(tree, self._expansion)

    def _expansion(self, node: ast.expr) -> ast.expr | None:
        return self._expanded.get(node.id) if isinstance(node, ast.Name) else None

    def alias_tree(self, name: str) -> ast.expr:
        """Expanded syntax tree of alias ``name`` (shared: read only)."""
        return self.expand(ast.Name(name, ast.Load()))


# --------------------------------------------------------------------------------------------
# public API


@dataclass(frozen=True)
class Expression:
    """A compiled expression. Create with :func:`compile_expression`."""

    text: str
    branches: frozenset[str]  # input column/branch names referenced, after alias expansion
    where: str = field(default="expression", compare=False)
    _fn: Callable[[_Env], Any] | None = field(default=None, repr=False, compare=False)
    tree: ast.expr | None = field(default=None, repr=False, compare=False)
    """The checked syntax tree, integer constants folded, with every alias replaced by its own tree (for
    :mod:`calibflow.kernels.fused`): an alias used twice is one shared subtree, so the tree is read only."""

    def evaluate(self, columns: Mapping[str, Any]) -> Any:
        """Evaluate on ``columns`` (name -> numpy array, awkward array or scalar).

        Returns a numpy array, an awkward array or a (numpy) scalar. Raises
        :class:`MissingBranchError` (an ``ExprError`` and ``KeyError``) for a missing branch and
        :class:`ExprError` when an operation fails (e.g. ``&`` on floats).
        """
        fn = self._fn
        if fn is None:  # constructed by hand: compile without aliases
            fn = compile_expression(self.text, where=self.where)._fn
            assert fn is not None
        env = _Env(columns)
        try:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                return fn(env)
        except RecursionError:
            raise ExprError("expression is too deeply nested to evaluate", self.where) from None


def compile_expression(
    text: str, aliases: Mapping[str, str] | None = None, where: str = "expression"
) -> Expression:
    """Check and compile ``text``; ``aliases`` maps alias name -> expression text.

    ``where`` (the config key path, e.g. ``selection.tag``) prefixes error messages.
    Raises :class:`ExprError` for anything outside the whitelisted language.
    """
    unit = _Unit(aliases or {}, where)
    src = _Source(text, where)
    tree = unit.prepare(src)
    compiler = _Compiler(src, unit)
    fn = compiler.compile_tree(tree)
    return Expression(text=text, branches=frozenset(compiler.branches), where=where, _fn=fn, tree=unit.expand(tree))


def referenced_branches(texts: Iterable[str], aliases: Mapping[str, str] | None = None) -> frozenset[str]:
    """Union of the input branches referenced by ``texts`` (a single string counts as one text)."""
    if isinstance(texts, str):
        texts = [texts]
    out: set[str] = set()
    for text in texts:
        out |= compile_expression(text, aliases).branches
    return frozenset(out)
