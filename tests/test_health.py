"""The CVAE health check: it must flag a collapsed generator and pass a healthy one."""
import warnings

import pytest
import torch

from oodgen.config import Stage
from oodgen.generate.health import (CollapsedCVAEError, CollapsedCVAEWarning, check_health, cvae_health,
                                    health_line)
from oodgen.models import CVAE
from oodgen.train import fit_ellipsoids, train_cvae


@pytest.fixture(scope="module")
def mnist_3k():
    from oodgen.data import load
    tr = load("mnist", "train", n=3000)
    return torch.from_numpy(tr.images), torch.from_numpy(tr.labels)


def _train(x, y, encoder_act: str, seed: int = 0) -> CVAE:
    torch.manual_seed(seed)
    cvae = CVAE(10, 8, encoder_act=encoder_act)
    train_cvae(cvae, x, y, Stage(6, lr=2e-3, batch_size=64), None, seed, progress=False, log=lambda m: None,
               kl_warmup=1.0)
    return cvae.eval()


@pytest.fixture(scope="module")
def healthy(mnist_3k):
    return _train(*mnist_3k, "leaky")


def test_brief_training_gives_active_dimensions(mnist_3k, healthy):
    """A few epochs on 3,000 MNIST images: more than half of the 8 latent dimensions active, the
    reconstruction clearly better than the class-mean image, Type II samples that vary."""
    x, y = mnist_3k
    h = cvae_health(healthy, x, y, fit_ellipsoids(healthy, x, y))
    assert h["active_dims"] > 4, h["latent_var"]
    assert h["recon_ratio"] < 0.8, (h["recon_nats"], h["class_mean_nats"])
    assert h["spread_ratio"] > 0.3, (h["type2_spread"], h["train_spread"])
    assert not h["collapsed"] and h["collapse_reasons"] == []
    assert len(h["type2_radius"]) == 10 and min(h["type2_radius"]) > 0
    assert "healthy" in health_line(h)


def test_decoder_that_ignores_z_is_flagged(mnist_3k, healthy):
    """The same trained model with its latent input cut (encoder mean constant, decoder blind to z)."""
    x, y = mnist_3k
    broken = CVAE(10, 8, encoder_act="leaky")
    broken.load_state_dict(healthy.state_dict())
    with torch.no_grad():
        broken.encoder.mu.weight.zero_()
        broken.decoder.net[0].weight[:, :8].zero_()
    h = cvae_health(broken.eval(), x, y, fit_ellipsoids(broken, x, y))
    assert h["active_dims"] == 0
    assert h["collapsed"] and any("latent dimensions" in r for r in h["collapse_reasons"])
    assert h["spread_ratio"] < 0.05
    assert "COLLAPSED" in health_line(h)
    with pytest.raises(CollapsedCVAEError, match="collapsed"):
        check_health(h, strict=True, log=lambda m: None)
    lines = []
    with pytest.warns(CollapsedCVAEWarning):
        check_health(h, strict=False, log=lines.append)
    assert any("WARNING" in line for line in lines)


def test_reconstruction_no_better_than_class_mean_is_flagged(mnist_3k, healthy):
    """Active latents do not save a decoder whose output is no better than the class mean."""
    x, y = mnist_3k
    broken = CVAE(10, 8, encoder_act="leaky")
    broken.load_state_dict(healthy.state_dict())
    with torch.no_grad():
        broken.decoder.net[-1].bias.fill_(-8.0)     # an all-black output: worse than the class mean
        broken.decoder.net[-1].weight.zero_()
    hb = cvae_health(broken.eval(), x, y)
    assert hb["recon_ratio"] > 0.9 and hb["collapsed"]
    assert any("reconstruction" in r for r in hb["collapse_reasons"])
    assert hb["active_dims"] == cvae_health(healthy, x, y)["active_dims"]   # the encoder is untouched


def test_health_is_deterministic(mnist_3k, healthy):
    x, y = mnist_3k
    ell = fit_ellipsoids(healthy, x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cvae_health(healthy, x, y, ell, seed=3) == cvae_health(healthy, x, y, ell, seed=3)
