import numpy as np
import pytest
import torch

from oodgen.detectors import InputError, OODGen, check_images
from oodgen.generate import NotFittedError
from oodgen.models import CVAE, Fig6cCNN


def test_cvae_shapes_and_loss():
    m = CVAE(10, 8)
    x = torch.rand(4, 1, 28, 28)
    y = torch.tensor([0, 1, 2, 3])
    logits, mu, lv = m(x, y)
    assert logits.shape == x.shape and mu.shape == (4, 8) and lv.shape == (4, 8)
    loss = m.loss(logits, x, mu, lv)
    assert loss.ndim == 0 and loss > 0
    assert m.decode(mu, y).min() >= 0 and m.decode(mu, y).max() <= 1
    # the chromaticity term (colour images only): grey images are unaffected, colour ones pay it
    assert torch.equal(m.loss(logits, x, mu, lv, colour_sigma=0.01), loss)
    c = CVAE(10, 8, in_channels=3)
    xc = torch.rand(4, 3, 28, 28) * torch.tensor([1.0, 0.2, 0.2]).view(1, 3, 1, 1)     # reddish images
    lc, mc, vc = c(xc, y)
    plain, tinted = c.loss(lc, xc, mc, vc), c.loss(lc, xc, mc, vc, colour_sigma=0.01)
    from oodgen.models.cvae import chromaticity
    gap = (chromaticity(xc) - chromaticity(torch.sigmoid(lc))).pow(2).sum(1).mean() / (2 * 0.01 ** 2)
    assert torch.allclose(tinted - plain, gap) and gap > 0
    assert torch.allclose(chromaticity(torch.ones(2, 3, 4, 4)), torch.full((2, 3), 1 / 3))


def test_cvae_sampling_option():
    torch.manual_seed(0)
    x, y = torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)
    sampled, det = CVAE(10, 8, sample_z=True).train(), CVAE(10, 8, sample_z=False).train()
    det.load_state_dict(sampled.state_dict())
    a1, _, _ = sampled(x, y)
    a2, _, _ = sampled(x, y)
    b1, _, _ = det(x, y)
    b2, _, _ = det(x, y)
    assert not torch.allclose(a1, a2) and torch.allclose(b1, b2)


def test_classifier_shapes():
    m = Fig6cCNN(11).eval()
    x = torch.rand(3, 1, 28, 28)
    assert m(x).shape == (3, 11) and m.features(x).shape == (3, 128)
    assert sum(p.numel() for p in m.parameters()) == pytest.approx(1.2e6, rel=0.05)


def test_ood_class_weight_is_plain_mean(monkeypatch):
    # One step on a batch whose OOD part is weighted 0.1: the loss must equal the plain mean of
    # weighted per-sample losses, not the sum-of-weights normalisation of CrossEntropyLoss(weight=).
    import torch.nn.functional as F
    logits = torch.randn(6, 3)
    y = torch.tensor([0, 1, 0, 2, 2, 2])
    w = torch.tensor([1, 1, 1, 0.1, 0.1, 0.1])
    plain_mean = (F.cross_entropy(logits, y, reduction="none") * w).mean()
    torch_weighted = F.cross_entropy(logits, y, weight=torch.tensor([1, 1, 0.1]))
    assert not torch.isclose(plain_mean, torch_weighted)


def test_check_images_errors():
    with pytest.raises(InputError, match="shape"):
        check_images(np.zeros((2, 3, 28, 28)))
    with pytest.raises(InputError, match="NaN"):
        check_images(np.full((1, 28, 28), np.nan, np.float32))
    with pytest.raises(InputError, match="empty"):
        check_images(np.zeros((0, 28, 28)))
    with pytest.raises(InputError, match="numeric"):
        check_images(np.array([["a"] * 28] * 28, dtype=object)[None])
    assert check_images(np.zeros((2, 28, 28), np.uint8)).shape == (2, 1, 28, 28)


