"""Inputs given by URL, against a real XRootD server on 127.0.0.1 (tests/xrootd_server.py): globs expanded by
the server's listing, identities from its stat, only the needed baskets fetched, HTTP through XrdHttp,
one-line errors naming the URL (a bad URL, a server down, a glob matching nothing), and a run whose server
dies in the middle: a clear failure, and a rerun that finishes without redoing the files already prepared."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import uproot

from calibflow.config import ConfigError, parse_config, resolve_files
from calibflow.io import remote
from calibflow.io.inspect import format_inspection, inspect_file
from calibflow.io.root import write_ttree
from calibflow.io.store import read_columns, read_metadata
from calibflow.plan import Plan
from calibflow.prep.prepare import RemoteInputError, prepare_file
from calibflow.prep.spec import PrepError, prep_spec
from calibflow.toys.registry import write_toy_file
from tasks.cli import main

from .conftest import tiny_demo_dict
from .xrootd_server import XRootDServer, free_port


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Local toy inputs: three data files and one simulation file."""
    base = tmp_path_factory.mktemp("toys")
    files = {f"data_{i}": base / f"data_{i}.root" for i in range(3)} | {"mc_0": base / "mc_0.root"}
    for i, (name, path) in enumerate(files.items()):
        write_toy_file(str(path), 15000, is_data=name.startswith("data"), seed=10 + i)
    return files



pytestmark = pytest.mark.usefixtures("quick_retries")


def _publish(server: XRootDServer, toy_files: dict[str, Path]) -> None:
    for name, path in toy_files.items():
        server.put(f"store/{name.split('_')[0]}/{path.name}", path)


def _config(server: XRootDServer, data: str = "store/data/*.root") -> dict[str, Any]:
    d = tiny_demo_dict()
    d["name"] = "remote"
    del d["toy"]
    d["samples"]["data"]["files"] = [f"{server.url}/{data}"]
    d["samples"]["mc"]["files"] = [f"{server.url}/store/mc/mc_0.root"]
    return d


def test_globs_are_expanded_by_the_server_listing(server: XRootDServer, toy_files: dict[str, Path]) -> None:
    _publish(server, toy_files)
    files = resolve_files(parse_config(_config(server)), "data", "/nowhere")
    assert files == [f"{server.url}/store/data/data_{i}.root" for i in range(3)]
    ident = remote.identity(files[0])
    st = os.stat(server.data / "store/data/data_0.root")
    assert ident == {"path": files[0], "size": st.st_size, "mtime_ns": int(st.st_mtime) * 10**9}


def test_http_identity_without_mtime_is_a_digest_of_the_ends(
    server: XRootDServer, toy_files: dict[str, Path]
) -> None:
    server.put("store/data/data_0.root", toy_files["data_0"])
    url = f"{server.http_url}/store/data/data_0.root"
    first = remote.identity(url)  # XrdHttp gives neither Last-Modified nor a checksum header
    assert (
        first.keys() == {"path", "size", "ends_sha256"}
        and first["size"] == toy_files["data_0"].stat().st_size
    )
    assert remote.identity(url) == first
    server.put("store/data/data_0.root", toy_files["data_1"])  # rewritten: another file, maybe the same size
    assert remote.identity(url)["ends_sha256"] != first["ends_sha256"]


def test_a_remote_file_rewritten_during_a_run_is_named(
    server: XRootDServer,
    toy_files: dict[str, Path],
    tmp_path: Path,
    write_config: Callable[[dict[str, Any], str], Path],
) -> None:
    _publish(server, toy_files)
    plan = Plan.create(write_config(_config(server), "remote.yaml"), tmp_path / "results").start_run()
    assert plan.input_change("data", 1) is None
    time.sleep(1.1)  # XRootD's stat gives whole seconds
    server.put("store/data/data_1.root", toy_files["data_2"])
    change = plan.input_change("data", 1)
    assert change is not None and change.startswith("changed since the run started (")
    assert "mtime_ns" in change


