"""Keys and paths of a KDE config's outputs (the KDE counterpart of :mod:`calibflow.plan`; no task runs here).

Everything goes to ``<result_dir>/<name>/`` (the *workdir*): ``toys/<toy>_<i>.root``; under ``work/`` (the
outputs as they are made, :data:`WORK`) ``kde/<template>-<key>.h5`` and ``.root`` with a copy ``kde/<template>.h5``
under a fixed name for apply configs, ``closure/<closure>/closure.{csv,json,png}`` and ``densities.png``,
``report.html`` and ``report.md``; ``logs/``. The outputs are published from ``work/`` as one set
(:mod:`calibflow.export.publish`: ``.published/<n>-<report key>/``, ``current``, ``manifest.json`` with their
SHA-256): a reader opens ``<workdir>/kde/<template>.h5``, ``closure/``, ``report.html`` through the stable links.
A KDE config and a calibration config never share a workdir (:func:`check_kind`). A template's key (:meth:`KdePlan.template_key`) covers its spec, tree, the aliases and its inputs
(a toy's spec, or each file's path, size and mtime), not the config's name or other entries: a changed
template is rebuilt under a new key, an unchanged one reused. A closure is redone when a template it uses
changes key; the report when any key or the config file changes (:meth:`KdePlan.report_key`).
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

from calibflow.kde.config import TOY_PREFIX, KdeConfig, load_kde_config
from calibflow.kde.template import VERSION
from calibflow.plan import NO_RUN, Run

REPORT_VERSION = 2
"""Version of the KDE report page and manifest: a bump redoes the report, never the templates or closures (2: the
outputs published as a set)."""
WORK = "work"
"""Under the workdir: the outputs as they are made, published from there as one set (never read by a reader)."""
KIND = "kde"
"""``kind`` in the manifest.json of a KDE config's published set (a calibration's has none)."""
RECORD = "config.json"
"""Under :data:`WORK`: ``{"kind": "kde", "config": <path>}``, written by ``calibflow kde`` before its tasks run."""


class TemplatePaths(NamedTuple):
    """The files of one template: keyed HDF5 and ROOT files, and the fixed-name HDF5 copy."""

    h5: str
    root: str
    latest: str


@dataclass(frozen=True)
class KdePlan:
    """Keys and paths of the KDE config at ``config_path`` (absolute) in ``result_dir`` (absolute)."""

    config_path: str
    result_dir: str

    @staticmethod
    def create(config_path: str | os.PathLike[str], result_dir: str | os.PathLike[str]) -> KdePlan:
        """The plan with absolute paths; loads and checks the config (ConfigError naming the key to fix)."""
        plan = KdePlan(os.path.abspath(config_path), os.path.abspath(result_dir))
        plan.check()
        return plan

    def check(self) -> None:
        """Fail early, with the key to fix (ConfigError, ExprError), on what would fail in a task: input globs
        matching nothing and expressions that do not parse."""
        from calibflow.config import ConfigError, located
        from calibflow.expr import ExprError

        cfg = self.config
        try:
            for name, source in cfg.templates.items():
                self.files(source.files)
                spec = source.spec
                for where, text in [*((f"axes.{a}.expr", ax.expr) for a, ax in spec.axes.items()),
                                    ("weight", spec.weight), ("alt_weight", spec.alt_weight),
                                    ("selection", spec.selection)]:
                    _parses(text, cfg.aliases, f"templates.{name}.spec.{where}")
            for name, c in cfg.closure.items():
                self.files(c.files)
                for where, text in [*((f"kinematics.{k}", e) for k, e in c.kinematics.items()), ("pid", c.pid),
                                    ("selection", c.selection)]:
                    _parses(text, cfg.aliases, f"closure.{name}.{where}")
        except (ConfigError, ExprError) as exc:
            raise located(exc, self.config_path) from None

    @cached_property
    def config(self) -> KdeConfig:
        """The KDE config."""
        return load_kde_config(self.config_path)

    @property
    def run(self) -> Run:
        """No run modes (the task layer's failure records name the modes of a calibration run)."""
        return NO_RUN

    @property
    def workdir(self) -> str:
        """``<result_dir>/<name>``."""
        return os.path.join(self.result_dir, self.config.name)

    @property
    def work_dir(self) -> str:
        """``<workdir>/work``: the outputs as they are made; the published set mirrors it."""
        return os.path.join(self.workdir, WORK)

    def config_sha256(self) -> str:
        """SHA-256 of the config file's bytes."""
        with open(self.config_path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    # --- inputs -----------------------------------------------------------------------------------------
    def toy_files(self, toy: str) -> list[str]:
        """Paths of the files of toy ``toy``."""
        return [os.path.join(self.workdir, "toys", f"{toy}_{i}.root") for i in range(self.config.toys[toy].files)]

    def toys_of(self, entries: list[str]) -> list[str]:
        """The toy names among file entries ``entries``."""
        return [e[len(TOY_PREFIX):] for e in entries if e.startswith(TOY_PREFIX)]

    def files(self, entries: list[str]) -> list[str]:
        """The files of ``entries``: toys' files, and globs expanded relative to the config's folder, sorted."""
        from calibflow.config import ConfigError

        base = os.path.dirname(self.config_path)
        out: list[str] = []
        for entry in entries:
            if entry.startswith(TOY_PREFIX):
                out += self.toy_files(entry[len(TOY_PREFIX):])
                continue
            matches = sorted(glob.glob(entry if os.path.isabs(entry) else os.path.join(base, entry)))
            if not matches:
                raise ConfigError(f"{self.config_path}: files: nothing matches {entry!r}")
            out += matches
        return out

    def input_identity(self, entries: list[str]) -> list[Any]:
        """What the inputs of ``entries`` are, for content keys: a toy's spec (its files need not exist yet),
        or every matching file's path, size and modification time."""
        from calibflow.hashing import file_identity

        out: list[Any] = []
        for entry in entries:
            if entry.startswith(TOY_PREFIX):
                out.append(self.config.toys[entry[len(TOY_PREFIX):]].model_dump())
            else:
                out += [file_identity(f) for f in self.files([entry])]
        return out

    # --- keys and outputs -------------------------------------------------------------------------------
    def template_key(self, name: str) -> str:
        """Content key of template ``name``: its spec, tree, the aliases and its inputs' identities."""
        from calibflow.hashing import content_key

        source = self.config.templates[name]
        return content_key("kde-template", VERSION, source.spec.model_dump(), source.tree, self.config.aliases,
                           self.input_identity(source.files))

    def template_paths(self, name: str) -> TemplatePaths:
        """The keyed HDF5 and ROOT files of template ``name`` and its fixed-name copy."""
        folder = os.path.join(self.work_dir, "kde")
        stem = os.path.join(folder, f"{name}-{self.template_key(name)}")
        return TemplatePaths(f"{stem}.h5", f"{stem}.root", os.path.join(folder, f"{name}.h5"))

    def closure_templates(self, name: str) -> dict[str, str]:
        """The templates closure ``name`` uses: ``data`` and ``simulation`` -> template name."""
        c = self.config.closure[name]
        return {"data": c.data, "simulation": c.simulation}

    def closure_keys(self, name: str) -> dict[str, str]:
        """The keys of the templates closure ``name`` uses (recorded in its closure.json)."""
        return {k: self.template_key(t) for k, t in self.closure_templates(name).items()}

    def closure_dir(self, name: str) -> str:
        """``<workdir>/work/closure/<name>``."""
        return os.path.join(self.work_dir, "closure", name)

    def closure_paths(self, name: str) -> dict[str, str]:
        """Files of closure ``name``: ``csv``, ``json``, ``png`` (``closure.*``) and ``densities``
        (``densities.png``)."""
        folder = self.closure_dir(name)
        return {**{ext: os.path.join(folder, f"closure.{ext}") for ext in ("csv", "json", "png")},
                "densities": os.path.join(folder, "densities.png")}

    def report_key(self) -> str:
        """Content key of the report: every template key, the closures' and the config file's bytes."""
        from calibflow.hashing import content_key

        return content_key("kde-report", REPORT_VERSION, {n: self.template_key(n) for n in self.config.templates},
                           self.config.model_dump(), self.config_sha256())

    def report_paths(self) -> dict[str, str]:
        """``report.html`` and ``report.md`` in the work folder (published at the top of the set)."""
        return {k: os.path.join(self.work_dir, f) for k, f in (("html", "report.html"), ("md", "report.md"))}

    def intermediates(self) -> list[str]:
        """The checksummed files of the work folder (the templates' HDF5 files), for ``calibflow verify``."""
        return sorted(glob.glob(os.path.join(self.work_dir, "kde", "*.h5")))

    # --- one kind of config per folder ------------------------------------------------------------------
    def record(self) -> None:
        """Write :data:`RECORD` (this KDE config uses the workdir), unless it says so already."""
        from calibflow.io.jsonio import dump
        from calibflow.io.store import atomic_path

        path = os.path.join(self.work_dir, RECORD)
        if _read(path).get("config") != self.config_path:
            os.makedirs(self.work_dir, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "w") as f:
                dump({"kind": KIND, "config": self.config_path}, f)

    def check_kind(self) -> None:
        """ConfigError (one line, naming both configs) when the workdir holds a calibration's results:
        ``calibflow kde`` and ``calibflow run`` never share a folder."""
        from calibflow.config import ConfigError

        other = calibration_of(self.workdir)
        if other is not None:
            raise ConfigError(f"{self.config_path}: name {self.config.name!r} is taken: {self.workdir} holds the "
                              f"calibration results of {other} (calibflow run); give the KDE config another name or "
                              "use another --result-dir")


def _read(path: str) -> dict[str, Any]:
    """The JSON mapping at ``path`` ({} when missing or unreadable)."""
    import json

    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _published_manifest(workdir: str) -> dict[str, Any]:
    """The manifest.json of the set published under ``workdir`` (or of a folder of the layout before sets)."""
    from calibflow.export.publish import MANIFEST, published_dir

    return _read(os.path.join(published_dir(workdir) or workdir, MANIFEST))


def kde_config_of(workdir: str) -> str | None:
    """The KDE config whose outputs are under ``workdir`` (its published manifest, else :data:`RECORD`); None
    when none is. A folder published before sets by ``calibflow kde`` is told by its manifest's ``closure``."""
    manifest = _published_manifest(workdir)
    if manifest:
        kde = manifest.get("kind") == KIND or ("closure" in manifest and "config_sha256" not in manifest)
        return str(manifest.get("config")) if kde else None
    record = _read(os.path.join(workdir, WORK, RECORD))
    return str(record["config"]) if record.get("kind") == KIND and "config" in record else None


def calibration_of(workdir: str) -> str | None:
    """The calibration config whose results are under ``workdir`` (its published manifest, else the run file
    of its latest ``calibflow run``: ``runs/latest.json``); None when none is."""
    from calibflow.plan import LATEST_RUN, RUNS

    manifest = _published_manifest(workdir)
    if manifest:
        return None if kde_config_of(workdir) is not None else str(manifest.get("config") or "a calibration config")
    runs = os.path.join(workdir, RUNS)
    latest = _read(os.path.join(runs, LATEST_RUN)).get("run_file")
    if latest is None:
        return "a calibration config" if os.path.isdir(runs) else None
    return str(_read(os.path.join(runs, os.path.basename(str(latest)))).get("config", "a calibration config"))


def _parses(text: str | None, aliases: dict[str, str], where: str) -> None:
    """ConfigError naming ``where`` if the expression ``text`` (None: not given) does not parse."""
    from calibflow.config import ConfigError
    from calibflow.expr import ExprError, referenced_branches

    if text:
        try:
            referenced_branches([text], aliases)
        except ExprError as exc:
            raise ConfigError(f"{where}: {exc}") from None
