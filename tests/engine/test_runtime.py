"""One GPU per queued experiment: claim_gpu takes the first GPU whose lock no other process holds."""

import fcntl

import pytest

from distillery.engine import runtime


def test_claim_gpu_skips_held_locks_and_keeps_its_claim(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "_CLAIMED", {})
    other = open(tmp_path / "gpu0.lock", "w")  # another process's claim (flock: per open file description)
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert runtime.claim_gpu(3, tmp_path) == 1
    assert runtime.claim_gpu(3, tmp_path) == 1  # the process keeps its GPU (distill, then evaluate)
    monkeypatch.setattr(runtime, "_CLAIMED", {})
    with pytest.raises(RuntimeError, match="all 2 visible GPUs are held"):
        runtime.claim_gpu(2, tmp_path)  # gpu0 held by `other`, gpu1 by the first claim above
    other.close()
    assert runtime.claim_gpu(2, tmp_path) == 0  # released locks are free again


def test_non_training_stage_runs_on_rank_zero_only(monkeypatch):
    from distillery.cli import run_stage, stage_parser

    calls = []
    monkeypatch.setattr("sys.argv", ["stage"])
    monkeypatch.setattr("distillery.cli.load_params", lambda path: {"path": path})
    for rank, distributed_stage, ran in [("1", False, False), ("0", False, True), ("1", True, True)]:
        monkeypatch.setenv("RANK", rank)
        calls.clear()
        run_stage(stage_parser("test"), lambda args, params: calls.append(params["path"]), distributed_stage)
        assert calls == (["params.yaml"] if ran else [])
