"""revisited_map: hand-computed trapezoid AP / mP@k and golden values of the reference compute_map."""

import numpy as np
import pytest
import torch

from distillery.evaluation import revisited_map

SCORES = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]  # database ranked by index


def test_hand_computed_single_query():
    out = revisited_map(np.array([SCORES]), [{"easy": [1], "hard": [3], "junk": [2]}])
    # medium: positives at 1 and 3, junk at 2 -> adjusted 1, 2: ((0 + 1/2) / 2 + (1/2 + 2/3) / 2) / 2
    assert out["map_medium"] == pytest.approx(100 * (0.25 + 7 / 12) / 2)
    assert out["mp_at_1_medium"] == 0.0
    assert out["mp_at_5_medium"] == pytest.approx(200 / 3)  # divisor min(5, worst position 3)
    # easy: positive 1 (hard 3 is junk); hard: positive 3 moved up past junk 1 and 2 -> both at position 1
    assert out["map_easy"] == pytest.approx(25.0) and out["map_hard"] == pytest.approx(25.0)
    assert out["mp_at_5_easy"] == pytest.approx(50.0) and out["mp_at_10_hard"] == pytest.approx(50.0)


def test_query_without_positives_is_skipped_per_setting():
    gnd = [{"easy": [1], "hard": [3], "junk": [2]}, {"easy": [0], "hard": [], "junk": []}]
    out = revisited_map(torch.tensor([SCORES, SCORES]), gnd)
    assert out["map_easy"] == pytest.approx((25 + 100) / 2)
    assert out["map_medium"] == pytest.approx((100 * (0.25 + 7 / 12) / 2 + 100) / 2)
    assert out["map_hard"] == pytest.approx(25.0)  # the second query has no hard item


def test_ties_stable_by_index_and_keys():
    out = revisited_map(np.zeros((1, 4)), [{"easy": [2], "hard": [3], "junk": [0]}], ks=(1, 2))
    # all scores tied -> order 0 (junk), 1, 2, 3: easy item 2 at adjusted position 1
    assert out["map_easy"] == pytest.approx(100 * (0 + 1 / 2) / 2)
    assert sorted(out) == sorted(f"{m}_{s}" for s in ("easy", "medium", "hard")
                                 for m in ("map", "mp_at_1", "mp_at_2"))
    with pytest.raises(ValueError, match="'hard' setting"):
        revisited_map(np.zeros((1, 4)), [{"easy": [2], "hard": [], "junk": [0]}])


def test_duplicate_and_overlapping_indices_follow_reference():
    # "ok" duplicates count in |ok| (AP < 1); an item both relevant and junk is not junk for itself
    out = revisited_map(np.array([SCORES]), [{"easy": [0, 0], "hard": [1], "junk": [1]}])
    assert out["map_easy"] == pytest.approx(50.0)  # 1 of 2 "ok" entries found at position 0
    assert out["map_hard"] == pytest.approx(100.0)  # hard item 1: junk 0 before it, itself not counted


def _seeded():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(5, 40, generator=g)
    perm = [torch.randperm(40, generator=g).tolist() for _ in range(5)]
    gnd = [dict(easy=p[:3], hard=p[3:6], junk=p[6:9]) for p in perm]
    gnd[1] = dict(easy=[], hard=perm[1][:4], junk=perm[1][4:6])
    gnd[2] = dict(easy=perm[2][:5], hard=[], junk=[])
    return s, gnd


def test_golden_reference_compute_map():
    # whiten_mtd datasets/oxford_paris.py compute_map on ranks = argsort(-sim), settings as oxford_paris_eval.py
    s, gnd = _seeded()
    out = revisited_map(s, gnd)
    golden = {"map_easy": 15.030832820370483, "map_medium": 16.030308177310204, "map_hard": 6.887483328583634,
              "mp_at_1_easy": 25.0, "mp_at_5_easy": 10.0, "mp_at_10_easy": 10.0,
              "mp_at_1_medium": 20.0, "mp_at_5_medium": 8.0, "mp_at_10_medium": 10.0,
              "mp_at_1_hard": 0.0, "mp_at_5_hard": 0.0, "mp_at_10_hard": 5.0}
    assert out == pytest.approx(golden, rel=1e-9, abs=1e-12)


def test_errors():
    with pytest.raises(ValueError, match="outside"):
        revisited_map(np.zeros((1, 3)), [{"easy": [3], "hard": [0], "junk": []}])
    with pytest.raises(ValueError, match="n_query"):
        revisited_map(np.zeros((2, 3)), [{"easy": [1], "hard": [0], "junk": []}])
    with pytest.raises(ValueError, match="no 'hard'"):
        revisited_map(np.zeros((1, 3)), [{"easy": [1], "junk": []}])
    with pytest.raises(ValueError, match="NaN"):
        revisited_map(np.full((1, 3), np.nan), [{"easy": [1], "hard": [0], "junk": []}])
