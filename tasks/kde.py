"""KDE templates, their closure and report as tasks (issue 19), from a KDE config (:mod:`calibflow.kde.config`);
keys and paths from :class:`calibflow.kde.plan.KdePlan`, run by ``calibflow kde`` (:func:`tasks.cli.cmd_kde`).

* ``GenerateKdeToy``: the files of one toy of the config (``<workdir>/toys/<name>_<i>.root``).
* ``BuildTemplates``: one keyed task per template (calibration sample, PID variable, data or simulation):
  ``<workdir>/work/kde/<name>-<key>.h5`` and its ROOT export (up to 3 axes), and a copy under the fixed name
  ``work/kde/<name>.h5`` for apply configs. A changed spec or input builds a new keyed file, an unchanged
  one is found complete.
* ``KdeClosure``: the cut-scan closure of one ``closure`` entry, ``<workdir>/work/closure/<name>/``, redone when a
  template it uses changes key.
* ``KdeReport``: ``work/report.html`` and ``report.md``, then every output published as one set under the workdir
  (:func:`calibflow.kde.report.publish_outputs`: ``kde/``, ``closure/``, ``report.html``, ``manifest.json`` as
  stable links into ``current``), requiring every template and closure; complete when the set of the current report
  key is published whole, so redone when any key or the config file changes or a published file is gone.

The tasks are :class:`tasks.base.CalibTask` s whose ``config`` is the KDE config and whose ``plan`` is its
:class:`~calibflow.kde.plan.KdePlan`: per-task logs under ``<workdir>/logs/``, one-line failure records for the
run summary, as in ``calibflow run``.
"""

from __future__ import annotations

import json
import shutil

import b2luigi
import luigi

from calibflow.kde.plan import KdePlan
from tasks.base import CalibTask, intact


class _KdeTask(CalibTask):
    name = b2luigi.Parameter(default="", description="toy, template or closure name in the KDE config")

    @property
    def plan(self) -> KdePlan:  # type: ignore[override]
        """Keys and paths of the KDE config."""
        return KdePlan(self.config, self.result_dir)

    def kde(self, family: type[_KdeTask], name: str) -> _KdeTask:
        """Task ``family`` of ``name`` in the same config and result folder."""
        return family(config=self.config, result_dir=self.result_dir, name=name)

    def toys(self, entries: list[str]) -> list[_KdeTask]:
        """The toy tasks of file entries ``entries``."""
        return [self.kde(GenerateKdeToy, t) for t in self.plan.toys_of(entries)]


class GenerateKdeToy(_KdeTask):
    """The files of toy ``name``."""

    def output(self) -> list[luigi.LocalTarget]:
        return [self.target(p) for p in self.plan.toy_files(self.name)]

    def run(self) -> None:
        from calibflow.kde.pipeline import write_toy

        write_toy(self.plan, self.name)


class BuildTemplates(_KdeTask):
    """Template ``name`` (nominal and variants), keyed by content."""

    def requires(self) -> list[_KdeTask]:
        return self.toys(self.plan.config.templates[self.name].files)

    def key(self) -> str:
        """Content key of the template (spec, tree, aliases, inputs)."""
        return self.plan.template_key(self.name)

    def output(self) -> dict[str, luigi.LocalTarget]:
        paths = self.plan.template_paths(self.name)
        return {"h5": self.target(paths.h5), "latest": self.target(paths.latest)}

    def complete(self) -> bool:
        """The keyed file is intact and the fixed-name copy is of this key."""
        import h5py

        paths = self.plan.template_paths(self.name)
        if not (intact(paths.h5) and intact(paths.latest)):
            return False
        try:
            with h5py.File(paths.latest, "r") as h5:
                return json.loads(h5.attrs["meta"]).get("key") == self.key()
        except (OSError, KeyError, ValueError):
            return False

    def run(self) -> None:
        from calibflow.io.store import atomic_path
        from calibflow.kde.pipeline import build_template_file

        build_template_file(self.plan, self.name)
        paths = self.plan.template_paths(self.name)
        with atomic_path(paths.latest) as tmp:
            shutil.copyfile(paths.h5, tmp)


class KdeClosure(_KdeTask):
    """The cut-scan closure ``name``: closure.csv, closure.json (pulls, rank correlations, template keys),
    closure.png and densities.png."""

    def requires(self) -> list[_KdeTask]:
        plan = self.plan
        templates = [self.kde(BuildTemplates, t) for t in plan.closure_templates(self.name).values()]
        return [*templates, *self.toys(plan.config.closure[self.name].files)]

    def output(self) -> dict[str, luigi.LocalTarget]:
        return {k: self.target(p) for k, p in self.plan.closure_paths(self.name).items()}

    def complete(self) -> bool:
        """Outputs intact and made from the current templates (their keys in closure.json)."""
        plan = self.plan
        paths = plan.closure_paths(self.name)
        if not all(intact(p) for p in paths.values()):
            return False
        with open(paths["json"]) as f:
            made = json.load(f).get("templates")
        return made == plan.closure_keys(self.name)

    def run(self) -> None:
        from calibflow.kde.pipeline import run_closure

        run_closure(self.plan, self.name)


class KdeReport(_KdeTask):
    """The report page of the config's outputs and their publication as one set (the top task of
    ``calibflow kde``)."""

    def requires(self) -> list[_KdeTask]:
        cfg = self.plan.config
        return [*(self.kde(BuildTemplates, t) for t in cfg.templates), *(self.kde(KdeClosure, c) for c in cfg.closure)]

    def output(self) -> dict[str, luigi.LocalTarget]:
        return {k: self.target(p) for k, p in self.plan.report_paths().items()}

    def complete(self) -> bool:
        """The set of the current report key is published, every file it lists there (a published file removed
        since publishes the set again, from the work folder; a removed template or closure is made again
        first)."""
        from calibflow.export.publish import is_published

        plan = self.plan
        return is_published(plan.workdir, plan.report_key()) and all(t.complete() for t in self.requires())

    def run(self) -> None:
        from calibflow.kde.report import publish_outputs

        publish_outputs(self.plan)
