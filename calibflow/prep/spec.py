"""What preparing one input file needs: the spec of a sample (columns, cuts, pairing, lumi mask), its key.

:func:`prep_spec` compiles a sample's expressions from the config into a :class:`PrepSpec`: the branches to
read, the cut stages in order, the output columns and the pairing or shared-hit matching to do. Its
:meth:`PrepSpec.describe` is what the content key of a prepared file is made from.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from calibflow.config import CalibrationConfig, ConfigError, PairingConfig, suggestion
from calibflow.expr import Expression, compile_expression
from calibflow.hashing import content_key, file_identity

if TYPE_CHECKING:
    from calibflow.io.lumi import LumiMask

PREP_VERSION = 2
"""Version of prepared tuples, in every prep key. 2 (issue 17): expression semantics (boolean addition counts,
integers never wrap, constants beyond 64 bits are floats) and checksummed HDF5 (Fletcher32, v110 metadata)."""
MASS, PASS, WEIGHT, TRUE_EFF, IS_SIGNAL = "_mass", "_pass", "_weight", "_true_eff", "_is_signal"
EVENT = "_event"
"""Prepared column of the event identifier (``samples.<name>.event_id``): the bootstrap over events."""
TISTOS_FLAGS = {"tis": "_tis", "tos": "_tos", "trigger": "_trig"}
"""Prepared columns of method ``tistos`` (``fit.tistos`` key -> column)."""
LUMI_BRANCHES = ("run", "luminosityBlock")
"""Event-level branches the lumi mask is applied to (CMS NanoAOD names)."""
PAIR_COLUMNS = ("pair_mass", "pair_charge", "pair_dr")
"""Derived per-pair columns (with ``pairing``): mass in GeV, product of the charges, ΔR."""
TAG, PROBE = "tag_", "probe_"
STAGE_ORDER = ("read", "lumi", "event", "pairs", "tag", "probe", "pair", "sample")
"""Cut-flow stages in the order they apply (files written before ``stages`` was stored are sorted by it)."""


def read_unit(flow: Mapping[str, int]) -> str:
    """What the ``read`` count of a cut flow counts: ``events`` where candidates are paired from them (a
    ``pairs`` stage: NanoAOD), else ``candidates`` (a flat tuple holds one candidate per row)."""
    return "events" if "pairs" in flow else "candidates"


def pass_column(working_point: str) -> str:
    """Prepared column of the pass decision of ``working_point``."""
    return f"{PASS}:{working_point}"


def is_flag(column: str) -> bool:
    """Whether a prepared column holds booleans (pass decisions and the signal flag)."""
    return column in (IS_SIGNAL, PASS, *TISTOS_FLAGS.values()) or column.startswith(PASS + ":")


class PrepError(RuntimeError):
    """An input file cannot be prepared; ``str()`` is one line naming the file and the problem."""

    skippable = True
    """A bad file, which ``--skip-bad-files`` may leave out."""


class PrepExpressionError(PrepError):
    """An expression cannot be evaluated on an input file (a config problem: never skipped)."""

    skippable = False


# --- specification ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LumiSpec:
    """A certification JSON: absolute path and SHA-256 of its content (the content enters the keys)."""

    path: str
    sha256: str

    def mask(self) -> LumiMask:
        """The vectorised (run, luminosityBlock) lookup."""
        from calibflow.io.lumi import LumiMask

        return LumiMask(self.path)


@dataclass(frozen=True)
class MatchSpec:
    """ΔR matching of the pairing collection to ``objects`` passing ``cut``; the flag is column ``name``."""

    objects: str
    cut: Expression | None
    max_dr: float
    name: str


@dataclass(frozen=True)
class PairingSpec:
    """Tag-and-probe pairing of ``collection``: object selections, matches and the per-pair columns needed.

    ``fields`` are the collection fields exposed as ``tag_<field>``/``probe_<field>`` (match flags
    included), ``event_branches`` the event-level branches broadcast to pairs, ``derived`` the
    ``pair_*`` columns to compute. ``mass`` is the object mass in GeV or the name of a mass field.
    """

    collection: str
    tag: Expression
    probe: Expression
    mass: float | str
    charge: str
    matches: tuple[MatchSpec, ...]
    fields: tuple[str, ...]
    event_branches: tuple[str, ...]
    derived: tuple[str, ...]

    def branch(self, fld: str) -> str:
        """Branch of collection field ``fld`` (``pt`` -> ``Muon_pt``)."""
        return f"{self.collection}_{fld}"

    @property
    def computed(self) -> frozenset[str]:
        """Per-object columns computed by the matches (never read from the file)."""
        return frozenset(m.name for m in self.matches)

    def needed_fields(self) -> set[str]:
        """Collection fields needed for the per-pair columns (besides those of the selections)."""
        out = set(self.fields)
        if "pair_mass" in self.derived:
            out |= {"pt", "eta", "phi"} | ({self.mass} if isinstance(self.mass, str) else set())
        if "pair_charge" in self.derived:
            out.add(self.charge)
        if "pair_dr" in self.derived:
            out |= {"eta", "phi"}
        return out

    def branches(self) -> set[str]:
        """Branches to read for the pairing and the per-pair columns."""
        names = {self.branch(f) for f in self.needed_fields()} | set(self.event_branches)
        names |= self.tag.branches | self.probe.branches
        for m in self.matches:
            names |= {self.branch("eta"), self.branch("phi"), f"{m.objects}_eta", f"{m.objects}_phi"}
            names |= m.cut.branches if m.cut else set()
        names -= self.computed
        if not any(n.startswith(f"{self.collection}_") for n in names):
            names.add(f"n{self.collection}")  # object counts only
        return names

    def describe(self) -> dict[str, Any]:
        """Content that determines the pairs and their columns (for keys)."""
        return {
            "collection": self.collection,
            "tag": self.tag.text,
            "probe": self.probe.text,
            "mass": self.mass,
            "charge": self.charge,
            "match": [[m.objects, m.cut.text if m.cut else None, m.max_dr, m.name] for m in self.matches],
        }


@dataclass(frozen=True)
class HitMatchSpec:
    """Shared-hit-fraction column ``name`` of a flat ntuple (``hit_match``): the probe's hit IDs
    ``probe_hits`` against the target tracks' ``target_hits`` (with per-track ``target_counts``, or doubly
    jagged)."""

    probe_hits: str
    target_hits: str
    target_counts: str | None
    name: str

    @property
    def branches(self) -> set[str]:
        """Jagged branches read for this column."""
        return {self.probe_hits, self.target_hits} | ({self.target_counts} if self.target_counts else set())


@dataclass(frozen=True)
class PrepSpec:
    """What to read from one sample's files: tree, output column expressions and ordered cuts.

    ``event_cuts`` apply per event before ``pairing`` (per row without it), after the ``lumi`` mask;
    ``cuts`` apply per candidate (per pair with ``pairing``).
    """

    tree: str
    columns: dict[str, Expression]
    cuts: list[tuple[str, Expression]] = field(default_factory=list)
    event_cuts: list[tuple[str, Expression]] = field(default_factory=list)
    pairing: PairingSpec | None = None
    lumi: LumiSpec | None = None
    hit_matches: tuple[HitMatchSpec, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)
    """Alias definitions the expressions were compiled with (global merged with the sample's)."""
    entry_limit: int | None = None
    """Read at most this many entries of each file (``calibflow run --limit``; None: all)."""

    @property
    def branches(self) -> list[str]:
        """Sorted names of every branch to read from the input files."""
        names: set[str] = set(LUMI_BRANCHES) if self.lumi else set()
        for _, e in self.event_cuts:
            names |= e.branches
        if self.pairing is not None:
            return sorted(names | self.pairing.branches())
        for e in [*self.columns.values(), *(c for _, c in self.cuts)]:
            names |= e.branches
        for h in self.hit_matches:
            names |= h.branches
        return sorted(names - {h.name for h in self.hit_matches})

    @property
    def first_hit_match_stage(self) -> int:
        """Index in the cut-flow stages (``lumi``, ``event``, candidate cuts) of the first one reading a
        ``hit_match`` column; the shared-hit fractions are computed for the rows surviving the stages before."""
        names = {h.name for h in self.hit_matches}
        exprs = [frozenset()] * (self.lumi is not None) + [e.branches for _, e in [*self.event_cuts, *self.cuts]]
        return next((i for i, b in enumerate(exprs) if b & names), len(exprs))

    @property
    def stages(self) -> list[str]:
        """Cut-flow stages in order: ``read``, then ``lumi``, ``event``, ``pairs`` and the cut stages present."""
        pre = (["lumi"] if self.lumi else []) + [s for s, _ in self.event_cuts]
        return ["read", *pre, *(["pairs"] if self.pairing else []), *(s for s, _ in self.cuts)]

    def describe(self) -> dict[str, Any]:
        """Content that determines the output (for keys)."""
        out: dict[str, Any] = {
            "tree": self.tree,
            "columns": {k: v.text for k, v in self.columns.items()},
            "cuts": [[k, v.text] for k, v in self.cuts],
            "aliases_expanded": sorted(self.branches),
            "version": PREP_VERSION,
        }
        if self.aliases:  # the column texts name aliases: their definitions determine the content
            out["aliases"] = dict(sorted(self.aliases.items()))
        if self.event_cuts:
            out["event_cuts"] = [[k, v.text] for k, v in self.event_cuts]
        if self.pairing is not None:
            out["pairing"] = self.pairing.describe()
        if self.lumi is not None:
            out["lumi_mask_sha256"] = self.lumi.sha256
        if self.hit_matches:
            out["hit_match"] = [[h.probe_hits, h.target_hits, h.target_counts, h.name] for h in self.hit_matches]
        if self.entry_limit is not None:  # a quick try's tuples never pass for full ones (unset: no change)
            out["entry_limit"] = self.entry_limit
        return out


@functools.lru_cache(maxsize=64)
def _lumi_digest(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a certification JSON, which is checked to be valid (cached per file version)."""
    from calibflow.io.lumi import LumiMask

    LumiMask(path)
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _lumi_spec(text: str, base_dir: str | None, where: str) -> LumiSpec:
    from calibflow.io.lumi import LumiMaskError  # numba kernels: imported when needed (fast CLI start)

    path = os.path.abspath(text if os.path.isabs(text) or base_dir is None else os.path.join(base_dir, text))
    try:
        st = os.stat(path)
        return LumiSpec(path, _lumi_digest(path, st.st_size, st.st_mtime_ns))
    except FileNotFoundError:
        raise ConfigError(f"{where}: certification JSON {path!r} not found") from None
    except LumiMaskError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _pairing_spec(p: PairingConfig, later: Sequence[Expression], compile_: Callable[[str, str], Expression]
                  ) -> PairingSpec:
    """Pairing spec of ``p``; ``later`` are the per-pair expressions, whose names pick the columns needed."""
    prefix = f"{p.collection}_"
    fields, events, derived = set(), set(), set()
    for e in later:
        for name in e.branches:
            if name.startswith((TAG, PROBE)):
                fields.add(name.split("_", 1)[1])
            elif name in PAIR_COLUMNS:
                derived.add(name)
            elif name.startswith("pair_"):
                hint = suggestion(name, PAIR_COLUMNS, "pair columns")
                raise ConfigError(f"{e.where}: unknown pair column {name!r}{hint}")
            elif name.startswith(prefix):
                fld = name[len(prefix):]
                raise ConfigError(f"{e.where}: {name!r} is a per-object branch of {p.collection}; per pair use "
                                  f"{TAG}{fld} or {PROBE}{fld}, or reduce it per event, e.g. count({name} > 0)")
            else:
                events.add(name)
    mass = p.mass.removeprefix(prefix) if isinstance(p.mass, str) else float(p.mass)
    matches = tuple(
        MatchSpec(m.objects, compile_(m.cut, f"pairing.match[{i}].cut") if m.cut else None, m.max_dr, m.as_)
        for i, m in enumerate(p.match)
    )
    return PairingSpec(
        collection=p.collection,
        tag=compile_(p.tag, "pairing.tag"),
        probe=compile_(p.probe, "pairing.probe"),
        mass=mass,
        charge=p.charge.removeprefix(prefix),
        matches=matches,
        fields=tuple(sorted(fields)),
        event_branches=tuple(sorted(events)),
        derived=tuple(d for d in PAIR_COLUMNS if d in derived),
    )


def prep_spec(config: CalibrationConfig, sample: str, base_dir: str | None = None) -> PrepSpec:
    """Build the PrepSpec of ``sample`` from the config (compiles every expression once).

    ``base_dir`` is the folder relative paths (the lumi mask) are resolved from: the config's folder.
    """
    s = config.samples[sample]
    al = config.sample_aliases(sample)

    def c(text: str, where: str) -> Expression:
        return compile_expression(text, al, where=where)

    columns = {v.name: c(v.expr, f"binning.variables[{i}]") for i, v in enumerate(config.binning.variables)}
    columns[MASS] = c(config.mass_spec.variable, "mass.variable")
    columns[PASS] = c(config.pass_expression, "pass")
    for wp, text in config.working_points.items():
        columns[pass_column(wp)] = c(text, f"working_points.{wp}")
    if s.weight:
        columns[WEIGHT] = c(s.weight, f"samples.{sample}.weight")
    if s.event_id:
        columns[EVENT] = c(s.event_id, f"samples.{sample}.event_id")
    tistos = config.fit.tistos
    if s.method == "tistos" and tistos is not None:
        for key, column in TISTOS_FLAGS.items():
            text = getattr(tistos, key) or f"({tistos.tis}) or ({tistos.tos})"  # no trigger given: TIS or TOS
            columns[column] = c(text, f"fit.tistos.{key}")
    if config.closure:
        columns[TRUE_EFF] = c(config.closure.true_efficiency, "closure.true_efficiency")
        columns[IS_SIGNAL] = c(config.closure.signal, "closure.signal")
    sel = config.selection
    cuts = [
        (stage, c(text, f"selection.{stage}"))
        for stage, text in (("tag", sel.tag), ("probe", sel.probe), ("pair", sel.pair))
        if text
    ]
    if s.cut:
        cuts.append(("sample", c(s.cut, f"samples.{sample}.cut")))
    event_cuts = [("event", c(sel.event, "selection.event"))] if sel.event else []
    pairing = None
    if config.pairing is not None:
        pairing = _pairing_spec(config.pairing, [*columns.values(), *(e for _, e in cuts)], c)
    lumi = _lumi_spec(s.lumi_mask, base_dir, f"samples.{sample}.lumi_mask") if s.lumi_mask else None
    hits = tuple(HitMatchSpec(h.probe_hits, h.target_hits, h.target_counts, h.as_) for h in config.hit_match)
    return PrepSpec(tree=s.tree, columns=columns, cuts=cuts, event_cuts=event_cuts, pairing=pairing, lumi=lumi,
                    hit_matches=hits, aliases=al)


def prep_key(spec: PrepSpec, path: str) -> str:
    """Content key of preparing ``path`` with ``spec``."""
    return content_key(spec.describe(), file_identity(path))


def output_name(path: str, key: str) -> str:
    """File name of the prepared output of ``path``: its stem and its content key."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return f"{stem}-{key}.h5"
