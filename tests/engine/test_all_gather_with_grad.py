"""The global-batch whiten_mtd loss under a 2-process gloo group (CPU): every rank gathers the embeddings as
the trainer does (``all_gather_with_grad`` for the student, ``all_gather`` for the teachers) and the gradient
after DDP's averaging equals the single-process full-batch gradient (the official ``gather_with_grad`` + loss
x world_size reaches the same gradient)."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from distillery.engine.distributed import all_gather, all_gather_with_grad, world_size
from distillery.losses import build_method
from distillery.models import ModelOutput

W, B = 2, 3


def _full_batch():
    g = torch.Generator().manual_seed(11)
    s1, s2 = torch.randn(W * B, 4, generator=g), torch.randn(W * B, 4, generator=g)
    teachers = [(torch.randn(W * B, 6, generator=g), torch.randn(W * B, 6, generator=g)) for _ in range(2)]
    return s1, s2, teachers


def _loss(s1, s2, teachers):
    out = lambda e: ModelOutput(feats=[], pooled=e, embedding=e)  # noqa: E731
    d = build_method("whiten_mtd", teachers=["a", "b"], whiten=False, strategy="maxmean", temp_student=0.1)
    return d((out(s1), out(s2)), [(out(a), out(b)) for a, b in teachers], None)["kd"]


def _worker(rank, store, results):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=W)
    try:
        s1, s2, teachers = _full_batch()
        part = slice(rank * B, (rank + 1) * B)
        local1, local2 = s1[part].clone().requires_grad_(), s2[part].clone().requires_grad_()
        gathered = all_gather_with_grad(local1)
        loss = _loss(gathered, all_gather_with_grad(local2), [(all_gather(a[part]), all_gather(b[part]))
                                                              for a, b in teachers])
        loss.backward()
        torch.save({"loss": loss.detach(), "g1": local1.grad, "g2": local2.grad, "gathered": gathered.detach(),
                    "world": world_size()}, f"{results}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_single_process_is_the_identity():
    x = torch.randn(3, 2, requires_grad=True)
    assert world_size() == 1 and all_gather_with_grad(x) is x


def test_two_ranks_compute_the_global_loss_and_its_gradient(tmp_path):
    """Each rank: the full-batch loss; the gradient of its local slice = W x the full-batch gradient, so DDP's
    averaging over ranks gives exactly the full-batch gradient."""
    # fork: the children reuse the imported torch (spawn would re-import it: seconds on a busy CPU)
    mp.start_processes(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=W, join=True,
                       start_method="fork")
    s1, s2, teachers = _full_batch()
    s1.requires_grad_()
    s2.requires_grad_()
    full = _loss(s1, s2, teachers)
    full.backward()
    for rank in range(W):
        got = torch.load(tmp_path / f"{rank}.pt")
        part = slice(rank * B, (rank + 1) * B)
        assert got["world"] == W
        torch.testing.assert_close(got["gathered"], s1.detach())
        torch.testing.assert_close(got["loss"], full.detach(), rtol=1e-5, atol=0)
        torch.testing.assert_close(got["g1"], W * s1.grad[part], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(got["g2"], W * s2.grad[part], rtol=1e-4, atol=1e-7)
