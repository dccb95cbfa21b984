"""Batch jobs without a shared file system: a job works in a folder of its own, never in the result folder.

Two ways, chosen in settings.json (docs/operations.md, "Batch without a shared filesystem"):

* ``batch_job_dir`` (Slurm, LSF; HTCondor too): the job makes a folder under that path on its node, copies
  the files its task reads from the result folder into it (:data:`STAGE_FILE`, listed by the submitting
  process), runs the task there and copies back what the task wrote or changed, each file atomically
  (a temporary, then a rename), the task's declared outputs last and ``result.json`` at the very end, so a
  task whose outputs exist has all of its files. :data:`COPIED_FILE` records what went in and came back.
* ``batch_transfer`` (HTCondor): the submitting process packs those files into :data:`INPUTS_TAR`, HTCondor's
  file transfer (b2luigi's ``transfer_files``) takes it to the job's sandbox and brings :data:`OUTPUTS_TAR` and
  ``result.json`` back into the task's batch folder, where the submitting process unpacks it the same way.

The job folder mirrors absolute paths (``<job folder>/<absolute path>``); tasks find their files through
:func:`local` (``CalibTask.plan``), so their ids, parameters and content keys are those of the result folder.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

import luigi

STAGE_FILE = "stage.json"
"""In the task's batch folder: the files (absolute paths) a job copies in, written at submission."""
COPIED_FILE = "staged.json"
"""In the task's batch folder: the job folder, the files copied in, back and removed (written by the job)."""
INPUTS_TAR = "inputs.tar"
OUTPUTS_TAR = "outputs.tar"
REMOVED_MEMBER = ".calibflow-removed.json"
"""Member of :data:`OUTPUTS_TAR` listing the staged-in files the task removed (e.g. a failure record)."""

_staged: tuple[str, tuple[str, ...]] | None = None
"""(job folder, path prefixes mapped into it) while a staged task runs in this process."""


def local(path: str) -> str:
    """Where ``path`` is for the task running in this process: inside the job folder while it is staged and
    ``path`` is under a staged prefix (the result folder; the config in transfer mode), else ``path``."""
    if _staged is None or not path:
        return path
    root, prefixes = _staged
    inside = any(path == p or path.startswith(p.rstrip(os.sep) + os.sep) for p in prefixes)
    return os.path.join(root, path.lstrip(os.sep)) if inside else path


def original(path: str) -> str:
    """The result-folder path of ``path`` in the job folder (inverse of :func:`local`); ``path`` if not in it."""
    if _staged is None or not _under(path, _staged[0]):
        return path
    return os.sep + os.path.relpath(path, _staged[0])


def _under(path: str, folder: str) -> bool:
    return os.path.commonpath([os.path.abspath(path), os.path.abspath(folder)]) == os.path.abspath(folder)


# --- submitting side ----------------------------------------------------------------------------------
def input_files(task: Any, dynamic: Iterable[luigi.Task] = ()) -> list[str]:
    """Absolute paths of the files a job of ``task`` reads from its result folder: the outputs of its
    requirements and of the ``dynamic`` dependencies it yielded in earlier jobs (with every file a ``*.done``
    marker seals: its folder), the run file, the binnings, its own log (appended to) and failure record (removed
    on success), the markers of tolerated failures and what else it reads (``task.extra_inputs()``)."""
    workdir = task.plan.workdir
    paths = set(_output_files([*luigi.task.flatten(task.requires()), *dynamic], workdir))
    paths.update(glob.glob(os.path.join(workdir, "binning", "*.json")))
    paths.update(glob.glob(os.path.join(workdir, "logs", "tolerated", "*")))
    paths.update(p for p in (task.run_file, getattr(task, "log_path", ""), task.failure_record_path()) if p)
    paths.update(task.extra_inputs())
    return sorted(p for p in paths if os.path.isfile(p) and _under(p, workdir) and ".tmp-" not in p)


