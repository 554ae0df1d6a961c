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
    from oodgen.config import Variant
    return _train(*mnist_3k, Variant().encoder_act)


def test_encoder_activations():
    """relu: the paper's encoder, ReLU everywhere; leaky: LeakyReLU in the 16-unit layer only;
    leaky-all (the default): no ReLU left in the encoder to die; the decoder is the paper's in all three."""
    from torch import nn

    def kinds(m):
        return [type(a).__name__ for a in m.modules() if isinstance(a, (nn.ReLU, nn.LeakyReLU))]
    assert kinds(CVAE(10, 8, encoder_act="relu").encoder) == ["ReLU"] * 3
    assert sorted(kinds(CVAE(10, 8, encoder_act="leaky").encoder)) == ["LeakyReLU", "ReLU", "ReLU"]
    assert kinds(CVAE(10, 8).encoder) == ["LeakyReLU"] * 3
    assert all(kinds(CVAE(10, 8, encoder_act=a).decoder) == ["ReLU"] * 3 for a in ("relu", "leaky", "leaky-all"))
    with pytest.raises(ValueError, match="unknown encoder activation"):
        CVAE(10, 8, encoder_act="tanh")


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


def test_kl_warmup_ramps_the_kl_weight(monkeypatch):
    """kl_warmup=E: the KL weight grows linearly from 0 to 1 over the first E epochs, then stays 1."""
    seen = []
    original = CVAE.loss

    def spy(logits, x, mu, log_var, kl_weight=1.0, colour_sigma=0.0):
        seen.append(kl_weight)
        return original(logits, x, mu, log_var, kl_weight, colour_sigma)

    monkeypatch.setattr(CVAE, "loss", staticmethod(spy))
    x, y = torch.rand(40, 1, 28, 28), torch.arange(40) % 10
    train_cvae(CVAE(10, 4), x, y, Stage(3, batch_size=10), None, 0, progress=False, log=lambda m: None,
               kl_warmup=2.0)
    assert seen == pytest.approx([i / 8 for i in range(8)] + [1.0] * 4)
    seen.clear()
    train_cvae(CVAE(10, 4), x, y, Stage(1, batch_size=10), None, 0, progress=False, log=lambda m: None)
    assert seen == [1.0] * 4                      # the paper's loss: no warm-up by default


def test_lr_warmup_ramps_the_learning_rate():
    """lr_warmup=W: step s trains with (s + 1) / W of the schedule's rate until step W - 1, then
    the schedule alone (constant or cosine); W = 0 leaves the schedule untouched; resuming keeps it."""
    from oodgen.train import make_schedule

    def rates(stage, total, warm, steps):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=stage.lr)
        sched = make_schedule(stage, opt, total, warm)
        out = []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    const = Stage(1, lr=0.1)
    got = rates(const, 10, 4, 6)
    assert got == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    assert rates(const, 10, 0, 3) == pytest.approx([0.1] * 3)
    cos = Stage(1, lr=0.1, schedule="cosine")
    plain = rates(cos, 8, 0, 8)
    warm = rates(cos, 8, 2, 8)
    assert warm[0] == pytest.approx(plain[0] / 2) and warm[2:] == pytest.approx(plain[2:])
    # resumed as fit_epochs resumes (optimiser and schedule state restored), the warm-up goes on
    opt0 = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched0 = make_schedule(const, opt0, 10, 4)
    for _ in range(2):
        opt0.step()
        sched0.step()
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    resumed = make_schedule(const, opt, 10, 4)
    opt.load_state_dict(opt0.state_dict())
    resumed.load_state_dict(sched0.state_dict())
    seen = []
    for _ in range(3):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        resumed.step()
    assert seen == pytest.approx([0.075, 0.1, 0.1])


def test_runs_written_before_the_fix_read_as_the_papers_cvae():
    from oodgen.config import RunConfig, Variant
    old = {"id": "mnist", "seed": 0, "profile": "full",
           "variant": {"sample_z": True, "beta": "wide", "nullspace": "uniform", "type2_radius": "surface",
                       "score": "paper", "sphere_radius": "paper", "clip_type1": "half"}}
    cfg = RunConfig.from_dict(old)
    assert cfg.variant.encoder_act == "relu" and cfg.variant.kl_warmup == 0.0 and cfg.variant.beta == "wide"
    assert cfg.variant.cvae_lr_warmup == 0
    assert Variant().encoder_act == "leaky-all" and Variant().kl_warmup == 1.0


def test_compare_table_explains_failures(tmp_path):
    import json

    from oodgen.compare import compare_table
    dirs = []
    for name, beta, clip, sphere in (("rec", "wide", "half", 100.0), ("paper", "paper", "clip", 0.0)):
        d = tmp_path / name
        d.mkdir()
        metrics = {"score": "ood-class", "variant": {"beta": beta, "clip_type1": clip},
                   "ood": {"fmnist": {"auroc": 99.9}, "sphere": {"auroc": sphere}}}
        (d / "metrics.json").write_text(json.dumps(metrics))
        dirs.append(d)
    table = compare_table(dirs)
    assert "| sphere | 100.0 | 0.0 (1) |" in table
    assert "(1) sphere" in table and "never leave the pixel box" in table
    with pytest.raises(ValueError, match="metrics.json is missing"):
        compare_table([tmp_path / "nowhere"])


def test_colour_health_flags_grey_reconstructions():
    """A colour CVAE whose reconstructions are grey is flagged, however good its nats."""
    import math

    from oodgen.generate.health import colour_saturation
    from oodgen.models import CVAE
    grey = torch.rand(8, 1, 4, 4).repeat(1, 3, 1, 1) * 0.5 + 0.4
    tinted = grey * torch.tensor([1.0, 0.5, 0.25]).view(1, 3, 1, 1)
    assert colour_saturation(grey) < 1e-6 < 0.3 < colour_saturation(tinted)
    assert math.isnan(colour_saturation(torch.rand(4, 1, 4, 4)))
    torch.manual_seed(0)
    cvae = CVAE(2, 4, in_channels=3, image_size=(8, 8))
    with torch.no_grad():                       # a decoder with the same weights for every channel: grey
        last = cvae.decoder.net[-1]
        last.weight[:] = last.weight[:, :1]
        last.bias[:] = last.bias[:1]
    x = (torch.rand(64, 1, 8, 8) * torch.rand(64, 3, 1, 1)).clamp(0, 1)
    h = cvae_health(cvae, x, torch.arange(64) % 2)
    assert h["colour_ratio"] < 0.1 and h["collapsed"] and any("colour" in r for r in h["collapse_reasons"])
