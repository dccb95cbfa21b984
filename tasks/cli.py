"""The ``calibflow`` command: ``run`` a calibration, ``fit-bin`` to refit one bin alone, and the operations
commands ``scheduler start|stop|status`` (a user's luigid) and ``status`` (task states per stage)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from importlib import resources

from calibflow.config import ConfigError
from calibflow.expr import ExprError
from calibflow.ops.scheduler import DEFAULT_HOST, DEFAULT_PORT, SetupError

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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="calibflow", description="Efficiency and data/MC correction tables.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a calibration (default: the demo toy)")
    run.add_argument("config", nargs="?", help=f"calibration YAML (default {DEFAULT_CONFIG})")
    run.add_argument("--workers", type=int, help="parallel local workers (default: the number of cores), or batch jobs in flight "
                     f"with --batch (default {BATCH_WORKERS})")
    run.add_argument("--result-dir", help="result folder (default: result_dir of settings.json, else results)")
    _scheduler_args(run)
    run.add_argument("--batch", action="store_true",
                     help="submit every task as a job of settings.json's batch_system (slurm, htcondor, lsf)")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the published results of another config with the same name")
    run.add_argument("--skip-bad-files", action="store_true",
                     help="leave out input files that cannot be read (listed in excluded_files.txt and in the "
                     "master table) instead of failing; a run without it retries them")
    fb = sub.add_parser("fit-bin", help="refit one bin alone (the binning must exist: run first)")
    fb.add_argument("config", help="calibration YAML")
    fb.add_argument("--bin", type=int, required=True, dest="bin_index", help="bin index (see efficiencies.csv)")
    fb.add_argument("--sample", action="append", help="sample(s) to refit (default: all)")
    fb.add_argument("--result-dir", help="result folder")
    sch = sub.add_parser("scheduler", help="start, stop or check a central luigi scheduler (luigid) on localhost")
    sch.add_argument("action", choices=["start", "stop", "status"])
    sch.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to start on (default {DEFAULT_PORT})")
    sch.add_argument("--state-dir", help="pid file, state and logs (default $CALIBFLOW_STATE_DIR, else "
                     "~/.calibflow/luigid)")
    st = sub.add_parser("status", help="task states per stage, from a central scheduler")
    st.add_argument("config", nargs="?", help="only the tasks of this calibration (default: every task)")
    st.add_argument("--result-dir", help="result folder of that calibration")
    _scheduler_args(st)
    ap = sub.add_parser("apply", help="add correction weight columns (nominal and variations) to tuples")
    ap.add_argument("apply_config", help="apply YAML: tree and ordered calibrator steps")
    ap.add_argument("inputs", nargs="+", help="ROOT or HDF5 tuples")
    ap.add_argument("--output-dir", required=True, help="folder for the output copies")
    ap.add_argument("--data", action="store_true", help="inputs are data: skip simulation-only steps")
    return p


BATCH_WORKERS = 100


def _scheduler_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheduler-host", help=f"central luigi scheduler host (default {DEFAULT_HOST} "
                   "when --scheduler-port is given)")
    p.add_argument("--scheduler-port", type=int, help=f"central scheduler port (default {DEFAULT_PORT} "
                   "when --scheduler-host is given)")


def _scheduler(args: argparse.Namespace, required: bool = False):
    """The central scheduler named by --scheduler-host/--port (checked to answer), else None."""
    from calibflow.ops.scheduler import check_port, ping
    from tasks.runner import SchedulerAddress

    if args.scheduler_host is None and args.scheduler_port is None and not required:
        return None
    address = SchedulerAddress(args.scheduler_host or DEFAULT_HOST, check_port(args.scheduler_port or DEFAULT_PORT))
    ping(address.host, address.port)
    return address


def _plan(config: str | None, result_dir: str | None):
    from calibflow.plan import Plan

    return Plan.create(config or default_config(), result_dir or default_result_dir())


def _report(name: str, report, seconds: float) -> None:
    print(f"calibflow: {name}: {report.summary()}, {seconds:.1f} s")
    for task_id, reason in report.failed:
        print(f"  FAILED {task_id}: {reason}", file=sys.stderr)
    if report.not_run:
        print(f"  {report.not_run} task(s) not run because of the failures above", file=sys.stderr)
    bad = [reason.removeprefix(BAD_FILE) for _, reason in report.failed if reason.startswith(BAD_FILE)]
    if bad:
        print(f"calibflow: {len(bad)} bad input file(s) (fix or remove them, or rerun with --skip-bad-files "
              "to leave them out):", file=sys.stderr)
        for line in bad:
            print(f"  {line}", file=sys.stderr)


BAD_FILE = "PrepError: "
"""Start of the failure reason of a tuple preparation that failed on a bad input file."""


def cmd_run(args: argparse.Namespace) -> int:
    """Run the whole task graph and print where the outputs are."""
    from tasks import ExportTables
    from tasks.runner import build

    if args.workers is not None and args.workers < 1:
        raise SetupError(f"--workers {args.workers}: give at least 1")
    workers = args.workers or (BATCH_WORKERS if args.batch else os.cpu_count() or 1)
    scheduler = _scheduler(args)
    plan = _plan(args.config, args.result_dir)
    if not args.overwrite:
        plan.check_name_free()
    t0 = time.perf_counter()
    plan.set_skip_bad_files(args.skip_bad_files)  # without the flag, files left out before are retried
    top = ExportTables(config=plan.config_path, result_dir=plan.result_dir)
    if not top.complete():
        plan.check_models()
        if not args.batch and workers > 1:
            from calibflow.ops.warmup import warm_up

            warm_up()  # forked workers start with the kernels loaded
    report = build(plan, [top], workers, scheduler=scheduler, batch_mode=args.batch,
                   progress=None if args.quiet else sys.stdout)
    _report(plan.config.name, report, time.perf_counter() - t0)
    if not report.ok:
        return 1
    with open(os.path.join(plan.workdir, "manifest.json")) as f:
        manifest = json.load(f)
    print(f"outputs in {plan.workdir}:")
    for rel in manifest["files"]:
        print(f"  {rel}")
    excluded = [e for entries in plan.excluded_files().values() for e in entries]
    if excluded:
        print(f"calibflow: {len(excluded)} bad input file(s) left out (--skip-bad-files), as excluded_files.txt says:")
        for e in excluded:
            print(f"  {e['reason']}")
    return 0


def cmd_fit_bin(args: argparse.Namespace) -> int:
    """Refit one bin of the given samples, replacing its cached result."""
    from tasks import FitBin
    from tasks.runner import build

    plan = _plan(args.config, args.result_dir)
    if not os.path.exists(plan.binning_path()):
        raise ConfigError(f"{plan.config_path}: no binning yet in {plan.workdir}; run 'calibflow run' first")
    n = len(plan.load_scheme())
    if not 0 <= args.bin_index < n:
        raise ConfigError(f"--bin {args.bin_index}: the binning has bins 0..{n - 1}")
    samples = args.sample or list(plan.config.samples)
    unknown = [s for s in samples if s not in plan.config.samples]
    if unknown:
        raise ConfigError(f"--sample {unknown[0]}: not a sample; samples are {', '.join(plan.config.samples)}")
    tasks = [FitBin(sample=s, bin_index=args.bin_index, config=plan.config_path, result_dir=plan.result_dir)
             for s in samples]
    for t in tasks:
        if os.path.exists(t.output().path):
            os.remove(t.output().path)
    t0 = time.perf_counter()
    report = build(plan, tasks, 1)
    _report(plan.config.name, report, time.perf_counter() - t0)
    if not report.ok:
        return 1
    for t in tasks:
        with open(t.output().path) as f:
            r = json.load(f)
        print(f"{t.sample} bin {args.bin_index} ({r['bin']}): efficiency {r['efficiency']:.5f} "
              f"-{r['err_down']:.5f} +{r['err_up']:.5f} [{r['status']}]")
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
    """Print pending/running/done/failed task counts per stage, from the central scheduler."""
    from calibflow.ops import status

    address = _scheduler(args, required=True)
    if args.config:
        plan = _plan(args.config, args.result_dir)
        tasks = status.calibration_graph(address.host, address.port, plan.config_path, plan.result_dir)
        what = f"calibration {plan.config.name}"
    else:
        tasks = status.all_tasks(address.host, address.port)
        what = "all calibrations"
    counts = status.count(tasks.values())
    print(f"scheduler http://{address.host}:{address.port}: {counts.total} task(s) of {what}")
    if counts.total:
        print(counts.table())
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    """Apply a calibrator sequence to every input; one line per output file."""
    from calibflow.apply import apply_to_file, load_apply_config

    cfg, seq = load_apply_config(args.apply_config)
    os.makedirs(args.output_dir, exist_ok=True)
    for src in args.inputs:
        if not os.path.exists(src):
            raise ConfigError(f"{src}: input file not found")
        stem, ext = os.path.splitext(os.path.basename(src))
        dst = os.path.join(args.output_dir, f"{stem}_calibrated{ext}")
        cols = apply_to_file(src, dst, cfg, seq, is_mc=not args.data)
        print(f"{dst}: added {len(cols)} column(s): {', '.join(cols)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for a bad config, expression or setup, 1 for failed tasks)."""
    args = _parser().parse_args(argv)
    logging.getLogger("luigi-interface").setLevel(logging.WARNING)
    commands = {"run": cmd_run, "fit-bin": cmd_fit_bin, "scheduler": cmd_scheduler, "status": cmd_status,
                "apply": cmd_apply}
    try:
        return commands[args.command](args)
    except (ConfigError, ExprError, SetupError) as exc:
        print(f"calibflow: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
