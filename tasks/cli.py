"""The ``calibflow`` command: ``run`` a calibration, ``fit-bin`` to refit one bin alone, ``inspect`` a ROOT
file, ``apply`` corrections, ``kde`` PID templates of a KDE config, and the operations commands ``scheduler
start|stop|status`` (a user's luigid), ``status`` (task states per stage) and ``verify`` (checksums of every
intermediate of a result folder); ``coverage`` checks the per-bin intervals with toys; ``merge`` puts the
calibrations of several eras and working points into one correction set (:mod:`calibflow.export.merge`)."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, NoReturn

from calibflow import __version__
from calibflow.config import ConfigError, located, suggestion
from calibflow.expr import ExprError
from calibflow.ops.scheduler import DEFAULT_HOST, DEFAULT_PORT, SetupError

if TYPE_CHECKING:
    from calibflow.plan import Plan
    from tasks.runner import SchedulerAddress

DEFAULT_CONFIG = os.path.join("task_configs", "demo.yaml")


def default_config() -> str:
    """``task_configs/demo.yaml`` in the current folder, else the copy shipped with the package."""
    if os.path.exists(DEFAULT_CONFIG):
        return DEFAULT_CONFIG
    return str(resources.files("calibflow") / "data" / "demo.yaml")


def default_result_dir() -> str:
    """``result_dir`` of b2luigi's settings.json (searched from the current folder up), else ``results``."""
    import b2luigi

    return str(b2luigi.get_setting("result_dir", default="results"))


EXIT_CODES = """exit codes:
  0  success
  1  a task failed (one line per failure, with its reason; tracebacks in the task logs)
  2  a bad config, command line or input file: one line naming the key or file to fix"""

EXAMPLES = """examples:
  the demo, a toy J/psi calibration (about a minute on 2 cores):
    calibflow run
  the trees, entries and branches of an input file, to write a config:
    calibflow inspect data/run1.root --filter 'probe_*'
  a calibration on 4 cores, leaving out input files that cannot be read:
    calibflow run task_configs/my.yaml --workers 4 --skip-bad-files
  a quick try of a new config on 2 files per sample, 10000 entries each (outputs marked LIMITED):
    calibflow run task_configs/my.yaml --limit 10000 --max-files 2
  what the result folder holds, per stage, and why anything failed (no scheduler needed):
    calibflow status task_configs/my.yaml
  check every intermediate of the result folder against its checksums (--repair removes corrupt ones):
    calibflow verify task_configs/my.yaml
  PID templates by kernel density estimation, their cut-scan closure and report (a KDE config):
    calibflow kde task_configs/kde/belle2_pid_resample.yaml
  the published calibrations of two eras (and their working points) in one correction set (docs/tables.md):
    calibflow merge merge_run3.yaml
  refit bin 12 of two samples after changing the fit model:
    calibflow fit-bin task_configs/my.yaml --bin 12 --sample data mc
  a central scheduler with a web UI, then a run that reports to it:
    calibflow scheduler start
    calibflow run task_configs/my.yaml --scheduler-port 8082"""


class _Parser(argparse.ArgumentParser):
    """argparse without abbreviated options (``--worker`` is not ``--workers``), with a did-you-mean for an
    unknown command, choice or option."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Print the usage and ``message`` with a did-you-mean, exit 2."""
        bad = re.search(r"invalid choice: '([^']*)'", message)
        if bad:
            choices = [c for a in self._actions if a.choices for c in a.choices]
            message += suggestion(bad.group(1), choices, None)
        super().error(message)

    def unrecognized(self, extra: Sequence[str]) -> NoReturn:
        """Error for arguments no option of this parser takes, with the option closest to the first one."""
        options = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        hints = [suggestion(e.split("=")[0], options, None) for e in extra if e.startswith("-")]
        self.error(f"unrecognized arguments: {' '.join(extra)}{next(filter(None, hints), '')}")


