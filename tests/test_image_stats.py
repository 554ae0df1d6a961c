"""The image statistics behind ``reject+fisher``: CVAE likelihood in bits, the zlib complexity
correction, and the pixel-space KNN distance."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oodgen.detectors.image_stats import PixelBank, complexity_bits, cvae_nll_bits, image_stats
from oodgen.models import CVAE


def test_complexity_orders_simple_below_noise():
    g = torch.Generator().manual_seed(0)
    blank = torch.zeros(3, 1, 28, 28)
    stroke = blank.clone()
    stroke[:, :, 10:18, 12:15] = 1.0
    noise = torch.rand(3, 1, 28, 28, generator=g)
    cb, cs, cn = complexity_bits(blank), complexity_bits(stroke), complexity_bits(noise)
    assert cb.dtype == np.float64 and cb.shape == (3,)
    assert np.all(cb < cs) and np.all(cs < cn)
    assert np.all(cb % 8 == 0)                       # whole bytes
    assert cn.min() > 0.9 * 784 * 8                  # noise barely compresses
    # out-of-range inputs (the unclipped sphere set) are clipped, not wrapped around
    np.testing.assert_array_equal(complexity_bits(noise * 0 - 3.0), complexity_bits(blank))


def test_nll_matches_the_definition():
    torch.manual_seed(0)
    cvae = CVAE(3, 4).eval()
    x = torch.rand(5, 1, 28, 28)
    y = torch.tensor([0, 1, 2, 0, 1])
    got = cvae_nll_bits(cvae, x, y, batch_size=2)
    mu, _ = cvae.encode(x, y)
    logits = cvae.decoder.logits(mu, cvae.onehot(y))
    want = (F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
            + 0.5 * mu.pow(2).sum(1)) / math.log(2)
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-5)
    cvae.train()
    cvae_nll_bits(cvae, x, y)
    assert cvae.training                                 # mode restored


def _strokes(n, g, col):
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 4:24, col:col + 3] = 0.5 + 0.5 * torch.rand(n, 1, 20, 3, generator=g)
    return x


def test_pixel_bank_distance_and_round_trip():
    g = torch.Generator().manual_seed(0)
    train = _strokes(200, g, 8)
    bank = PixelBank.from_training_set(train, seed=0, size=150, k=5)
    assert bank.images.dtype == torch.uint8 and bank.images.shape == (150, 784)
    near, far = bank.distance(_strokes(20, g, 8)), bank.distance(_strokes(20, g, 18))
    assert near.max() < far.min()
    # scale-free: the distance is between L2-normalised images
    np.testing.assert_allclose(bank.distance(0.5 * _strokes(5, torch.Generator().manual_seed(3), 8)),
                               bank.distance(_strokes(5, torch.Generator().manual_seed(3), 8)), rtol=1e-5)
    again = PixelBank.from_state_dict(bank.state_dict())
    np.testing.assert_array_equal(again.distance(train[:7]), bank.distance(train[:7]))
    # the subset is fixed by the seed
    assert torch.equal(PixelBank.from_training_set(train, seed=0, size=150).images, bank.images)


def test_image_stats_fields_and_errors():
    torch.manual_seed(0)
    cvae = CVAE(2, 3)
    x = torch.rand(4, 1, 28, 28)
    y = torch.tensor([0, 1, 1, 0])
    bank = PixelBank(torch.rand(60, 1, 28, 28), k=3)
    st = image_stats(cvae, bank, x, y)
    assert set(st) == {"nll", "nll-complexity", "pixel-knn"}
    np.testing.assert_allclose(st["nll-complexity"], st["nll"] - complexity_bits(x))
    np.testing.assert_array_equal(st["pixel-knn"], bank.distance(x))
    assert all(np.all(np.isfinite(v)) for v in st.values())
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        image_stats(cvae, bank, x, y[:3])


def test_pixel_knn_detector_bank_and_errors():
    from oodgen.detectors.base import InputError
    from oodgen.detectors.pixel_knn import PixelKNN
    g = torch.Generator().manual_seed(1)
    train = _strokes(120, g, 8)
    full = PixelKNN(k=5).fit(train)
    assert full.bank_.images.shape == (120, 784)
    part = PixelKNN(k=5, bank_size=60, seed=3).fit(train)
    assert part.bank_.images.shape == (60, 784)
    near, far = full.score(_strokes(10, g, 8)), full.score(_strokes(10, g, 18))
    assert near.max() < far.min()
    with pytest.raises(InputError, match="k=70 exceeds the 60 training images"):
        PixelKNN(k=70, bank_size=60).fit(train)
    with pytest.raises(ValueError, match="positive integer"):
        PixelKNN(k=0).fit(train)


def test_complexity_threads_give_the_serial_answer():
    x = torch.rand(700, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    x[::3] = 0.0
    np.testing.assert_array_equal(complexity_bits(x, workers=3), complexity_bits(x, workers=1))


def test_pixel_bank_default_size_and_scaled_k():
    from oodgen.detectors.image_stats import PIXEL_BANK_SIZE, PIXEL_K, REFERENCE_BANK, scaled_k
    x = torch.rand(4000, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    bank = PixelBank.from_training_set(x, seed=1)
    n = min(PIXEL_BANK_SIZE, len(x))
    assert len(bank.images) == n and bank.k == scaled_k(PIXEL_K, n, min(REFERENCE_BANK, len(x)))
    # a smaller bank with the same seed is a subset of a larger one
    small = PixelBank.from_training_set(x, seed=1, size=500)
    big = {bytes(r.numpy()) for r in PixelBank.from_training_set(x, seed=1, size=2000).images}
    assert all(bytes(r.numpy()) in big for r in small.images)
    assert small.k == scaled_k(PIXEL_K, 500, 4000) == 6
    assert scaled_k(50, 1, 30000) == 1
