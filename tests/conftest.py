import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Many steps on small tensors: a second intra-op thread costs more than it saves
    (on a busy 2-core machine it made these tests about ten times slower)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def torch_generator(seed: int = 0):
    import torch

    return torch.Generator().manual_seed(seed)
