"""A sample's spec checked against the branch list of one of its input files, before any task runs.

:func:`needs` lists every branch tuple preparation will read (:attr:`PrepSpec.branches`) with the config key
that asks for it and the name as written there (``probe_pt`` for the branch ``Muon_pt`` of a pairing,
``p`` in an alias definition). :func:`check_branches` turns the first one that is not a branch into a
one-line :class:`~calibflow.config.ConfigError`: key path, name, and a did-you-mean from the file's branches
and the sample's aliases (for ``tag_``/``probe_`` names, from the collection's fields).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

from calibflow.config import ConfigError, suggestion
from calibflow.expr import Expression, compile_expression
from calibflow.hashing import file_identity
from calibflow.prep.spec import LUMI_BRANCHES, PROBE, TAG, PairingSpec, PrepSpec


@dataclass(frozen=True)
class Need:
    """One branch read from the inputs: the config key asking for it, the name written there, the branch.

    ``field``: the name is a field of the pairing collection, written with ``prefix`` (``tag_``/``probe_`` for
    per-pair names, none in ``pairing.mass``): its suggestions are that prefix with the collection's fields.
    """

    where: str
    name: str
    branch: str
    prefix: str = ""
    field: bool = False


@functools.lru_cache(maxsize=4096)
def _direct_names(text: str) -> frozenset[str]:
    """Names written in ``text`` itself (alias names not expanded)."""
    return compile_expression(text).branches


def _origin(name: str, e: Expression, aliases: Mapping[str, str], own: Collection[str], sample: str) -> str:
    """Key path of the text that names ``name`` in expression ``e``: ``e.where`` itself, or the alias
    definition (``aliases.<a>``, ``samples.<s>.aliases.<a>``) it comes through."""
    todo, seen = [(e.where, e.text)], set()
    while todo:
        where, text = todo.pop(0)
        names = _direct_names(text)
        if name in names:
            return where
        for a in sorted(names & aliases.keys() - seen):
            seen.add(a)
            todo.append((f"samples.{sample}.aliases.{a}" if a in own else f"aliases.{a}", aliases[a]))
    return e.where


def _expressions(spec: PrepSpec) -> Iterator[Expression]:
    """The spec's expressions in the order a reader of the config meets them (selection first)."""
    yield from (e for _, e in spec.event_cuts)
    yield from (e for _, e in spec.cuts)
    yield from spec.columns.values()


def _pairing_needs(p: PairingSpec, later: Sequence[Expression]) -> Iterator[Need]:
    """Branches of a pairing: the per-object selections and matches as written, per-pair names through the
    collection, the fields the pair columns are made of and the event branches."""
    for where, e in (("pairing.tag", p.tag), ("pairing.probe", p.probe)):
        yield from (Need(where, b, b) for b in sorted(e.branches))
    for i, m in enumerate(p.matches):
        objects = [f"{m.objects}_{c}" for c in ("eta", "phi")]
        yield from (Need(f"pairing.match[{i}].objects", b, b) for b in objects)
        yield from (Need(f"pairing.match[{i}].cut", b, b) for b in sorted(m.cut.branches if m.cut else ()))
        yield from (Need(f"pairing.match[{i}]", p.branch(c), p.branch(c)) for c in ("eta", "phi"))
    for e in later:
        for name in sorted(e.branches):
            if name.startswith((TAG, PROBE)):
                prefix, field = name.split("_", 1)
                yield Need(e.where, name, p.branch(field), f"{prefix}_", field=True)
            elif not name.startswith("pair_"):
                yield Need(e.where, name, name)
    if isinstance(p.mass, str):
        yield Need("pairing.mass", p.mass, p.branch(p.mass), field=True)
    yield Need("pairing.charge", p.charge, p.branch(p.charge), field=True)
    for field in ("pt", "eta", "phi"):  # the pair columns' kinematics
        yield Need("pairing.collection", p.branch(field), p.branch(field))
    yield Need("pairing.collection", f"n{p.collection}", f"n{p.collection}")


