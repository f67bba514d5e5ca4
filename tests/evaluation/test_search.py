"""Blockwise search helpers: k-NN and the ranks of relevant items, against brute force."""

import numpy as np
import pytest
import torch

from distillery.evaluation.search import encode_jointly, knn, l2_normalize, positive_ranks, query_blocks


def test_query_blocks_cover_all_rows():
    assert [(s.start, s.stop) for s in query_blocks(5, 4, block_elements=9)] == [(0, 2), (2, 4), (4, 5)]
    assert [(s.start, s.stop) for s in query_blocks(3, 100, block_elements=1)] == [(0, 1), (1, 2), (2, 3)]


def test_knn_matches_brute_force_and_excludes_self():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g)
    idx, dist = knn(x, x, 5, exclude_self=True, block_elements=97)
    xn = l2_normalize(x)
    full = 1 - xn @ xn.T
    full.fill_diagonal_(float("inf"))
    ref = torch.sort(full, dim=1, stable=True)
    assert torch.equal(idx, ref.indices[:, :5])
    assert torch.allclose(dist, ref.values[:, :5])
    assert not (idx == torch.arange(40)[:, None]).any()


def test_knn_ties_ordered_by_index():
    q = torch.tensor([[1.0, 0.0]])
    g = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, -1.0], [2.0, 0.0]])  # d = 1, 0, 1, 0
    idx, dist = knn(q, g, 4)
    assert idx.tolist() == [[1, 3, 0, 2]] and dist.tolist() == [[0.0, 0.0, 1.0, 1.0]]
    with pytest.raises(ValueError):
        knn(q, g, 5)


def test_positive_ranks_with_ties_between_relevant_and_others():
    # distances from the query: g0 .5, g1 .5, g2 .5, g3 0, g4 .5 (exact); relevant: g1, g3, g4
    h = 0.5
    q = torch.tensor([[h, h, h, h]])
    g = torch.tensor([[h, h, h, -h], [h, h, -h, h], [h, -h, h, h], [h, h, h, h], [-h, h, h, h]])
    qc, gc = encode_jointly(np.array([7]), np.array([1, 7, 2, 7, 7]))
    (_, ranks, n_rel), = positive_ranks(q, g, qc, gc, exclude_self=False)
    assert n_rel.tolist() == [3] and ranks.tolist() == [[0, 2, 4]]  # order g3, g0, g1, g2, g4
    (_, ranks, n_rel), = positive_ranks(q, g, qc, gc, exclude_self=False, q_cams=np.array([0]),
                                        g_cams=np.array([0, 0, 0, 0, 1]))  # drops g1 and g3
    assert n_rel.tolist() == [1] and ranks.tolist() == [[2, -1, -1]]  # order g0, g2, g4 (g1, g3 removed)


def test_positive_ranks_relevant_items_tied_together():
    h = 0.5
    q = torch.tensor([[h, h, h, h]])
    g = torch.tensor([[-h, -h, -h, -h], [h, h, h, -h], [h, h, h, -h], [h, h, h, h]])  # d = 2, .5, .5, 0
    qc, gc = encode_jointly(np.array([0]), np.array([0, 0, 0, 1]))
    (_, ranks, _), = positive_ranks(q, g, qc, gc, exclude_self=False)
    assert ranks.tolist() == [[1, 2, 3]]
