"""String comparisons (``Type == "GG"``, ``Type in ("GG", "GE")``): the compiler's rules, the evaluator on
every form uproot gives string branches in, and whole files with a ``char*`` branch written by uproot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
import uproot

from calibflow.config import parse_config
from calibflow.expr import ExprError, compile_expression, text_match
from calibflow.io.baskets import read_flat, string_branches
from calibflow.io.store import read_columns, read_metadata
from calibflow.prep import prepare
from calibflow.prep.spec import MASS, PASS, PrepExpressionError, prep_spec
from calibflow.prep.steps import event_arrays

from .conftest import demo_dict

KINDS = ["GG", "GE", "EE", "é-μ"]  # the last one is not ASCII: UTF-8 in the file


def ev(text: str, aliases: dict[str, str] | None = None, **cols: Any) -> Any:
    return compile_expression(text, aliases, where="selection.tag").evaluate(cols)


# --- the compiler --------------------------------------------------------------------------------------
TYPE = np.array(["GG", "GE", "é-μ", "GG", ""], dtype=object)


@pytest.mark.parametrize(("text", "expected"), [
    ('Type == "GG"', [1, 0, 0, 1, 0]),
    ("'GG' == Type", [1, 0, 0, 1, 0]),
    ('Type != "GG"', [0, 1, 1, 0, 1]),
    ('Type == ""', [0, 0, 0, 0, 1]),
    ('Type == "é-μ"', [0, 0, 1, 0, 0]),
    ('Type in ("GG", "é-μ")', [1, 0, 1, 1, 0]),
    ('Type in ["GE"]', [0, 1, 0, 0, 0]),
    ('Type not in ("GG", "GE")', [0, 0, 1, 0, 1]),
    ('kind == "GE"', [0, 1, 0, 0, 0]),
    ('again == "GE"', [0, 1, 0, 0, 0]),
    ('not Type == "GG"', [0, 1, 1, 0, 1]),
    ('Type == "GG" and x > 0', [0, 0, 0, 1, 0]),
    ('(Type == "GE") | (x >= 4)', [0, 1, 0, 0, 1]),
    ('where(Type == "GG", x, -1) > 2', [0, 0, 0, 1, 0]),
    ('is_gg or x == 1', [1, 1, 0, 1, 0]),
])
def test_string_comparisons_select_the_rows_with_that_text(text: str, expected: list[int]) -> None:
    aliases = {"kind": "Type", "again": "kind", "is_gg": 'Type == "GG"'}
    got = ev(text, aliases, Type=TYPE, x=np.arange(5.0))
    assert isinstance(got, np.ndarray) and got.dtype == bool
    assert got.tolist() == [bool(v) for v in expected]


def test_string_comparisons_read_the_branch_behind_aliases() -> None:
    e = compile_expression('kind in ("GG", "GE") and p > 2', {"kind": "Type", "p": "probe_P"})
    assert e.branches == {"Type", "probe_P"}


@pytest.mark.parametrize(("text", "message", "column"), [
    # strings anywhere else: today's message at the string
    ('x + "a"', "strings are not allowed", 5),
    ('"GG"', "strings are not allowed", 1),
    ('where(Type == "GG", "a", "b")', "strings are not allowed", 21),
    ('x > 1 and "GG"', "strings are not allowed", 11),
    ('Type == ("GG", "GE")', "tuple literals are not allowed", 9),
    # comparisons other than == != in / not in: at the operator
    ('Type < "GG"', "strings can only be compared with '==', '!=', 'in' or 'not in', not '<'", 6),
    ('"GG" >= Type', "not '>='", 6),
    # one comparison only: at the second operator
    ('Type == "GG" == Other', "a string comparison must be a single comparison", 14),
    ('"a" < Type == "b"', "a string comparison must be a single comparison", 12),
    ('1 < x < "a"', "a string comparison must be a single comparison", 7),
    ('Type in ("a",) in ("b",)', "a string comparison must be a single comparison", 16),
    # the other side: a branch or an alias of one
    ('"a" == "b"', "a string can only be compared with a branch or an alias of one", 8),
    ('abs(x) == "a"', "a string can only be compared with a branch or an alias of one", 1),
    ('max(Type) == "GG"', "a string can only be compared with a branch or an alias of one", 1),
    ('pi == "a"', "a string can only be compared with a branch or an alias of one", 1),
    ('twice == "a"', "alias 'twice' is an expression", 1),
    ('sqrt == "a"', "function 'sqrt' must be called", 1),
    ('__class__ == "a"', "dunder name '__class__' is not allowed", 1),
    # in / not in: a tuple or list of string literals
    ("x in y", "'in' takes a tuple or list of string literals", 6),
    ("x not in y", "'in' takes a tuple or list of string literals", 10),
    ("Type in ()", "'in' takes a tuple or list of string literals", 9),
    ('Type in {"a"}', "'in' takes a tuple or list of string literals", 9),
    ('Type in ("a", 1)', "'in' takes string literals only", 15),
    ('Type in ("a", other)', "'in' takes string literals only", 15),
    ('"a" in Type', "'in' takes a tuple or list of string literals", 8),
    # bytes: strings are text (UTF-8)
    ("Type == b'GG'", "bytes literals are not allowed; strings are compared as UTF-8 text, write 'GG'", 9),
    ("Type in ('a', b'GG')", "bytes literals are not allowed", 15),
    ("x + b'GG'", "strings are not allowed", 5),
    # 'is' stays refused
    ('Type is "GG"', "'is' comparisons are not allowed", 6),
])
def test_strings_outside_a_single_comparison_with_a_branch_are_refused(text: str, message: str,
                                                                        column: int) -> None:
    with pytest.raises(ExprError) as info:
        compile_expression(text, {"twice": "x * 2"}, where="selection.tag")
    err = info.value
    assert message in err.message
    assert (err.where, err.column) == ("selection.tag", column), str(err)
    assert str(err) == f"selection.tag: {err.message} at column {column}: {text!r}"


def test_a_string_alias_is_refused_inside_the_alias() -> None:
    with pytest.raises(ExprError) as info:
        compile_expression("Type == gg", {"gg": '"GG"'}, where="selection.tag")
    assert (info.value.where, info.value.column, info.value.message) == (
        "selection.tag -> alias 'gg'", 1, "strings are not allowed")


# --- the evaluator ---------------------------------------------------------------------------------------
WANT = [True, False, True, False]
VALUES = ["GG", "EE", "é-μ", "GE"]
FORMS = {
    "numpy objects (uproot, library np)": np.array(VALUES, dtype=object),
    "numpy str": np.array(VALUES),
    "numpy StringDType": np.array(VALUES, dtype=np.dtypes.StringDType()),
    "awkward strings (uproot, library ak)": ak.Array(VALUES),
    "numpy objects of bytes": np.array([v.encode() for v in VALUES], dtype=object),
    "numpy bytes": np.array([v.encode() for v in VALUES]),
    "awkward bytestrings": ak.Array([v.encode() for v in VALUES]),
}


@pytest.mark.parametrize("form", FORMS)
def test_every_form_of_string_values_compares_equal(form: str) -> None:
    """Text is compared as text; bytes values with the literal's UTF-8 encoding."""
    values = FORMS[form]
    got = ev('Type in ("GG", "é-μ")', Type=values)
    assert np.asarray(got).tolist() == WANT
    assert np.asarray(ev('Type != "EE"', Type=values)).tolist() == [True, False, True, True]
    if isinstance(values, np.ndarray):
        assert isinstance(got, np.ndarray) and got.dtype == bool  # numpy in, numpy out


