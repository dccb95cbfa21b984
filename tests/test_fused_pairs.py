"""The fused pairing loop (calibflow.kernels.fused_pairs) against its reference, the awkward-array path
(calibflow.prep.steps.make_pairs with numpy cuts): equal outputs bit for bit and equal cut flows on NanoAOD-like
ROOT files, for selections using every kind of name (event branches in object and pair scopes, match flags, the
derived pair columns, integer arithmetic), and the fallbacks (untranslatable expressions, integer overflow,
collections whose branches disagree)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest

from calibflow.config import parse_config
from calibflow.io.store import read_columns, read_metadata
from calibflow.kernels.fused_pairs import FusedPairs, Mismatch, jagged_parts
from calibflow.prep import prepare as prepare_module
from calibflow.prep.prepare import prepare_file
from calibflow.prep.spec import MASS, PrepExpressionError, prep_spec
from calibflow.prep.steps import spec_fused_pairs
from calibflow.toys.nanoaod import write_z_mumu_file

from .test_prep_nanoaod import GOLDEN, nano_config, write_nano


@pytest.fixture(scope="module")
def nano(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fused_pairs")
    (folder / "golden.json").write_text(json.dumps(GOLDEN))
    write_nano(folder / "nano.root", n=4000, seed=3)
    return folder


def _both(folder: Path, d: dict[str, Any], tmp: Path, monkeypatch: pytest.MonkeyPatch, file: str = "nano.root",
          sample: str = "data", step_size: int | str = 900) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """Columns prepared by the reference path and by the fused loop (asserting equal cut flows and metadata); the
    number of chunks the reference path prepared during the fused run (0: the loop did all)."""
    spec = prep_spec(parse_config(d), sample, str(folder))
    calls = []
    original = prepare_module.make_pairs

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(prepare_module, "make_pairs", spy)
    out = {}
    for mode in ("0", "1"):
        monkeypatch.setenv("CALIBFLOW_FUSED", mode)
        calls.clear()
        flow = prepare_file(str(folder / file), spec, str(tmp / f"{mode}.h5"), step_size=step_size)
        out[mode] = (read_columns(tmp / f"{mode}.h5"), flow, read_metadata(tmp / f"{mode}.h5"))
    (ref, ref_flow, ref_meta), (got, flow, meta) = out["0"], out["1"]
    assert flow == ref_flow and meta["cutflow"] == ref_meta["cutflow"] and meta["stages"] == ref_meta["stages"]
    return ref, got, len(calls)


def _assert_equal(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> None:
    assert ref.keys() == got.keys()
    for k in ref:
        assert ref[k].dtype == got[k].dtype, k
        assert np.array_equal(ref[k], got[k], equal_nan=ref[k].dtype.kind == "f"), k


def test_recipe_toy_equal_to_the_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cms_muon_id_z recipe (lumi mask, event cut, TrigObj matching with a bit cut, mass from a field, charge
    and mass window) on its NanoAOD toy padded to 400 branches, data and simulation, chunked."""
    from calibflow.config import load_config

    root = Path(__file__).resolve().parents[1] / "task_configs"
    config = load_config(root / "cms_muon_id_z.yaml")
    for sample in ("data", "mc"):
        write_z_mumu_file(str(tmp_path / "z.root"), 20_000, sample == "data", 5, pad_to=400)
        spec = prep_spec(config, sample, str(root))
        flows = []
        cols = []
        for mode in ("0", "1"):
            monkeypatch.setenv("CALIBFLOW_FUSED", mode)
            flows.append(prepare_file(str(tmp_path / "z.root"), spec, str(tmp_path / f"{mode}.h5"), step_size=7000))
            cols.append(read_columns(tmp_path / f"{mode}.h5"))
        assert flows[0] == flows[1] and flows[0]["pairs"] > flows[0][spec.stages[-1]] > 1000
        _assert_equal(*cols)


VARIANTS = {
    "nominal": {},
    "event branches in object and pair scopes": {
        "pairing.tag": "Muon_pt > 25 and Muon_tightId and Muon_trigMatch and MET_pt < 80",
        "pairing.probe": "Muon_pt > 0.2 * MET_pt and abs(Muon_eta) < 2.4",
        "selection.pair": "pair_charge < 0 and 50 < pair_mass < 130 and PV_npvs > 3",
    },
    "integer arithmetic and derived columns": {
        "pairing.tag": "Muon_pt > 25 and (Muon_charge * 3 + PV_npvs) % 5 != 1 and Muon_trigMatch",
        "selection.pair": "pair_charge * 2 + 1 < 0 and pair_dr > 0.3 and tag_pt - probe_pt < 40",
    },
    "mass from a field, no match cut, two matches": {
        "pairing.mass": "pt",  # nonsense as a mass, but a field: tests the per-object mass argument
        "pairing.match": [{"objects": "TrigObj", "max_dr": 0.2, "as": "Muon_anyMatch"},
                          {"objects": "TrigObj", "cut": "TrigObj_id == 13 and (TrigObj_filterBits & 8) != 0",
                           "max_dr": 0.1, "as": "Muon_trigMatch"}],
        "pairing.tag": "Muon_pt > 25 and Muon_trigMatch and Muon_anyMatch",
        "selection.pair": "pair_charge < 0",
        "working_points": {"matched": "probe_trigMatch", "any": "probe_anyMatch and not probe_trigMatch"},
    },
    "no event cut, every muon a probe": {
        "selection.event": None,
        "pairing.probe": "Muon_pt > 0",
        "selection.pair": "pair_mass > 0",
    },
}


