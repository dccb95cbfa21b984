"""The Z→μμ NanoAOD toy written with a chosen compression and basket layout (benchmarks/nanoaod.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import uproot

from calibflow.toys.nanoaod import basket_edges, write_z_mumu_file

_KEY = struct.Struct(">iHiIH")  # TKey: fNbytes, fVersion, fObjlen, fDatime, fKeylen


def _baskets(path: str, branch: str) -> tuple[list[bytes], np.ndarray]:
    """The 2-byte compression algorithm tag of each basket of ``branch`` and the baskets' entry edges."""
    with uproot.open(path) as f:
        b = f["Events"][branch]
        n = b.num_baskets
        seeks, edges = b.member("fBasketSeek")[:n], np.asarray(b.member("fBasketEntry")[: n + 1])
    tags = []
    with open(path, "rb") as fh:
        for seek in seeks:
            fh.seek(int(seek))
            _, _, _, _, keylen = _KEY.unpack(fh.read(_KEY.size))
            fh.seek(int(seek) + keylen)
            tags.append(fh.read(2))
    return tags, edges


def test_basket_edges() -> None:
    assert basket_edges(10, 4) == [0, 4, 8, 10]
    assert basket_edges(2500, (1000, 600)) == [0, 1000, 1600, 2200, 2500]
    assert basket_edges(500, (1000, 600)) == [0, 500]
    with pytest.raises(ValueError, match="positive"):
        basket_edges(10, (5, 0))


@pytest.mark.parametrize(("compression", "tag"), [(uproot.LZMA(1), b"XZ"), (uproot.ZLIB(1), b"ZL"), (None, b"ZS")])
def test_compression_and_baskets(tmp_path: Path, compression: object, tag: bytes) -> None:
    path = str(tmp_path / "z.root")
    write_z_mumu_file(path, 2500, True, 5, compression=compression, basket_rows=(1000, 600))
    for branch in ("HLT_IsoMu24", "Muon_pt", "TrigObj_filterBits", "run"):
        tags, edges = _baskets(path, branch)
        assert tags == [tag] * 4, branch  # every basket compressed with the asked algorithm (default: ZSTD)
        assert edges.tolist() == [0, 1000, 1600, 2200, 2500], branch
    with uproot.open(path) as f:
        assert f["Events"].num_entries == 2500
        assert f["Events"]["Muon_pt"].array().type.length == 2500
