"""The plan of one calibration run: inputs, content keys and output paths of every stage.

Everything that determines a result goes into its key, so a stale result is never reused and an
unchanged one is never recomputed. Nothing here runs a computation or imports luigi; the tasks in
``tasks/`` ask the plan where their inputs and outputs are and call one library function each.

Layout under ``<result_dir>/<name>/``::

    runs/<key>.json, runs/latest.json     run files: the modes and input lists of each ``calibflow run``
    inputs/<sample>_<i>-<key>.root        generated toy inputs (toy configs only)
    prep/<sample>/<stem>-<key>.h5         prepared tuple per input file
    binning/<key>.json                    binning scheme
    hists/<sample>-<key>.h5               per-bin pass/fail mass histograms
    fits/<sample>/<key>.json              per-bin fit or count result (keyed by bin content)
    tables/<key>/...                      efficiency, scale-factor and closure tables, exports
    .published/<n>-<key>/                 published sets (the current one and the one before)
    current -> .published/<n>-<key>       the published set, switched atomically
    efficiencies.csv, manifest.json, ...  links current/<name> (manifest.json names the key)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from calibflow.binning.scheme import Bin, BinningScheme
from calibflow.config import (
    MASS_METHODS,
    SIDEBAND,
    TISTOS,
    CalibrationConfig,
    ConfigError,
    CoverageConfig,
    FitConfig,
    ParamSpec,
    config_chain,
    load_config,
    located,
    resolve_files,
    suggestion,
)
from calibflow.expr import ExprError
from calibflow.hashing import content_key, file_identity, key_dump
from calibflow.prep.spec import PASS, PrepSpec, output_name, pass_column, prep_spec
from calibflow.variants import (
    INCLUSIVE,
    NOMINAL,
    Variant,
    join,
    method_variants,
    origin,
    resolve,
    systematic_variants,
    working_point_variants,
)

EXCLUDED = ":excluded"
"""Suffix of the prep key of an input left out as a bad file."""
EXCLUDED_MARKER = ".excluded.json"
RUNS = "runs"
"""Under the workdir: the run files of ``calibflow run`` (``<key>.json``) and :data:`LATEST_RUN`."""
LATEST_RUN = "latest.json"
"""Under :data:`RUNS`: ``{"run_file": "<key>.json"}``, the run file of the latest ``calibflow run``."""
LEGACY_MODE_FILES = ("SKIP_BAD_FILES", "LIMITS.json")
"""Under ``prep/``: where the run modes were once shared by every run; ignored, removed by ``calibflow run``."""
RUN_VERSION = 1
FIT_VERSION = 2  # 2: yields with errors in every result, fixed parameters with error 0 (issue 16)
CONSTRAINT_VERSION = 1
"""Version of the simulation fits giving ``fit.constrain``'s constraints (``constraints/<sample>/<key>.json``)."""
CONSTRAINED_FIT_VERSION = 2
"""Version of the fits constrained by them, in their keys and (with ``fit.constrain``) the tables' key (2: χ² and ndof
count each constraint as a measurement)."""
HIST_VERSION = 1
TABLE_VERSION = 3  # 2: yield columns (n_sig, n_sig_err, n_pass_err, n_fail_err), method yield (issue 16); 3: the
# goodness-of-fit columns chi2, ndof, chi2_pvalue, ks_pvalue (issue 18)
TOY_VERSION = 2
BINNING_VERSION = 1
NEGATIVE_COUNTS = "negative_counts"
"""In the histogram key of weighted samples: their files hold the candidates with a negative weight per bin."""
COMBINE_VERSION = 2  # 2: product scale-factor rows keep the mc column
EXPORT_VERSION = 4  # 2: the exact config (path and SHA-256) in the key; master tables written at export;
# 3: covariances (and replicas) in calibration.h5, the report's correlations section; 4: fitted samples with
# event_id get the bootstrap correlation (calibflow.fit.linearise), config_resolved.yaml with a base:
FIGURE_VERSION = 3  # per-bin fit figures (calibflow.fit.plots): bump when what they show changes (2: empty bins say so;
# 3: sideband figures show the background and the sideband pulls, constraint fits get figures); in the export key


@functools.lru_cache(maxsize=16)
def _cached_config(path: str, mtime_ns: int) -> CalibrationConfig:
    return load_config(path)


@functools.lru_cache(maxsize=16)
def _cached_sha256(path: str, mtime_ns: int) -> str:
    chain = config_chain(path)
    if len(chain) == 1:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    h = hashlib.sha256()  # a derived config: every file of its chain, each after its path
    for file in chain:
        with open(file, "rb") as f:
            h.update(f"{file}\n".encode() + f.read() + b"\0")
    return h.hexdigest()


@functools.lru_cache(maxsize=64)
def _cached_scheme(path: str, mtime_ns: int) -> BinningScheme:
    return BinningScheme.load(path)


@functools.lru_cache(maxsize=64)
def _cached_bin_keys(path: str, mtime_ns: int) -> tuple[str, ...]:
    return tuple(b.key for b in _cached_scheme(path, mtime_ns).bins)


@functools.lru_cache(maxsize=8)
def _cached_bins_by_key(path: str, mtime_ns: int) -> dict[str, Bin]:
    return {b.key: b for b in _cached_scheme(path, mtime_ns).bins}


@functools.lru_cache(maxsize=1024)
def _cached_prep_spec(path: str, mtime_ns: int, variant: str, sample: str, lumi_version: object = None,
                      entry_limit: int | None = None) -> PrepSpec:
    # lumi_version (size, mtime of the sample's lumi mask JSON) makes an edited JSON give a new spec and key
    cfg = _cached_variant(path, mtime_ns, variant).config
    spec = prep_spec(cfg, sample, os.path.dirname(path))
    return spec if entry_limit is None else dataclasses.replace(spec, entry_limit=entry_limit)


@functools.lru_cache(maxsize=256)
def _cached_variant(path: str, mtime_ns: int, variant: str) -> Variant:
    return resolve(_cached_config(path, mtime_ns), variant)


@functools.lru_cache(maxsize=4096)
def _cached_toy_key(path: str, mtime_ns: int, variant: str, sample: str, index: int) -> str:
    cfg = _cached_variant(path, mtime_ns, variant).config
    toy = cfg.toy
    assert toy is not None
    return content_key(toy.generator, toy.options, toy.seed, sample, cfg.samples[sample].role, toy.samples[sample],
                       index, TOY_VERSION)