def needs(spec: PrepSpec, sample: str, own_aliases: Collection[str] = ()) -> list[Need]:
    """Every branch :attr:`PrepSpec.branches` reads, once, with the first config key asking for it and the
    name written there (``own_aliases``: the sample's own alias names, for their key paths)."""
    later = list(_expressions(spec))
    found = [Need(f"samples.{sample}.lumi_mask", b, b) for b in LUMI_BRANCHES] if spec.lumi else []
    for e in (e for _, e in spec.event_cuts):
        found += [Need(e.where, b, b) for b in sorted(e.branches)]
    if spec.pairing is not None:
        found += _pairing_needs(spec.pairing, later)
    else:
        found += [Need(e.where, b, b) for e in later for b in sorted(e.branches)]
        for i, h in enumerate(spec.hit_matches):
            keys = {"probe_hits": h.probe_hits, "target_hits": h.target_hits,
                    "target_counts": h.target_counts}
            found += [Need(f"hit_match[{i}].{k}", b, b) for k, b in keys.items() if b]
    read = set(spec.branches)
    out: dict[str, Need] = {}
    exprs = {e.where: e for e in later}
    if spec.pairing is not None:
        exprs.update({"pairing.tag": spec.pairing.tag, "pairing.probe": spec.pairing.probe})
    for n in found:
        if n.branch in read and n.branch not in out:
            e = exprs.get(n.where)
            where = n.where if e is None else _origin(n.name, e, spec.aliases, own_aliases, sample)
            out[n.branch] = Need(where, n.name, n.branch, n.prefix, n.field)
    out.update({b: Need(f"samples.{sample}", b, b) for b in sorted(read - out.keys())})  # not expected
    return list(out.values())


def _candidates(need: Need, branches: Sequence[str], aliases: Collection[str], pairing: PairingSpec | None
                ) -> list[str]:
    """Names the user could have meant, in the form ``need`` is written in."""
    if need.field and pairing is not None:
        stem = f"{pairing.collection}_"
        names = [*branches, *(m.name for m in pairing.matches)]
        fields = [b[len(stem):] for b in names if b.startswith(stem)]
        return [need.prefix + f for f in fields]
    return [*branches, *aliases]


def check_branches(spec: PrepSpec, sample: str, branches: Sequence[str], missing: Collection[str],
                   source: str, own_aliases: Collection[str] = ()) -> None:
    """ConfigError for the first branch of ``missing`` (branches of the spec that ``source`` lacks), naming
    its key, the name as written and the closest of ``branches`` (the source's) or of the sample's aliases."""
    for need in needs(spec, sample, own_aliases):
        if need.branch not in missing:
            continue
        hint = suggestion(need.name, _candidates(need, branches, spec.aliases, spec.pairing), listing=None)
        if need.branch != need.name:
            what = f"{need.name!r} (branch {need.branch!r}) is not a branch of {source}"
        else:
            what = f"{need.name!r} is neither a branch of {source} nor an alias"
        raise ConfigError(f"{need.where}: {what}{hint}")


FILES_TRIED = 5
"""Input files tried, in order, for one that can be read: unreadable ones are bad files (tuple preparation
names them), not config errors."""


@functools.lru_cache(maxsize=256)
def _branch_names(path: str, tree: str, version: tuple[tuple[str, object], ...]) -> tuple[str, ...]:
    """:func:`calibflow.io.inspect.branch_names`, once per version (:func:`calibflow.hashing.file_identity`:
    size and mtime, or a remote file's checksum) of a file or URL."""
    from calibflow.io.inspect import branch_names

    return branch_names(path, tree)


def _readable(files: Sequence[str], tree: str) -> tuple[str, tuple[str, ...]] | None:
    """The first of ``files`` (at most :data:`FILES_TRIED`) whose tree can be listed, with its branch names;
    NoSuchTree when that file lacks the tree; None when none could be read."""
    from calibflow.io.inspect import InputFileError, NoSuchTree

    for path in files[:FILES_TRIED]:
        try:
            return path, _branch_names(path, tree, tuple(sorted(file_identity(path).items())))
        except NoSuchTree:
            raise
        except (InputFileError, OSError):
            continue
    return None