def test_remote_file_prepares_as_the_local_one_fetching_only_its_baskets(
    server: XRootDServer, toy_files: dict[str, Path], tmp_path: Path
) -> None:
    url = server.put("store/data/data_0.root", toy_files["data_0"])
    http = f"{server.http_url}/store/data/data_0.root"
    spec = prep_spec(parse_config(_config(server)), "data")
    outputs = {}
    for name, source in (("local", str(toy_files["data_0"])), ("root", url), ("http", http)):
        outputs[name] = tmp_path / f"{name}.h5"
        prepare_file(source, spec, str(outputs[name]))
    local = read_columns(str(outputs["local"]))
    for name in ("root", "http"):
        table = read_columns(str(outputs[name]))
        assert table.keys() == local.keys()
        assert all((table[k] == local[k]).all() for k in local)
        meta = read_metadata(str(outputs[name]))
        assert meta["cutflow"] == read_metadata(str(outputs["local"]))["cutflow"]
        # the tree has 15 branches, the config reads 8 of them: far less than the file is fetched, in a few
        # requests, the baskets' in one vector read (many byte ranges in one request)
        size = toy_files["data_0"].stat().st_size
        fetched = meta["fetched"]
        assert 0 < fetched["bytes"] < 0.7 * size, (name, fetched, size)
        assert fetched["requests"] <= 5 and fetched["ranges"] >= fetched["requests"] + 7, fetched
    assert "fetched" not in read_metadata(str(outputs["local"]))


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            "root://127.0.0.1:{port}/store/data/*.root",
            "an XRootD path is absolute: write root://127.0.0.1:{port}//store",
        ),
        ("root:///store/data/*.root", "no host in the URL"),
        ("ftp://127.0.0.1//store/x.root", "unknown URL scheme 'ftp'"),
        ("https://127.0.0.1/store/*.root", "HTTP servers offer no listing to expand wildcards"),
        (
            "root://127.0.0.1:{port}//store/data/nothing_*.root",
            "no file matches 'root://127.0.0.1:{port}//store",
        ),
        ("root://127.0.0.1:{port}//nofolder/*.root", "no file matches 'root://127.0.0.1:{port}//nofolder/"),
        (
            "root://127.0.0.1:{free}//store/data/*.root",
            "unreachable after 3 attempt(s) ([FATAL] Connection error)",
        ),
        (
            "root://no-such-host.invalid//store/*.root",
            "unreachable after 3 attempt(s) ([FATAL] Invalid address)",
        ),
    ],
)
def test_bad_input_urls_are_one_line_naming_the_key_and_url(
    files: str,
    message: str,
    server: XRootDServer,
    toy_files: dict[str, Path],
    tmp_path: Path,
    write_config: Callable[[dict[str, Any], str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    _publish(server, toy_files)
    ports = {"port": server.port, "free": free_port()}
    d = _config(server)
    d["samples"]["data"]["files"] = [files.format(**ports)]
    config = write_config(d, "bad.yaml")
    assert main(["run", str(config), "--result-dir", str(tmp_path / "results"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert (
        f"samples.data.files[0]: {files.format(**ports).split('*')[0]}" in err[0]
        or "no file matches" in err[0]
    )
    assert message.format(**ports) in err[0], err[0]
    with pytest.raises(ConfigError, match=r"samples\.data\.files"):
        resolve_files(parse_config(d), "data", str(tmp_path))


def test_a_server_down_while_preparing_fails_naming_the_url(
    server: XRootDServer, toy_files: dict[str, Path], tmp_path: Path
) -> None:
    url = server.put("store/data/data_0.root", toy_files["data_0"])
    spec = prep_spec(parse_config(_config(server)), "data")
    server.stop()
    started = time.monotonic()
    with pytest.raises(
        RemoteInputError, match=rf"^{url}: unreachable after 3 attempt\(s\) \(.*\); check that"
    ):
        prepare_file(url, spec, str(tmp_path / "out.h5"))
    assert time.monotonic() - started < 20
    assert not RemoteInputError.skippable  # never left out as a bad file: the next run tries again
    assert not (tmp_path / "out.h5").exists()


def _prepared(workdir: Path) -> dict[str, tuple[int, int]]:
    """Prepared outputs under ``workdir``: name -> (inode, mtime_ns)."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (workdir / "prep").rglob("*.h5")}


def test_run_with_server_stopped_midway_fails_then_resumes(
    server: XRootDServer,
    toy_files: dict[str, Path],
    tmp_path: Path,
    write_config: Callable[[dict[str, Any], str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    _publish(server, toy_files)
    config = write_config(_config(server), "remote.yaml")
    results = tmp_path / "results"
    workdir = results / "remote"

    def kill_after_first_file() -> None:
        deadline = time.monotonic() + 60
        while not _prepared(workdir) and time.monotonic() < deadline:
            time.sleep(0.005)
        server.stop()

    watcher = threading.Thread(target=kill_after_first_file)
    watcher.start()
    code = main(["run", str(config), "--workers", "1", "--result-dir", str(results), "--quiet"])
    watcher.join()
    out = capsys.readouterr()
    first = _prepared(workdir)
    assert code == 1
    assert 1 <= len(first) < 4, first
    assert f"{server.url}/store/" in out.out + out.err
    assert "unreachable after 3 attempt(s)" in out.out + out.err

    server.start()
    time.sleep(float(os.environ["XRD_STREAMERRORWINDOW"]) + 0.2)  # the client tries a server found down again
    code = main(["run", str(config), "--workers", "1", "--result-dir", str(results), "--quiet"])
    assert code == 0, capsys.readouterr().err
    second = _prepared(workdir)
    assert len(second) == 4
    assert all(second[name] == first[name] for name in first)  # the files prepared before are not redone
    assert (workdir / "efficiencies.csv").exists()


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (OSError("File stat request failed: [FATAL] Connection error"), True),
        (OSError("[ERROR] Operation expired"), True),
        (TimeoutError("read"), True),
        (ConnectionResetError("Connection reset by peer"), True),
        (OSError("[ERROR] Server responded with an error: [3011] No such file or directory"), False),
        (FileNotFoundError("root://h//x.root"), False),
        (ValueError("Error -3 while decompressing data: incorrect header check"), False),
        (OSError("truncated stream"), False),
    ],
)
def test_only_server_and_network_errors_are_retried(error: Exception, transient: bool) -> None:
    assert remote.is_transient(error) is transient


def test_a_bad_remote_file_is_a_bad_file_not_a_server_problem(
    server: XRootDServer, toy_files: dict[str, Path], tmp_path: Path
) -> None:
    damaged = tmp_path / "damaged.root"
    damaged.write_bytes(toy_files["data_0"].read_bytes()[:50_000])  # truncated
    url = server.put("store/data/damaged.root", damaged)
    spec = prep_spec(parse_config(_config(server)), "data")
    with pytest.raises(PrepError, match=rf"^{url}: ") as info:
        prepare_file(url, spec, str(tmp_path / "out.h5"))
    assert not isinstance(info.value, RemoteInputError) and info.value.skippable


def test_inspect_a_remote_file_as_a_local_one(server: XRootDServer, toy_files: dict[str, Path]) -> None:
    url = server.put("store/data/data_0.root", toy_files["data_0"])
    local = str(toy_files["data_0"])
    shown = [format_inspection(p, inspect_file(p, pattern="probe_*"), "probe_*") for p in (local, url)]
    assert shown[1] == shown[0].replace(local, url)
    assert "ZLIB-1" in shown[1]


def test_many_chunks_are_fetched_one_request_each(
    server: XRootDServer, toy_files: dict[str, Path], tmp_path: Path
) -> None:
    """Small baskets, small chunks: each chunk's baskets in one vector read (the next one's asked for while a
    chunk is read), the same columns as from the local file, with an entry limit too."""
    with uproot.open(toy_files["data_0"]) as f:
        branches = f["DecayTree"].arrays(library="np")
    small = tmp_path / "small_baskets.root"
    write_ttree(small, branches, basket_rows=1000)
    url = server.put("store/data/small_baskets.root", small)
    config = parse_config(_config(server))
    for limit in (None, 6500):
        spec = dataclasses.replace(prep_spec(config, "data"), entry_limit=limit)
        for name, source in (("local", str(small)), ("root", url)):
            prepare_file(source, spec, str(tmp_path / f"{name}.h5"), step_size=2000)
        local, fetched = read_columns(tmp_path / "local.h5"), read_columns(tmp_path / "root.h5")
        assert all((fetched[k] == local[k]).all() for k in local)
        meta = read_metadata(tmp_path / "root.h5")
        assert meta["cutflow"]["read"] == (limit or 15000)
        chunks = -(-(limit or 15000) // 2000)
        assert meta["fetched"]["ranges"] >= 8 * chunks, meta["fetched"]
        assert meta["fetched"]["requests"] <= chunks + 4, meta["fetched"]