@functools.lru_cache(maxsize=4096)
def _cached_prep_key(path: str, mtime_ns: int, variant: str, sample: str, lumi_version: object,
                     identity: tuple[tuple[str, object], ...], entry_limit: int | None = None) -> str:
    # the spec's description is large: hashing it for every key wanted is most of the cost of a graph's keys
    spec = _cached_prep_spec(path, mtime_ns, variant, sample, lumi_version, entry_limit)
    return content_key(spec.describe(), dict(identity))


@dataclass(frozen=True)
class RunLimits:
    """The limits of a quick try (``calibflow run --limit N --max-files M``): at most ``entries`` entries read
    per input file and the first ``files`` input files of each sample (None: no limit)."""

    entries: int | None = None
    files: int | None = None

    def __bool__(self) -> bool:
        return self.entries is not None or self.files is not None

    def describe(self) -> dict[str, int]:
        """The limits set, for keys and metadata: ``entries_per_file``, ``files_per_sample``."""
        pairs = (("entries_per_file", self.entries), ("files_per_sample", self.files))
        return {k: v for k, v in pairs if v is not None}

    def text(self) -> str:
        """The options as given: ``--limit 1000 --max-files 2``."""
        pairs = (("--limit", self.entries), ("--max-files", self.files))
        return " ".join(f"{k} {v}" for k, v in pairs if v is not None)

    def note(self) -> str:
        """What the limits mean for the outputs, one line (report banner, ``LIMITED.txt``, closing line)."""
        parts = [f"at most {self.entries} entries read per input file"] if self.entries is not None else []
        parts += [f"the first {self.files} input file(s) of each sample"] if self.files is not None else []
        return (f"a quick try ({self.text()}: {' and '.join(parts)}), not the full calibration; "
                "rerun without these options for the real tables")

    @staticmethod
    def parse(data: dict[str, int]) -> RunLimits:
        """The limits of :meth:`describe`'s dict."""
        return RunLimits(data.get("entries_per_file"), data.get("files_per_sample"))


@dataclass(frozen=True)
class Run:
    """What a ``calibflow run`` fixed when it started (its run file, :meth:`Plan.start_run`): its modes and,
    per sample and file patterns, the files they matched (the first ``limits.files`` of them) with their
    identities (path, size in bytes, mtime in ns). Toy samples have no list: their files follow from the
    config."""

    skip_bad_files: bool = False
    limits: RunLimits = RunLimits()
    files: Mapping[tuple[str, tuple[str, ...]], tuple[str, ...]] = field(default_factory=dict)
    identities: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @staticmethod
    def parse(data: Mapping[str, Any]) -> Run:
        """The run of a run file's JSON."""
        inputs = data["inputs"]
        return Run(bool(data["skip_bad_files"]), RunLimits.parse(data["limits"]),
                   {(e["sample"], tuple(e["files"])): tuple(f["path"] for f in e["found"]) for e in inputs},
                   {f["path"]: f for e in inputs for f in e["found"]})

    def text(self) -> str:
        """The options of the run as given: ``--skip-bad-files --limit 1000`` ('' for none)."""
        return " ".join(filter(None, ["--skip-bad-files" if self.skip_bad_files else "", self.limits.text()]))


NO_RUN = Run()
"""The plan of no run (library use, tests): no modes, the globs expanded at each call."""


_RUNS: dict[str, Run] = {}
"""Run file path -> run, for the runs of this process and the run files read (a run file is named by the key
of its content and never rewritten: its path is its version)."""


_RUN_DATA: dict[str, dict[str, Any]] = {}
"""Run file path -> its JSON, for the runs started by this process (:meth:`Plan.record_run` writes it)."""


def _read_json(path: str) -> object:
    """The JSON in ``path``; None when it is missing or not JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _load_run(path: str) -> Run:
    """The run of the run file ``path`` (read once per process)."""
    run = _RUNS.get(path)
    if run is None:
        try:
            with open(path) as f:
                run = _RUNS[path] = Run.parse(json.load(f))
        except FileNotFoundError:
            raise ConfigError(f"{path}: run file not found (removed during the run?); run again") from None
    return run


def _identity(path: str) -> dict[str, Any]:
    """:func:`file_identity` of ``path``; the path alone when it cannot be read (its preparation names why)."""
    try:
        return file_identity(path)
    except OSError:
        return {"path": path}


def _write_json(path: str, data: object) -> None:
    """Write ``data`` to ``path`` atomically (no calibflow.io.store here: it imports h5py)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


@functools.lru_cache(maxsize=1024)
def _cached_fit_keys(path: str, mtime_ns: int, variant: str, sample: str, pass_col: str, prep_keys: tuple[str, ...],
                     bin_keys: tuple[str, ...], bin_fit: str = "") -> tuple[str, ...]:
    # bin_fit: JSON of the bins' own fit section (fit.overrides, Plan.fit_config); "": the config's
    cfg = _cached_variant(path, mtime_ns, variant).config
    s = cfg.samples[sample]
    model = (json.loads(bin_fit) if bin_fit else cfg.fit.keyed()) if s.method in MASS_METHODS else None
    model = cfg.fit.sideband if s.method == SIDEBAND else model  # its windows only: the fit model is not used
    model = cfg.fit.tistos if s.method == TISTOS else model
    interval = s.interval if s.method == "count" else None
    pass_col = None if s.method == "yield" else pass_col  # a yield has no pass/fail: working points reuse it
    # pydantic models dumped once, as content_key would dump them: the keys are those of one-bin calls
    shared = [key_dump(m) if isinstance(m, BaseModel) else m
              for m in (list(prep_keys), cfg.mass_spec, pass_col, s.method, model, interval, FIT_VERSION)]
    return tuple(content_key(k, *shared) for k in bin_keys)