def test_jagged_strings_compare_per_object_and_reduce_per_event() -> None:
    names = ak.Array([["GG", "x"], [], ["é-μ"]])
    assert ev('Names == "GG"', Names=names).tolist() == [[True, False], [], [False]]
    assert ev('any(Names in ("GG", "é-μ"))', Names=names).tolist() == [True, False, True]
    assert ev('count(Names != "x")', Names=names).tolist() == [1, 0, 1]


def test_awkward_strings_compare_byte_by_byte_like_python() -> None:
    """Prefixes, empty and multi-byte strings, sliced arrays (strings out of order in the buffer), lists with
    missing entries, bytestrings: the same answers as Python's ``in``."""
    rng = np.random.default_rng(3)
    pool = ["", "G", "GG", "GGG", "GE", "EG", "é", "é-μ", "μ", "e\u0301", "GG ", " GG"]
    texts = [pool[i] for i in rng.integers(0, len(pool), 3000)]
    wanted = ["GG", "", "é-μ", "G", "e\u0301"]
    flat = ak.Array(texts)
    order = rng.permutation(len(texts))
    lists = ak.Array([texts[i:i + k] if k != 3 else None for i, k in enumerate(rng.integers(0, 5, 500))])
    for values, reference in [
        (flat, [t in wanted for t in texts]),
        (flat[order], [texts[i] in wanted for i in order]),
        (flat[::-3], [t in wanted for t in texts[::-1][::3]]),
        (ak.Array([t.encode() for t in texts]), [t in wanted for t in texts]),
        (lists, [None if x is None else [t in wanted for t in x] for x in lists.tolist()]),
    ]:
        assert text_match(values, wanted).tolist() == reference
    assert text_match(flat, ["nothing like it"]).tolist() == [False] * len(texts)


