"""The ``calibflow`` command: ``run`` a calibration, ``fit-bin`` to refit one bin alone."""

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
    run.add_argument("--workers", type=int, default=1, help="parallel local workers (default 1)")
    run.add_argument("--result-dir", help="result folder (default: result_dir of settings.json, else results)")
    fb = sub.add_parser("fit-bin", help="refit one bin alone (the binning must exist: run first)")
    fb.add_argument("config", help="calibration YAML")
    fb.add_argument("--bin", type=int, required=True, dest="bin_index", help="bin index (see efficiencies.csv)")
    fb.add_argument("--sample", action="append", help="sample(s) to refit (default: all)")
    fb.add_argument("--result-dir", help="result folder")
    return p


def _plan(config: str | None, result_dir: str | None):
    from calibflow.plan import Plan

    return Plan.create(config or default_config(), result_dir or default_result_dir())


def _build(tasks: list, workers: int) -> tuple[bool, dict[str, set]]:
    import luigi
    from luigi.execution_summary import _summary_dict

    result = luigi.build(tasks, workers=workers, local_scheduler=True, detailed_summary=True, log_level="WARNING")
    summary = _summary_dict(result.worker)
    ok = not (summary["failed"] or summary["scheduling_error"] or summary["still_pending_ext"]
              or summary["still_pending_not_ext"] or summary.get("upstream_failure"))
    return ok, summary


def _report_failures(plan, summary: dict[str, set]) -> None:
    from tasks.base import failure_reason

    failed = summary["failed"] | summary["scheduling_error"]
    for t in sorted(failed, key=str):
        print(f"  FAILED {t.task_family}: {failure_reason(plan, t)}", file=sys.stderr)
    pending = summary["still_pending_ext"] | summary["still_pending_not_ext"]
    if pending:
        print(f"  {len(pending)} task(s) not run because of the failures above", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the whole task graph and print where the outputs are."""
    from tasks import ExportTables

    plan = _plan(args.config, args.result_dir)
    t0 = time.perf_counter()
    ok, summary = _build([ExportTables(config=plan.config_path, result_dir=plan.result_dir)], args.workers)
    ran, reused = len(summary["completed"]), len(summary["already_done"])
    print(f"calibflow: {plan.config.name}: {ran} task(s) run, {reused} reused, {time.perf_counter() - t0:.1f} s")
    if not ok:
        _report_failures(plan, summary)
        return 1
    with open(os.path.join(plan.workdir, "manifest.json")) as f:
        manifest = json.load(f)
    print(f"outputs in {plan.workdir}:")
    for rel in manifest["files"]:
        print(f"  {rel}")
    return 0


def cmd_fit_bin(args: argparse.Namespace) -> int:
    """Refit one bin of the given samples, replacing its cached result."""
    from tasks import FitBin

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
    ok, summary = _build(tasks, 1)
    if not ok:
        _report_failures(plan, summary)
        return 1
    for t in tasks:
        with open(t.output().path) as f:
            r = json.load(f)
        print(f"{t.sample} bin {args.bin_index} ({r['bin']}): efficiency {r['efficiency']:.5f} "
              f"-{r['err_down']:.5f} +{r['err_up']:.5f} [{r['status']}]")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for a bad config or expression, 1 for failed tasks)."""
    args = _parser().parse_args(argv)
    logging.getLogger("luigi-interface").setLevel(logging.WARNING)
    try:
        return {"run": cmd_run, "fit-bin": cmd_fit_bin}[args.command](args)
    except (ConfigError, ExprError) as exc:
        print(f"calibflow: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