def _lacking(path: str, tree: str, names: Sequence[str], known: Sequence[str] = ()) -> set[str] | None:
    """Those of ``names`` that are not branches of ``tree`` in ``path`` (all, when the tree is missing), or
    None when the file cannot be read; ``known``: branch names of the tree already read."""
    from calibflow.io.inspect import InputFileError, NoSuchTree, missing_branches

    try:
        return set(missing_branches(path, tree, names, known))
    except NoSuchTree:
        return set(names)
    except InputFileError:
        return None


def check_sample(spec: PrepSpec, sample: str, files: Sequence[str], shown: Callable[[str], str] = str,
                 own_aliases: Collection[str] = (), generator: str | None = None) -> None:
    """ConfigError (one line: key path, name, did-you-mean) when the tree or a branch ``spec`` reads is
    missing from the inputs ``files`` of ``sample``, judged by the first file that can be read and confirmed
    in the last one, so that a branch missing from some files only stays a bad-file error of tuple
    preparation.
    ``generator``: ``files`` is a reference file of that toy generator (then nothing needs confirming);
    ``shown`` turns a path into the text shown."""
    from calibflow.io.inspect import NoSuchTree, all_branch_names

    last = files[-1] if len(files) > 1 and generator is None else None

    def source(path: str) -> str:  # the files a missing name was looked for in
        if generator:
            return f"toy generator {generator!r}"
        return shown(path) + (f" and {shown(last)}" if last is not None and last != path else "")

    if generator is None and _has_every_branch(files[0], spec.tree, spec.branches):
        return
    try:
        found = _readable(files, spec.tree)
    except NoSuchTree as exc:
        if last is not None and last != exc.path and _has_tree(last, spec.tree):
            return  # a bad first file
        raise ConfigError(f"samples.{sample}.tree: no tree {spec.tree!r} in {source(exc.path)}"
                          f"{_tree_hint(spec.tree, exc.trees)}") from None
    if found is None:
        return  # no readable file: tuple preparation reports each
    path, names = found
    missing = _lacking(path, spec.tree, spec.branches, names) or set()
    if missing and last is not None and last != path:
        in_last = _lacking(last, spec.tree, sorted(missing))
        missing &= in_last if in_last is not None else missing
    if missing:
        where = f"tree {spec.tree!r} {'of' if generator else 'in'} {source(path)}"
        check_branches(spec, sample, all_branch_names(path, spec.tree), missing, where, own_aliases)


def _has_every_branch(path: str, tree: str, names: Sequence[str]) -> bool:
    """Whether the file ``path`` has ``tree`` with every branch of ``names``, told by reading their metadata only
    (:mod:`calibflow.io.tree_meta`: milliseconds for a 2000-branch NanoAOD file, where listing every name takes
    0.2-0.5 s); False when that cannot tell (a layout it does not read, a missing branch, an unreadable file):
    then :func:`check_sample` lists the names."""
    from calibflow.io.inspect import InputFileError, open_root
    from calibflow.io.tree_meta import read_tree_meta

    try:
        with open_root(path) as f:
            return read_tree_meta(f, tree, names) is not None
    except (InputFileError, OSError, ValueError):
        return False


def _tree_hint(tree: str, trees: Sequence[str]) -> str:
    """Did-you-mean for a missing ``tree``: a tree of that name in a subfolder (``Tuple/DecayTree``) first."""
    same = [t for t in trees if t.rsplit("/", 1)[-1] == tree.rsplit("/", 1)[-1]]
    return f" (did you mean {same[0]!r}?)" if same else suggestion(tree, trees, "trees")


def _has_tree(path: str, tree: str) -> bool:
    """Whether the file ``path`` can be read and has ``tree``."""
    from calibflow.io.inspect import InputFileError, open_root, tree_names

    try:
        with open_root(path) as f:
            return tree in tree_names(f)
    except InputFileError:
        return False