def test_oodgen_estimator_contract(mnist_small):
    tr, te = mnist_small
    det = OODGen(latent_dim=4, profile="smoke", seed=0)
    with pytest.raises(NotFittedError, match="fit"):
        det.score(te.images[:5])
    assert det.fit(tr.images[:300], tr.labels[:300]) is det
    s = det.score(te.images[:50])
    assert s.shape == (50,) and s.dtype == np.float64 and np.isfinite(s).all()
    assert ((0 <= s) & (s <= 1)).all()
    again = OODGen(latent_dim=4, profile="smoke", seed=0).fit(tr.images[:300], tr.labels[:300]).score(te.images[:50])
    np.testing.assert_allclose(s, again, rtol=1e-5, atol=1e-7)
    assert det.predict_class(te.images[:7]).shape == (7,)
    assert hasattr(det, "cvae_") and hasattr(det, "ellipsoids_") and det.n_classes_ == 10
    # PyOD's contract: threshold_ keeps 95 % of in-distribution images, predict labels 1 = OOD
    t_train = det.threshold_
    assert np.mean(det.score(tr.images[:300]) <= t_train) >= 0.95
    det.calibrate_threshold(te.images[:200])
    assert det.threshold_ == float(np.quantile(det.score(te.images[:200]), 0.95, method="higher"))
    labels = det.predict(te.images[:50])
    assert labels.dtype == np.int64 and set(np.unique(labels)) <= {0, 1}
    np.testing.assert_array_equal(labels, (s > det.threshold_).astype(np.int64))
    with pytest.raises(ValueError, match="tpr"):
        det.calibrate_threshold(te.images[:10], tpr=1.5)


def test_rule_scores_is_the_one_scoring_path_and_refuses_what_it_cannot_score():
    from oodgen.detectors.oodgen import nplus1_scores, rule_scores
    logits = torch.randn(6, 11)
    got = rule_scores(("ood-class", "max-in"), logits)
    np.testing.assert_array_equal(got["ood-class"], nplus1_scores(logits, "ood-class"))
    np.testing.assert_array_equal(got["max-in"], nplus1_scores(logits, "max-in"))
    with pytest.raises(ValueError, match="unknown score"):
        rule_scores(("bogus",), logits)
    with pytest.raises(ValueError, match="features"):
        rule_scores(("reject+knn",), logits)


def test_inference_precision():
    from oodgen.models import inference_copy, model_precision, resolve_precision
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    assert resolve_precision("auto") in ("fp32", "bf16")
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("half")
    torch.manual_seed(0)
    clf = Fig6cCNN(11)
    b16 = inference_copy(clf, "bf16")
    assert model_precision(b16) == "bf16" and model_precision(clf) == "fp32"     # the original is untouched
    assert clf.training and not b16.training
    from oodgen.train import predict_logits
    x = torch.rand(8, 1, 28, 28)
    a, b = predict_logits(inference_copy(clf), x), predict_logits(b16, x)
    assert b.dtype == torch.float32 and torch.allclose(a, b, atol=0.05 * a.abs().max().item() + 1e-3)
    cvae = inference_copy(CVAE(10, 8), "bf16")
    assert cvae.onehot(torch.tensor([1, 2])).dtype == torch.float32      # dense layers stay float32
    assert next(cvae.parameters()).dtype == torch.bfloat16                # convolutions in bf16


def test_oodgen_eval_set_monitor_records_each_epoch_and_changes_no_training_step(mnist_small):
    """A profile with ``monitor`` records, after every n+1 epoch, the validation accuracy and p(n+1)'s
    AUROC on the eval_set against the generated panel; the classifier it trains is the one trained
    without the record, weight for weight; a bad eval_set fails before training."""
    from dataclasses import replace

    from oodgen.config import PROFILES
    from oodgen.detectors import InputError
    tr, te = mnist_small
    prof = replace(PROFILES["smoke"], monitor=True, classifier=replace(PROFILES["smoke"].classifier, epochs=2))
    x, y, xv, yv = tr.images[:300], tr.labels[:300], te.images[:120], te.labels[:120]
    det = OODGen(latent_dim=4, profile=prof, seed=0).fit(x, y, eval_set=(xv, yv))
    mon = det.classifier_history_["monitor"]
    assert [m["epoch"] for m in mon] == [1, 2]
    for m in mon:
        assert 0.0 <= m["val_accuracy"] <= 100.0
        assert len(m["panel_auroc"]) == 5 and all(0.0 <= v <= 100.0 for v in m["panel_auroc"].values())
        assert m["panel_mean_auroc"] == pytest.approx(np.mean(list(m["panel_auroc"].values())))
    acc = float((torch.as_tensor(det.predict_class(xv)) == yv).double().mean() * 100)
    assert mon[-1]["val_accuracy"] == pytest.approx(acc)
    plain = OODGen(latent_dim=4, profile=prof, seed=0).fit(x, y)     # no eval_set: nothing recorded
    assert "monitor" not in plain.classifier_history_
    for a, b in zip(det.classifier_.state_dict().values(), plain.classifier_.state_dict().values()):
        assert torch.equal(a, b)
    off = OODGen(latent_dim=4, profile="smoke", seed=0).fit(x, y, eval_set=(xv, yv))
    assert "monitor" not in off.classifier_history_          # the profile's monitor is off
    with pytest.raises(InputError, match="eval_set labels"):
        OODGen(latent_dim=4, profile=prof, seed=0).fit(x, y, eval_set=(xv, yv[:5]))
    with pytest.raises(InputError, match="eval_set images"):         # not the training images' shape
        OODGen(latent_dim=4, profile=prof, seed=0).fit(x, y, eval_set=(xv[:, :, :20, :20], yv))
    small = OODGen(latent_dim=4, profile="smoke", seed=0)              # any shape, as fit itself
    small.fit(x[:, :, :12, :12], y, eval_set=(xv[:, :, :12, :12], yv))
    assert small.image_shape_ == (1, 12, 12)


