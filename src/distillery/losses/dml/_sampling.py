"""Seedable row-wise sampling shared by the batch miners (CPU, explicit ``torch.Generator``)."""

from __future__ import annotations

import numpy as np
import torch


def as_label_tensor(labels) -> torch.Tensor:
    """Labels (tensor, numpy array or list) as a 1-D CPU long tensor."""
    labels = torch.as_tensor(labels).detach().cpu()
    if labels.dim() != 1:
        labels = labels.reshape(-1)
    return labels.long()


def sample_per_row(weights: torch.Tensor, generator: torch.Generator | None, what: str) -> torch.Tensor:
    """One column index per row of ``weights`` (B x B, >= 0), drawn proportionally to the row.

    Sampling runs on CPU so a CPU generator gives the same draws whatever the tensors' device.
    A row whose weights are all zero or not finite raises ``ValueError`` (the official numpy
    sampler fails there too).
    """
    weights = weights.detach().cpu()
    sums = weights.sum(dim=1)
    bad = ~torch.isfinite(sums) | (sums <= 0) | ~torch.isfinite(weights).all(dim=1)
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        raise ValueError(f"no valid {what} to sample for anchor(s) {rows}")
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


def sample_positives(labels: torch.Tensor, generator: torch.Generator | None, self_if_alone: bool) -> torch.Tensor:
    """For each anchor i a positive drawn uniformly from {j != i : y_j = y_i}.

    If the anchor is the only member of its class: the anchor itself when ``self_if_alone``,
    otherwise ``ValueError``.
    """
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    cand = same & ~torch.eye(len(labels), dtype=torch.bool)
    if self_if_alone:
        alone = ~cand.any(dim=1)
        cand[alone, alone.nonzero().flatten()] = True
    return sample_per_row(cand.float(), generator, "positive")


def epoch_generator_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit generator seed derived from (run seed, epoch, stream), so that mining draws restart identically
    when a run resumes at ``epoch``."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(stream)]).generate_state(2, np.uint64)[0] >> 1)
