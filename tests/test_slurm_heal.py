"""Batch without a shared file system and self-healing resubmission, on the single-node Slurm of
:mod:`tests.slurm_cluster` with memory enforcement (``JobAcctGatherParams=OverMemoryKill``: slurmd samples each
job's memory every second and kills a job over its ``--mem``; the cgroup plugins cannot run in this container).

One staged run (jobs work in folders of their own under ``batch_job_dir``, kept for inspection) has
``PrepareTuple`` jobs below their memory needs (killed, resubmitted ×1.5) and a running ``FitBin`` job cancelled
with ``scancel`` (resubmitted); it must complete with the tables of a local run. A task failing in its job (a
damaged input file) is not resubmitted. Tolerated FitBin failures are checked in a local run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from calibflow.config import TaskResources
from tasks import heal

from .conftest import small_demo_dict, tiny_demo_dict
from .slurm_cluster import Run, SlurmCluster, running_cluster, which

MEMORY_KILL = {
    "JobAcctGatherType": "jobacct_gather/linux",
    "JobAcctGatherParams": "OverMemoryKill",
    "JobAcctGatherFrequency": "task=1",
    "SelectTypeParameters": "CR_Core_Memory",
}
PREP_MB = 150
"""Below what a PrepareTuple job needs here (about 200 MB once imported, 240-340 MB while it reads): slurmd samples
every second and the job is over this limit from the middle of its imports to its end, so its first job is always
killed for its memory (at 230 MB a quick task could end before a sample caught it); the retries (225, 338, 507 MB)
reach what it needs."""


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A running single-node Slurm that kills jobs over their memory (skips without Slurm)."""
    with running_cluster(tmp_path_factory.mktemp("slurm"), MEMORY_KILL, memory_mb=4000) as cluster:
        yield cluster


def _calibflow(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tasks.cli", "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
    )


def _run(
    cluster: SlurmCluster,
    tmp: Path,
    config: dict,
    settings: dict,
    args: list[str],
    cancel: str = "",
    local: Path | None = None,
) -> tuple[Run, Run | None]:
    """``calibflow run`` of ``config`` with ``settings``; ``cancel``: scancel the first running job of that family;
    ``local``: meanwhile a local run (2 workers) of the same config into that result folder."""
    cfg = tmp / "config.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    (tmp / "settings.json").write_text(
        json.dumps({"batch_system": "slurm", "job_status_cache_ttl": 1, **settings})
    )
    env = {**cluster.env, "B2LUIGI_SETTINGS_JSON": str(tmp / "settings.json")}
    before = {j["JobId"] for j in cluster.jobs()}
    proc = _calibflow([str(cfg), *args], env, tmp)
    beside = _calibflow([str(cfg), "--workers", "2", "--result-dir", str(local)], env, tmp) if local else None
    while cancel and proc.poll() is None:
        running = [
            j for j in cluster.jobs() if j["JobName"] == f"calibflow-{cancel}" and j["JobState"] == "RUNNING"
        ]
        if running:
            subprocess.run([which("scancel"), running[0]["JobId"]], env=env, check=True)
            cancel = ""
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=600)
    jobs = sorted((j for j in cluster.jobs() if j["JobId"] not in before), key=lambda j: int(j["JobId"]))
    local_run = None
    if beside is not None:
        out, err = beside.communicate(timeout=600)
        local_run = Run(beside.returncode, out, err, [])
    return Run(proc.returncode, stdout, stderr, jobs), local_run


@dataclass
class Healed:
    """The staged run with a job killed for its memory and one cancelled, and a local run of the same config."""

    run: Run
    local: Run
    workdir: Path
    slurmd_log: Path


