"""The 3-D sphere toy (paper appendix A): data, generators, coverage, the tiny demo end to end."""
import argparse
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from oodgen.toy import sphere as S
from oodgen.toy.coverage import boundary_coverage, cap_directions, rim_points
from oodgen.toy.demo import BUDGETS, add_parser, run_demo
from oodgen.toy.gan import ConfidentGAN
from oodgen.toy.generator import (TOY_BETA, VectorCVAE, fit_class_ellipsoids, train_vector_cvae, type1_samples,
                                  type2_samples)


def test_in_distribution_on_the_caps_and_seeded():
    d = S.in_distribution(400, seed=3)
    assert d.points.shape == (400, 3) and d.points.dtype == np.float32
    assert set(np.unique(d.labels)) == {0, 1} and (d.labels == 0).sum() == 200
    np.testing.assert_allclose(np.linalg.norm(d.points, axis=1), 1.0, atol=1e-5)
    ang = S.angle_to_centres(d.points)
    assert (ang[np.arange(400), d.labels] <= S.CAP_ANGLE_DEG + 1e-3).all()
    assert np.array_equal(d.points, S.in_distribution(400, seed=3).points)
    assert not np.array_equal(d.points, S.in_distribution(400, seed=4).points)
    assert not np.array_equal(d.points, S.in_distribution(400, seed=3, split="test").points)


def test_ood_sets_where_they_should_be():
    r = np.linalg.norm(S.ood_points("off_sphere", 500, 0).points, axis=1)
    assert (((r >= 0.5) & (r <= 0.9)) | ((r >= 1.1) & (r <= 1.5))).all()
    assert (r < 1).any() and (r > 1).any()
    near = S.ood_points("off_sphere_near", 500, 0).points
    assert (S.angle_to_centres(near).min(1) <= S.CAP_ANGLE_DEG + 1e-3).all()
    on = S.ood_points("on_sphere_outside", 500, 0)
    np.testing.assert_allclose(np.linalg.norm(on.points, axis=1), 1.0, atol=1e-5)
    assert (S.angle_to_centres(on.points).min(1) >= S.CAP_ANGLE_DEG + 10 - 1e-3).all()
    assert (on.labels == -1).all()
    with pytest.raises(ValueError, match="unknown toy OOD set"):
        S.ood_points("moon", 10)


def test_coverage_known_answers():
    rim = np.concatenate([rim_points(c, n=90) for c in S.CENTRES])
    c = boundary_coverage(rim)
    assert c["rim"] == 1.0 and c["shell"] == 0.0 and abs(c["radial_mean"]) < 1e-9
    # Points above every cap direction at radius 1.3 cover the off-manifold shell.
    above = np.concatenate([cap_directions(c, n=800) for c in S.CENTRES]) * 1.3
    c = boundary_coverage(above)
    assert c["shell"] == 1.0
    assert c["radial_mean"] == pytest.approx(0.3) and c["radial_std"] == pytest.approx(0.0, abs=1e-9)
    # Only the inner 20 degrees of each cap (33 % of its area; 51 % within 5 degrees of them): no rim.
    inner = np.concatenate([cap_directions(c, cap_angle_deg=20.0, n=400) for c in S.CENTRES]) * 0.8
    c = boundary_coverage(inner)
    assert c["rim"] == 0.0 and 0.33 < c["shell"] < 0.55
    # Too far from the sphere (beyond max_offset) covers nothing.
    far = boundary_coverage(above / 1.3 * 2.0)
    assert far["shell"] == 0.0 and far["rim"] == 0.0
    # One point at each class centre covers nothing of the boundary.
    c = boundary_coverage(S.CENTRES)
    assert c["rim"] == 0.0 and c["shell"] == 0.0
    # Half the rim of one class only.
    half = rim_points(S.CENTRES[0], n=360)[:180]
    assert boundary_coverage(half)["rim_per_class"][1] == 0.0
    assert 0.5 <= boundary_coverage(half)["rim_per_class"][0] <= 0.55
    with pytest.raises(ValueError, match="shape"):
        boundary_coverage(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="empty"):
        boundary_coverage(np.zeros((0, 3)))


def _tiny_cvae(seed=0):
    torch.manual_seed(seed)
    d = S.in_distribution(300, seed)
    x, y = torch.from_numpy(d.points), torch.from_numpy(d.labels)
    cvae = VectorCVAE()
    train_vector_cvae(cvae, x, y, 30, generator=torch.Generator().manual_seed(seed))
    return cvae, x, y