def _parser() -> _Parser:
    p = _Parser(prog="calibflow", epilog=f"{EXAMPLES}\n\n{EXIT_CODES}",
                description="Efficiency and data/MC correction tables from calibration samples.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run a calibration (default: the demo toy)", epilog=EXIT_CODES,
                         description="Run every task of a calibration not done yet, then list the outputs.")
    run.add_argument("config", nargs="?", metavar="CONFIG",
                     help=f"calibration YAML (default {DEFAULT_CONFIG})")
    run.add_argument("--workers", type=int, metavar="N", help="parallel local workers (default: the number "
                     f"of cores), or batch jobs in flight with --batch (default {BATCH_WORKERS})")
    run.add_argument("--result-dir", metavar="DIR",
                     help="result folder (default: result_dir of settings.json, else results)")
    _scheduler_args(run)
    run.add_argument("--batch", action="store_true",
                     help="submit every task as a job of settings.json's batch_system (slurm, htcondor, lsf)")
    run.add_argument("--quiet", action="store_true",
                     help="no progress (else a live bar on a terminal, one line per task otherwise)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the published results of another config with the same name")
    run.add_argument("--skip-bad-files", action="store_true",
                     help="leave out input files that cannot be read (listed in excluded_files.txt and in the "
                     "master table) instead of failing; a run without it retries them")
    run.add_argument("--limit", type=_positive, metavar="N",
                     help="quick try: read at most N entries of each input file (outputs marked LIMITED)")
    run.add_argument("--max-files", type=_positive, metavar="N",
                     help="quick try: only the first N input files of each sample (outputs marked LIMITED)")
    fb = sub.add_parser("fit-bin", help="refit one bin alone (the binning must exist: run first)",
                        epilog=EXIT_CODES)
    fb.add_argument("config", metavar="CONFIG", help="calibration YAML")
    fb.add_argument("--bin", type=int, required=True, dest="bin_index", metavar="ID",
                    help="bin index (see efficiencies.csv)")
    fb.add_argument("--sample", nargs="+", action="extend", metavar="NAME",
                    help="sample(s) to refit (default: all)")
    fb.add_argument("--result-dir", metavar="DIR", help="result folder")
    ins = sub.add_parser("inspect", epilog=EXIT_CODES,
                         help="trees, entries, branches with types and compression of a ROOT file")
    ins.add_argument("file", metavar="FILE", help="local ROOT file")
    ins.add_argument("--tree", metavar="T", help="only this tree (default: every tree)")
    ins.add_argument("--filter", metavar="GLOB", help="only branches matching this glob, e.g. 'probe_*'")
    ap = sub.add_parser("apply", help="add correction weight columns (nominal and variations) to tuples",
                        epilog=EXIT_CODES)
    ap.add_argument("apply_config", metavar="APPLY_CONFIG",
                    help="apply YAML: tree and ordered calibrator steps")
    ap.add_argument("inputs", nargs="+", metavar="TUPLE", help="ROOT or HDF5 tuples")
    ap.add_argument("--output-dir", required=True, metavar="DIR", help="folder for the output copies")
    ap.add_argument("--data", action="store_true", help="inputs are data: skip simulation-only steps")
    kde = sub.add_parser("kde", help="PID templates by kernel density estimation, their closure and report "
                         "(docs/kde.md)", epilog=EXIT_CODES,
                         description="Build the templates and closures of a KDE config not done yet, write "
                         "report.html, then list the outputs.")
    kde.add_argument("config", metavar="CONFIG", help="KDE config YAML (e.g. task_configs/kde/belle2_pid_resample.yaml)")
    kde.add_argument("--result-dir", metavar="DIR",
                     help="result folder (default: result_dir of settings.json, else results)")
    kde.add_argument("--workers", type=int, metavar="N", help="parallel local workers (default: the number of cores)")
    kde.add_argument("--quiet", action="store_true",
                     help="no progress (else a live bar on a terminal, one line per task otherwise)")
    sch = sub.add_parser("scheduler", help="start, stop or check a central luigi scheduler (luigid) on localhost")
    sch.add_argument("action", choices=["start", "stop", "status"])
    sch.add_argument("--port", type=int, default=DEFAULT_PORT, metavar="P",
                     help=f"port to start on (default {DEFAULT_PORT})")
    sch.add_argument("--state-dir", metavar="DIR", help="pid file, state and logs (default "
                     "$CALIBFLOW_STATE_DIR, else ~/.calibflow/luigid)")
    st = sub.add_parser("status", epilog=STATUS_EPILOG, help="task states per stage: from a central "
                        "scheduler, else from the result folder (outputs of the current keys, failures and why)")
    st.add_argument("config", nargs="?", metavar="CONFIG",
                    help="only the tasks of this calibration (default: every task of the scheduler)")
    st.add_argument("--result-dir", metavar="DIR", help="result folder of that calibration")
    _scheduler_args(st)
    vf = sub.add_parser("verify", epilog=VERIFY_EPILOG, help="check every intermediate of a result folder "
                        "against its checksums (and that the published files exist)")
    vf.add_argument("config", nargs="?", metavar="CONFIG",
                    help=f"calibration or KDE config YAML (default {DEFAULT_CONFIG})")
    vf.add_argument("--result-dir", metavar="DIR", help="result folder of that calibration")
    vf.add_argument("--repair", action="store_true",
                    help="remove the corrupt intermediates, so that the next run rebuilds them")
    cv = sub.add_parser("coverage", epilog=COVERAGE_EPILOG, help="coverage of the per-bin intervals: toys "
                        "from each bin's fitted model, refitted the same way (after run: reuses its fits)")
    cv.add_argument("config", metavar="CONFIG", help="calibration YAML")
    cv.add_argument("--toys", type=_positive, metavar="N", help="toys per bin (default: the config's "
                    "coverage.toys, else 100)")
    cv.add_argument("--seed", type=int, metavar="N", help="seed, combined with each bin's key (default: the "
                    "config's coverage.seed, else 1)")
    cv.add_argument("--workers", type=_positive, metavar="N", help="parallel local workers (default: the "
                    "number of cores)")
    cv.add_argument("--result-dir", metavar="DIR", help="result folder")
    cv.add_argument("--quiet", action="store_true", help="no progress")
    mg = sub.add_parser("merge", epilog=EXIT_CODES, help="eras and working points of published calibrations in "
                        "one correction set, with their luminosity-weighted combination and a consistency χ² "
                        "(docs/tables.md)")
    mg.add_argument("merge_config", metavar="MERGE_CONFIG", help="merge YAML: name, eras (result, lumi, run_range), "
                    "working_points")
    mg.add_argument("--result-dir", metavar="DIR", help="writes <DIR>/merged/<name>/ (default: result_dir of "
                    "settings.json, else results)")
    return p


