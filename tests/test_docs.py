"""Documentation generated from the code stays equal to it: the table of every fit model's parameters in
docs/fits.md, the list of expression functions in the README and the keys a variant may override in
docs/tables.md.

``python tests/test_docs.py`` rewrites every block (between their ``<!-- ... -->`` markers) from the code.
"""

from __future__ import annotations

import inspect
import re
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FITS = ROOT / "docs" / "fits.md"
TABLES = ROOT / "docs" / "tables.md"
BLOCKS = {
    "functions": (README, "<!-- functions: generated from calibflow.expr.FUNCTIONS by tests/test_docs.py -->",
                  "<!-- end functions -->"),
    "parameters": (FITS, "<!-- parameters: generated from calibflow.fit.models and calibflow.fit.passfail by "
                   "tests/test_docs.py -->", "<!-- end parameters -->"),
    "variable_keys": (TABLES, "<!-- variable keys: generated from calibflow.config.VARIABLE_KEYS by tests/test_docs.py -->",
                      "<!-- end variable keys -->"),
}


def function_list() -> str:
    """The README's list of expression functions: each of ``FUNCTIONS`` with its positional arguments."""
    from calibflow.expr import FUNCTIONS

    calls = []
    for name, spec in FUNCTIONS.items():
        params = [p.name for p in inspect.signature(spec.impl).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][: spec.min_args] or ["x"]
        calls.append(f"`{name}({', '.join(params)}{', ...' if spec.max_args is None else ''})`")
    return textwrap.fill(", ".join(calls) + ".", width=110, break_long_words=False, break_on_hyphens=False)


def parameter_table() -> str:
    """docs/fits.md's tables of the ``fit.parameters`` names of every model, as the fits name them."""
    from calibflow.fit.models import BACKGROUNDS, SIGNALS
    from calibflow.fit.passfail import YIELDS, parameter_names

    def names(xs: list[str]) -> str:
        return ", ".join(f"`{x}`" for x in xs)

    gauss, exponential = SIGNALS["gauss"], BACKGROUNDS["exponential"]
    shift = parameter_names(gauss, exponential, fail_width_shift=True)[-1]
    every = (f"Every model: {names(list(YIELDS))}; with `fit.fail_width_shift: true` (method `fit`) also "
             f"`{shift}`.")
    lines = [textwrap.fill(every, width=110, break_long_words=False, break_on_hyphens=False), "",
             "| signal | parameters, shared by the pass and fail categories |", "| --- | --- |"]
    for name, shape in SIGNALS.items():
        own = parameter_names(shape, exponential)[len(YIELDS): len(YIELDS) + len(shape.params)]
        lines.append(f"| `{name}` | {names(own)} |")
    lines += ["", "| background | parameters, each once per category: `<name>_pass`, `<name>_fail` | "
              "fixed unless given limits |", "| --- | --- | --- |"]
    for name, shape in BACKGROUNDS.items():
        per_pass = [n.removesuffix("_pass") for n in parameter_names(gauss, shape) if n.endswith("_pass")]
        own = per_pass[1:]  # not n_bkg
        lines.append(f"| `{name}` | {names(own)} | {names([n for n in own if n in shape.fixed]) or '–'} |")
    return "\n".join(lines)


def variable_key_list() -> str:
    """docs/tables.md's list of the top-level keys a systematic source or a method may override."""
    from calibflow.config import VARIABLE_KEYS

    return ", ".join(f"`{k}`" for k in VARIABLE_KEYS) + "."


GENERATORS = {"functions": function_list, "parameters": parameter_table, "variable_keys": variable_key_list}


def block(name: str, text: str | None = None) -> str:
    """The generated block ``name`` as its file holds it (between its markers)."""
    path, start, end = BLOCKS[name]
    text = path.read_text() if text is None else text
    found = re.search(re.escape(start) + r"\n(.*?)" + re.escape(end), text, re.S)
    assert found, f"{path.name}: markers of the generated {name} block not found"
    return found.group(1).rstrip("\n")


def write_blocks() -> None:
    """Rewrite every generated block from the code."""
    for name, (path, start, end) in BLOCKS.items():
        text = path.read_text()
        old = f"{start}\n{block(name, text)}\n{end}" if block(name, text) else f"{start}\n{end}"
        path.write_text(text.replace(old, f"{start}\n{GENERATORS[name]()}\n{end}"))


def test_fit_parameter_table_equals_the_code() -> None:
    expected = parameter_table()
    assert block("parameters") == expected, f"docs/fits.md is stale (python tests/test_docs.py):\n{expected}"


def test_parameter_table_names_what_the_fits_accept() -> None:
    """Every model of the library has its row, and the names of a row are parameters of a pass/fail fit with
    that model (the names the fits check ``fit.parameters`` against): a signal's as listed, a background's
    with ``_pass`` and ``_fail``."""
    from calibflow.fit.models import BACKGROUNDS, SIGNALS
    from calibflow.fit.passfail import PassFailModel

    rows = {m.group(1): re.findall(r"`(\w+)`", m.group(2))
            for m in re.finditer(r"^\| `(\w+)` \| ([^|]*) \|", block("parameters"), re.M)}
    assert set(rows) == set(SIGNALS) | set(BACKGROUNDS)
    for name, listed in rows.items():
        if name in SIGNALS:
            model, expected = PassFailModel.create(name, "exponential", 1.0, 2.0), listed
        else:
            model = PassFailModel.create("gauss", name, 1.0, 2.0)
            expected = [f"{n}_{c}" for c in ("pass", "fail") for n in listed]
        assert listed and set(expected) <= set(model.names), (name, listed, model.names)
    assert rows["exponential"] == ["slope"] and rows["crystalball"] == ["mu", "sigma", "alpha", "n"]
    assert "`dsigma_fail`" in block("parameters")


def test_readme_function_list_equals_the_code() -> None:
    from calibflow.expr import FUNCTIONS

    listed = re.findall(r"`(\w+)\(", block("functions"))
    assert listed == list(FUNCTIONS), f"README lists {listed}"
    expected = function_list()
    assert block("functions") == expected, f"README is stale; run python tests/test_docs.py:\n{expected}"


def test_override_key_list_equals_the_code() -> None:
    """docs/tables.md lists exactly the keys a method (and a systematic source) may override, and the config
    accepts a method overriding each of them (``pairing`` too) but no other key."""
    from calibflow.config import VARIABLE_KEYS, ConfigError, parse_config

    from .conftest import small_demo_dict

    listed = re.findall(r"`(\w+)`", block("variable_keys"))
    assert listed == list(VARIABLE_KEYS) and "pairing" in listed, f"docs/tables.md lists {listed}"
    assert block("variable_keys") == variable_key_list(), "docs/tables.md is stale; run python tests/test_docs.py"
    nominal = small_demo_dict()
    for key in listed:
        d = small_demo_dict()
        d["methods"] = {"alt": {key: nominal.get(key)}}
        assert parse_config(d).methods["alt"] == {key: nominal.get(key)}
    d = small_demo_dict()
    d["methods"] = {"alt": {"outputs": {"plots": False}}}
    with pytest.raises(ConfigError, match=r"methods\.alt: 'outputs' cannot be varied"):
        parse_config(d)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    write_blocks()
