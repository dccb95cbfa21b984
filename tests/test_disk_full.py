"""A disk that fills during the fits (issue 17, item 12): the run summary names the reason (``No space left on
device``, and what to do) although the failure record itself cannot be written, and a rerun after space is
freed completes with the same tables as a run that never lacked space.

The result folder lies on a real, small tmpfs mounted for the test (skipped where mounting is not allowed)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import tiny_demo_dict
from .test_failed_runs import run_cli


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 40 MB tmpfs under ``tmp_path``, unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40M", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(disk: Path) -> Path:
    """Fill ``disk`` up to the last byte with one file; return it."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(bytes(1 << 20))
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_during_the_fits_is_named_in_the_summary(
        small_disk: Path, tmp_path: Path, write_config: Callable[[dict[str, Any], str], Path]) -> None:
    d = tiny_demo_dict()
    d["name"] = "full"
    first = write_config(d, "full.yaml")
    argv = ("--result-dir", str(small_disk / "res"), "--workers", "1", "--quiet")
    assert run_cli("run", str(first), *argv)[0] == 0  # the inputs prepared and histogrammed

    d["fit"]["parameters"]["sigma"]["value"] = 14  # new fits (new keys) of the same prepared inputs
    second = write_config(d, "full.yaml")
    filler = _fill(small_disk)
    code, out, err = run_cli("run", str(second), *argv)
    assert code == 1, out + err
    failed = [ln for ln in (out + err).splitlines() if ln.strip().startswith("FAILED FitBin")]
    assert failed, out
    for line in failed:
        assert "No space left on device" in line and "the disk is full: free space and rerun" in line
        assert "see the log above" not in line and "Traceback" not in line

    # a new result folder on the full disk: one line naming what could not be written, exit 2, no traceback
    code, out, err = run_cli("run", str(second), "--result-dir", str(small_disk / "other"), "--workers", "1")
    assert code == 2 and "Traceback" not in out + err
    assert err.strip().startswith("calibflow: error: ") and len(err.strip().splitlines()) == 1
    assert "No space left on device (the disk is full: free space and rerun)" in err

    filler.unlink()
    code, out, err = run_cli("run", str(second), *argv)
    assert code == 0, out + err
    reference = tmp_path / "reference"  # the same config on a disk that never filled
    assert run_cli("run", str(second), "--result-dir", str(reference), "--workers", "1", "--quiet")[0] == 0
    for name in ("efficiencies.csv", "scale_factors.csv", "corrections.json"):
        assert (small_disk / "res" / "full" / name).read_bytes() == (reference / "full" / name).read_bytes(), name
