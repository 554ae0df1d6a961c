import os

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def mnist_small():
    """A small real MNIST subset (train 600, test 300)."""
    from oodgen.data import load
    tr = load("mnist", "train", n=600)
    te = load("mnist", "test", n=300)
    return tr, te
