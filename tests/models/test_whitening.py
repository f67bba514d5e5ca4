"""PCA whitening (whiten_mtd.md §4.3): official golden values, identity covariance, floor, save/load, errors."""

import os

import pytest
import torch
import torch.nn.functional as F

from distillery.models.whitening import PCAWhitening, WhiteningLayer, fit_pca_whitening

SCALES = torch.tensor([3.0, 2.0, 1.0, 0.5, 0.2, 0.1])


def _data():
    g = torch.Generator().manual_seed(9)
    raw = torch.randn(40, 6, generator=g) * SCALES + 1.0
    return raw, torch.randn(3, 6, generator=g)


# golden values from the official utils.PCA.train_pca / forward on L2-normalised rows
EIGVALS = [0.0012309588, 0.013641512, 0.020842319, 0.046919186, 0.19197413, 0.37194434]
GRAM = {  # whitened test points' Gram matrix Y Yᵀ (invariant to eigenvector signs)
    6: [[114.71655, 166.67278, 21.403025], [166.67278, 427.01398, -5.0599871], [21.403025, -5.0599871, 24.884428]],
    3: [[16.750614, 11.542053, 18.745556], [11.542053, 10.588825, 11.88572], [18.745556, 11.88572, 21.578037]],
}


@pytest.mark.parametrize("out_dim", [6, 3])
def test_golden_official(out_dim):
    raw, test = _data()
    pca = fit_pca_whitening(raw, out_dim)
    assert pca.in_dim == 6 and pca.out_dim == out_dim and pca.n_floored == 0 and pca.n_samples == 40
    torch.testing.assert_close(pca.eigenvalues, torch.tensor(EIGVALS), rtol=1e-4, atol=1e-8)
    y = pca.apply(test)
    torch.testing.assert_close(y @ y.T, torch.tensor(GRAM[out_dim]), rtol=1e-4, atol=1e-3)
    kept = sorted(EIGVALS, reverse=True)[:out_dim]
    assert pca.energy_kept == pytest.approx(sum(kept) / sum(EIGVALS), rel=1e-5)


def test_training_data_is_whitened_to_identity_covariance():
    raw, _ = _data()
    for out_dim in (6, 4):
        y = fit_pca_whitening(raw, out_dim).apply(raw)
        torch.testing.assert_close(y.mean(0), torch.zeros(out_dim), atol=1e-4, rtol=0)
        torch.testing.assert_close(y.T @ y / len(y), torch.eye(out_dim), atol=1e-3, rtol=0)


def test_projection_is_sorted_whitened_eigenbasis():
    raw, _ = _data()
    pca = fit_pca_whitening(raw, 4, normalize_input=False)
    x = raw - raw.mean(0)
    cov = x.T @ x / len(x)
    # P = V_d diag(λ_d^-1/2) with λ descending: Pᵀ C P = I and column norms = λ^-1/2
    torch.testing.assert_close(pca.projection.T @ cov @ pca.projection, torch.eye(4), atol=1e-4, rtol=0)
    lam = torch.linalg.eigvalsh(cov).flip(0)[:4]
    torch.testing.assert_close(pca.projection.norm(dim=0), lam.rsqrt(), rtol=1e-4, atol=0)


def test_eigenvalue_floor_on_rank_deficient_data():
    raw = torch.randn(4, 7, generator=torch.Generator().manual_seed(10))
    pca = fit_pca_whitening(raw, 5)
    assert pca.n_floored == 4  # official: n_0 = 4; 4 centred samples have rank 3
    assert pca.eigenvalues.shape == (7,) and pca.eigenvalues.min().abs() < 1e-6  # stored before the floor
    torch.testing.assert_close(pca.eigenvalues[-3:], torch.tensor([0.10699059, 0.16573526, 0.48482496]),
                               rtol=1e-4, atol=0)
    eps = pca.eigenvalues.max() * 1e-5
    # the two floored directions kept get weight eps^-1/2
    assert sorted(pca.projection.norm(dim=0).tolist())[-1] == pytest.approx(float(eps.rsqrt()), rel=1e-4)
    assert torch.isfinite(pca.projection).all()


def test_apply_options_and_input_untouched():
    raw, test = _data()
    pca = fit_pca_whitening(raw, 3)
    before = test.clone()
    y = pca.apply(test)
    assert torch.equal(test, before)  # the official layer subtracts the mean in place; we do not
    torch.testing.assert_close(pca.apply(test * 7.0), y, rtol=1e-5, atol=1e-5)  # L2 before centring
    torch.testing.assert_close(pca.apply(test, normalize_output=True), F.normalize(y, dim=-1))
    raw_fit = fit_pca_whitening(raw, 3, normalize_input=False)
    torch.testing.assert_close(raw_fit.apply(raw[:2]), (raw[:2] - raw_fit.mean) @ raw_fit.projection)


def test_save_load_roundtrip_is_atomic(tmp_path):
    raw, test = _data()
    pca = fit_pca_whitening(raw, 3)
    path = tmp_path / "sub" / "pca.pt"
    pca.save(path)
    assert os.listdir(path.parent) == ["pca.pt"]  # no temporary file left behind
    loaded = PCAWhitening.load(path)
    for name in ("mean", "projection", "eigenvalues"):
        assert torch.equal(getattr(loaded, name), getattr(pca, name))
    for name in ("n_floored", "whit", "floor_ratio", "energy_kept", "normalize_input", "n_samples"):
        assert getattr(loaded, name) == getattr(pca, name)
    assert torch.equal(loaded.apply(test), pca.apply(test))


def test_load_official_buffer_file(tmp_path):
    raw, test = _data()
    pca = fit_pca_whitening(raw, 3)
    v = torch.linalg.eigh(torch.cov(F.normalize(raw, dim=1).T, correction=0))[1]
    official = {"dim1": torch.tensor(6), "dim2": torch.tensor(3), "whit": torch.tensor(0.5),
                "d": pca.eigenvalues, "v": v, "n_0": torch.tensor(0), "mean": pca.mean.view(1, 6),
                "dvt": pca.projection.T.contiguous()}
    torch.save(official, tmp_path / "resnet101_gem_pca_512d.pt")
    loaded = PCAWhitening.load(tmp_path / "resnet101_gem_pca_512d.pt")
    assert torch.equal(loaded.projection, pca.projection) and loaded.normalize_input
    assert loaded.energy_kept == pytest.approx(pca.energy_kept, rel=1e-6)
    torch.testing.assert_close(loaded.apply(test), pca.apply(test))


def test_whitening_layer_is_frozen_and_matches_apply(tmp_path):
    raw, test = _data()
    pca = fit_pca_whitening(raw, 3)
    pca.save(tmp_path / "p.pt")
    layer = WhiteningLayer.from_file(tmp_path / "p.pt")
    assert list(layer.parameters()) == []
    assert set(layer.state_dict()) == {"mean", "projection"}
    torch.testing.assert_close(layer(test), pca.apply(test), rtol=0, atol=0)
    unit = WhiteningLayer(pca, normalize_output=True)(test)
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(3))


def test_errors(tmp_path):
    raw, _ = _data()
    with pytest.raises(ValueError):
        fit_pca_whitening(raw, 7)
    with pytest.raises(ValueError):
        fit_pca_whitening(raw[0])
    with pytest.raises(ValueError):
        fit_pca_whitening(torch.ones(5, 3), normalize_input=False)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a PCA-whitening file"):
        PCAWhitening.load(tmp_path / "other.pt")
