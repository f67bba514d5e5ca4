"""PCA whitening of teacher descriptors (spec: whiten_mtd.md section 4.3).

whiten_mtd fits one PCA-whitening per teacher offline on L2-normalised descriptors and applies it,
frozen, after the teacher: y = (L2(x) − μ) · P with P = V_d diag(λ_d^−whit) (D x d).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

_FORMAT = "distillery.pca_whitening"


def whiten(x: torch.Tensor, mean: torch.Tensor, projection: torch.Tensor,
           normalize_input: bool = True, normalize_output: bool = False) -> torch.Tensor:
    """(optional L2) → subtract ``mean`` (D,) → multiply by ``projection`` (D x d) → (optional L2).

    Never modifies ``x`` (the official layer subtracts the mean in place on its input).
    """
    if normalize_input:
        x = F.normalize(x, p=2, dim=-1)
    y = (x - mean) @ projection
    return F.normalize(y, p=2, dim=-1) if normalize_output else y


@dataclass(eq=False)
class PCAWhitening:
    """A fitted PCA whitening.

    ``mean`` (D,), ``projection`` (D x d) = the official ``dvt``ᵀ; ``eigenvalues`` (D,) all
    eigenvalues of the biased covariance in ascending order *before* the floor (official ``d``);
    ``n_floored`` how many were raised to the floor; ``energy_kept`` fraction of the floored
    spectrum's sum kept by the d components; ``normalize_input`` whether inputs are L2-normalised
    before centring (True for teacher descriptors, as the fit data were).
    """

    mean: torch.Tensor
    projection: torch.Tensor
    eigenvalues: torch.Tensor
    n_floored: int = 0
    whit: float = 0.5
    floor_ratio: float = 1e-5
    energy_kept: float = 1.0
    normalize_input: bool = True
    n_samples: int | None = None

    @property
    def in_dim(self) -> int:
        return self.projection.shape[0]

    @property
    def out_dim(self) -> int:
        return self.projection.shape[1]

    def apply(self, x: torch.Tensor, normalize_output: bool = False) -> torch.Tensor:
        """N x D → N x d: L2 (if ``normalize_input``), centre, project and whiten; L2 the result
        only if ``normalize_output`` (the official layer has no L2 after it: the loss and the
        multi-scale evaluation normalise later)."""
        mean, proj = self.mean.to(x.device, x.dtype), self.projection.to(x.device, x.dtype)
        return whiten(x, mean, proj, self.normalize_input, normalize_output)

    def to_dict(self) -> dict:
        return {"format": _FORMAT, "version": 1, "mean": self.mean, "projection": self.projection,
                "eigenvalues": self.eigenvalues, "n_floored": self.n_floored, "whit": self.whit,
                "floor_ratio": self.floor_ratio, "energy_kept": self.energy_kept,
                "normalize_input": self.normalize_input, "n_samples": self.n_samples}

    def save(self, path: str | os.PathLike) -> None:
        """Write a small ``torch.save`` dict atomically (temporary file in the same folder, then
        ``os.replace``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save({k: v.detach().cpu().contiguous() if isinstance(v, torch.Tensor) else v
                            for k, v in self.to_dict().items()}, f)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PCAWhitening":
        """Read a file written by :meth:`save`, or an official whiten_mtd ``pca_weights/*.pt``
        (buffers ``dim1, dim2, whit, d, v, n_0, mean, dvt``)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if "dvt" in state:
            return cls.from_official_state_dict(state)
        if state.get("format") != _FORMAT:
            raise ValueError(f"{path}: not a PCA-whitening file (no 'format' = {_FORMAT!r} and no 'dvt')")
        fields = {k: v for k, v in state.items() if k not in ("format", "version")}
        return cls(**fields)

    @classmethod
    def from_official_state_dict(cls, state: dict) -> "PCAWhitening":
        """Convert the official ``utils.PCA`` buffers (the authors' pre-computed files)."""
        d = state["d"].float()
        eps = d.max() * 1e-5
        floored = torch.where(d < eps, eps, d)
        dvt = state["dvt"].float()
        kept = floored.sort(descending=True)[0][: dvt.shape[0]]
        return cls(mean=state["mean"].float().reshape(-1), projection=dvt.t().contiguous(), eigenvalues=d,
                   n_floored=int(state["n_0"]), whit=float(state["whit"]),
                   energy_kept=float(kept.sum() / floored.sum()), normalize_input=True)


def fit_pca_whitening(x: torch.Tensor, out_dim: int | None = None, whit: float = 0.5,
                      floor_ratio: float = 1e-5, normalize_input: bool = True) -> PCAWhitening:
    """Fit PCA whitening on ``x`` (N x D; teacher descriptors) exactly as the official ``train_pca``.

    1. (if ``normalize_input``) L2-normalise rows — the official caller does this before fitting;
    2. μ = column mean, C = (x − μ)ᵀ(x − μ) / N (biased);
    3. (λ, V) = ``torch.linalg.eigh(C)`` (ascending; stored unfloored as ``eigenvalues``);
    4. floor: eps = max(λ)·``floor_ratio`` and every λ_i < eps becomes eps;
    5. keep the ``out_dim`` (default D) largest by ``torch.argsort(descending=True)`` with their
       columns of V; ``dvt = diag(1 / λ_k^whit) V_kᵀ`` and ``projection = dvtᵀ`` (D x d).
    The power uses a 0-d float32 tensor exponent like the official buffer (it differs from
    ``** 0.5`` in the last bit). ``x`` is not modified (the official code centres it in place).
    """
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"expected an N x D tensor with N >= 2, got shape {tuple(x.shape)}")
    out_dim = x.shape[1] if out_dim is None else int(out_dim)
    if not 1 <= out_dim <= x.shape[1]:
        raise ValueError(f"out_dim must be in 1..{x.shape[1]}, got {out_dim}")
    if normalize_input:
        x = F.normalize(x, p=2, dim=-1)
    mean = x.mean(dim=0, keepdim=True)
    xc = x - mean
    cov = xc.t().mm(xc) / x.size(0)
    eigvals, eigvecs = torch.linalg.eigh(cov)
    eps = eigvals.max() * floor_ratio
    if not bool(eps > 0):
        raise ValueError("the covariance has no positive eigenvalue (constant data?)")
    low = eigvals < eps
    floored = torch.where(low, eps, eigvals)
    idx = torch.argsort(floored, descending=True)[:out_dim]
    kept = floored[idx]
    dvt = torch.diag(1.0 / kept ** torch.tensor(whit, dtype=kept.dtype, device=kept.device)) @ eigvecs[:, idx].T
    return PCAWhitening(
        mean=mean.reshape(-1), projection=dvt.t().contiguous(), eigenvalues=eigvals, n_floored=int(low.sum()),
        whit=float(whit), floor_ratio=float(floor_ratio), energy_kept=float(kept.sum() / floored.sum()),
        normalize_input=normalize_input, n_samples=int(x.shape[0]),
    )


class WhiteningLayer(torch.nn.Module):
    """Frozen PCA-whitening layer: buffers ``mean`` (D,) and ``projection`` (D x d), no parameters.

    ``forward(x)`` = :meth:`PCAWhitening.apply` (L2 before if the fit did, none after unless
    ``normalize_output``). Buffers travel with ``state_dict`` and ``.to(device)``.
    """

    def __init__(self, pca: PCAWhitening, normalize_output: bool = False):
        super().__init__()
        self.register_buffer("mean", pca.mean.detach().clone().float())
        self.register_buffer("projection", pca.projection.detach().clone().float())
        self.normalize_input = pca.normalize_input
        self.normalize_output = normalize_output

    @classmethod
    def from_file(cls, path: str | os.PathLike, normalize_output: bool = False) -> "WhiteningLayer":
        return cls(PCAWhitening.load(path), normalize_output=normalize_output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return whiten(x, self.mean, self.projection, self.normalize_input, self.normalize_output)

    def extra_repr(self) -> str:
        d_in, d_out = self.projection.shape
        return f"{d_in} -> {d_out}, normalize_input={self.normalize_input}, normalize_output={self.normalize_output}"