def test_type1_steps_along_the_decoder_normal():
    cvae, x, y = _tiny_cvae()
    g = torch.Generator().manual_seed(1)
    out = type1_samples(cvae, x[:50], y[:50], generator=g)
    step = (out - x[:50]).double()
    length = step.norm(dim=1)
    assert ((length >= TOY_BETA[0] - 1e-5) & (length <= TOY_BETA[1] + 1e-5)).all()
    # The step is orthogonal to the decoder's tangent vectors (the Jacobian's columns) at the encoder mean.
    with torch.no_grad():
        mu, _ = cvae.encode(x[:50], y[:50])
        jac = cvae.decoder.jacobian(mu, cvae.onehot(y[:50])).double()
    cos = torch.einsum("bd,bdk->bk", step, jac) / (length[:, None] * jac.norm(dim=1))
    assert cos.abs().max() < 1e-4
    # Jacobian agrees with autograd.
    ref = torch.func.jacrev(lambda z: cvae.decoder(z, cvae.onehot(y[:1])))(mu[:1])[0, :, 0]
    torch.testing.assert_close(jac[0].float(), ref, atol=1e-5, rtol=1e-4)


def test_type2_shape_and_ellipsoids():
    cvae, x, y = _tiny_cvae()
    ell = fit_class_ellipsoids(cvae, x, y)
    out = type2_samples(cvae, ell, y[:40], generator=torch.Generator().manual_seed(0))
    assert out.shape == (40, 3) and torch.isfinite(out).all()


def test_confident_gan_contract():
    d = S.in_distribution(200, 0)
    x, y = torch.from_numpy(d.points), torch.from_numpy(d.labels)
    gan = ConfidentGAN(steps=5)
    with pytest.raises(RuntimeError, match="fit"):
        gan.sample(3)
    torch.manual_seed(0)
    gan.fit(x, y, generator=torch.Generator().manual_seed(0))
    assert gan.sample(7).shape == (7, 3)
    s = gan.score(x)
    assert s.shape == (200,) and s.dtype == np.float64
    assert (s >= 0).all() and (s <= 0.5 + 1e-12).all()      # 1 - max of two probabilities


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    summary = run_demo(out, budget="tiny", seeds=(0, 1), log=lambda *_a: None)
    return out, summary


def test_demo_writes_sane_summary(tiny_demo):
    out, summary = tiny_demo
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["seeds"] == [0, 1] and len(on_disk["per_seed"]) == 2
    for seed in on_disk["per_seed"]:
        for method in ("ours", "ours_type1", "ours_type2", "gan"):
            cov = seed["coverage"][method]
            assert 0.0 <= cov["rim"] <= 1.0 and 0.0 <= cov["shell"] <= 1.0
            assert math.isfinite(cov["radial_mean"]) and cov["radial_std"] >= 0
        for method in ("ours", "gan"):
            for name in S.OOD_SETS:
                auroc = seed["auroc"][method][name]
                assert math.isfinite(auroc) and 0.0 <= auroc <= 100.0
            assert 0.0 <= seed["accuracy"][method] <= 100.0
    for key in ("auroc.ours.off_sphere", "coverage.gan.rim", "accuracy.ours"):
        assert key in on_disk["mean"] and on_disk["std"][key] >= 0
    md = (out / "summary.md").read_text()
    assert "AUROC off_sphere" in md and "±" in md
    assert len(on_disk["figures"]) == 6
    for name in on_disk["figures"]:
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 300
            assert len(np.unique(np.asarray(im.convert("L")))) > 2     # not blank


def test_demo_is_deterministic(tiny_demo):
    out, summary = tiny_demo
    again = run_demo(out / "again", budget="tiny", seeds=(0,), log=lambda *_a: None)
    a, b = summary["per_seed"][0], again["per_seed"][0]
    assert a["auroc"] == b["auroc"] and a["coverage"] == b["coverage"] and a["accuracy"] == b["accuracy"]


def test_demo_cli(tmp_path):
    ap = argparse.ArgumentParser()
    add_parser(ap.add_subparsers(dest="command"))
    args = ap.parse_args(["demo", "--out", str(tmp_path), "--seeds", "5", "--budget", "tiny"])
    assert args.seeds == [5] and args.budget == "tiny"
    assert args.func(args) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["seeds"] == [5]
    with pytest.raises(SystemExit):
        ap.parse_args(["demo", "--out", str(tmp_path), "--budget", "huge"])


def test_bad_budget():
    with pytest.raises(ValueError, match="unknown budget"):
        run_demo("/nonexistent-never-created", budget="huge")
    assert set(BUDGETS) == {"default", "tiny"}