@pytest.fixture(scope="module")
def healed(slurm: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> Healed:
    tmp = tmp_path_factory.mktemp("heal")
    d = tiny_demo_dict()
    d["resources"] = {
        "default": {"memory_mb": 1000, "time_minutes": 10, "retries": 2},
        "PrepareTuple": {"memory_mb": PREP_MB, "retries": 4},
    }
    settings = {"batch_job_dir": str(tmp / "jobs"), "batch_keep_job_dir": True}
    args = ["--batch", "--result-dir", str(tmp / "res")]
    run, local = _run(slurm, tmp, d, settings, args, cancel="FitBin", local=tmp / "local")
    assert local is not None
    return Healed(run, local, tmp / "res" / d["name"], slurm.root / "slurmd.log")


def _family(run: Run, family: str) -> list[dict[str, str]]:
    return [j for j in run.jobs if j["JobName"] == f"calibflow-{family}"]


@pytest.mark.slow
def test_a_cancelled_job_is_resubmitted_and_the_run_completes(healed: Healed) -> None:
    run = healed.run
    assert run.returncode == 0, run.stdout + run.stderr
    fits = _family(run, "FitBin")
    victim = next(j for j in fits if j["JobState"] == "CANCELLED")
    assert re.search(
        rf"RESUBMITTED FitBin\([^)]*\): batch job {victim['JobId']} ended CANCELLED: resubmitted "
        r"\(retry 1 of 2, memory 1500 MB, time 15 min\)",
        run.stdout,
    ), run.stdout
    retry = [j for j in fits if int(j["JobId"]) > int(victim["JobId"]) and j["MinMemoryNode"] == "1500M"]
    assert [j["JobState"] for j in retry] == ["COMPLETED"] and retry[0]["TimeLimit"] == "00:15:00"
    assert {j["JobState"] for j in fits} == {"CANCELLED", "COMPLETED"}


@pytest.mark.slow
def test_a_job_over_its_memory_is_resubmitted_with_more_memory(healed: Healed) -> None:
    assert healed.run.returncode == 0
    per_task: dict[str, list[dict[str, str]]] = {}
    for j in _family(healed.run, "PrepareTuple"):
        per_task.setdefault(Path(j["StdOut"]).parent.name, []).append(j)
    assert max(len(jobs) for jobs in per_task.values()) >= 2
    killed = healed.slurmd_log.read_text()
    for task_id, jobs in per_task.items():
        memory = [int(j["MinMemoryNode"].removesuffix("M")) for j in jobs]
        assert memory == [
            heal.scaled(TaskResources(memory_mb=PREP_MB), k).memory_mb for k in range(len(jobs))
        ]
        for j in jobs[:-1]:  # slurmd killed it for its memory, and the summary says so
            assert j["JobState"] == "FAILED"
            assert re.search(rf"StepId={j['JobId']}\.batch exceeded memory limit", killed)
            assert (
                f"batch job {j['JobId']} ended FAILED, memory limit exceeded: resubmitted"
                in healed.run.stdout
            )
        # the last job ran the task to its end (one killed after its outputs were complete is not resubmitted)
        log = (healed.workdir / "logs" / "PrepareTuple" / f"{task_id}.log").read_text()
        assert " end PrepareTuple" in log[log.index(f"batch job {jobs[-1]['JobId']})") :]


@pytest.mark.slow
def test_staged_jobs_write_the_result_folder_only_through_the_copy_back(healed: Healed) -> None:
    workdir = healed.workdir
    records = [json.loads(p.read_text()) for p in workdir.glob("logs/batch/*/staged.json")]
    copied = {Path(p) for r in records for p in r["out"]}
    per_task: dict[str, list[dict[str, str]]] = {}
    for j in healed.run.jobs:
        per_task.setdefault(Path(j["StdOut"]).parent.name, []).append(j)
    recorded = {Path(p).parent.name for p in workdir.glob("logs/batch/*/staged.json")}
    # one record per task run to its end in a job: every completed job's, and a job killed by slurmd after its
    # copy-back (its outputs complete, so not resubmitted) has one too; a job killed before it ended copies nothing
    assert {t for t, jobs in per_task.items() if jobs[-1]["JobState"] == "COMPLETED"} <= recorded
    for task_id in recorded - {t for t, jobs in per_task.items() if jobs[-1]["JobState"] == "COMPLETED"}:
        last = per_task[task_id][-1]
        family = last["JobName"].removeprefix("calibflow-")
        log = (workdir / "logs" / family / f"{task_id}.log").read_text()
        assert last["JobState"] in ("FAILED", "CANCELLED")
        assert f" end {family}" in log[log.index(f"batch job {last['JobId']})") :]
    for r in records:  # each job worked in its own folder outside the result folder, which holds what it made
        folder = Path(r["job_dir"])
        assert folder.is_dir() and workdir not in folder.parents and folder.parent.name == "jobs"
        assert Path(r["out"][-1]).name == "result.json"
        assert all((folder / p.lstrip("/")).exists() for p in r["out"][:-1])
    # what the submitting process writes itself: the run files, the jobs' scripts and logs, and the published set
    # of ExportTables (which runs where the result folder is); every other file came back through a copy-back
    sealed = {
        d.parent / ln.split()[2]
        for d in workdir.glob("combined/*/tables.done")
        for ln in d.read_text().splitlines()[2:-1]
    }
    own = ("runs", "logs/batch", "logs/ExportTables", ".published", "combined")
    made = {p for p in workdir.rglob("*") if p.is_file() and not p.is_symlink() and p.parent != workdir}
    by_jobs = {p for p in made if not any(p.relative_to(workdir).as_posix().startswith(o) for o in own)}
    assert by_jobs | {s.resolve() for s in sealed} <= copied
    assert {"prep", "hists", "binning", "fits", "tables"} <= {
        p.relative_to(workdir).parts[0] for p in by_jobs
    }


@pytest.mark.slow
def test_staged_tables_equal_local_tables(healed: Healed) -> None:
    assert healed.local.returncode == 0, healed.local.stderr
    for name in ("efficiencies.csv", "scale_factors.csv", "corrections.json"):
        local = healed.workdir.parent.parent / "local" / healed.workdir.name / name
        assert (healed.workdir / name).read_bytes() == local.read_bytes(), name
    assert not list(healed.workdir.rglob("*.tmp-*"))


@pytest.mark.slow
def test_a_task_failing_in_its_job_is_not_resubmitted(
    slurm: SlurmCluster, corrupt_input_config: Path
) -> None:
    tmp = corrupt_input_config.parent
    d = yaml.safe_load(corrupt_input_config.read_text())
    for key in ("toy", "closure"):  # data only: the failing preparation is the run's only branch
        d.pop(key, None)
    del d["samples"]["mc"]
    d["resources"] = {"default": {"memory_mb": 1000, "retries": 2}}
    run, _ = _run(slurm, tmp, d, {}, ["--batch", "--result-dir", str(tmp / "res")])
    assert run.returncode == 1, run.stdout + run.stderr
    assert re.search(
        r"FAILED PrepareTuple\(sample=data, index=0\): PrepError: .*data_damaged\.root", run.stderr
    )
    assert [j["JobState"] for j in _family(run, "PrepareTuple")].count("FAILED") == 1
    assert "RESUBMITTED" not in run.stdout


def test_retry_resources_grow_by_half_and_stop_at_four_times() -> None:
    res = TaskResources(memory_mb=1000, time_minutes=10, cpus=2)
    grown = [heal.scaled(res, k) for k in range(6)]
    assert [r.memory_mb for r in grown] == [1000, 1500, 2250, 3375, 4000, 4000]
    assert [r.time_minutes for r in grown] == [10, 15, 23, 34, 40, 40] and {r.cpus for r in grown} == {2}
    assert heal.scaled(TaskResources(), 3) == TaskResources()  # the site's defaults stay the site's


@pytest.mark.parametrize(
    ("state", "result", "complete", "oom", "why"),
    [
        ("CANCELLED", None, False, False, "CANCELLED"),
        ("NODE_FAIL", None, False, False, "NODE_FAIL"),
        ("TIMEOUT", None, False, False, "TIMEOUT"),
        ("OUT_OF_MEMORY", None, False, False, "OUT_OF_MEMORY"),
        ("PREEMPTED", None, False, False, "PREEMPTED"),
        ("FAILED", None, False, True, "FAILED, memory limit exceeded"),
        ("FAILED", None, False, False, "FAILED, no result.json"),
        (
            "FAILED",
            {"status": "FAILED"},
            False,
            False,
            None,
        ),  # a Python exception in the task: not resubmitted
        ("CANCELLED", None, True, False, None),  # its outputs are complete: never resubmitted
        ("COMPLETED", {"status": "PENDING"}, False, False, None),  # it yielded tasks
    ],
)
def test_infrastructure_failures_are_told_from_the_tasks_own(
    state: str, result: dict | None, complete: bool, oom: bool, why: str | None
) -> None:
    assert heal.infrastructure_failure(state, result, lambda: complete, oom) == why


def test_job_environment_and_htcondor_file_transfer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``batch_env`` picks the jobs' Python; with ``batch_transfer`` HTCondor's submit file (b2luigi's own) sends
    the inputs' tar and brings back the outputs, and a job in a sandbox of its own (HTCondor's transfer done here
    by copying the two files) makes the task's outputs, which reach the result folder only when unpacked."""
    import shutil

    from b2luigi.batch.processes.htcondor import HTCondorProcess
    from b2luigi.batch.workers import BatchSystems
    from b2luigi.core.settings import with_new_settings

    from calibflow.plan import Plan
    from tasks import GenerateToys
    from tasks.batch import RESULT_FILE, configure_submission, job_command_args, job_executable, read_result
    from tasks.stage import INPUTS_TAR, OUTPUTS_TAR, prepare, receive

    assert job_executable({"venv": "/opt/cf"}) == ["/opt/cf/bin/python", "-m", "tasks.entry"]
    container = job_executable({"container": "/img/cf.sif", "binds": ["/data"]})
    assert container == [
        "apptainer",
        "exec",
        "--bind",
        "/data",
        "/img/cf.sif",
        "python3",
        "-m",
        "tasks.entry",
    ]
    settings = {"batch_system": "htcondor", "batch_transfer": True, "batch_env": {"venv": "/opt/cf"}}
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    monkeypatch.setenv("B2LUIGI_SETTINGS_JSON", str(tmp_path / "settings.json"))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_demo_dict(), sort_keys=False))
    plan = Plan.create(cfg, tmp_path / "res").start_run()
    task = GenerateToys(
        sample="data", index=0, config=plan.config_path, result_dir=plan.result_dir, run_file=plan.run_file
    )
    batch_dir = Path(task.get_task_file_dir())
    with with_new_settings():  # b2luigi's settings are process-wide
        configure_submission(BatchSystems.htcondor)
        batch_dir.mkdir(parents=True)
        submit = "\n".join(HTCondorProcess._create_submit_file_content(task))
        args = job_command_args(task)
    assert (
        f"transfer_input_files = {batch_dir / INPUTS_TAR}" in submit
        and "should_transfer_files = YES" in submit
    )
    assert f"transfer_output_files = {OUTPUTS_TAR},{RESULT_FILE}" in submit
    wrapper = (batch_dir / "executable_wrapper.sh").read_text()
    assert (
        "cd .\n" in wrapper and "exec /opt/cf/bin/python -m tasks.entry" in wrapper and "--transfer" in args
    )

    prepare(task, [], transfer=True)  # at submission
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    shutil.copy(batch_dir / INPUTS_TAR, sandbox)
    params = json.loads(args[args.index("--params") + 1].strip("'"))
    job = subprocess.run(
        [
            sys.executable,
            "-m",
            "tasks.entry",
            "--task-id",
            task.task_id,
            "--family",
            "GenerateToys",
            "--params",
            json.dumps(params),
            "--transfer",
        ],
        cwd=sandbox,
        capture_output=True,
        text=True,
    )
    assert job.returncode == 0, job.stderr
    assert not task.complete() and {p.name for p in sandbox.iterdir()} == {
        INPUTS_TAR,
        OUTPUTS_TAR,
        RESULT_FILE,
    }
    for name in (OUTPUTS_TAR, RESULT_FILE):
        shutil.copy(sandbox / name, batch_dir)
    written = receive(task)
    assert task.complete() and read_result(task)["status"] == "DONE"
    assert task.output().path in written and all(p.startswith(plan.workdir) for p in written)