def test_channels_last_training_changes_kernels_not_the_maths(tmp_path):
    """Profile.memory_format = channels_last: without dropout, the same steps from the same start end at the same
    weights up to float rounding (other convolution kernels); dropout draws its masks in memory order, so with
    it the layout also means other masks (like another dropout seed: hence a named option with a seed check).
    The layout is part of a run's configuration."""
    from oodgen.config import RunConfig
    from oodgen.config import Stage
    from oodgen.train import layout, train_plain
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(96, 1, 28, 28, generator=g), torch.randint(0, 10, (96,), generator=g)
    weights = {}
    for fmt in ("contiguous", "channels_last"):
        torch.manual_seed(3)
        model = Fig6cCNN(10)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.dropout._DropoutNd):
                m.p = 0.0
        train_plain(model, x, y, Stage(1, lr=1e-3, batch_size=32), tmp_path / f"{fmt}.pt", seed=0, progress=False,
                    log=lambda *_: None, memory_format=fmt)
        weights[fmt] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]        # 32 input channels
        assert conv.weight.is_contiguous(memory_format=layout(fmt)), fmt      # the option took effect
    # Adam divides by the gradient's running scale, so an element whose gradient is ~0 can move by up to 2 lr per
    # step on a rounding difference: all but a handful of the 1.2 M weights agree to 1e-5, none beyond 6 lr
    diff = torch.cat([(weights["channels_last"][k] - v).abs().flatten() for k, v in weights["contiguous"].items()])
    assert float((diff > 1e-5).double().mean()) < 1e-4 and float(diff.max()) < 6e-3
    assert layout("channels_last") == torch.channels_last
    with pytest.raises(ValueError, match="memory_format"):
        layout("nhwc")
    with pytest.raises(ValueError, match="memory_format"):
        RunConfig(memory_format="nhwc")
    assert RunConfig(memory_format="channels_last").prof.memory_format == "channels_last"
    assert RunConfig().prof.memory_format == "contiguous"


def test_cosine_head_bounds_the_logits_and_survives_save_and_load(tmp_path):
    """``head="cosine"``: logits are COSINE_SCALE x a cosine (so within +-16 whatever the features' length), the
    bias plays no part, an unknown head is refused, and a saved detector is loaded back with its head."""
    from oodgen.config import Variant
    from oodgen.data import load
    from oodgen.detectors.oodgen import OODGen
    from oodgen.models.classifier import COSINE_SCALE, Fig6cCNN
    torch.manual_seed(0)
    net = Fig6cCNN(11, head="cosine").eval()
    x = torch.rand(8, 1, 28, 28)
    z = net(x)
    assert z.abs().max() <= COSINE_SCALE + 1e-4
    with torch.no_grad():
        net.fc2.bias.add_(100.0)
        big = net.features(x * 50)
    assert torch.allclose(net(x), z) and net.head(big).abs().max() <= COSINE_SCALE + 1e-4
    assert not net.fc2.bias.requires_grad            # unused, so frozen (DistributedDataParallel needs every grad)
    with pytest.raises(ValueError, match="head"):
        Fig6cCNN(11, head="angular")
    with pytest.raises(ValueError, match="head"):
        Variant(head="angular")
    with pytest.raises(ValueError, match="nplus1_seed"):     # before any training: nothing is written
        OODGen(profile="smoke", nplus1_seed="1", checkpoint_dir=str(tmp_path / "ck")).fit(x, torch.zeros(8, dtype=torch.long))
    assert not (tmp_path / "ck").exists()
    tr = load("mnist", "train", n=300)
    det = OODGen(profile="smoke", seed=0, variant=Variant(head="cosine")).fit(tr.images, tr.labels)
    assert det.classifier_.head_kind == "cosine"
    x = tr.images[:40]
    back = OODGen.load(det.save(tmp_path / "d"))
    assert back.classifier_.head_kind == "cosine"
    np.testing.assert_array_equal(back.score_all(x)["ood-class"], det.score_all(x)["ood-class"])