BATCH_WORKERS = 100
STATUS_EPILOG = f"""\
With --scheduler-host/--scheduler-port, or a scheduler answering at {DEFAULT_HOST}:{DEFAULT_PORT} that knows
the calibration: the scheduler's pending/running/done/failed tasks. Otherwise, with CONFIG: what the result
folder holds for the current keys (outputs that exist, failed with the recorded reason, missing), in the
options of the latest 'calibflow run' (--skip-bad-files, --limit, --max-files).

{EXIT_CODES}"""


VERIFY_EPILOG = """\
Reads every byte of the intermediates under <result_dir>/<name>/ (prepared tuples, histograms, binning, fit
results, sPlot caches, tables): each HDF5 chunk against its Fletcher32 checksum, each JSON against its digest,
each table file against the SHA-256 its done marker holds; checks that the published files exist and hold the
bytes whose SHA-256 manifest.json records. A KDE config (calibflow kde): its templates' HDF5 files and its
published set. One line per corrupt or missing file.

exit codes:
  0  every intermediate intact (one line counting them)
  1  a corrupt intermediate (with --repair: removed, so that 'calibflow run' rebuilds it) or a missing
     published file
  2  a bad config or command line, or no result folder: one line saying what to fix"""


COVERAGE_EPILOG = """\
Per bin of every sample: N parametric toys from the fitted model with the observed yields (binomial toys for
counted bins), each measured as the bin was; coverage.csv (pull mean and width, coverage of the efficiency and
scale-factor intervals, failed toys, coverage_off), coverage.png and coverage.html in
<result_dir>/<name>/coverage/<key>/. Records are kept per bin: a rerun with the same N and seed refits nothing,
and with the config's coverage section (N and seed by default from it) 'calibflow run' has made them already.
Every method but yield (docs/fits.md, "Coverage").

exit codes:
  0  done (bins flagged coverage_off are results, not failures)
  1  a task failed (one line per failure)
  2  a bad config or command line, or no binning yet (run 'calibflow run' first)"""


def _positive(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"give a whole number of at least 1, not {text!r}")
    return value


def _scheduler_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheduler-host", metavar="H", help=f"central luigi scheduler host (default "
                   f"{DEFAULT_HOST} when --scheduler-port is given)")
    p.add_argument("--scheduler-port", type=int, metavar="P", help=f"central scheduler port (default "
                   f"{DEFAULT_PORT} when --scheduler-host is given)")


def _scheduler(args: argparse.Namespace) -> SchedulerAddress | None:
    """The central scheduler named by --scheduler-host/--port (checked to answer), else None."""
    from calibflow.ops.scheduler import check_port, ping
    from tasks.runner import SchedulerAddress

    if args.scheduler_host is None and args.scheduler_port is None:
        return None
    address = SchedulerAddress(args.scheduler_host or DEFAULT_HOST, check_port(args.scheduler_port or DEFAULT_PORT))
    ping(address.host, address.port)
    return address


def _plan(config: str | None, result_dir: str | None):
    from calibflow.plan import Plan

    return Plan.create(config or default_config(), result_dir or default_result_dir())


def _report(name: str, report, seconds: float) -> None:
    """The closing line of a run, then each failure (task label and reason) and where the logs are."""
    print(f"calibflow: {name}: {report.summary()}, {seconds:.1f} s")
    for label, note in getattr(report, "resubmitted", []):
        print(f"  RESUBMITTED {label}: {note}")
    for label, reason, bins in getattr(report, "tolerated", []):
        print(f"  TOLERATED {label}: {reason}; bins without a result: {', '.join(map(str, bins)) or 'none'} "
              "(resources.FitBin.tolerance; the next run retries them)")
    for label, reason in report.failed:
        print(f"  FAILED {label}: {reason}", file=sys.stderr)
    if report.not_run:
        print(f"  {report.not_run} task(s) not run because of the failures above", file=sys.stderr)
    if report.failed:
        print(f"  tracebacks in the task logs: {_shown(report.log_dir)}/<family>/", file=sys.stderr)
    bad = bad_files(report.failed)
    if bad:
        print(f"calibflow: {len(bad)} bad input file(s) (fix or remove them, or rerun with --skip-bad-files "
              "to leave them out):", file=sys.stderr)
        for line in bad:
            print(f"  {line}", file=sys.stderr)


