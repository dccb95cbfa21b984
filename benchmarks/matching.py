"""Benchmark: nearest-ΔR matching, numba kernel vs. awkward-array baseline.

    python benchmarks/matching.py [--events N] [--repeat R] [--seed S]

Each event has 1-3 probes and 1-5 trigger-object candidates; candidates are pre-selected with a mask
(pt threshold and filter bit). Both methods start from the same awkward arrays; the numba timing
includes extracting flat arrays and offsets. Times are the minimum over ``--repeat`` runs, after a
warm-up call (JIT compilation / cache load). The last line printed is ``matching: <r>x awkward``
with ``r = t_awkward / t_numba``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import awkward as ak
import numpy as np

from calibflow.kernels.matching import nearest_dr_match

MAX_DR = 0.1


def make_events(n_events: int, seed: int) -> tuple[ak.Array, ak.Array]:
    """Random probes (eta, phi) and candidates (eta, phi, pt, bits, mask) as jagged awkward records."""
    rng = np.random.default_rng(seed)
    n_probe = rng.integers(1, 4, n_events)
    n_cand = rng.integers(1, 6, n_events)
    np_tot, nc_tot = int(n_probe.sum()), int(n_cand.sum())
    probe_eta = rng.uniform(-2.4, 2.4, np_tot)
    probe_phi = rng.uniform(-np.pi, np.pi, np_tot)
    # candidates: about half close to a probe of the same event (smeared), the rest random
    probe_first = np.repeat(np.concatenate([[0], np.cumsum(n_probe)[:-1]]), n_cand)
    near = probe_first + rng.integers(0, np.repeat(n_probe, n_cand))
    close = rng.random(nc_tot) < 0.5
    cand_eta = np.where(close, probe_eta[near] + rng.normal(0, 0.05, nc_tot), rng.uniform(-2.4, 2.4, nc_tot))
    cand_phi = np.where(
        close, probe_phi[near] + rng.normal(0, 0.05, nc_tot), rng.uniform(-np.pi, np.pi, nc_tot)
    )
    cand_phi = (cand_phi + np.pi) % (2 * np.pi) - np.pi
    cand_pt = rng.exponential(30.0, nc_tot)
    cand_bits = rng.integers(0, 8, nc_tot)
    cand_mask = (cand_pt > 10.0) & ((cand_bits & 2) != 0)
    probes = ak.unflatten(ak.zip({"eta": probe_eta, "phi": probe_phi}), n_probe)
    cands = ak.unflatten(
        ak.zip({"eta": cand_eta, "phi": cand_phi, "pt": cand_pt, "bits": cand_bits, "sel": cand_mask}), n_cand
    )
    return probes, cands


def match_numba(probes: ak.Array, cands: ak.Array) -> np.ndarray:
    """Global candidate index per probe (-1: none) with the numba kernel."""
    off_p = np.asarray(probes.layout.offsets.data, dtype=np.int64)
    off_c = np.asarray(cands.layout.offsets.data, dtype=np.int64)
    cc = cands.layout.content
    pc = probes.layout.content
    index, _ = nearest_dr_match(
        off_p,
        np.asarray(pc["eta"].data),
        np.asarray(pc["phi"].data),
        off_c,
        np.asarray(cc["eta"].data),
        np.asarray(cc["phi"].data),
        np.asarray(cc["sel"].data),
        MAX_DR,
    )
    return index


def match_awkward(probes: ak.Array, cands: ak.Array) -> np.ndarray:
    """Same with awkward, as coffea's ``nearest`` / ``delta_phi`` do it: nested cartesian product,
    ΔR with Δφ = (φ1 − φ2 + π) mod 2π − π, argmin per probe, ΔR threshold."""
    global_index = ak.local_index(cands, axis=1) + ak.to_numpy(cands.layout.offsets.data[:-1])[:, None]
    sel = ak.zip({"eta": cands.eta, "phi": cands.phi, "idx": global_index})[cands.sel]
    p, c = ak.unzip(ak.cartesian([probes, sel], axis=1, nested=True))
    dphi = (p.phi - c.phi + np.pi) % (2 * np.pi) - np.pi
    deta = p.eta - c.eta
    dr2 = deta * deta + dphi * dphi
    best = ak.argmin(dr2, axis=2, keepdims=True)
    best_dr = np.sqrt(ak.firsts(dr2[best], axis=2))
    best_idx = ak.firsts(c.idx[best], axis=2)
    matched = ak.fill_none(ak.where(best_dr <= MAX_DR, best_idx, -1), -1)
    return ak.to_numpy(ak.flatten(matched, axis=1)).astype(np.int64)


def timeit(fn: Callable[[], np.ndarray], repeat: int) -> tuple[float, np.ndarray]:
    """Minimum wall time in s over ``repeat`` calls, and the last result."""
    best = np.inf
    result = fn()  # warm-up (JIT compile / cache load)
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="number of events (default 1e6)")
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions, minimum is reported")
    parser.add_argument("--seed", type=int, default=12345)
    args = parser.parse_args(argv)

    probes, cands = make_events(args.events, args.seed)
    n_probes, n_cands = int(ak.sum(ak.num(probes))), int(ak.sum(ak.num(cands)))
    print(
        f"events: {args.events}  probes: {n_probes}  candidates: {n_cands} (selected {int(ak.sum(cands.sel))})"
    )

    t_numba, idx_numba = timeit(lambda: match_numba(probes, cands), args.repeat)
    print(f"numba:   {t_numba * 1e3:9.1f} ms")
    t_awk, idx_awk = timeit(lambda: match_awkward(probes, cands), args.repeat)
    print(f"awkward: {t_awk * 1e3:9.1f} ms")

    # Δφ formulas differ at the last-ulp level; with continuous random inputs ties/threshold edges
    # within an ulp practically never occur, so the indices must agree exactly.
    if not np.array_equal(idx_numba, idx_awk):
        n_bad = int(np.count_nonzero(idx_numba != idx_awk))
        raise SystemExit(f"ERROR: numba and awkward matches differ for {n_bad} of {idx_numba.size} probes")
    print(f"identical indices: {idx_numba.size} probes, {int(np.count_nonzero(idx_numba >= 0))} matched")
    ratio = t_awk / t_numba
    print(f"matching: {ratio:.1f}x awkward")
    return ratio


if __name__ == "__main__":
    main()