def _apply(d: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    d = copy.deepcopy(d)
    for key, value in changes.items():
        *path, last = key.split(".")
        target = d
        for part in path:
            target = target[part]
        if value is None:
            target.pop(last, None)
        else:
            target[last] = value
    return d


@pytest.mark.parametrize("lumi", ["golden.json", None])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variants_equal_to_the_reference(nano: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variant: str,
                                         lumi: str | None) -> None:
    ref, got, reference_chunks = _both(nano, _apply(nano_config(lumi), VARIANTS[variant]), tmp_path, monkeypatch)
    assert reference_chunks == 0  # the loop prepared every chunk
    assert len(ref[MASS]) > 100
    _assert_equal(ref, got)


def test_untranslatable_expression_keeps_the_reference_path(nano: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    d = _apply(nano_config(), {"pairing.probe": "Muon_pt > 10 and exp(-abs(Muon_eta)) > 0.1"})
    ref, got, reference_chunks = _both(nano, d, tmp_path, monkeypatch)
    assert reference_chunks > 0 and len(ref[MASS]) > 100
    _assert_equal(ref, got)


def test_integer_overflow_is_reported_by_the_reference_path(nano: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    d = _apply(nano_config(None), {"selection.pair": "pair_charge * 9223372036854775807 * PV_npvs < 0"})
    spec = prep_spec(parse_config(d), "data", str(nano))
    messages = []
    for mode in ("0", "1"):
        monkeypatch.setenv("CALIBFLOW_FUSED", mode)
        with pytest.raises(PrepExpressionError) as err:
            prepare_file(str(nano / "nano.root"), spec, str(tmp_path / "out.h5"))
        messages.append(str(err.value))
    assert messages[0] == messages[1] and "overflow" in messages[0]


def test_the_loop_is_made_once_per_process(nano: Path) -> None:
    spec = prep_spec(parse_config(nano_config()), "data", str(nano))
    import uproot

    with uproot.open(nano / "nano.root") as f:
        cols = f["Events"].arrays(spec.branches, entry_stop=50, how=dict)
    cols = {k: ak.to_numpy(v) if v.ndim == 1 else v for k, v in cols.items()}
    first = spec_fused_pairs(spec, cols)
    assert first is not None and spec_fused_pairs(spec, cols) is first
    assert "def kernel(" in first.source and "nearest_in_event" in first.source


def test_collections_with_disagreeing_counts_are_refused(nano: Path) -> None:
    spec = prep_spec(parse_config(nano_config(None)), "data", str(nano))
    import uproot

    with uproot.open(nano / "nano.root") as f:
        cols = f["Events"].arrays(spec.branches, entry_stop=50, how=dict)
    cols = {k: ak.to_numpy(v) if v.ndim == 1 else v for k, v in cols.items()}
    loop = spec_fused_pairs(spec, cols)
    assert isinstance(loop, FusedPairs)
    out, counts = loop.run(cols, 50)
    assert len(counts) == 1 + 1 + 1 and counts[1] >= counts[2] == len(out[MASS])  # event, pairs, pair (the rows)
    broken = dict(cols, Muon_eta=cols["Muon_eta"][::-1])  # same number of events, other counts per event
    assert not np.array_equal(ak.num(broken["Muon_eta"]), ak.num(cols["Muon_pt"]))
    with pytest.raises(Mismatch, match="different object counts"):
        loop.run(broken, 50)


def test_jagged_parts_of_sliced_and_plain_arrays() -> None:
    a = ak.Array([[1.0, 2.0], [], [3.0], [4.0, 5.0, 6.0]])
    for x in (a, a[1:], a[2:3], a[[3, 0]], a[:0]):
        offsets, content = jagged_parts(x)
        assert offsets[0] == 0 and np.array_equal(np.diff(offsets), ak.to_numpy(ak.num(x)))
        assert np.array_equal(content, ak.to_numpy(ak.flatten(x)))
    with pytest.raises(ValueError):
        jagged_parts(ak.Array([1.0, 2.0]))
