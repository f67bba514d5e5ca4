"""NMI: sklearn's definition by hand and S2SD's faiss k-means + sklearn pipeline (golden values)."""

import numpy as np
import pytest
import torch

from distillery.evaluation import nmi
from distillery.evaluation.clustering import normalized_mutual_info


def test_normalized_mutual_info_hand_values():
    # MI = 1/2 ln(4/3) + 1/4 ln(2/3) + 1/4 ln 2; H = ln 2 and -(3/4 ln 3/4 + 1/4 ln 1/4)
    mi = 0.5 * np.log(4 / 3) + 0.25 * np.log(2 / 3) + 0.25 * np.log(2)
    h = (np.log(2) - (0.75 * np.log(0.75) + 0.25 * np.log(0.25))) / 2
    assert normalized_mutual_info([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(mi / h, rel=1e-12)
    assert normalized_mutual_info([0, 0, 1, 1, 2, 2], [1, 1, 0, 0, 0, 2]) == pytest.approx(0.7396673768007592)
    assert normalized_mutual_info([5, 5, 9], [1, 1, 0]) == 1.0  # renaming invariance
    assert normalized_mutual_info([0, 0, 1, 1], [0, 1, 0, 1]) == 0.0  # independent
    assert normalized_mutual_info([3, 3], [1, 1]) == 1.0 and normalized_mutual_info([3, 4], [1, 1]) == 0.0


def _seeded():
    g = torch.Generator().manual_seed(3)
    e = torch.randn(120, 16, generator=g)
    labels = torch.randint(0, 6, (120,), generator=g)
    return e + 0.8 * torch.randn(6, 16, generator=g)[labels], labels


@pytest.mark.parametrize("seed, golden", [(1234, 69.41379684888095), (7, 62.65494822321271)])
def test_golden_s2sd_pipeline(seed, golden):
    # faiss.Clustering(16, 6), niter 20, min/max points 1/1e9, seed; nearest centroid; sklearn NMI
    e, labels = _seeded()
    assert nmi(e, labels, seed=seed) == pytest.approx(golden, rel=1e-6)


def test_normalisation_and_errors():
    e, labels = _seeded()
    scaled = e * (1 + torch.arange(120.0)[:, None])
    assert nmi(scaled, labels, seed=1234) == pytest.approx(nmi(e, labels, seed=1234))
    with pytest.raises(ValueError, match="k-means"):
        nmi(e[:4], labels[:4], seed=0, n_clusters=5)
    with pytest.raises(ValueError, match="one entry"):
        nmi(e, labels[:5], seed=0)