def _shown(path: str) -> str:
    """``path`` relative to the current folder when inside it, else as given."""
    rel = os.path.relpath(path)
    return path if rel.startswith(os.pardir) else rel


def _fit_summary(plan: Plan) -> None:
    """Per variant and sample, the bins by result status (ok, flagged by reason, low statistics, failed)
    and the fit gallery: what exists, so also after a failed run."""
    from calibflow.tables.fitstatus import fit_status_counts

    counts = fit_status_counts(plan)
    if not counts:
        return
    print("bins per variant and sample (failed: no result):")
    width = max(len(f"{c.variant} {c.sample}") for c in counts)
    for c in counts:
        gallery = f"; gallery: {_shown(c.gallery)}" if c.gallery else ""
        print(f"  {f'{c.variant} {c.sample}:':<{width + 1}} {c.line()}{gallery}")


def _coverage_summary(plan: Plan) -> None:
    """With the config's ``coverage``: one line per sample and scale factor of the published tables' coverage."""
    from calibflow.export.coverage import folder_rows, verdicts

    if plan.config.coverage is None:
        return
    print("coverage of the ±1σ intervals by toys (coverage columns of the tables, report #coverage):")
    for line in verdicts(folder_rows(plan.workdir)):
        print(f"  {line}")


LISTED_PER_FOLDER = 30
"""A published folder with more files is one line of the closing list."""


def _listing(files: Sequence[str]) -> list[str]:
    """The published files (paths relative to the result folder), in order; a page's folder (one with an
    ``index.html``: a fit gallery, a figure per bin) as one line by its index, and any other folder of more
    than :data:`LISTED_PER_FOLDER` files as one line."""
    folders: dict[str, list[str]] = {}
    for rel in files:
        folders.setdefault(os.path.dirname(rel), []).append(rel)
    out: list[str] = []
    for rel in files:
        folder = os.path.dirname(rel)
        group = folders[folder]
        page = os.path.join(folder, "index.html") in group and len(group) > 1
        if not folder or (len(group) <= LISTED_PER_FOLDER and not page):
            out.append(rel)
        elif rel == group[0]:
            index = os.path.join(folder, "index.html")
            out.append(f"{index} and {len(group) - 1} more file(s)" if index in group
                       else f"{folder}/ ({len(group)} files)")
    return out


BAD_FILE = "PrepError: "
"""Start of the failure reason of a tuple preparation that failed on a bad input file."""


def bad_files(failed: Sequence[tuple[str, str]]) -> list[str]:
    """The bad input files among failed tasks (label, reason), one line each (``<file>: <problem>``), each
    file once: the preparations of several variants may fail on the same file."""
    lines: dict[str, str] = {}
    for _, reason in failed:
        if reason.startswith(BAD_FILE):
            line = reason.removeprefix(BAD_FILE)
            lines.setdefault(line.split(": ", 1)[0], line)
    return list(lines.values())


def cmd_run(args: argparse.Namespace) -> int:
    """Run the whole task graph and print where the outputs are."""
    from calibflow.export.publish import clear_stale
    from calibflow.plan import RunLimits
    from tasks import ExportTables
    from tasks.runner import build

    if args.workers is not None and args.workers < 1:
        raise SetupError(f"--workers {args.workers}: give at least 1")
    workers = args.workers or (BATCH_WORKERS if args.batch else os.cpu_count() or 1)
    scheduler = _scheduler(args)
    plan = _plan(args.config, args.result_dir)
    _check_not_kde(plan)
    if not args.overwrite:
        plan.check_name_free()
    t0 = time.perf_counter()
    # the input lists and modes of this run, fixed now for all its tasks (without --skip-bad-files, files left
    # out before are retried; without --limit/--max-files, a full run); other runs keep theirs
    plan = plan.start_run(args.skip_bad_files, RunLimits(args.limit, args.max_files), record=False)
    top = ExportTables(config=plan.config_path, result_dir=plan.result_dir, run_file=plan.run_file)
    done = top.complete()
    if not done:
        plan.check_inputs()  # the config against its inputs: one line and exit 2 before any task runs
    plan.record_run()  # the checks passed: the run file for the tasks (and status, fit-bin)
    report = build(plan, [top], workers, scheduler=scheduler, batch_mode=args.batch,
                   progress=None if args.quiet else sys.stdout)
    _report(plan.config.name, report, time.perf_counter() - t0)
    _fit_summary(plan)
    if not report.ok:
        _mark_stale(plan, report.failed)
        return 1
    clear_stale(plan.workdir)  # a run that re-exported nothing (its key was published) succeeded too
    with open(os.path.join(plan.workdir, "manifest.json")) as f:
        manifest = json.load(f)
    print(f"outputs in {plan.workdir}:")
    for line in _listing(manifest["files"]):
        print(f"  {line}")
    if plan.config.outputs.publish_to and not _copy_to_storage(plan):
        return 1
    _coverage_summary(plan)
    excluded = [e for entries in plan.excluded_files().values() for e in entries]
    if excluded:
        print(f"calibflow: {len(excluded)} bad input file(s) left out (--skip-bad-files), as excluded_files.txt says:")
        for e in excluded:
            print(f"  {e['reason']}")
    if plan.limits:
        print(f"calibflow: LIMITED: {plan.limits.note()} (LIMITED.txt, manifest.json, the report)")
    return 0


