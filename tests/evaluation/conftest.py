import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _single_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waits on a busy machine (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