def test_failed_fits_within_the_tolerance_leave_their_bins_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``resources.FitBin.tolerance`` a run completes without the bins of failed FitBin tasks and names them;
    a failure past the tolerance fails the run; the next run fits the missing bins and remakes the tables."""
    import calibflow.fit.measure
    from calibflow.plan import Plan
    from tasks import ExportTables
    from tasks.runner import build

    d = small_demo_dict()
    d["outputs"] = {"plots": False, "missing": "unity"}  # correctionlib needs a value in every bin
    d["resources"] = {"FitBin": {"bins_per_task": 1, "tolerance": 0.1}}  # 12 FitBin tasks: one may fail
    cfg = tmp_path / "small.yaml"
    cfg.write_text(yaml.safe_dump(d, sort_keys=False))
    real = calibflow.fit.measure.measure_bin
    failing = [0]

    def measure(method: str, *args, **kwargs):
        if method == "fit" and failing[0] > 0:  # the data fits (simulation is counted)
            failing[0] -= 1
            raise ValueError("broken bin")
        return real(method, *args, **kwargs)

    monkeypatch.setattr(calibflow.fit.measure, "measure_bin", measure)
    plan = Plan.create(cfg, tmp_path / "res").start_run()
    top = ExportTables(config=plan.config_path, result_dir=plan.result_dir, run_file=plan.run_file)
    failing[0] = 2  # one more than tolerated
    report = build(plan, [top], workers=1)  # in this process, so that the patch applies
    assert not report.ok and len(report.tolerated) == 1 and len(report.failed) == 1
    failing[0] = 1
    report = build(plan, [top], workers=1)
    assert report.ok, report.failed
    ((label, reason, bins),) = report.tolerated
    assert label.startswith("FitBin(sample=data, bin_index=") and "broken bin" in reason
    assert bins == [int(re.search(r"bin_index=(\d+)", label).group(1))]
    rows = (Path(plan.workdir) / "efficiencies.csv").read_text().splitlines()
    assert [r.split(",")[1] for r in rows if "missing" in r] == [str(bins[0])]
    again = build(plan, [top], workers=1)
    assert again.ok and not again.tolerated and again.ran["FitBin"] == 1 and again.ran["ExportTables"] == 1
    assert "missing" not in (Path(plan.workdir) / "efficiencies.csv").read_text()