def _copy_to_storage(plan: Plan) -> bool:
    """Copy the published set to ``outputs.publish_to`` (relative to the config's folder) and say where; one
    line naming the storage and False when it cannot be written."""
    from calibflow.export.storage import copy_published

    dest = plan.config.outputs.publish_to or ""
    if "://" not in dest:
        dest = os.path.join(os.path.dirname(plan.config_path), os.path.expanduser(dest))
    try:
        where = copy_published(plan.workdir, dest, plan.config.name)
    except OSError as exc:
        print(f"calibflow: outputs.publish_to: {exc}", file=sys.stderr)
        return False
    print(f"published to {where}")
    return True


def _check_not_kde(plan: Plan) -> None:
    """ConfigError (one line, naming both configs) when ``plan``'s folder holds a KDE config's outputs:
    ``calibflow run`` and ``calibflow kde`` never share a folder (not even with --overwrite)."""
    from calibflow.kde.plan import kde_config_of

    other = kde_config_of(plan.workdir)
    if other is not None:
        raise ConfigError(f"{plan.config_path}: name {plan.config.name!r} is taken: {plan.workdir} holds the KDE "
                          f"outputs of {other} (calibflow kde); give this config another name or use another "
                          "--result-dir (--overwrite replaces only another calibration's results)")


def _mark_stale(plan: Plan, failed: Sequence[tuple[str, str]]) -> None:
    """After a failed run: mark the published files stale and say so (nothing is said when none exist)."""
    from calibflow.export.publish import STALE, mark_stale

    try:
        record = mark_stale(plan, failed)
    except OSError as exc:  # e.g. the disk that failed the run is still full: the failure is what matters
        print(f"calibflow: could not mark the published files of {_shown(plan.workdir)} stale: {exc.strerror or exc}"
              " (they are those of the last successful run, not of this config and inputs)", file=sys.stderr)
        return
    if record is not None:
        print(f"calibflow: {_shown(plan.workdir)} keeps the tables of the last successful run, marked stale "
              f"({STALE}, manifest.json, the report) until a run succeeds", file=sys.stderr)


def cmd_fit_bin(args: argparse.Namespace) -> int:
    """Refit one bin of the given samples, replacing its cached result."""
    from calibflow.io.jsonio import load_numbers
    from tasks import FitBin
    from tasks.runner import build

    plan = _plan(args.config, args.result_dir).in_latest_modes()  # a run with the modes of the latest
    if not os.path.exists(plan.binning_path()):
        raise ConfigError(f"{plan.config_path}: no binning yet in {plan.workdir}; run 'calibflow run' first")
    n = len(plan.load_scheme())
    if not 0 <= args.bin_index < n:
        raise ConfigError(f"{plan.config_path}: --bin {args.bin_index}: the binning has bins 0..{n - 1}")
    samples = list(dict.fromkeys(args.sample or plan.config.samples))
    unknown = [s for s in samples if s not in plan.config.samples]
    if unknown:
        raise ConfigError(f"{plan.config_path}: --sample {unknown[0]}: not a sample"
                          f"{suggestion(unknown[0], plan.config.samples, 'samples')}")
    plan.check_inputs()
    tasks = [FitBin(sample=s, bin_index=args.bin_index, config=plan.config_path, result_dir=plan.result_dir,
                    run_file=plan.run_file) for s in samples]
    for t in tasks:
        if os.path.exists(t.output().path):
            os.remove(t.output().path)
    t0 = time.perf_counter()
    report = build(plan, tasks, 1)
    _report(plan.config.name, report, time.perf_counter() - t0)
    if not report.ok:
        return 1
    for t in tasks:
        r = load_numbers(t.output().path)
        print(f"{t.sample} bin {args.bin_index} ({r['bin']}): efficiency {r['efficiency']:.5f} "
              f"-{r['err_down']:.5f} +{r['err_up']:.5f} [{r['status']}]")
    return 0


