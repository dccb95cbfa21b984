"""KDE templates and their closure as tasks (issue 19), from a KDE config (:mod:`calibflow.kde.pipeline`).

* ``GenerateKdeToy``: the files of one toy of the config (``<out_dir>/toys/<name>_<i>.root``).
* ``BuildTemplates``: one keyed task per template (calibration sample, PID variable, data or simulation):
  ``<out_dir>/kde/<name>-<key>.h5`` and its ROOT export (up to 3 axes), and a copy under the fixed name
  ``<out_dir>/kde/<name>.h5`` for apply configs. The key (:func:`calibflow.kde.pipeline.template_key`) covers
  the spec, tree, aliases and the inputs (toy specs, or the files' path, size and mtime): a changed spec or
  input builds a new file, an unchanged one is found complete.
* ``KdeClosure``: the cut-scan closure of one ``closure`` entry, ``<out_dir>/closure/<name>/closure.*``.

``python -m tasks.kde CONFIG --output-dir DIR`` runs every closure (or every template when there is none).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import TYPE_CHECKING

import b2luigi
import luigi

if TYPE_CHECKING:
    from calibflow.kde.pipeline import KdeConfig


class _KdeTask(b2luigi.Task):
    kde_config = b2luigi.Parameter(description="absolute path of the KDE config YAML")
    name = b2luigi.Parameter(description="toy, template or closure name in the config")
    out_dir = b2luigi.Parameter(description="absolute path of the output folder")

    @property
    def cfg(self) -> KdeConfig:
        """The KDE config (read at each use: tasks are rebuilt from parameters)."""
        from calibflow.kde.pipeline import load_kde_config

        return load_kde_config(self.kde_config)


class GenerateKdeToy(_KdeTask):
    """The files of toy ``name``."""

    def output(self) -> list[luigi.LocalTarget]:
        from calibflow.kde.pipeline import toy_files

        return [luigi.LocalTarget(p) for p in toy_files(self.out_dir, self.name, self.cfg.toys[self.name])]

    def run(self) -> None:
        from calibflow.kde.pipeline import write_toy

        write_toy(self.out_dir, self.name, self.cfg.toys[self.name])


class BuildTemplates(_KdeTask):
    """Template ``name`` (nominal and variants), keyed by content."""

    def requires(self) -> list[GenerateKdeToy]:
        from calibflow.kde.pipeline import TOY_PREFIX

        files = self.cfg.templates[self.name].files
        return [GenerateKdeToy(kde_config=self.kde_config, name=f[len(TOY_PREFIX):], out_dir=self.out_dir)
                for f in files if f.startswith(TOY_PREFIX)]

    def key(self) -> str:
        """Content key of the template (spec, aliases, inputs)."""
        from calibflow.kde.pipeline import template_key

        return template_key(self.kde_config, self.cfg, self.name)

    def paths(self) -> dict[str, str]:
        """Keyed HDF5 and ROOT files, and the fixed-name HDF5 copy."""
        folder = os.path.join(self.out_dir, "kde")
        stem = os.path.join(folder, f"{self.name}-{self.key()}")
        return {"h5": f"{stem}.h5", "root": f"{stem}.root", "latest": os.path.join(folder, f"{self.name}.h5")}

    def output(self) -> dict[str, luigi.LocalTarget]:
        return {k: luigi.LocalTarget(v) for k, v in self.paths().items() if k != "root"}

    def complete(self) -> bool:
        """The keyed file exists and the fixed-name copy is of this key."""
        import h5py

        paths = self.paths()
        if not (os.path.exists(paths["h5"]) and os.path.exists(paths["latest"])):
            return False
        try:
            with h5py.File(paths["latest"], "r") as h5:
                return json.loads(h5.attrs["meta"]).get("key") == self.key()
        except (OSError, KeyError, ValueError):
            return False

    def run(self) -> None:
        from calibflow.io.store import atomic_path
        from calibflow.kde.pipeline import build_template_file

        paths = self.paths()
        build_template_file(self.kde_config, self.name, self.out_dir, paths["h5"], paths["root"])
        with atomic_path(paths["latest"]) as tmp:
            shutil.copyfile(paths["h5"], tmp)


class KdeClosure(_KdeTask):
    """The cut-scan closure ``name``: closure.csv, closure.json (pulls, rank correlations), closure.png."""

    def _templates(self) -> dict[str, BuildTemplates]:
        c = self.cfg.closure[self.name]
        return {k: BuildTemplates(kde_config=self.kde_config, name=getattr(c, k), out_dir=self.out_dir)
                for k in ("data", "simulation")}

    def requires(self) -> list[b2luigi.Task]:
        from calibflow.kde.pipeline import TOY_PREFIX

        toys = [GenerateKdeToy(kde_config=self.kde_config, name=f[len(TOY_PREFIX):], out_dir=self.out_dir)
                for f in self.cfg.closure[self.name].files if f.startswith(TOY_PREFIX)]
        return [*self._templates().values(), *toys]

    def folder(self) -> str:
        """Output folder of this closure."""
        return os.path.join(self.out_dir, "closure", self.name)

    def output(self) -> dict[str, luigi.LocalTarget]:
        return {ext: luigi.LocalTarget(os.path.join(self.folder(), f"closure.{ext}")) for ext in ("csv", "json", "png")}

    def complete(self) -> bool:
        """Outputs exist and were made from the current templates (their keys in closure.json)."""
        path = os.path.join(self.folder(), "closure.json")
        if not all(os.path.exists(t.path) for t in self.output().values()):
            return False
        with open(path) as f:
            made = json.load(f).get("templates")
        return made == {k: t.key() for k, t in self._templates().items()}

    def run(self) -> None:
        from calibflow.io.store import atomic_path
        from calibflow.kde.pipeline import run_closure

        templates = self._templates()
        result = run_closure(self.kde_config, self.name, self.out_dir, templates["data"].paths()["h5"],
                             templates["simulation"].paths()["h5"], self.folder())
        path = os.path.join(self.folder(), "closure.json")
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            json.dump({**result, "templates": {k: t.key() for k, t in templates.items()}}, f, indent=1, sort_keys=True)


def main(argv: list[str] | None = None) -> int:
    """Build the templates and closures of a KDE config; print each closure's summary."""
    ap = argparse.ArgumentParser(prog="python -m tasks.kde", description=main.__doc__)
    ap.add_argument("config")
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    from calibflow.kde.pipeline import load_kde_config

    config, out = os.path.abspath(args.config), os.path.abspath(args.output_dir)
    cfg = load_kde_config(config)
    common = {"kde_config": config, "out_dir": out}
    tasks = ([KdeClosure(name=n, **common) for n in cfg.closure] if cfg.closure
             else [BuildTemplates(name=n, **common) for n in cfg.templates])
    ok = luigi.build(tasks, local_scheduler=True, workers=args.workers, log_level="WARNING")
    for t in tasks:
        if isinstance(t, KdeClosure) and t.complete():
            with open(os.path.join(t.folder(), "closure.json")) as f:
                print(t.name, json.dumps(json.load(f)["summary"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