@dataclass(frozen=True)
class Plan:
    """Keys and paths of one calibration (``config_path``) under ``result_dir``, for one ``variant``, in the run
    of ``run_file`` (:meth:`start_run`; '' for none: no modes, globs expanded at each call)."""

    config_path: str
    result_dir: str
    variant: str = NOMINAL
    run_file: str = ""

    @staticmethod
    def create(config_path: str | os.PathLike[str], result_dir: str | os.PathLike[str]) -> Plan:
        """Nominal plan with absolute paths; loads and checks the config and every variant."""
        plan = Plan(os.path.abspath(config_path), os.path.abspath(result_dir))
        try:
            plan.check()
        except (ConfigError, ExprError) as exc:
            raise located(exc, plan.config_path) from None
        for v in plan.all_variants():
            variant = plan.with_variant(v)
            _ = variant.resolved  # a variation that makes no valid config names its source itself
            try:
                variant.check()
            except (ConfigError, ExprError) as exc:
                raise plan._in_variant(exc, v) from None
        return plan

    def with_variant(self, variant: str) -> Plan:
        """The same calibration and run for another variant."""
        return dataclasses.replace(self, variant=variant)

    # --- the run: modes and input lists fixed when calibflow run starts -----------------------------
    @property
    def run(self) -> Run:
        """The modes and input lists of this plan's run (:data:`NO_RUN` without a run file)."""
        return _load_run(self.run_file) if self.run_file else NO_RUN

    @property
    def runs_dir(self) -> str:
        """``<workdir>/runs``: the run files and the pointer to the latest."""
        return os.path.join(self.workdir, RUNS)

    def start_run(self, skip_bad_files: bool = False, limits: RunLimits | None = None, record: bool = True) -> Plan:
        """This plan in a new run with these modes. Resolves the file patterns of every sample in every variant
        once (the first ``limits.files`` matches) and records the identity of each file, in the run file
        ``runs/<key>.json``: named by its content, so identical runs share it and runs with other modes or
        inputs have their own (nothing is ever removed). ``record``: write it and point ``runs/latest.json``
        to it (``calibflow run``); else it is known to this process only (``calibflow status``)."""
        limits = limits or RunLimits()
        base = os.path.dirname(self.config_path)
        found: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        for v in [NOMINAL, *self.all_variants()]:
            plan = self.with_variant(v)
            for s, smp in plan.config.samples.items():
                key = (s, tuple(smp.files))
                if key not in found and not plan.is_toy(s):
                    found[key] = resolve_files(plan.config, s, base)[: limits.files]
        identities = {p: _identity(p) for paths in found.values() for p in paths}
        data = {"version": RUN_VERSION, "config": self.config_path, "skip_bad_files": skip_bad_files,
                "limits": limits.describe(),
                "inputs": [{"sample": s, "files": list(patterns), "found": [identities[p] for p in paths]}
                           for (s, patterns), paths in found.items()]}
        path = os.path.join(self.runs_dir, f"{content_key(data)}.json")
        _RUNS[path] = Run.parse(data)
        _RUN_DATA[path] = data
        run = dataclasses.replace(self, run_file=path)
        if record:
            run.record_run()
        return run

    def record_run(self) -> None:
        """Write the run file of this plan's run (made by :meth:`start_run` in this process) unless it exists,
        and point ``runs/latest.json`` to it: ``calibflow run`` does so once its config passed the checks, so a
        bad config leaves no result folder behind."""
        path = self.run_file
        if _read_json(path) != _RUN_DATA[path]:  # missing, or emptied by a crash of the machine: (re)written
            _write_json(path, _RUN_DATA[path])
        if self.latest_run_file() != path:
            _write_json(os.path.join(self.runs_dir, LATEST_RUN), {"run_file": os.path.basename(path)})
        for name in LEGACY_MODE_FILES:  # written by versions that shared the modes: never read now
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.workdir, "prep", name))

    def latest_run_file(self) -> str | None:
        """Path of the run file ``runs/latest.json`` points to (None: none, or unreadable)."""
        try:
            with open(os.path.join(self.runs_dir, LATEST_RUN)) as f:
                return os.path.join(self.runs_dir, os.path.basename(str(json.load(f)["run_file"])))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def latest_run(self) -> Run:
        """The run of the latest ``calibflow run`` of this folder (``runs/latest.json``; :data:`NO_RUN` when
        there is none): commands that start no run of their own (``status``, ``fit-bin``) take its modes."""
        path = self.latest_run_file()
        try:
            return NO_RUN if path is None else _load_run(path)
        except (OSError, ValueError, KeyError, TypeError, ConfigError):
            return NO_RUN

    def in_latest_modes(self, record: bool = True) -> Plan:
        """This plan in a new run (:meth:`start_run`) with the modes of the latest and the current inputs."""
        latest = self.latest_run()
        return self.start_run(latest.skip_bad_files, latest.limits, record)

    def _mtime(self) -> int:
        """The config file's modification time (ns); with a ``base:`` chain, a number that changes with any of its
        files' (a per-process cache key, never stored)."""
        try:
            own = os.stat(self.config_path).st_mtime_ns
            chain = config_chain(self.config_path)
            return own if len(chain) == 1 else hash(tuple((f, os.stat(f).st_mtime_ns) for f in chain))
        except FileNotFoundError:
            raise ConfigError(f"{self.config_path}: config file not found") from None

    @property
    def nominal_config(self) -> CalibrationConfig:
        """The config as written (cached per process while the file is unchanged)."""
        return _cached_config(self.config_path, self._mtime())

    @property
    def resolved(self) -> Variant:
        """The variant applied to the config."""
        try:
            return _cached_variant(self.config_path, self._mtime(), self.variant)
        except ConfigError as exc:
            raise located(exc, self.config_path) from None

    @property
    def config(self) -> CalibrationConfig:
        """The config of this variant."""
        return self.resolved.config

    @property
    def pass_column(self) -> str:
        """Prepared column holding the pass decision of this variant (nominal or working point)."""
        wp = self.resolved.working_point
        return PASS if wp is None else pass_column(wp)

    def canonical(self, key_of: Callable[[Plan], object]) -> str:
        """The first variant (nominal first) whose ``key_of`` equals this variant's: tasks of different
        variants with the same content are then one luigi task, so a run never does the same work twice."""
        mine = key_of(self)
        for v in [NOMINAL, *self.all_variants()]:
            if v == self.variant:
                break
            if key_of(self.with_variant(v)) == mine:
                return v
        return self.variant

    def all_variants(self) -> list[str]:
        """Every variant the full calibration needs besides the nominal one."""
        cfg = self.nominal_config
        bases = [NOMINAL, *working_point_variants(cfg), *method_variants(cfg)]
        out = [join(b, s) for b in bases for s in systematic_variants(cfg)]
        out += working_point_variants(cfg) + method_variants(cfg)
        if cfg.roc:
            out += [join(b, INCLUSIVE) for b in working_point_variants(cfg)]
        return out

    @property
    def workdir(self) -> str:
        """``<result_dir>/<name>``."""
        return os.path.join(self.result_dir, self.config.name)

    def check(self) -> None:
        """Fail early, with the key to fix, on anything that would fail later: files, expressions, models."""
        cfg = self.config
        if cfg.toy is not None:
            from calibflow.toys.registry import get_generator

            try:
                get_generator(cfg.toy.generator)
            except ValueError as exc:
                raise located(exc, self.config_path) from None
        for s in cfg.samples:
            self.input_files(s)
            self.prep_spec(s)
        self.scheme()

    def check_models(self) -> None:
        """Check the fit section of every variant: the model names exist and every ``fit.parameters`` name is
        a parameter of the model, as the methods using it name them (imports the model library, slow to
        load). ConfigError with a did-you-mean from the model's parameters."""
        from calibflow.fit.models import get_shape
        from calibflow.fit.passfail import parameter_names

        seen: set[str] = set()
        for v in [NOMINAL, *sorted(self.all_variants(), key=lambda v: v.count("/"))]:
            cfg = self.with_variant(v).config
            fit, methods = cfg.fit, sorted({s.method for s in cfg.samples.values()} & set(MASS_METHODS))
            given = [*fit.parameters, *(n for o in fit.overrides for n in o.parameters)]  # overrides: same names
            refs = [fit.template, fit.constrain] if fit.template or fit.constrain else []  # other keys unchanged
            key = content_key(fit.signal, fit.background, fit.fail_width_shift, fit.fail_gauss, sorted(set(given)),
                              methods, *refs)
            if key in seen:
                continue
            seen.add(key)
            try:
                signal, signal_fail = self._check_references(cfg, methods)
                signal = signal or get_shape("signal", fit.signal)
                background = get_shape("background", fit.background)
                model = f"{signal.name} + {background.name}"
                for method in methods or ["fit"]:  # sweights and yield fits have no fail width shift
                    names = parameter_names(signal, background, fit.fail_width_shift and method == "fit",
                                            fit.fail_gauss and method == "fit", signal_fail)
                    constrained = list(fit.constrain.parameters) if fit.constrain and method == "fit" else []
                    for n in constrained:
                        if n not in names:
                            raise ConfigError(f"fit.constrain.parameters: {n!r} is not a parameter of {model}"
                                              f"{suggestion(n, names, 'parameters')}")
                    unknown = [n for n in given if n not in names]
                    if unknown:
                        raise ConfigError(_unknown_parameter(unknown[0], names, model, fit.fail_width_shift))
            except (ValueError, ConfigError) as exc:
                raise self._in_variant(exc, v) from None

    @staticmethod
    def _check_references(cfg: CalibrationConfig, methods: Sequence[str]) -> tuple[Any, Any]:
        """Check ``fit.template`` and ``fit.constrain`` against the samples (ConfigError); the (pass, fail)
        template shapes with their parameter names when the signal is a template, else (None, None)."""
        from calibflow.fit.templates import TEMPLATE, placeholder_signals

        fit = cfg.fit
        for key, ref in (("template", fit.template), ("constrain", fit.constrain)):
            if ref is not None and ref.from_ not in cfg.samples:
                hint = suggestion(ref.from_, cfg.samples, "samples")
                raise ConfigError(f"fit.{key}.from: unknown sample {ref.from_!r}{hint}")
        if fit.signal != TEMPLATE:
            return None, None
        other = [m for m in methods if m != "fit"]
        if other:
            raise ConfigError(f"fit.signal: template is for method fit only (samples of method {other[0]} fit the "
                              "same fit section)")
        return placeholder_signals()

    def _in_variant(self, exc: Exception, variant: str) -> ConfigError:
        """``exc``, found in ``variant``, as a ConfigError naming the config and the keys of the variant."""
        text, where = str(exc).removeprefix(f"{self.config_path}: "), origin(self.nominal_config, variant)
        return located(ConfigError(f"{where}: {text}" if where else text), self.config_path)

    def check_inputs(self) -> None:
        """Check the config against its inputs before any task runs (``calibflow run``, ``fit-bin``): the
        fit section of every variant (:meth:`check_models`), then per sample and distinct tuple preparation
        the tree and every branch it reads, in the sample's first readable input file (confirmed in its
        last) or in a small file of its toy generator (:func:`calibflow.prep.inputs.check_sample`).
        ConfigError, one line with the config path, key, name and a did-you-mean, for the first problem."""
        from calibflow.prep.inputs import check_sample
        from calibflow.toys.registry import reference_file

        self.check_models()
        seen: set[str] = set()
        for v in [NOMINAL, *sorted(self.all_variants(), key=lambda v: v.count("/"))]:  # simplest first
            plan = self.with_variant(v)
            cfg = plan.config
            for s, sample in cfg.samples.items():
                spec = plan.prep_spec(s)
                key = content_key(s, spec.describe())
                if key in seen:
                    continue
                seen.add(key)
                toy = cfg.toy if plan.is_toy(s) else None
                files = plan.input_files(s)
                try:
                    if toy is not None and not os.path.exists(files[0]):
                        files = [reference_file(toy.generator, toy.options, sample.role == "data")]
                    check_sample(spec, s, files, self.shown, sample.aliases,
                                 toy.generator if toy else None)
                except ConfigError as exc:
                    raise self._in_variant(exc, v) from None

    def shown(self, path: str) -> str:
        """``path`` as messages show it: relative to the config's folder when inside it (a URL as it is)."""
        if "://" in path:
            return path
        rel = os.path.relpath(path, os.path.dirname(self.config_path))
        return path if rel.startswith(os.pardir) else rel

    # --- inputs -------------------------------------------------------------------------------------
    def is_toy(self, sample: str) -> bool:
        """Whether ``sample``'s files are generated by the toy generator."""
        toy = self.config.toy
        return toy is not None and sample in toy.samples and not self.config.samples[sample].files

    def toy_key(self, sample: str, index: int) -> str:
        """Content key of toy file ``index`` of ``sample`` (cached per process while the config is unchanged)."""
        return _cached_toy_key(self.config_path, self._mtime(), self.variant, sample, index)

    def toy_seed(self, sample: str, index: int) -> int:
        """Seed of toy file ``index`` of ``sample`` (derived from the config seed)."""
        return int(self.toy_key(sample, index), 16) % (2**63)

    def toy_candidates(self, sample: str, index: int) -> int:
        """Number of candidates in toy file ``index`` (the sample's total split evenly)."""
        spec = self.config.toy.samples[sample]  # type: ignore[union-attr]
        base, extra = divmod(spec.candidates, spec.files)
        return base + (1 if index < extra else 0)

    def input_files(self, sample: str) -> list[str]:
        """Absolute paths of the sample's input files: toy paths, or the files listed when the run started
        (without a run: the globs expanded now); the first ``--max-files`` of them in a quick try
        (:attr:`limits`)."""
        limit = self.limits.files
        if self.is_toy(sample):
            n = self.config.toy.samples[sample].files  # type: ignore[union-attr]
            return [os.path.join(self.workdir, "inputs", f"{sample}_{i}-{self.toy_key(sample, i)}.root")
                    for i in range(n if limit is None else min(n, limit))]
        if not self.run_file:
            return resolve_files(self.config, sample, os.path.dirname(self.config_path))[:limit]
        patterns = tuple(self.config.samples[sample].files)
        try:
            return list(self.run.files[(sample, patterns)])
        except KeyError:
            raise ConfigError(f"{self.run_file}: no input list of sample {sample!r} for files {list(patterns)}: "
                              "the config changed since the run started; run again") from None

    def input_file(self, sample: str, index: int) -> str:
        """Input ``index`` of :meth:`input_files`; ConfigError naming the sample when there is no such input
        (without a run, files removed since the task was made)."""
        files = self.input_files(sample)
        if 0 <= index < len(files):
            return files[index]
        raise ConfigError(f"sample {sample}: no input file {index}: its files match {len(files)} file(s) now "
                          "(removed since the task was made?); run again")

    def input_identity(self, sample: str, index: int) -> dict[str, object]:
        """What identifies input ``index``: the toy key, or path, size and mtime of a real file (as listed
        when the run started; without a run, now)."""
        if self.is_toy(sample):
            return {"toy": self.toy_key(sample, index)}
        path = self.input_file(sample, index)
        return dict(self.run.identities[path]) if self.run_file else file_identity(path)

    def input_change(self, sample: str, index: int) -> str | None:
        """How input ``index`` differs from the file listed when the run started, as the end of a line naming
        it: ``gone since ...``, ``changed since ... (size a -> b bytes)``; None when unchanged (or no run, a
        toy input, a file unreadable then: its preparation names the problem)."""
        if not self.run_file or self.is_toy(sample):
            return None
        path = self.input_file(sample, index)
        was = self.run.identities[path]
        if "size" not in was:
            return None
        try:
            now = file_identity(path)
        except FileNotFoundError:
            return "gone since the run started, which listed it; run again to use the current files"
        except OSError:
            return None
        units = {"size": " bytes", "mtime_ns": " ns"}  # a remote file may have a checksum instead of an mtime
        keys = [*units, *sorted((was.keys() | now.keys()) - {*units, "path"})]
        changes = [f"{k} {was.get(k)} -> {now.get(k)}{units.get(k, '')}" for k in keys
                   if was.get(k) != now.get(k)]
        return (f"changed since the run started ({', '.join(changes)}); run again to use the current version"
                if changes else None)

    # --- preparation --------------------------------------------------------------------------------
    def _lumi_version(self, sample: str) -> tuple[int, int] | None:
        """Size and mtime of the sample's lumi mask JSON (None: no mask, or a missing file)."""
        lumi = self.config.samples[sample].lumi_mask
        if lumi:
            try:
                st = os.stat(os.path.join(os.path.dirname(self.config_path), lumi))
                return st.st_size, st.st_mtime_ns
            except OSError:
                pass  # prep_spec names the missing file
        return None

    def prep_spec(self, sample: str) -> PrepSpec:
        """Columns and cuts of tuple preparation for ``sample`` (cached per process and variant), with the
        entry limit of a quick try (:attr:`limits`)."""
        return _cached_prep_spec(self.config_path, self._mtime(), self.variant, sample,
                                 self._lumi_version(sample), self.limits.entries)

    def prep_key(self, sample: str, index: int) -> str:
        """Content key of the prepared tuple of input ``index`` of ``sample`` (cached per process while the
        config, the lumi mask, the input's identity and the entry limit are unchanged)."""
        identity = tuple(sorted(self.input_identity(sample, index).items()))
        return _cached_prep_key(self.config_path, self._mtime(), self.variant, sample, self._lumi_version(sample),
                                identity, self.limits.entries)

    def prep_path(self, sample: str, index: int, key: str | None = None) -> str:
        """Prepared HDF5 of input ``index`` of ``sample`` (``key``: its prep key, if already known)."""
        src = self.input_file(sample, index)
        return os.path.join(self.workdir, "prep", sample, output_name(src, key or self.prep_key(sample, index)))

    def prep_owner(self, sample: str, index: int) -> tuple[str, int]:
        """Who prepares input ``index`` of ``sample`` for every variant at once: (variant, index of the file in
        that variant's list) of the first variant (nominal first) whose ``sample`` lists the same file."""
        return next(iter(self._file_variants(sample, index)))

    def file_preparations(self, sample: str, index: int) -> dict[str, tuple[str, int]]:
        """Every distinct prepared tuple of input ``index`` of ``sample`` over all variants: its path -> (variant,
        index of the file in that variant's list) of the first variant (nominal first) preparing it. Variants
        with the same preparation (equal prep keys) share one path, so it is listed once."""
        out: dict[str, tuple[str, int]] = {}
        for v, i in self._file_variants(sample, index):
            out.setdefault(self.with_variant(v).prep_path(sample, i), (v, i))
        return out

    def _file_variants(self, sample: str, index: int) -> Iterator[tuple[str, int]]:
        """(variant, index) of every variant, nominal first, whose ``sample`` lists input ``index`` of this
        variant's ``sample`` (the same path; a variant may change a sample's files), with its index there."""
        path = self.input_file(sample, index)
        for v in [NOMINAL, *self.all_variants()]:
            plan = self.with_variant(v)
            if sample not in plan.config.samples:
                continue
            files = plan.input_files(sample)
            if index < len(files) and files[index] == path:
                yield v, index
            elif path in files:
                yield v, files.index(path)

    def prep_keys(self, sample: str) -> list[str]:
        """Keys of all prepared tuples of ``sample``; an input left out as bad (``--skip-bad-files``)
        counts as ``<key>:excluded``, so results without it never pass for results with it."""
        keys = [self.prep_key(sample, i) for i in range(len(self.input_files(sample)))]
        if not self.skips_bad_files:
            return keys
        return [k + (EXCLUDED if os.path.exists(self.excluded_path(sample, i, k)) else "") for i, k in enumerate(keys)]

    # --- run modes (calibflow run --skip-bad-files, --limit N --max-files M) -----------------------------
    @property
    def skips_bad_files(self) -> bool:
        """Whether this run leaves bad input files out (exclusion markers count) rather than failing: a run
        without ``--skip-bad-files`` retries them. Markers are kept either way, so switching back and forth
        recomputes nothing."""
        return self.run.skip_bad_files

    @property
    def limits(self) -> RunLimits:
        """The quick-try limits of this run (empty: a full run). The entry limit enters the prep keys (so every
        key after them), the file limit shortens the input lists, and both enter the export key: a limited run
        never passes for a full one, and the results of both stay under their own keys."""
        return self.run.limits

    def excluded_path(self, sample: str, index: int, key: str | None = None) -> str:
        """Marker written instead of the prepared tuple of a bad input: JSON with the file and the reason."""
        return self.prep_path(sample, index, key)[: -len(".h5")] + EXCLUDED_MARKER

    def is_excluded(self, sample: str, index: int) -> bool:
        """Whether input ``index`` of ``sample`` (this version of it) is left out as a bad file."""
        return self.skips_bad_files and os.path.exists(self.excluded_path(sample, index))

    def excluded_files(self) -> dict[str, list[dict[str, str]]]:
        """Per sample, the inputs left out as bad: ``{"sample", "file": path, "reason": one line}``."""
        out: dict[str, list[dict[str, str]]] = {}
        for s in self.config.samples if self.skips_bad_files else []:
            for i in range(len(self.input_files(s))):
                if self.is_excluded(s, i):
                    with open(self.excluded_path(s, i)) as f:
                        out.setdefault(s, []).append(json.load(f))
        return out

    # --- binning ------------------------------------------------------------------------------------
    def scheme(self) -> BinningScheme | None:
        """The binning scheme when it needs no data (else None: MakeBinning derives it)."""
        from calibflow.binning.make import static_scheme

        binning = self.config.binning
        return None if binning.data_driven else static_scheme(binning)

    @property
    def binning_source(self) -> Plan:
        """The plan whose prepared data define a data-driven binning: the nominal selection, so that
        variations and working points share the binning unless they change the binning section."""
        return self.with_variant(NOMINAL)

    def yield_samples(self) -> list[str]:
        """Samples of method ``yield``: one category each (all candidates) for a data-driven binning."""
        return sorted(s for s, smp in self.config.samples.items() if smp.method == "yield")

    def binning_pass_columns(self) -> list[str]:
        """Pass decisions whose pass and fail categories every bin must populate."""
        return [PASS, *(pass_column(w) for w in self.nominal_config.working_points)]

    def binning_key(self) -> str:
        """Content key of the binning: its section and, when data-driven, the data it is made from."""
        binning = self.config.binning
        if not binning.data_driven:
            return content_key(binning)
        src = self.binning_source
        data = {s: src.prep_keys(s) for s in src.config.samples}
        yields = src.yield_samples()
        whole = [{"yield_samples": yields}] if yields else []  # their one category: other keys unchanged
        return content_key(binning, data, self.binning_pass_columns(), src.config.mass_spec.range, BINNING_VERSION,
                           *whole)

    def binning_path(self) -> str:
        """Binning JSON."""
        return os.path.join(self.workdir, "binning", f"{self.binning_key()}.json")

    def load_scheme(self) -> BinningScheme:
        """The scheme written by the binning stage (cached per process while the file is unchanged)."""
        path = self.binning_path()
        return _cached_scheme(path, os.stat(path).st_mtime_ns)

    def bin_keys(self) -> tuple[str, ...]:
        """Content keys of the bins of :meth:`load_scheme`, in bin order (cached with the scheme)."""
        path = self.binning_path()
        return _cached_bin_keys(path, os.stat(path).st_mtime_ns)

    # --- histograms and fits ------------------------------------------------------------------------
    def hist_key(self, sample: str) -> str:
        """Content key of the per-bin mass histograms of ``sample``."""
        weighted = [NEGATIVE_COUNTS] if self.config.samples[sample].weight else []  # unweighted keys unchanged
        return content_key(self.binning_key(), self.config.mass_spec, self.prep_keys(sample), self.pass_column,
                           HIST_VERSION, *weighted)

    def hist_path(self, sample: str) -> str:
        """Per-bin histogram HDF5 of ``sample``."""
        return os.path.join(self.workdir, "hists", f"{sample}-{self.hist_key(sample)}.h5")

    def split_path(self, sample: str) -> str:
        """Per-bin contiguous candidates of ``sample`` (for unbinned fits and sWeights)."""
        return os.path.join(self.workdir, "hists", f"{sample}-{self.hist_key(sample)}-candidates.h5")

    def fit_key(self, sample: str, bin_key: str) -> str:
        """Content key of the fit of one bin (by its content key) of ``sample``."""
        return self.fit_keys(sample, [bin_key])[0]

    def fit_keys(self, sample: str, bin_keys: Sequence[str]) -> list[str]:
        """Content keys of the fits of several bins of ``sample``: :meth:`own_fit_keys` and, for fits using the
        reference simulation (:meth:`uses_template`, :meth:`uses_constraints`), its histograms' key and the
        keys of its constraint fits (new simulation: new keys, refit)."""
        keys = self.own_fit_keys(sample, bin_keys)
        reference = self.config.fit.template
        template = [["template", self.hist_key(reference.from_)]] if reference and self.uses_template(sample) else []
        cons = self.constraint_keys(bin_keys) if self.uses_constraints(sample) else None
        if not template and cons is None:
            return keys
        return [content_key(k, *template, *([["constraint", cons[i], CONSTRAINED_FIT_VERSION]] if cons else []))
                for i, k in enumerate(keys)]

    # --- the reference simulation of the fits (fit.template, fit.constrain) ---------------------------
    def uses_template(self, sample: str) -> bool:
        """Whether the fits of ``sample`` use simulation templates (``fit.signal: template``, method ``fit``)."""
        from calibflow.fit.templates import TEMPLATE

        return self.config.fit.signal == TEMPLATE and self.config.samples[sample].method == "fit"

    def uses_constraints(self, sample: str) -> bool:
        """Whether the fits of ``sample`` are constrained by simulation fits (``fit.constrain``, method ``fit``,
        not the ``from`` sample itself)."""
        c = self.config.fit.constrain
        return c is not None and self.config.samples[sample].method == "fit" and sample != c.from_

    def constraint_fit_config(self, bin_key: str) -> FitConfig:
        """The fit of the simulation of bin ``bin_key`` for ``fit.constrain``: the bin's fit section without
        ``constrain`` (the whole section for a key that is no bin)."""
        try:
            fit = self.fit_config(bin_key)
        except (KeyError, FileNotFoundError):
            fit = self.config.fit
        signal_only = fit.constrain is not None and not fit.constrain.background
        fit = fit.model_copy(update={"constrain": None})
        if signal_only:  # no background: its yields fixed to 0 and its shape fixed (it no longer matters)
            from calibflow.fit.models import get_shape

            shape = get_shape("background", fit.background)
            fixed = {f"{name}_{cat}": ParamSpec(value=0.0 if name == "n_bkg" else None, fixed=True)
                     for cat in ("pass", "fail") for name in ("n_bkg", *shape.params)}
            fit = fit.model_copy(update={"parameters": {**fit.parameters, **fixed}})
        return fit

    def constraint_keys(self, bin_keys: Sequence[str]) -> list[str]:
        """Content keys of the simulation fits (``fit.constrain.from``, its histograms) of several bins (none
        without ``fit.constrain``)."""
        fit = self.config.fit
        if fit.constrain is None:
            return []
        hist = self.hist_key(fit.constrain.from_)
        template = [self.hist_key(fit.template.from_)] if fit.signal == "template" and fit.template else []
        return [content_key(k, hist, key_dump(self.constraint_fit_config(k).keyed()), self.config.mass_spec, FIT_VERSION,
                            CONSTRAINT_VERSION, *template) for k in bin_keys]

    def constraint_paths(self, bin_keys: Sequence[str]) -> list[str]:
        """Result JSONs of the simulation fits of several bins: ``constraints/<sample>/<key>.json``."""
        fit = self.config.fit
        assert fit.constrain is not None
        folder = os.path.join(self.workdir, "constraints", fit.constrain.from_)
        return [os.path.join(folder, f"{k}.json") for k in self.constraint_keys(bin_keys)]

    def own_fit_keys(self, sample: str, bin_keys: Sequence[str]) -> list[str]:
        """Content keys of the fits of several bins of ``sample`` from their own inputs and fit section (cached
        per process while the config and the prepared-tuple keys are unchanged: a chunk of bins asks for its
        keys several times per run)."""
        args = (self.config_path, self._mtime(), self.variant, sample, self.pass_column, tuple(self.prep_keys(sample)))
        if not self.config.fit.overrides or self.config.samples[sample].method not in MASS_METHODS:
            return list(_cached_fit_keys(*args, tuple(bin_keys)))
        fit = self.config.fit
        try:
            bins = self._bins_by_key()
        except FileNotFoundError:  # no binning yet: no bin keys either
            bins = {}
        base = json.dumps(key_dump(fit.keyed().model_copy(update={"overrides": []})), sort_keys=True)
        keys = list(_cached_fit_keys(*args, tuple(bin_keys), base))
        for i, k in enumerate(bin_keys):
            if k not in bins:  # not a bin (the "" of the variants' shared-content probe): the whole section
                keys[i] = _cached_fit_keys(*args, (k,))[0]
                continue
            own = self.fit_config(k, bins)  # the bins whose own parameters differ: one key each
            if own.parameters != fit.parameters:
                keys[i] = _cached_fit_keys(*args, (k,), json.dumps(key_dump(own.keyed()), sort_keys=True))[0]
        return keys

    def fit_config(self, bin_key: str, bins: Mapping[str, Bin] | None = None) -> FitConfig:
        """The fit section of the bin with content key ``bin_key`` (``bins``: the scheme's bins by key, else
        looked up): ``fit.overrides`` applied (:meth:`calibflow.config.FitConfig.for_bin`); a bin no override
        selects has the fit, and the fit key, of the config without overrides. :meth:`fit_keys` of a key that is
        no bin (``""``) holds the whole section, overrides included, so variants differing in them differ."""
        fit = self.config.fit
        if not fit.overrides:
            return fit
        b = (bins or self._bins_by_key())[bin_key]
        return fit.for_bin(b.index, b.bounds)

    def _bins_by_key(self) -> Mapping[str, Bin]:
        """The bins of the scheme by content key: of the binning file, else of a binning that needs no data."""
        path = self.binning_path()
        if os.path.exists(path):
            return _cached_bins_by_key(path, os.stat(path).st_mtime_ns)
        scheme = self.scheme()
        if scheme is None:
            raise FileNotFoundError(path)
        return {b.key: b for b in scheme.bins}

    def fit_path(self, sample: str, bin_key: str) -> str:
        """Result JSON of one bin of ``sample``."""
        return self.fit_paths(sample, [bin_key])[0]

    def fit_paths(self, sample: str, bin_keys: Sequence[str]) -> list[str]:
        """Result JSONs of several bins (by their content keys) of ``sample``."""
        folder = os.path.join(self.workdir, "fits", sample)
        return [os.path.join(folder, f"{k}.json") for k in self.fit_keys(sample, bin_keys)]

    def figure_key(self) -> str:
        """Key of what a per-bin fit figure shows besides its fit: the labels and units of the mass and of the
        binning variables, the plot style and :data:`FIGURE_VERSION`. Presentation only: it is never part of
        a fit key, so relabelling redraws figures (at export) and refits nothing."""
        cfg = self.config
        mass = cfg.mass_spec
        variables = [[v.name, v.display, v.display_unit] for v in cfg.binning.variables]
        return content_key(mass.label, mass.unit, variables, cfg.outputs.plot_style.model_dump(), FIGURE_VERSION)

    def figure_paths(self, sample: str, bin_keys: Sequence[str]) -> list[str]:
        """Fit figures (PNG) of several bins of ``sample``, beside their results: ``<fit key>.<figure key>.png``;
        a figure that could not be drawn leaves its reason instead (:meth:`plot_error_path`)."""
        return self._figures_of(self.fit_paths(sample, bin_keys))

    def constraint_figure_paths(self, bin_keys: Sequence[str]) -> list[str]:
        """Figures of the simulation fits of several bins (``fit.constrain``), beside their results as
        :meth:`figure_paths` are: ``constraints/<sample>/<key>.<figure key>.png``."""
        return self._figures_of(self.constraint_paths(bin_keys))

    def _figures_of(self, results: Sequence[str]) -> list[str]:
        """The figure of each result JSON in ``results``: ``<stem>.<figure key>.png``."""
        fig = self.figure_key()
        return [f"{p[: -len('.json')]}.{fig}.png" for p in results]

    @staticmethod
    def plot_error_path(figure_path: str) -> str:
        """The one-line reason the figure ``figure_path`` could not be drawn: ``<stem>.plot-error.txt``."""
        return f"{figure_path[: -len('.png')]}.plot-error.txt"

    def splot_path(self, sample: str, bin_key: str) -> str:
        """Cached sPlot mass fit of one bin of ``sample`` (method ``sweights``). Its key has no pass column,
        so every working point reuses the fit."""
        from calibflow.fit.measure import SPLOT_VERSION, splot_settings

        key = content_key(bin_key, self.prep_keys(sample), self.config.mass_spec,
                          splot_settings(self.fit_config(bin_key)), SPLOT_VERSION)
        return os.path.join(self.workdir, "splots", sample, f"{key}.json")

    def gallery_dir(self, sample: str) -> str:
        """Published fit gallery of ``sample`` in this variant: ``<workdir>/gallery/<variant>/<sample>/``
        (variant ``nominal`` for the nominal run), with ``index.html``."""
        return os.path.join(self.workdir, "gallery", self.variant or "nominal", sample)

    def constraint_gallery_dir(self) -> str:
        """Published gallery of the simulation fits of ``fit.constrain`` in this variant:
        ``<workdir>/gallery/<variant>/_constraints/<sample>/`` (no sample name starts with ``_``)."""
        assert self.config.fit.constrain is not None
        return os.path.join(self.workdir, "gallery", self.variant or "nominal", "_constraints",
                            self.config.fit.constrain.from_)

    # --- tables -------------------------------------------------------------------------------------
    def table_key(self) -> str:
        """Content key of the tables and exports; with :meth:`coverage`, its toys, seed and the record version
        too (tables without coverage keep their keys); with ``fit.constrain``, :data:`CONSTRAINED_FIT_VERSION`."""
        cfg = self.config
        per_sample = {s: [self.prep_keys(s), cfg.samples[s].method] for s in cfg.samples}
        cov, coverage = self.coverage(), []
        constrained = [["constrained", CONSTRAINED_FIT_VERSION]] if cfg.fit.constrain is not None else []
        if cov is not None:
            from calibflow.fit.coverage import COVERAGE_VERSION

            coverage = [["coverage", cov.toys, cov.seed, COVERAGE_VERSION]]
        return content_key(self.binning_key(), per_sample, cfg.mass_spec, cfg.fit, cfg.closure, cfg.reference,
                           self.pass_column, TABLE_VERSION, *coverage, *constrained)

    def coverage(self) -> CoverageConfig | None:
        """The config's ``coverage`` when this plan's tables carry coverage columns: the nominal variant only
        (working points, methods and systematic variations have none)."""
        return self.config.coverage if self.variant == NOMINAL else None

    def table_dir(self) -> str:
        """Folder of the tables of this configuration."""
        return os.path.join(self.workdir, "tables", self.table_key())

    def combined_key(self) -> str:
        """Content key of the combined tables: every variant's tables, the sources and their combination."""
        cfg = self.nominal_config
        tables = {v: self.with_variant(v).table_key() for v in [NOMINAL, *self.all_variants()]}
        return content_key(tables, cfg.systematics, cfg.roc, cfg.products, COMBINE_VERSION)

    def combined_dir(self) -> str:
        """Folder of the combined tables and their exports."""
        return os.path.join(self.workdir, "combined", self.combined_key())

    def config_sha256(self) -> str:
        """SHA-256 (hex) of the config file's bytes: the exact config the published files come from."""
        return _cached_sha256(self.config_path, self._mtime())

    def export_key(self) -> str:
        """Content key of the published outputs: the combined tables, the outputs section and the exact
        config (path and bytes), so that a changed description, label or comment re-exports (and
        nothing else reruns)."""
        config = {"path": self.config_path, "sha256": self.config_sha256()}
        limits = [self.limits.describe()] if self.limits else []  # quick tries only: full keys unchanged
        return content_key(self.combined_key(), self.nominal_config.outputs, config, EXPORT_VERSION, FIGURE_VERSION,
                           *limits)

    def published_config(self) -> str | None:
        """Path of the config whose outputs are published under :attr:`workdir` (None: nothing published,
        or published before the manifest recorded its config)."""
        try:
            with open(os.path.join(self.workdir, "manifest.json")) as f:
                return json.load(f).get("config")
        except (OSError, ValueError):
            return None

    def check_name_free(self) -> None:
        """ConfigError when :attr:`workdir` holds the published results of another config with the same
        ``name`` (``calibflow run --overwrite`` replaces them)."""
        other = self.published_config()
        if other is not None and other != self.config_path:
            raise ConfigError(f"{self.config_path}: name {self.config.name!r} is taken: {self.workdir} holds the "
                              f"results of {other}; give this config another name, or rerun with --overwrite")

    def scale_factor_pairs(self) -> list[tuple[str, str]]:
        """(data, simulation) sample pairs compared in the scale-factor table."""
        return self.config.scale_factor_pairs


def _unknown_parameter(name: str, names: Sequence[str], model: str, width_shift: bool) -> str:
    """The message for ``fit.parameters.<name>``, not among the parameters ``names`` of ``model``."""
    if name == "dsigma_fail":
        why = "methods sweights and yield have no fail width shift" if width_shift else \
            "needs fit.fail_width_shift: true"
        return f"fit.parameters.{name}: not a parameter of {model} ({why})"
    if f"{name}_pass" in names:
        return (f"fit.parameters.{name}: not a parameter of {model} (background parameters are per "
                f"category: {name}_pass, {name}_fail)")
    return f"fit.parameters.{name}: not a parameter of {model}{suggestion(name, names, 'parameters')}"