def cmd_coverage(args: argparse.Namespace) -> int:
    """Toys of every bin, refitted; the coverage table, figure and page; one line per sample."""
    from calibflow.config import CoverageConfig
    from calibflow.export.coverage import verdicts
    from calibflow.tables.rows import read_csv
    from tasks.coverage import CoverageTable
    from tasks.runner import build

    plan = _plan(args.config, args.result_dir).in_latest_modes()
    if not os.path.exists(plan.binning_path()):
        raise ConfigError(f"{plan.config_path}: no binning yet in {plan.workdir}; run 'calibflow run' first")
    plan.check_inputs()
    own = plan.config.coverage or CoverageConfig()  # the run's toys and seed: their records are shared
    top = CoverageTable(toys=args.toys or own.toys, seed=own.seed if args.seed is None else args.seed,
                        config=plan.config_path, result_dir=plan.result_dir, run_file=plan.run_file)
    workers = args.workers or os.cpu_count() or 1
    t0 = time.perf_counter()
    report = build(plan, [top], workers, progress=None if args.quiet else sys.stdout)
    _report(plan.config.name, report, time.perf_counter() - t0)
    if not report.ok:
        return 1
    for line in verdicts(read_csv(top.output().path)):
        print(f"  {line}")
    print(f"coverage in {_shown(os.path.dirname(top.output().path))}: coverage.csv, coverage.png, coverage.html")
    return 0


def cmd_scheduler(args: argparse.Namespace) -> int:
    """Start, stop or report the user's luigid (pid file, state and logs in the state folder)."""
    from calibflow.ops import scheduler

    if args.action == "start":
        srv = scheduler.start(args.port, args.state_dir)
        print(f"scheduler running at {srv.url} (pid {srv.pid}; web UI {srv.url}/; state in {srv.state_dir})")
    elif args.action == "stop":
        srv = scheduler.stop(args.state_dir)
        print(f"scheduler at {srv.url} (pid {srv.pid}) stopped; state saved in {srv.state_dir}")
    else:
        srv = scheduler.server(args.state_dir)
        if srv is None:
            print(f"no scheduler runs from {os.path.abspath(args.state_dir or scheduler.default_state_dir())}")
            return 1
        print(f"scheduler running at {srv.url} (pid {srv.pid}; state in {srv.state_dir})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print task counts per stage: pending/running/done/failed from a central scheduler (given, or answering
    at the default address and knowing the calibration), else the outputs of the result folder."""
    from calibflow.ops import status

    address = _scheduler(args)
    given = address is not None
    plan = _plan(args.config, args.result_dir) if args.config else None
    if plan is not None:  # the keys of the current inputs in the modes of the latest run (nothing written)
        plan = plan.in_latest_modes(record=False)
    address = address or _default_scheduler()
    if plan is None and address is None:
        raise SetupError(f"no luigi scheduler answers at {DEFAULT_HOST}:{DEFAULT_PORT}: name a config to "
                         "read its result folder, or give --scheduler-host/--scheduler-port")
    if plan is not None:
        tasks = {} if address is None else status.calibration_graph(
            address.host, address.port, plan.config_path, plan.result_dir)
        if not tasks and not given:  # no scheduler knows the calibration: its result folder
            return _folder_status(plan)
        what = f"calibration {plan.config.name}"
    else:
        tasks = status.all_tasks(address.host, address.port)
        what = "all calibrations"
    counts = status.count(tasks.values())
    print(f"scheduler http://{address.host}:{address.port}: {counts.total} task(s) of {what}")
    if counts.total:
        print(counts.table())
    if plan is not None:
        _published(plan)
    return 0


def _default_scheduler() -> SchedulerAddress | None:
    """The scheduler at the default address if one answers there (within a second), else None."""
    from calibflow.ops.scheduler import ping
    from tasks.runner import SchedulerAddress

    try:
        ping(DEFAULT_HOST, DEFAULT_PORT, timeout=1.0)
    except SetupError:
        return None
    return SchedulerAddress(DEFAULT_HOST, DEFAULT_PORT)


MAX_FAILURES_SHOWN = 20


def _folder_status(plan: Plan) -> int:
    """``calibflow status CONFIG`` without a scheduler: per stage the outputs of the current keys that exist,
    failed (with the reasons) or are missing, then what is published."""
    from tasks.state import folder_status

    state = folder_status(plan)
    limited = f" of a quick try ({plan.limits.text()})" if plan.limits else ""
    skipping = " leaving bad input files out (--skip-bad-files)" if plan.skips_bad_files else ""
    print(f"result folder {_shown(plan.workdir)} (no scheduler): outputs of the current keys{limited}{skipping}, "
          "per stage")
    print(state.counts.table())
    for family in state.unknown:
        print(f"{family}: not known until the binning exists")
    if state.failed:
        logs = _shown(os.path.join(plan.workdir, "logs"))
        print(f"failed ({len(state.failed)}; tracebacks in {logs}/<family>/):")
        for label, reason in state.failed[:MAX_FAILURES_SHOWN]:
            print(f"  {label}: {reason}")
        if len(state.failed) > MAX_FAILURES_SHOWN:
            print(f"  and {len(state.failed) - MAX_FAILURES_SHOWN} more")
    excluded = sum(len(v) for v in plan.excluded_files().values())
    if excluded:
        print(f"{excluded} input file(s) left out as bad (--skip-bad-files): counted as existing "
              "PrepareTuple outputs")
    _published(plan)
    return 0


def _published(plan: Plan) -> None:
    """One line on what ``plan``'s folder publishes (and whether it is the current key), then its marks."""
    from calibflow.export.publish import stale_state, stale_text
    from calibflow.plan import RunLimits

    try:
        with open(os.path.join(plan.workdir, "manifest.json")) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        print("published: nothing yet")
        return
    current = "the current key" if manifest.get("key") == plan.export_key() else "not the current key"
    print(f"published: key {manifest.get('key')} of {manifest.get('config')} ({current})")
    if manifest.get("limits"):
        print(f"LIMITED: {RunLimits.parse(manifest['limits']).note()}")
    stale = stale_state(plan.workdir)
    if stale:
        print(f"STALE: {stale_text(manifest, stale)}")


