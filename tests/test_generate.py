import numpy as np
import pytest
import torch
from scipy import stats

from oodgen.generate import (ClassEllipsoids, NotFittedError, beta_range, decoder_jacobian,
                             off_manifold_samples, on_manifold_samples, perturb, rref_null_direction,
                             uniform_null_direction)
from oodgen.models import CVAE


@pytest.fixture(scope="module")
def cvae():
    torch.manual_seed(0)
    return CVAE(10, 8).eval()


def _jac(cvae, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    with torch.no_grad():
        return cvae.decoder.jacobian(z, cvae.onehot(y)), z, y


def test_layerwise_jacobian_matches_autodiff(cvae):
    jac, z, y = _jac(cvae)
    ref = decoder_jacobian(cvae.decoder, z, cvae.onehot(y)).detach()
    assert jac.shape == (16, 784, 8)
    torch.testing.assert_close(jac, ref, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("path", ["offset", "gain"])
def test_colour_decoder_jacobian_includes_its_colour_term_and_matches_autodiff(path):
    torch.manual_seed(0)
    colour = CVAE(10, 8, in_channels=3, image_size=(32, 32), colour_path=path).eval()
    assert colour.decoder.colour is not None
    assert CVAE(10, 8, colour_path=path).decoder.colour is None                  # grey: the paper's decoder
    assert CVAE(10, 8, in_channels=3).decoder.colour is None                      # off by default
    jac, z, y = _jac(colour, n=6)
    ref = decoder_jacobian(colour.decoder, z, colour.onehot(y)).detach()
    assert jac.shape == (6, 3 * 32 * 32, 8)
    torch.testing.assert_close(jac, ref, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("method", [uniform_null_direction, rref_null_direction])
def test_direction_is_unit_and_in_left_null_space(cvae, method):
    jac, _, _ = _jac(cvae)
    v = method(jac.double(), torch.Generator().manual_seed(1)).double()
    assert torch.allclose(v.norm(dim=1), torch.ones(16, dtype=torch.float64), atol=1e-5)
    residual = (jac.double().transpose(1, 2) @ v.unsqueeze(-1)).squeeze(-1).norm(dim=1)
    assert residual.max() < 1e-6 * jac.abs().max()


def test_uniform_direction_is_uniform_in_null_space():
    # A fixed random J (D=20, d=3): project many draws onto an orthonormal basis B of null(J^T).
    # Uniform on the unit sphere of that 17-dim space means: (a) the mean is ~0, (b) the second
    # moment matrix is I/17, (c) each coordinate's distribution matches the sphere marginal.
    g = torch.Generator().manual_seed(0)
    D, d, n = 20, 3, 20000
    J = torch.randn(D, d, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(J, mode="complete")
    basis = q[:, d:]                                   # (D, D-d) orthonormal basis of the null space
    v = uniform_null_direction(J.expand(n, D, d).contiguous(), g).double()
    c = v @ basis                                      # coordinates in the null space
    k = D - d
    assert torch.allclose(c.norm(dim=1), torch.ones(n, dtype=torch.float64), atol=1e-6)
    assert c.mean(0).abs().max() < 4 / np.sqrt(n * k) * 2
    second = (c.T @ c) / n
    assert (second - torch.eye(k, dtype=torch.float64) / k).abs().max() < 0.01
    # marginal of a uniform point on S^{k-1}: (c_i + 1)/2 ~ Beta((k-1)/2, (k-1)/2)
    p = stats.kstest((c[:, 0].numpy() + 1) / 2, stats.beta((k - 1) / 2, (k - 1) / 2).cdf).pvalue
    assert p > 1e-3


def test_rref_direction_concentrates_on_pivot_pixels(cvae):
    # The authors' basis puts most of the direction's energy on the first d pixels (their notes).
    jac, _, _ = _jac(cvae, n=8)
    v_rref = rref_null_direction(jac, torch.Generator().manual_seed(0))
    v_unif = uniform_null_direction(jac, torch.Generator().manual_seed(0))
    assert (v_rref[:, :8] ** 2).sum(1).mean() > 10 * (v_unif[:, :8] ** 2).sum(1).mean()


def test_beta_ranges_and_perturb():
    assert beta_range("paper") == (0.1, 1.0) and beta_range("authors") == (0.1, 28.0)
    assert beta_range((0.5, 2)) == (0.5, 2.0)
    with pytest.raises(ValueError):
        beta_range("huge")
    x = torch.full((1000, 1, 28, 28), 0.5)
    v = torch.randn(1000, 784)
    v = v / v.norm(dim=1, keepdim=True)
    out = perturb(x, v, "paper", torch.Generator().manual_seed(0), clip=False)
    step = (out - x).flatten(1).norm(dim=1)
    assert step.min() >= 0.1 - 1e-5 and step.max() <= 1.0 + 1e-5
    signs = torch.sign(((out - x).flatten(1) * v).sum(1))
    assert 0.4 < (signs > 0).double().mean() < 0.6
    assert perturb(x, v, "authors", torch.Generator().manual_seed(0)).max() <= 1.0


def test_off_manifold_samples_shape_and_range(cvae):
    x = torch.rand(40, 1, 28, 28)
    y = torch.randint(0, 10, (40,))
    a = off_manifold_samples(cvae, x, y, generator=torch.Generator().manual_seed(3), batch_size=16)
    b = off_manifold_samples(cvae, x, y, generator=torch.Generator().manual_seed(3), batch_size=16)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, b)
    assert (a - x).abs().sum() > 0
    r = off_manifold_samples(cvae, x[:4], y[:4], nullspace="rref", generator=torch.Generator().manual_seed(3))
    assert r.shape == (4, 1, 28, 28)


def _latents(seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.tensor([[2.0, 0.0, 0.0], [1.5, 0.5, 0.0], [0.3, -0.2, 0.1]])   # strong correlation
    z0 = torch.randn(3000, 3, generator=g) @ A.T + torch.tensor([1.0, -2.0, 0.5])
    z1 = torch.randn(3000, 3, generator=g) * 0.3 - 1.0
    return torch.cat([z0, z1]), torch.cat([torch.zeros(3000), torch.ones(3000)]).long()


def test_ellipsoid_radius_is_95th_percentile():
    z, y = _latents()
    ell = ClassEllipsoids(0.95).fit(z, y)
    d = ell.mahalanobis(z, y)
    for k in (0, 1):
        assert (d[y == k] <= ell.radius_[k]).double().mean() == pytest.approx(0.95, abs=0.002)
    # Gaussian latents: r^2 close to the chi-square(3) 95 % quantile
    assert float(ell.radius_[0] ** 2) == pytest.approx(stats.chi2(3).ppf(0.95), rel=0.1)


def test_type2_latents_on_surface_and_in_shell():
    z, y = _latents()
    ell = ClassEllipsoids().fit(z, y)
    labels = torch.randint(0, 2, (2000,), generator=torch.Generator().manual_seed(1))
    surf = ell.sample(labels, "surface", torch.Generator().manual_seed(2))
    d = ell.mahalanobis(surf, labels)
    torch.testing.assert_close(d, ell.radius_[labels], rtol=1e-4, atol=1e-4)
    shell = ell.sample(labels, "shell", torch.Generator().manual_seed(2))
    ratio = ell.mahalanobis(shell, labels) / ell.radius_[labels]
    assert ratio.min() >= 1 - 1e-4 and ratio.max() <= 1.5 + 1e-4 and ratio.std() > 0.1


def test_ellipsoids_errors():
    with pytest.raises(NotFittedError, match="fit"):
        ClassEllipsoids().sample(torch.zeros(3, dtype=torch.long))
    z, y = _latents()
    ell = ClassEllipsoids().fit(z, y)
    with pytest.raises(ValueError, match="not fitted on"):
        ell.sample(torch.tensor([5]))
    with pytest.raises(ValueError, match="radius mode"):
        ell.sample(torch.tensor([0]), "ball")


def test_on_manifold_samples_decode(cvae):
    z = torch.randn(500, 8)
    y = torch.arange(500) % 10
    ell = ClassEllipsoids().fit(z, y)
    out = on_manifold_samples(cvae, ell, y[:20], generator=torch.Generator().manual_seed(0))
    assert out.shape == (20, 1, 28, 28) and out.min() >= 0 and out.max() <= 1


def test_patch_shuffled_moves_whole_tiles():
    from oodgen.generate.patch_shuffle import patch_shuffled
    x = torch.rand(3, 2, 30, 29, generator=torch.Generator().manual_seed(0))
    y = patch_shuffled(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and not torch.equal(x, y)
    # 4 x 4 tiles of 7 x 7 pixels move whole; the rows and columns beyond them stay where they were
    assert torch.equal(y[:, :, 28:], x[:, :, 28:]) and torch.equal(y[:, :, :, 28:], x[:, :, :, 28:])
    for i in range(3):
        tiles = lambda im: sorted(tuple(im[:, r:r + 7, c:c + 7].flatten().tolist())
                                  for r in range(0, 28, 7) for c in range(0, 28, 7))
        assert tiles(y[i]) == tiles(x[i])
    # each image by its own permutation, and seeded
    same = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(2))[:1].expand(2, 1, 28, 28)
    z = patch_shuffled(same.contiguous(), torch.Generator().manual_seed(3))
    assert not torch.equal(z[0], z[1])
    assert torch.equal(patch_shuffled(x, torch.Generator().manual_seed(1)), y)
    with pytest.raises(ValueError, match="smaller"):
        patch_shuffled(torch.rand(1, 1, 3, 3), torch.Generator())
    with pytest.raises(ValueError, match="N, C, H, W"):
        patch_shuffled(torch.rand(28, 28), torch.Generator())


def test_extra_outlier_pool_leaves_the_papers_pools_alone():
    """--extra-outliers patch-shuffle adds a third pool drawn after Type I and II (which stay the same for the
    same seed), and the n+1 classifier trains on it as OOD; the default has none; bad values fail early."""
    from dataclasses import replace
    from oodgen.config import PROFILES, Variant
    from oodgen import train as T
    from oodgen.models import Fig6cCNN
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 1, 28, 28, generator=g), torch.arange(40) % 2
    cvae = CVAE.for_variant(2, 2, Variant())
    ell = T.fit_ellipsoids(cvae, x, y)
    plain, extra = (T.OutlierPools(cvae, ell, x, y, Variant(extra_outliers=e), 12) for e in ("none", "patch-shuffle"))
    for p in (plain, extra):
        p.regenerate(torch.Generator().manual_seed(5))
    assert plain.extra is None and extra.extra.shape == (12, 1, 28, 28)
    assert torch.equal(plain.type1, extra.type1) and torch.equal(plain.type2, extra.type2)
    pixels = {tuple(v) for v in x.flatten(1).sort(1).values.tolist()}
    assert all(tuple(v) in pixels for v in extra.extra.flatten(1).sort(1).values.tolist())
    prof = replace(PROFILES["smoke"], classifier=replace(PROFILES["smoke"].classifier, epochs=1))
    hist = T.train_nplus1(Fig6cCNN(3), x, y, extra, prof, None, 0, progress=False, log=lambda *_: None)
    assert np.isfinite(hist["loss"][-1])
    with pytest.raises(ValueError, match="extra_outliers"):
        Variant(extra_outliers="mixup")