def _output_files(tasks: Iterable[luigi.Task], workdir: str) -> list[str]:
    """The output files of ``tasks`` under ``workdir`` (a ``*.done`` marker: with the files of its folder)."""
    paths = []
    for dep in tasks:
        for target in luigi.task.flatten(dep.output()):
            paths.append(target.path)
            if target.path.endswith(".done"):
                paths.extend(glob.glob(os.path.join(os.path.dirname(target.path), "**", "*"), recursive=True))
    return [p for p in paths if os.path.isfile(p) and _under(p, workdir) and ".tmp-" not in p]


def prepare(task: Any, dynamic: Iterable[luigi.Task], transfer: bool) -> None:
    """Write what a staged job of ``task`` needs into its batch folder: :data:`STAGE_FILE`, and with ``transfer``
    :data:`INPUTS_TAR` (those files and the config, by absolute path)."""
    folder = task.get_task_file_dir()
    os.makedirs(folder, exist_ok=True)
    files = input_files(task, dynamic)
    _write_json(os.path.join(folder, STAGE_FILE), {"files": files})
    if transfer:
        with tarfile.open(os.path.join(folder, INPUTS_TAR), "w") as tar:
            for path in [*files, task.config]:
                tar.add(path, arcname=path.lstrip(os.sep))
    for stale in (COPIED_FILE, OUTPUTS_TAR):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(folder, stale))


def receive(task: Any) -> list[str]:
    """Unpack the :data:`OUTPUTS_TAR` an HTCondor job sent back into the result folder (each file atomically,
    in the job's order: outputs last), apply its removals; return the files written (none without a tar)."""
    tar_path = os.path.join(task.get_task_file_dir(), OUTPUTS_TAR)
    if not os.path.exists(tar_path):
        return []
    workdir = task.plan.workdir
    written = []
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            src = tar.extractfile(member)
            if src is None:
                continue
            if member.name == REMOVED_MEMBER:
                _remove(json.load(src), workdir)
                continue
            dst = os.sep + member.name
            if _under(dst, workdir):  # never outside the result folder, whatever the tar says
                _copy_atomic(src, dst)
                written.append(dst)
    os.remove(tar_path)
    return written


# --- job side -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def job_folder(task: Any, parent: str | None, transfer: bool, keep: bool) -> Iterator[str]:
    """A folder of this job's own (under ``parent``, environment variables expanded; the sandbox with
    ``transfer``), the current folder while the body runs, the task's result folder (and in transfer mode its
    config) mapped into it by :func:`local`; removed afterwards unless ``keep``."""
    global _staged
    base = os.getcwd() if transfer else os.path.expandvars(parent or tempfile.gettempdir())
    os.makedirs(base, exist_ok=True)
    root = tempfile.mkdtemp(prefix=f"calibflow-{task.task_family}-", dir=base)
    prefixes = (task.result_dir, task.config) if transfer else (task.result_dir,)
    cwd = os.getcwd()
    os.chdir(root)
    _staged = (root, prefixes)
    try:
        yield root
    finally:
        _staged = None
        os.chdir(cwd)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def stage_in(task: Any, transfer: bool) -> dict[str, tuple[int, int]]:
    """Bring the task's inputs into the job folder (from the sandbox's :data:`INPUTS_TAR`, else by copying the
    files :data:`STAGE_FILE` lists); return each staged file's (size, mtime in ns) in the job folder."""
    assert _staged is not None
    root = _staged[0]
    if transfer:
        with tarfile.open(os.path.join(os.path.dirname(root), INPUTS_TAR)) as tar:
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12
            tar.extractall(root, **safe)
            files = [os.sep + m.name for m in tar.getmembers() if m.isfile()]
    else:
        with open(os.path.join(original(task.get_log_file_dir()), STAGE_FILE)) as f:
            files = json.load(f)["files"]
        for path in files:
            os.makedirs(os.path.dirname(local(path)), exist_ok=True)
            shutil.copy2(path, local(path))
    return {p: _identity(local(p)) for p in files if os.path.exists(local(p))}