def test_a_scalar_string_column_compares_too() -> None:
    assert bool(ev('Type == "GG"', Type="GG")) and not bool(ev('Type != "GG"', Type="GG"))


def test_empty_values_give_empty_results() -> None:
    assert ev('Type == "GG"', Type=np.array([], dtype=object)).tolist() == []


def test_comparison_is_vectorised_not_a_python_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Object arrays are converted once in C (no per-row Python callback)."""
    calls = []

    class Spy(str):
        def __eq__(self, other: object) -> bool:
            calls.append(other)
            return str.__eq__(self, other)

        __hash__ = str.__hash__

    values = np.array([Spy("GG"), Spy("GE")] * 50, dtype=object)
    assert ev('Type == "GG"', Type=values).sum() == 50
    assert calls == []


@pytest.mark.parametrize(("values", "type_text"), [
    (np.arange(3.0), "float64"),
    (np.arange(3, dtype=np.int32), "int32"),
    (np.ones(3, bool), "bool"),
    (ak.Array([[1.5], [], [2.0]]), "var * float64"),
    (np.array([1, "a"], dtype=object), "union"),
])
def test_a_non_string_branch_compared_with_a_string_names_the_branch_and_its_type(values: Any,
                                                                                  type_text: str) -> None:
    text = 'x > 1 and kind == "GG"'
    with pytest.raises(ExprError) as info:
        compile_expression(text, {"kind": "probe_P"}, where="selection.probe").evaluate({"probe_P": values,
                                                                                          "x": 2.0})
    err = info.value
    assert err.message.startswith(f"branch 'probe_P' holds {type_text}")
    assert err.message.endswith("values, not strings: it cannot be compared with 'GG'")
    assert (err.where, err.column, err.text) == ("selection.probe", 11, text)


def test_text_match_refuses_objects_without_a_common_type() -> None:
    with pytest.raises(ExprError, match="branch 'Type' holds objects of no common type, not strings"):
        ev('Type == "a"', Type=np.array([object(), "a"], dtype=object))
    assert text_match(np.array(["a", "b"]), ["b"]).tolist() == [False, True]


# --- whole files -------------------------------------------------------------------------------------------
def _write(path: Path, n: int = 12000, jagged: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """A DecayTree with a ``char*`` branch ``Type`` (uproot writes awkward string arrays as ``char*``; it
    cannot write ``TString`` or ``std::string`` branches, which uproot reads into the same arrays), in 4
    baskets."""
    rng = np.random.default_rng(seed)
    b: dict[str, Any] = {
        "Jpsi_M": rng.uniform(2900, 3300, n), "tag_PT": rng.exponential(2.0, n).astype(np.float32),
        "tag_isMuon": rng.integers(0, 2, n).astype(np.int32), "probe_P": rng.uniform(0, 100, n),
        "probe_ETA": rng.uniform(1.5, 5.5, n), "probe_Assoc": rng.integers(0, 2, n).astype(np.int32),
        "toy_true_eff": rng.uniform(size=n), "toy_is_signal": rng.integers(0, 2, n).astype(np.int32),
        "Type": np.array(KINDS)[rng.integers(0, len(KINDS), n)],
    }
    if jagged:
        b["Trk_pt"] = ak.unflatten(rng.exponential(1.0, 2 * n), rng.multinomial(2 * n, np.ones(n) / n))
    types = {k: ak.Array(["x"]).type.content if k == "Type" else "var * float64" if k == "Trk_pt" else v.dtype
             for k, v in b.items()}
    with uproot.recreate(path) as f:
        tree = f.mktree("DecayTree", types)
        for start in range(0, n, n // 4):
            part = {k: v[start:start + n // 4] for k, v in b.items()}
            tree.extend({**part, "Type": ak.Array(part["Type"].tolist())})
    return b


def test_chunks_keep_strings_awkward() -> None:
    """Flat numbers become numpy; strings stay awkward (numpy would pad each to the longest)."""
    cols = event_arrays({"Type": ak.Array(["GG", "a much longer text"]), "x": ak.Array([1.0, 2.0]),
                         "raw": ak.Array([b"GG", b"x"])})
    assert isinstance(cols["x"], np.ndarray)
    assert isinstance(cols["Type"], ak.Array) and isinstance(cols["raw"], ak.Array)


def _spec(tmp_path: Path, **changes: Any) -> Any:
    d = demo_dict()
    del d["toy"]
    d["samples"]["data"]["files"] = d["samples"]["mc"]["files"] = ["in.root"]
    d["aliases"]["kind"] = "Type"
    d["samples"]["data"]["cut"] = 'Type in ("GG", "é-μ")'
    d["selection"]["pair"] = 'kind != "EE"'
    d["pass"] = 'probe_Assoc == 1 and Type == "GG"'
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            d[section][name] = value
        else:
            d[section] = value
    return prep_spec(parse_config(d), "data", base_dir=str(tmp_path))


def _prepared(tmp_path: Path, spec: Any, name: str, fused: str, monkeypatch: pytest.MonkeyPatch
              ) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    monkeypatch.setenv("CALIBFLOW_FUSED", fused)
    flow = prepare.prepare_file(str(tmp_path / "in.root"), spec, str(tmp_path / name), step_size=2000)
    assert read_metadata(tmp_path / name)["cutflow"] == flow
    return flow, read_columns(tmp_path / name)


def _expected(b: dict[str, Any], extra: np.ndarray | None = None) -> tuple[dict[str, int], np.ndarray]:
    tag = (b["tag_PT"] > 1.0) & (b["tag_isMuon"] == 1)
    probe = tag & (b["probe_P"] > 2) & (b["probe_ETA"] > 2) & (b["probe_ETA"] < 5)
    pair = probe & (b["Type"] != "EE") & (True if extra is None else extra)
    sample = pair & np.isin(b["Type"], ["GG", "é-μ"])
    flow = {"read": len(b["Type"]), "tag": int(tag.sum()), "probe": int(probe.sum()), "pair": int(pair.sum()),
            "sample": int(sample.sum())}
    return flow, sample


@pytest.mark.parametrize("jagged", [False, True], ids=["flat", "with a jagged branch"])
def test_prepare_file_with_a_string_branch_gives_the_same_file_with_and_without_the_fused_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jagged: bool) -> None:
    b = _write(tmp_path / "in.root", jagged=jagged)
    extra = None
    changes = {}
    if jagged:
        changes["selection__pair"] = 'kind != "EE" and any(Trk_pt > 2)'
        extra = ak.to_numpy(ak.any(b["Trk_pt"] > 2, axis=1))
    spec = _spec(tmp_path, **changes)
    assert "Type" in spec.branches and (("Trk_pt" in spec.branches) == jagged)
    fast = _prepared(tmp_path, spec, "fused.h5", "1", monkeypatch)
    slow = _prepared(tmp_path, spec, "numpy.h5", "0", monkeypatch)
    flow, keep = _expected(b, extra)
    assert fast[0] == slow[0] == flow and 0 < flow["sample"] < flow["pair"] < flow["probe"]
    assert set(fast[1]) == set(slow[1]) == {"p", "eta", MASS, PASS, "_true_eff", "_is_signal"}
    for k in fast[1]:
        assert fast[1][k].dtype == slow[1][k].dtype and np.array_equal(fast[1][k], slow[1][k]), k
    assert np.array_equal(fast[1]["p"], b["probe_P"][keep])
    assert np.array_equal(fast[1][PASS], ((b["probe_Assoc"] == 1) & (b["Type"] == "GG"))[keep])
    assert 0 < fast[1][PASS].sum() < len(fast[1][PASS])


def test_a_flat_file_with_strings_is_read_by_the_basket_reader_and_uproot_gives_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """prep's basket reader reads the numeric branches and has uproot read the strings of the same entries;
    without it (remote files, long clusters) uproot reads everything, strings as awkward arrays too."""
    b = _write(tmp_path / "in.root")
    with uproot.open(tmp_path / "in.root") as f:
        tree = f["DecayTree"]
        assert string_branches(tree, ["Type", "probe_P"]) == ["Type"]
        chunks = list(read_flat(str(tmp_path / "in.root"), tree, ["Type", "probe_P"], 3000))
        assert read_flat(str(tmp_path / "in.root"), tree, ["Type"], 3000) is None  # nothing numeric: uproot
    assert [len(c["Type"]) for c in chunks] == [3000] * 4
    assert all(isinstance(c["Type"], ak.Array) and isinstance(c["probe_P"], np.ndarray) for c in chunks)
    assert ak.concatenate([c["Type"] for c in chunks]).tolist() == b["Type"].tolist()
    assert np.array_equal(np.concatenate([c["probe_P"] for c in chunks]), b["probe_P"])

    read = []
    real_iterate = uproot.TTree.iterate

    def iterate(self: Any, *args: Any, **kwargs: Any) -> Any:
        read.append(kwargs["library"])
        return real_iterate(self, *args, **kwargs)

    monkeypatch.setattr(uproot.TTree, "iterate", iterate)
    spec = _spec(tmp_path)
    ours = _prepared(tmp_path, spec, "baskets.h5", "1", monkeypatch)
    assert read == []  # the basket reader, with uproot's TTree.arrays for the strings
    monkeypatch.setattr("calibflow.io.baskets.read_flat", lambda *a: None)
    theirs = _prepared(tmp_path, spec, "uproot.h5", "1", monkeypatch)
    assert read == ["ak"]  # not numpy's object arrays
    assert ours[0] == theirs[0] and all(np.array_equal(ours[1][k], theirs[1][k]) for k in ours[1])


@pytest.mark.parametrize(("key", "value", "where"), [
    ("mass__variable", "Type", "mass.variable"),
    ("binning", {"variables": [{"name": "p", "edges": [2, 50, 200]}, {"name": "kind", "edges": [0, 1]}]},
     "binning.variables[1]"),
    ("pass", "Type", "pass"),
    ("selection__tag", "kind", "selection.tag"),
])
@pytest.mark.parametrize("fused", ["0", "1"])
def test_a_string_used_as_a_value_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str,
                                                    value: Any, where: str, fused: str) -> None:
    _write(tmp_path / "in.root", n=400)
    spec = _spec(tmp_path, **{key: value})
    with pytest.raises(PrepExpressionError) as info:
        _prepared(tmp_path, spec, "out.h5", fused, monkeypatch)
    assert not info.value.skippable
    message = f"in.root: {where}: gives strings, not numbers: a string branch can only be compared"
    assert message in str(info.value)
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.parametrize("fused", ["0", "1"])
def test_a_numeric_branch_compared_with_a_string_is_a_config_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fused: str) -> None:
    _write(tmp_path / "in.root", n=400)
    spec = _spec(tmp_path, selection__probe='p > 2 and probe_ETA == "central"')
    with pytest.raises(PrepExpressionError) as info:
        _prepared(tmp_path, spec, "out.h5", fused, monkeypatch)
    assert str(info.value) == (
        f"{tmp_path / 'in.root'}: selection.probe: branch 'probe_ETA' holds float64 values, not strings: it "
        "cannot be compared with 'central' at column 11: 'p > 2 and probe_ETA == \"central\"'")
