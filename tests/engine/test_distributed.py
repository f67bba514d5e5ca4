"""A real 2-process ``gloo`` job (torch.multiprocessing spawn, CPU): the gather-with-gradient gives the
single-process gradient, the batch lists are sharded, and two training steps of the real trainer (DDP student,
D3still on the global KD batch, UGD with trainable projectors) leave both ranks with identical weights.

One spawn runs every check (starting processes dominates the time) and each rank writes its results to a file.
"""

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from distillery.data.transforms import ViewSpec
from distillery.engine import distributed
from distillery.engine.trainer import Recipe, TrainData, train
from distillery.losses import build_method
from distillery.losses.functional import d3still_loss
from distillery.models import build_model

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _relation_case():
    """A linear map of 8 inputs (4 per rank) and a fixed teacher: D3still is a loss of the whole batch."""
    g = torch.Generator().manual_seed(3)
    x, emb_t, weight = torch.randn(8, 5, generator=g), torch.randn(8, 4, generator=g), torch.randn(4, 5, generator=g)
    return x, emb_t, weight


def _relation_grad(x, emb_t, weight, gather):
    lin = torch.nn.Linear(5, 4, bias=False)
    with torch.no_grad():
        lin.weight.copy_(weight)
    net = distributed.wrap_model(lin, torch.device("cpu")) if gather else lin
    emb = net(x)
    if gather:
        emb = distributed.all_gather_with_grad(emb)
    d3still_loss(emb, emb_t, topk=4, alpha=1.0, beta=1.0, gamma=1.0).backward()
    return lin.weight.grad


def _tiny_run(method: str, folder: str):
    """One epoch of the real trainer on 16 random 8 x 8 images: 4 P x K and 4 KD batches, 2 steps per rank."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 8, 8, 1), dtype=np.uint8)
    data = TrainData.from_split(images, np.arange(16), np.repeat(np.arange(4), 4))
    student = build_model("convnet_s", embedding_dim=8, num_classes=4, in_channels=1)
    teacher = build_model("convnet_m", embedding_dim=8, num_classes=4, in_channels=1)
    recipe = Recipe(epochs=1, lr=0.1, ids_per_batch=2, samples_per_id=2, kd_batch_size=4)
    hyper = {"topk": 4} if method == "d3still" else {"layer": 2}
    distiller = build_method(method, **hyper)
    spec = ViewSpec(8, mean=(0.5,), std=(0.25,), padding=1)
    result = train(student, data, recipe, spec, seed=0, distiller=distiller, teacher=teacher, view_t=spec,
                   checkpoint_path=os.path.join(folder, f"{method}.pt"), progress=False)
    return {"model": student.state_dict(), "distiller": distiller.state_dict(), "history": result.history}


def _worker(rank: int, folder: str, port: int):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    device = distributed.init_from_env(torch.device("cpu"))
    x, emb_t, weight = _relation_case()
    out = {"device": str(device), "rank": distributed.rank(), "world": distributed.world_size(),
           "main": distributed.is_main(), "shard": distributed.shard(list(range(7))),
           "gathered": distributed.all_gather(torch.tensor([rank, 10 + rank])).tolist(),
           "grad": _relation_grad(x[4 * rank:4 * rank + 4], emb_t, weight, gather=True)}
    for method in ("d3still", "ugd"):
        out[method] = _tiny_run(method, folder)
    torch.save(out, os.path.join(folder, f"rank{rank}.pt"))
    distributed.shutdown()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("ddp"))
    mp.spawn(_worker, args=(folder, _free_port()), nprocs=WORLD, join=True)
    return folder, [torch.load(os.path.join(folder, f"rank{r}.pt"), weights_only=False) for r in range(WORLD)]


def test_process_group_basics(ranks):
    _, (r0, r1) = ranks
    assert (r0["rank"], r0["world"], r0["main"], r1["rank"], r1["main"]) == (0, 2, True, 1, False)
    assert r0["device"] == r1["device"] == "cpu"
    assert r0["shard"] == [0, 2, 4] and r1["shard"] == [1, 3, 5]  # batch 6 is dropped: equal steps per rank
    assert r0["gathered"] == r1["gathered"] == [0, 10, 1, 11]


def test_all_gather_with_grad_under_ddp_is_the_single_process_gradient(ranks):
    _, (r0, r1) = ranks
    x, emb_t, weight = _relation_case()
    expected = _relation_grad(x, emb_t, weight, gather=False)
    torch.testing.assert_close(r0["grad"], expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(r1["grad"], expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["d3still", "ugd"])
def test_two_ranks_end_with_identical_weights(ranks, method):
    folder, (r0, r1) = ranks
    torch.manual_seed(0)
    initial = build_model("convnet_s", embedding_dim=8, num_classes=4, in_channels=1).state_dict()
    for part in ("model", "distiller"):
        assert r0[method][part].keys() == r1[method][part].keys()
        for key, value in r0[method][part].items():
            assert torch.equal(value, r1[method][part][key]), f"{part}.{key} differs between ranks"
    assert not torch.equal(r0[method]["model"]["stages.0.0.weight"], initial["stages.0.0.weight"])  # it trained
    history = [{k: v for k, v in r["history"][0].items() if k != "seconds"} for r in (r0[method], r1[method])]
    assert history[0] == history[1] and history[0]["steps"] == 2 and np.isfinite(history[0]["kd"])  # rank means
    saved = torch.load(os.path.join(folder, f"{method}.pt"), weights_only=False)  # written by rank 0 only
    assert all(torch.equal(v, r0[method]["model"][k]) for k, v in saved["model"].items())
