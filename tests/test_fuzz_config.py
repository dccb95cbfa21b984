"""Fuzzed configs through ``calibflow run`` (issue 17): random mutations of a tiny demo (keys dropped, renamed
or given twice, values of a wrong type, huge or non-finite numbers, long and deep expressions, aliases, merge
keys and alias bombs, nesting, bytes that are not UTF-8) end in exit 0, or in exit 2 with a single line; never
a traceback, never over 10 s.

Cheap by design: every example runs ``tasks.cli.main(["run", ...])`` up to the task graph (the config is
loaded, every variant planned, the config checked against its inputs; the graph itself is not built), and a
few accepted mutations run the whole graph of a tiny demo (one toy file per sample, 2 bins). Hypothesis is
derandomised (the same examples every run) and bounded.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from tests.conftest import tiny_demo_dict

SECONDS = 10.0
"""Longest time one example may take (load, plan, input check; a whole tiny run for the accepted ones)."""


def base_config() -> dict[str, Any]:
    """The tiny demo with a one-sided systematic (``systematics...vary`` to mutate), no figures."""
    d = tiny_demo_dict()
    d["name"] = "fuzz"
    vary = {"fit": {"signal": "gauss", "parameters": {"n": None}}}
    d["systematics"] = {"sources": [{"name": "sigmodel", "vary": vary}]}
    d["outputs"] = {"correctionlib": True, "plots": False, "root": False, "latex": False}
    return d


BASE = base_config()


def paths(value: Any, here: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path of ``value`` (mapping keys and list indices), parents before children."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield (*here, key)
        yield from paths(child, (*here, key))


def get(value: Any, path: tuple[Any, ...]) -> Any:
    """The value at key path ``path`` of ``value``."""
    for key in path:
        value = value[key]
    return value


PATHS = list(paths(BASE))
NUMERIC = [p for p in PATHS if type(get(BASE, p)) in (int, float)]
TEXT = [p for p in PATHS if isinstance(get(BASE, p), str)]
MAPPINGS = [(), *(p for p in PATHS if isinstance(get(BASE, p), dict))]

NAMES = ["x" * 300, "../x", "a b", "", "ü", "1", "-", ".", "a/b", "inf"]
WRONG_TYPES = [None, True, "text", 7, -1, 0.5, [], {}, ["a"], {"k": 1}, "", "ü∞"]
NUMBERS = [1e308, -1e308, math.inf, -math.inf, math.nan, 10**30, -(10**30), 2**63, 0, -0.0, 5e-324, 10**11,
           "1e400", "-1e400", "1.0e+400", ".nan"]


def parent(d: Any, path: tuple[Any, ...]) -> Any:
    """The mapping or list holding ``path`` in ``d`` (after other mutations), or None when there is none."""
    try:
        holder = get(d, path[:-1])
    except (KeyError, IndexError, TypeError):
        return None
    if isinstance(holder, dict):
        return holder
    index = path[-1]
    return holder if isinstance(holder, list) and isinstance(index, int) and index < len(holder) else None


def put(d: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    """Set ``path`` of ``d`` to ``value`` (a missing parent: nothing)."""
    holder = parent(d, path)
    if holder is not None:
        holder[path[-1]] = value


def drop(d: dict[str, Any], path: tuple[Any, ...]) -> None:
    """Remove ``path`` from ``d``."""
    holder = parent(d, path)
    if isinstance(holder, dict):
        holder.pop(path[-1], None)
    elif holder is not None:
        del holder[path[-1]]


@st.composite
def expressions(draw: st.DrawFn) -> str:
    """Long and deep expressions (and some plain text)."""
    n = draw(st.sampled_from([10, 200, 1000, 5000, 50_000]))
    kind = draw(st.sampled_from(["and", "sum", "parens", "not", "minus", "call", "name", "junk"]))
    return {
        "and": " and ".join(["p > 2"] * n),
        "sum": "+".join(["p"] * n),
        "parens": "(" * n + "p" + ")" * n,
        "not": "not " * n + "p",
        "minus": "-" * n + "p",
        "call": "abs(" * n + "p" + ")" * n,
        "name": "p" * n,
        "junk": "p > \n\t2 ;; import os" * (n // 100 + 1),
    }[kind]


@st.composite
def mutated_dict(draw: st.DrawFn) -> dict[str, Any]:
    """The base config with one to three mutations of its values."""
    d = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["drop", "rename", "type", "number", "expression", "nest"]))
        if op == "drop":
            drop(d, draw(st.sampled_from(PATHS)))
        elif op == "rename":  # a key (a sample's, a source's name...) renamed
            path = draw(st.sampled_from(PATHS))
            holder = parent(d, path)
            if isinstance(holder, dict) and path[-1] in holder:
                holder[draw(st.sampled_from(NAMES))] = holder.pop(path[-1])
        elif op == "type":
            put(d, draw(st.sampled_from(PATHS)), copy.deepcopy(draw(st.sampled_from(WRONG_TYPES))))
        elif op == "number":
            put(d, draw(st.sampled_from(NUMERIC + PATHS[:20])), draw(st.sampled_from(NUMBERS)))
        elif op == "expression":
            put(d, draw(st.sampled_from(TEXT)), draw(expressions()))
        else:
            deep: Any = "x"
            for _ in range(draw(st.sampled_from([5, 49, 60, 400]))):
                deep = [deep]
            put(d, draw(st.sampled_from(PATHS)), deep)
    return d


def bomb(levels: int, width: int) -> str:
    """A flow mapping of nested aliases expanding to ``width ** levels`` items."""
    parts = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
    parts += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "{" + ", ".join(parts) + "}"


PLACEHOLDER = "__FUZZ__"


@st.composite
def mutated_text(draw: st.DrawFn) -> bytes:
    """A mutated config as the bytes of a file: value mutations, then text ones (a key given twice, an alias
    bomb, aliases and merge keys, bytes that are not UTF-8)."""
    d = draw(mutated_dict()) if draw(st.booleans()) else copy.deepcopy(BASE)
    op = draw(st.sampled_from(["none", "duplicate", "bomb", "merge", "bytes"]))
    if op == "bomb":
        put(d, draw(st.sampled_from([("toy", "options"), ("systematics", "sources", 0, "vary"), ("aliases",),
                                     ("description",), ("selection", "tag")])), PLACEHOLDER)
    text = yaml.safe_dump(d, sort_keys=False, allow_unicode=True, width=1 << 20)
    if op == "duplicate":
        lines = text.splitlines()
        keys = [i for i, line in enumerate(lines) if re.match(r"^\s*[A-Za-z_]\w*: \S", line)]
        if keys:
            i = draw(st.sampled_from(keys))
            indent, key = re.match(r"^(\s*)([A-Za-z_]\w*):", lines[i]).groups()
            value = draw(st.sampled_from(["1", "x", "[]", "probe_Assoc == 0"]))
            lines.insert(i + 1, f"{indent}{key}: {value}")
        text = "\n".join(lines) + "\n"
    elif op == "bomb":
        text = text.replace(PLACEHOLDER, bomb(draw(st.integers(2, 9)), draw(st.integers(2, 10))))
    elif op == "merge":  # legal merge keys: the mc sample takes the data sample's keys, overriding some
        text = text.replace("samples:\n  data:\n", "samples:\n  data: &data\n", 1)
        text = text.replace("\n  mc:\n", "\n  mc:\n    <<: *data\n", 1)
    raw = text.encode()
    if op == "bytes":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\xe9", b"\x00", b"\xef\xbb\xbf", b"\x1b"])) \
            + raw[at:]
    return raw


class Accepted(Exception):
    """Raised instead of building the task graph: the config passed every check before the first task."""


def run(config: Path, result_dir: Path, whole: bool = False) -> tuple[int | None, str, float]:
    """``calibflow run config`` -> (exit code, stdout + stderr, seconds); without ``whole`` stopped where the
    task graph would be built (exit code None)."""
    from tasks.cli import main

    out = io.StringIO()
    args = ["run", str(config), "--result-dir", str(result_dir), "--workers", "1", "--quiet", "--overwrite"]
    stop = contextlib.nullcontext() if whole else mock.patch("tasks.runner.build", side_effect=Accepted)
    t0 = time.perf_counter()
    with stop, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code: int | None = main(args)
        except Accepted:
            code = None
    return code, out.getvalue(), time.perf_counter() - t0


def check(code: int | None, output: str, seconds: float) -> None:
    """Exit 0 (or accepted), or exit 2 with one line; never a traceback, never over :data:`SECONDS`."""
    assert "Traceback" not in output, output
    assert seconds < SECONDS, f"{seconds:.1f} s: {output[:300]}"
    assert code in (None, 0, 2), output
    if code == 2:
        lines = output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("calibflow: error: "), output


FUZZ = settings(max_examples=300, derandomize=True, deadline=None, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.filter_too_much])


@FUZZ
@given(raw=mutated_text())
def test_mutated_configs_fail_in_one_line_or_pass(raw: bytes,
                                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    config = folder / "fuzz.yaml"
    config.write_bytes(raw)
    code, output, seconds = run(config, folder / "results")
    event(f"exit {code}: {re.sub(r'[0-9]+', 'N', output.partition(': error: ')[2].partition(': ')[2])[:70]}")
    check(code, output, seconds)


@settings(FUZZ, max_examples=5)
@given(raw=mutated_text())
def test_accepted_mutations_run_to_the_end(raw: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("fuzz_run")
    config = folder / "fuzz.yaml"
    config.write_bytes(raw)
    code, _, _ = run(config, folder / "results")
    assume(code is None)
    check(*run(config, folder / "results", whole=True))