def cmd_verify(args: argparse.Namespace) -> int:
    """Check every intermediate of the calibration's result folder in full and that the published files
    exist; one line per corrupt or missing file (removed with --repair); exit 1 if there is any."""
    from calibflow.io.integrity import verify_folder
    from calibflow.kde.config import is_kde_config
    from calibflow.kde.plan import KdePlan

    kde = args.config is not None and is_kde_config(args.config)
    plan: Plan | KdePlan = (KdePlan.create(args.config, args.result_dir or default_result_dir()) if kde
                            else _plan(args.config, args.result_dir))
    command = "calibflow kde" if kde else "calibflow run"
    if not os.path.isdir(plan.workdir):
        raise SetupError(f"{plan.workdir}: no result folder of {plan.config.name}; run '{command}' first")
    checked, bad = 0, 0
    for path, exc in verify_folder(plan.workdir, plan.intermediates() if isinstance(plan, KdePlan) else None):
        checked += 1
        if exc is not None:
            bad += 1
            print(f"CORRUPT {_shown(path)}: {exc.reason}")
            if args.repair:
                os.remove(path)
    missing, changed = _published_problems(plan.workdir)
    for rel in missing:
        print(f"MISSING {_shown(os.path.join(plan.workdir, rel))}: listed in manifest.json")
    for rel in changed:
        print(f"CORRUPT {_shown(os.path.join(plan.workdir, rel))}: published file differs from its SHA-256 in "
              "manifest.json")
    name = plan.config.name
    if bad:
        fix = f"removed: '{command}' rebuilds them" if args.repair else "rerun with --repair to remove them"
        print(f"calibflow: {name}: {bad} of {checked} intermediate file(s) corrupt ({fix})")
    else:
        print(f"calibflow: {name}: {checked} intermediate file(s) intact")
    if missing or changed:
        current = os.path.join(plan.workdir, "current")
        if args.repair and os.path.islink(current):
            os.remove(current)  # nothing counts as published now: the next run publishes a new set
        fix = f"unpublished: '{command}' publishes them again" if args.repair else "rerun with --repair"
        print(f"calibflow: {name}: {len(missing)} published file(s) missing, {len(changed)} changed ({fix})")
    return 1 if bad or missing or changed else 0


def _published_problems(workdir: str) -> tuple[list[str], list[str]]:
    """The files the manifest of the published set lists that do not exist, and those whose SHA-256 differs
    from the manifest's (paths relative to ``workdir``)."""
    from calibflow.export.publish import SHA256, published_dir
    from calibflow.io.integrity import sha256_file

    folder = published_dir(workdir) or workdir
    try:
        with open(os.path.join(folder, "manifest.json")) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return [], []
    rel = {p: os.path.relpath(os.path.join(folder, p), workdir) for p in manifest.get("files", [])}
    missing = [rel[p] for p in rel if not os.path.isfile(os.path.join(folder, p))]
    digests = manifest.get(SHA256, {})
    changed = [rel.get(p, p) for p, d in sorted(digests.items())
               if os.path.isfile(os.path.join(folder, p)) and sha256_file(os.path.join(folder, p)) != d]
    return missing, changed


