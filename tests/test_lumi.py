"""Tests for calibflow.io.lumi.LumiMask (CMS certification JSON)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibflow.io.lumi import LumiMask, LumiMaskError, LumiMaskFileNotFoundError

GOLDEN = {"1": [[1, 5], [10, 12]], "3": [[2, 2]], "7": [], "300000": [[100, 200]]}


def write_json(tmp_path: Path, data: Any, name: str = "golden.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def reference_mask(data: dict, runs: np.ndarray, lumis: np.ndarray) -> np.ndarray:
    """Plain-python lookup."""
    table = {int(r): ranges for r, ranges in data.items()}
    return np.array(
        [
            any(lo <= lumi <= hi for lo, hi in table.get(int(run), []))
            for run, lumi in zip(runs, lumis, strict=True)
        ],
        dtype=bool,
    )


# --------------------------------------------------------------------------------------------------
# known answers
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("from_file", [True, False])
def test_known_answers(tmp_path: Path, from_file: bool) -> None:
    mask = LumiMask(write_json(tmp_path, GOLDEN)) if from_file else LumiMask(GOLDEN)
    runs = np.array([1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 7, 2, 300000, 300000, 300000, 299999, 0])
    lumis = np.array([0, 1, 3, 5, 6, 9, 10, 12, 1, 2, 3, 1, 1, 99, 100, 200, 150, 1])
    want = [0, 1, 1, 1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0]
    np.testing.assert_array_equal(mask(runs, lumis), np.array(want, dtype=bool))
    np.testing.assert_array_equal(mask.runs, [1, 3, 7, 300000])
    assert len(mask) == 4


def test_int_keys_and_overlapping_ranges_are_merged() -> None:
    mask = LumiMask({5: [[10, 20], [1, 10], [21, 22], [30, 31], [15, 16]]})
    assert len(mask) == 2  # [1, 22] and [30, 31]
    lumis = np.arange(0, 35)
    want = ((lumis >= 1) & (lumis <= 22)) | ((lumis >= 30) & (lumis <= 31))
    np.testing.assert_array_equal(mask(np.full(lumis.size, 5), lumis), want)


def test_input_types_and_shapes() -> None:
    mask = LumiMask(GOLDEN)
    # uproot gives uint32 branches; awkward arrays and lists work as well
    runs = np.array([1, 1, 3], dtype=np.uint32)
    lumis = np.array([4, 7, 2], dtype=np.uint32)
    want = np.array([True, False, True])
    np.testing.assert_array_equal(mask(runs, lumis), want)
    np.testing.assert_array_equal(mask(ak.Array(runs), ak.Array(lumis)), want)
    np.testing.assert_array_equal(mask(runs.tolist(), lumis.astype(np.int16).tolist()), want)
    # scalars and broadcasting keep numpy shapes
    assert mask(1, 11).shape == () and bool(mask(1, 11))
    out = mask(np.array([[1], [3]]), np.array([2, 11]))
    np.testing.assert_array_equal(out, [[True, True], [True, False]])
    assert mask(np.array([], dtype=np.uint32), np.array([], dtype=np.uint32)).shape == (0,)
    assert mask([], []).shape == (0,)
    # values that cannot be certified
    np.testing.assert_array_equal(mask(np.array([-1, 1, 1]), np.array([1, -1, 2**40])), [False] * 3)
    big = np.array([2**64 - 1, 2**63 + 1], dtype=np.uint64)
    np.testing.assert_array_equal(mask(big, np.array([1, 1], dtype=np.uint64)), [False, False])


def test_bad_call_arguments() -> None:
    mask = LumiMask(GOLDEN)
    with pytest.raises(TypeError, match="integer"):
        mask(np.array([1.0]), np.array([1]))
    with pytest.raises(TypeError, match="lumi"):
        mask(np.array([1]), np.array([True]))
    with pytest.raises(ValueError, match="broadcast"):
        mask(np.array([1, 1]), np.array([1, 2, 3]))


def test_sparse_run_numbers_use_the_search_path() -> None:
    # a run span too large for the dense run table: binary search over runs instead
    data = {"1": [[1, 3]], "50000000": [[5, 6]], "50000002": [[1, 1]]}
    mask = LumiMask(data)
    assert mask._dense.size == 0
    runs = np.array([1, 1, 50000000, 50000000, 50000000, 50000001, 50000002, 50000002, 1, 2])
    lumis = np.array([3, 4, 4, 5, 6, 5, 1, 2, 1, 1])
    np.testing.assert_array_equal(mask(runs, lumis), [1, 0, 0, 1, 1, 0, 1, 0, 1, 0])


def test_empty_json() -> None:
    mask = LumiMask({})
    np.testing.assert_array_equal(mask(np.array([1, 2]), np.array([1, 1])), [False, False])
    assert len(mask) == 0 and mask.runs.size == 0


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "Cert_missing.json"
    with pytest.raises(ValueError, match=r"Cert_missing\.json.*not found") as info:
        LumiMask(path)
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, LumiMaskFileNotFoundError)


def test_bad_json(tmp_path: Path) -> None:
    path = write_json(tmp_path, '{"1": [[1, 2]', "broken.json")
    with pytest.raises(LumiMaskError, match=r"broken\.json: not valid JSON"):
        LumiMask(path)
    path = write_json(tmp_path, b"\xff\xfe\x00garbage".decode("latin-1"), "binary.json")
    with pytest.raises(ValueError, match=r"binary\.json"):
        LumiMask(path)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("[[1, 2]]", "top level must be an object"),
        ('{"abc": [[1, 2]]}', "run 'abc' is not a positive integer"),
        ('{"-5": [[1, 2]]}', "run '-5' is not a positive integer"),
        ('{"0": [[1, 2]]}', "run '0' out of range"),
        ('{"297050": [[5, 2]]}', r"run '297050': invalid range \[5, 2\]"),
        ('{"297050": [[0, 2]]}', r"run '297050': invalid range \[0, 2\]"),
        ('{"297050": [[1, 2, 3]]}', r"run '297050': malformed range \[1, 2, 3\]"),
        ('{"297050": [[1.0, 2]]}', r"run '297050': malformed range"),
        ('{"297050": [[true, 2]]}', r"run '297050': malformed range"),
        ('{"297050": [1, 2]}', r"run '297050': malformed range 1"),
        ('{"297050": {"1": 2}}', r"run '297050': expected a list"),
        ('{"297050": [[1, 2]], "297051": [[1, 99999999999999999999]]}', r"run '297051': invalid range"),
        ('{"297050": [[1, 2]], "297050": [[4, 5]]}', r"run '297050' appears more than once"),
        ('{"297050": [[1, 2]], "0297050": [[4, 5]]}', r"run '0297050' appears more than once"),
    ],
)
def test_malformed_json_names_file_and_run(tmp_path: Path, data: str, match: str) -> None:
    path = write_json(tmp_path, data, "Cert_bad_JSON.txt")
    with pytest.raises(LumiMaskError, match=match) as info:
        LumiMask(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_malformed_mapping_names_run() -> None:
    with pytest.raises(ValueError, match=r"<mapping>: run 12: invalid range \(3, 1\)"):
        LumiMask({12: [(3, 1)]})


# --------------------------------------------------------------------------------------------------
# random masks vs a python reference
# --------------------------------------------------------------------------------------------------
@st.composite
def golden_and_queries(draw: st.DrawFn) -> tuple[dict, np.ndarray, np.ndarray]:
    base = draw(st.sampled_from([1, 297000, 10**8]))
    run_offsets = draw(st.lists(st.sampled_from([0, 1, 2, 5, 9, 2**23]), unique=True, max_size=5))
    ranges = st.tuples(st.integers(1, 40), st.integers(0, 10)).map(lambda t: [t[0], t[0] + t[1]])
    data = {str(base + off): draw(st.lists(ranges, max_size=5)) for off in run_offsets}
    n = draw(st.integers(0, 60))
    candidate_runs = [base + off for off in run_offsets] + [base + 3, base]
    runs = np.asarray(draw(st.lists(st.sampled_from(candidate_runs), min_size=n, max_size=n)), dtype=np.int64)
    lumis = np.asarray(draw(st.lists(st.integers(0, 55), min_size=n, max_size=n)), dtype=np.int64)
    return data, runs, lumis


@settings(max_examples=300, deadline=None)
@given(golden_and_queries())
def test_random_masks_match_reference(case: tuple[dict, np.ndarray, np.ndarray]) -> None:
    data, runs, lumis = case
    mask = LumiMask(data)
    np.testing.assert_array_equal(mask(runs, lumis), reference_mask(data, runs, lumis))
    # sorted input (run-lookup cache) gives the same answer
    order = np.lexsort((lumis, runs))
    np.testing.assert_array_equal(mask(runs[order], lumis[order]), reference_mask(data, runs, lumis)[order])


def test_large_input_matches_reference() -> None:
    rng = np.random.default_rng(3)
    data = {
        str(run): [
            [int(lo), int(lo + rng.integers(0, 50))] for lo in np.sort(rng.choice(500, 4, replace=False)) + 1
        ]
        for run in rng.choice(np.arange(297000, 299000), 200, replace=False)
    }
    mask = LumiMask(data)
    runs = rng.choice([int(r) for r in data] + [1, 296999, 299000], 200_000).astype(np.uint32)
    lumis = rng.integers(0, 600, runs.size).astype(np.uint32)
    got = mask(runs, lumis)
    np.testing.assert_array_equal(got[:20_000], reference_mask(data, runs[:20_000], lumis[:20_000]))
    # cross-check the rest with a per-run numpy formulation
    want = np.zeros(runs.size, dtype=bool)
    for run, ranges in data.items():
        sel = runs == int(run)
        for lo, hi in ranges:
            want[sel] |= (lumis[sel] >= lo) & (lumis[sel] <= hi)
    np.testing.assert_array_equal(got, want)
    assert 0.02 < got.mean() < 0.5


# --------------------------------------------------------------------------------------------------
# agreement with coffea.lumi_tools.LumiMask
# --------------------------------------------------------------------------------------------------
def random_golden_json(rng: np.random.Generator, n_runs: int) -> dict[str, list[list[int]]]:
    """Non-overlapping sorted ranges (some adjacent), as in real certification files."""
    data = {}
    for run in np.sort(rng.choice(np.arange(294927, 306462), n_runs, replace=False)):
        edges = np.cumsum(rng.integers(0, 40, 2 * rng.integers(0, 8)))  # touching ranges when a gap is 0
        ranges = [[int(lo) + 1, int(hi) + 1] for lo, hi in zip(edges[0::2], edges[1::2], strict=True)]
        data[str(run)] = [r for i, r in enumerate(ranges) if i == 0 or r[0] > ranges[i - 1][1]]
    return data


def compare_with_coffea(path: Path, rng: np.random.Generator, n: int = 300_000) -> None:
    coffea_lumi_tools = pytest.importorskip("coffea.lumi_tools")
    ours = LumiMask(path)
    theirs = coffea_lumi_tools.LumiMask(str(path))
    runs = ours.runs
    query_runs = rng.choice(np.concatenate([runs, runs + 1, runs - 1]), n).astype(np.uint32)
    lumis = rng.integers(0, 3000, n).astype(np.uint32)
    got = ours(query_runs, lumis)
    np.testing.assert_array_equal(got, theirs(query_runs, lumis))
    assert 0.0 < got.mean() < 1.0


def test_agrees_with_coffea_on_random_json(tmp_path: Path) -> None:
    rng = np.random.default_rng(2017)
    data = random_golden_json(rng, 300)
    compare_with_coffea(write_json(tmp_path, data, "Cert_random_JSON.txt"), rng)


def test_agrees_with_coffea_on_small_json(tmp_path: Path) -> None:
    compare_with_coffea(write_json(tmp_path, GOLDEN), np.random.default_rng(1))


def real_golden_files() -> list[Path]:
    samples = os.environ.get("CALIBFLOW_SAMPLES")
    return sorted(Path(samples).glob("Cert_*_JSON.txt")) if samples else []


@pytest.mark.skipif(not real_golden_files(), reason="set CALIBFLOW_SAMPLES to a folder with Cert_*_JSON.txt")
@pytest.mark.parametrize("path", real_golden_files(), ids=lambda p: p.name)
def test_agrees_with_coffea_on_real_golden_json(path: Path) -> None:
    compare_with_coffea(path, np.random.default_rng(42), n=1_000_000)