def stage_finished(task: Any, new_deps: list[Any]) -> dict[str, tuple[int, int]]:
    """Copy mode: when every task the staged ``task`` just yielded (``new_deps``, as luigi reports them) is complete
    in the result folder, copy their outputs in (the task can then go on in this job instead of a new one) and
    return their identities in the job folder; else (or none yielded) copy nothing and return {}."""
    global _staged
    assert _staged is not None
    deps = [luigi.task_register.load_task(module, family, params) for module, family, params in new_deps]
    saved, _staged = _staged, None  # the result folder's view
    try:
        ready = bool(deps) and all(d.complete() for d in deps)
        files = _output_files(deps, task.plan.workdir) if ready else []
    finally:
        _staged = saved
    for path in files:
        os.makedirs(os.path.dirname(local(path)), exist_ok=True)
        shutil.copy2(path, local(path))
    return {p: _identity(local(p)) for p in files}


def send_back(
    task: Any, staged: dict[str, tuple[int, int]], result: str, transfer: bool
) -> dict[str, list[str]]:
    """Send back what the task wrote or changed under its result folder (in the job folder) and the staged-in files
    it removed: copied back atomically (``transfer``: packed into :data:`OUTPUTS_TAR` in the sandbox, with
    ``result.json`` beside it) in the order other files, declared outputs, ``result`` (the job's result file)
    last. Returns the record written to :data:`COPIED_FILE`: ``in``, ``out``, ``removed`` (absolute paths)."""
    assert _staged is not None
    root = _staged[0]
    workdir = task.plan.workdir  # in the job folder
    staged_from = {local(p): p for p in staged}
    outputs = {t.path for t in luigi.task.flatten(task.output())}
    changed = []
    for dirpath, _, names in os.walk(workdir):
        for name in names:
            path = os.path.join(dirpath, name)
            if ".tmp-" in name or path == result or staged.get(staged_from.get(path, "")) == _identity(path):
                continue
            changed.append(path)
    changed.sort(key=lambda p: (p in outputs, p))
    changed.append(result)
    removed = sorted(p for p in staged if not os.path.exists(local(p)))
    back = [original(p) for p in changed]
    record = {"job_dir": root, "in": sorted(staged), "out": back, "removed": removed}
    if transfer:
        sandbox = os.path.dirname(root)
        with tarfile.open(os.path.join(sandbox, OUTPUTS_TAR), "w") as tar:
            _add_json(tar, REMOVED_MEMBER, removed)
            _add_json(tar, os.path.join(os.path.dirname(back[-1]), COPIED_FILE).lstrip(os.sep), record)
            for path, dst in zip(changed[:-1], back[:-1], strict=True):
                tar.add(path, arcname=dst.lstrip(os.sep))
        shutil.copy2(result, os.path.join(sandbox, os.path.basename(result)))
        return record
    _remove(removed, original(workdir))
    for path, dst in zip(changed[:-1], back[:-1], strict=True):
        with open(path, "rb") as src:
            _copy_atomic(src, dst)
    _write_json(os.path.join(os.path.dirname(back[-1]), COPIED_FILE), record)
    with open(result, "rb") as src:
        _copy_atomic(src, back[-1])
    return record


# --- helpers ------------------------------------------------------------------------------------------
def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _copy_atomic(src: Any, dst: str) -> None:
    """Write the open binary file ``src`` to ``dst`` through ``<dst>.tmp-<pid>`` and a rename."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = f"{dst}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as out:
            shutil.copyfileobj(src, out)
        os.replace(tmp, dst)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def _remove(paths: Iterable[str], workdir: str) -> None:
    for path in paths:
        if _under(path, workdir):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


def _write_json(path: str, data: object) -> None:
    with open(f"{path}.tmp-{os.getpid()}", "w") as f:
        json.dump(data, f, indent=1)
    os.replace(f"{path}.tmp-{os.getpid()}", path)


def _add_json(tar: tarfile.TarFile, name: str, data: object) -> None:
    import io

    raw = json.dumps(data, indent=1).encode()
    info = tarfile.TarInfo(name)
    info.size = len(raw)
    tar.addfile(info, io.BytesIO(raw))
