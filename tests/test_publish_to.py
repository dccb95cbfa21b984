"""``outputs.publish_to``: the published set copied to storage (a local folder, or a real XRootD server on
127.0.0.1: tests/xrootd_server.py) under a temporary name, renamed when complete, with ``LATEST`` replaced by
a rename; a rerun copies nothing again, one generation is kept, and a storage that cannot be written is one
line naming it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from calibflow.config import ConfigError, parse_config
from calibflow.export.publish import MANIFEST, SHA256, publish_set
from calibflow.export.storage import LATEST, copy_published
from calibflow.io.integrity import sha256_file
from calibflow.io.remote import RemoteError
from tasks.cli import main

from .conftest import tiny_demo_dict
from .xrootd_server import XRootDServer, free_port

pytestmark = pytest.mark.usefixtures("quick_retries")


def _publish(workdir: Path, key: str, text: str) -> None:
    """Publish a small set (a table and a plot) under ``workdir`` as calibflow does."""
    out = workdir / "out"
    (out / "plots").mkdir(parents=True, exist_ok=True)
    (out / "efficiencies.csv").write_text(text)
    (out / "plots" / "map.png").write_bytes(os.urandom(3000))
    links = {rel: str(out / rel) for rel in ("efficiencies.csv", "plots/map.png")}
    publish_set(str(workdir), key, links, {"key": key, "files": sorted(links)})


def _check_copy(folder: Path, text: str) -> None:
    """``folder`` holds a whole set: every file its manifest lists, with that digest."""
    manifest = json.loads((folder / MANIFEST).read_text())
    assert sorted(manifest[SHA256]) == ["efficiencies.csv", "plots/map.png"]
    for rel, digest in manifest[SHA256].items():
        assert sha256_file(str(folder / rel)) == digest
    assert (folder / "efficiencies.csv").read_text() == text


def _storage_tests(workdir: Path, dest: str, on_disk: Path) -> None:
    """Publish three sets to ``dest`` (``on_disk``: the same folder as a local path) and check each step."""
    _publish(workdir, "aaaa", "first\n")
    where = copy_published(str(workdir), dest, "calib")
    first = (on_disk / "calib" / LATEST).read_text().strip()
    assert where == f"{dest}/calib/{first}" and first.startswith("aaaa-")
    _check_copy(on_disk / "calib" / first, "first\n")
    stamp = (on_disk / "calib" / first / MANIFEST).stat().st_mtime_ns
    assert copy_published(str(workdir), dest, "calib") == where  # nothing changed: nothing copied again
    assert (on_disk / "calib" / first / MANIFEST).stat().st_mtime_ns == stamp

    killed = on_disk / "calib" / ".killed.tmp-99999"  # a copy killed midway: never read, removed later
    killed.mkdir()
    os.utime(killed, (0, 0))  # an hour old at least: not another run's copy in progress
    _publish(workdir, "bbbb", "second\n")
    copy_published(str(workdir), dest, "calib")
    second = (on_disk / "calib" / LATEST).read_text().strip()
    _check_copy(on_disk / "calib" / second, "second\n")
    assert sorted(os.listdir(on_disk / "calib")) == sorted([LATEST, first, second])  # one generation kept

    _publish(workdir, "cccc", "third\n")
    copy_published(str(workdir), dest, "calib")
    third = (on_disk / "calib" / LATEST).read_text().strip()
    assert sorted(os.listdir(on_disk / "calib")) == sorted([LATEST, second, third])


def test_publish_to_a_local_folder(tmp_path: Path) -> None:
    _storage_tests(tmp_path / "work", str(tmp_path / "storage"), tmp_path / "storage")


def test_publish_to_xrootd(server: XRootDServer, tmp_path: Path) -> None:
    _storage_tests(
        tmp_path / "work", f"{server.url}/store/calibrations", server.data / "store" / "calibrations"
    )


def test_unwritable_storage_is_one_error_naming_it(server: XRootDServer, tmp_path: Path) -> None:
    _publish(tmp_path / "work", "aaaa", "first\n")
    down = f"root://127.0.0.1:{free_port()}//store"
    with pytest.raises(
        RemoteError, match=rf"^{down}: cannot publish after 3 attempt\(s\) \(.*Connection error"
    ):
        copy_published(str(tmp_path / "work"), down, "calib")
    (tmp_path / "file").write_text("")
    with pytest.raises(RemoteError, match=rf"^{tmp_path}/file/sub: cannot publish calib there \("):
        copy_published(str(tmp_path / "work"), str(tmp_path / "file" / "sub"), "calib")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("https://host/store", "storage is a folder or an XRootD URL"),
        ("root://host/store", "an XRootD path is absolute"),
        ("root:///store", "no host in the URL"),
        ("", "at least 1 character"),
    ],
)
def test_bad_publish_to_is_a_config_error(value: str, message: str) -> None:
    d = tiny_demo_dict()
    d["outputs"]["publish_to"] = value
    with pytest.raises(ConfigError, match=r"outputs\.publish_to") as info:
        parse_config(d)
    assert message in str(info.value)


def test_run_publishes_to_xrootd(
    server: XRootDServer,
    tmp_path: Path,
    write_config: Callable[[dict[str, Any], str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    d = tiny_demo_dict()
    d["outputs"]["publish_to"] = f"{server.url}/store"
    config = write_config(d, "tiny.yaml")
    args = ["run", str(config), "--workers", "1", "--result-dir", str(tmp_path / "results"), "--quiet"]
    assert main(args) == 0
    latest = (server.data / "store" / d["name"] / LATEST).read_text().strip()
    assert f"published to {server.url}/store/{d['name']}/{latest}" in capsys.readouterr().out
    local = json.loads((tmp_path / "results" / d["name"] / MANIFEST).read_text())
    remote_manifest = json.loads((server.data / "store" / d["name"] / latest / MANIFEST).read_text())
    assert remote_manifest == local

    server.stop()  # the outputs are published locally; the copy fails with one line naming the storage
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"calibflow: outputs.publish_to: {server.url}/store: cannot publish after 3 attempt(s)" in err