def cmd_apply(args: argparse.Namespace) -> int:
    """Apply a calibrator sequence to every input; one line per output file."""
    from calibflow.apply import apply_to_file, load_apply_config

    try:
        cfg, seq = load_apply_config(args.apply_config)
        os.makedirs(args.output_dir, exist_ok=True)
        for src in args.inputs:
            if not os.path.exists(src):
                raise ConfigError(f"{src}: input file not found")
            stem, ext = os.path.splitext(os.path.basename(src))
            dst = os.path.join(args.output_dir, f"{stem}_calibrated{ext}")
            cols = apply_to_file(src, dst, cfg, seq, is_mc=not args.data)
            print(f"{dst}: added {len(cols)} column(s): {', '.join(cols)}")
    except (ConfigError, ExprError) as exc:
        raise located(exc, args.apply_config) from None
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    """Merge the eras' published calibrations (:mod:`calibflow.export.merge`); one line per working point's χ²."""
    from calibflow.export.merge import merge

    try:
        out, files, totals = merge(args.merge_config, args.result_dir or default_result_dir())
    except (ConfigError, ExprError) as exc:
        raise located(exc, args.merge_config) from None
    for t in totals:
        print(f"{t['working_point']}: per-era consistency chi2/ndof = {t['chi2']:.1f}/{t['ndof']}, "
              f"p = {t['pvalue']:.3g}")
    print(f"outputs in {_shown(out)}:")
    for line in _listing([os.path.relpath(f, out) for f in files]):
        print(f"  {line}")
    return 0


def cmd_kde(args: argparse.Namespace) -> int:
    """Build the templates, closures and report of a KDE config (tasks/kde.py); print the closures' verdicts
    and the outputs."""
    from calibflow.kde.plan import KdePlan
    from tasks.kde import KdeReport
    from tasks.runner import build

    if args.workers is not None and args.workers < 1:
        raise SetupError(f"--workers {args.workers}: give at least 1")
    t0 = time.perf_counter()
    plan = KdePlan.create(args.config, args.result_dir or default_result_dir())
    plan.check_kind()  # a calibration's folder: one line, exit 2, before anything is written
    plan.record()
    top = KdeReport(config=plan.config_path, result_dir=plan.result_dir)
    report = build(plan, [top], args.workers or os.cpu_count() or 1, progress=None if args.quiet else sys.stdout)
    _report(plan.config.name, report, time.perf_counter() - t0)
    if not report.ok:
        return 1
    with open(os.path.join(plan.workdir, "manifest.json")) as f:  # the published set's
        manifest = json.load(f)
    for line in manifest.get("closure", []):
        print(f"closure {line}")
    print(f"outputs in {_shown(plan.workdir)}:")
    for line in _listing(manifest["files"]):
        print(f"  {line}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print the trees of a ROOT file, their entries and their branches with types and compression."""
    from calibflow.io.inspect import InputFileError, format_inspection, inspect_file

    try:
        trees = inspect_file(args.file, args.tree, args.filter)
    except InputFileError as exc:
        return _error(exc)
    print(format_inspection(args.file, trees, args.filter))
    return 0


def _error(exc: Exception) -> int:
    """Print ``exc`` as the one error line (a leading absolute path inside the current folder shortened to
    the relative one) and return exit code 2."""
    text = str(exc)
    path = re.match(r"(/[^:]*):", text)
    if path:
        text = _shown(path.group(1)) + text[path.end(1):]
    print(f"calibflow: error: {text}", file=sys.stderr)
    return 2


COMMANDS = {"run": cmd_run, "fit-bin": cmd_fit_bin, "inspect": cmd_inspect, "apply": cmd_apply, "kde": cmd_kde,
            "scheduler": cmd_scheduler, "status": cmd_status, "verify": cmd_verify, "coverage": cmd_coverage,
            "merge": cmd_merge}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace | None:
    """The parsed command line; None when there is no command (then the help is printed)."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        if extra:
            parser.unrecognized(extra)
        parser.print_help()
        return None
    if extra:
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        subparsers.choices[args.command].unrecognized(extra)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code: 0 success, 1 failed tasks, 2 a bad config, command line, input
    file or setup (one line; argparse's own errors too)."""
    try:
        args = _parse(argv)
    except SystemExit as exc:  # --help, --version, or a command-line error (2)
        return exc.code if isinstance(exc.code, int) else 2
    if args is None:
        return 0
    logging.getLogger("luigi-interface").setLevel(logging.WARNING)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, ExprError, SetupError) as exc:
        return _error(exc)
    except OSError as exc:  # outside any task (a task's own errors go to the run summary): e.g. a full disk
        where = f"{_shown(str(exc.filename))}: " if exc.filename else ""
        full = " (the disk is full: free space and rerun)" if exc.errno == errno.ENOSPC else ""
        return _error(SetupError(f"{where}{exc.strerror or exc}{full}"))


if __name__ == "__main__":
    sys.exit(main())
