"""Contract and numerical tests of every baseline detector (registry-driven).

Data: two well-separated Gaussian-blob image classes (top-left / bottom-right) and uniform
noise as OOD, all seeded; a Fig. 6c CNN trained for a few steps separates the classes.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.covariance import EmpiricalCovariance

from oodgen.detectors.base import InputError
from oodgen.detectors.confident import ConfidentClassifier
from oodgen.detectors.mahalanobis import Mahalanobis, mahalanobis_grid_scores, tune_mahalanobis
from oodgen.detectors.mc_dropout import mc_dropout_moments
from oodgen.detectors.odin import ODIN, tune_odin
from oodgen.detectors.posthoc import PostHocDetector
from oodgen.detectors.oodgen import OODGen
from oodgen.detectors.registry import DETECTORS, POST_HOC, make_detector
from oodgen.generate import NotFittedError
from oodgen.metrics import ood_metrics
from oodgen.models import Fig6cCNN

# Cheap settings for the tiny test data; everything else is the default.
FAST = {"knn": {"k": 5}, "pixel-knn": {"k": 5}, "mc-dropout": {"n_passes": 8}, "mutual-info": {"n_passes": 8},
        "confident": {"epochs": 1, "batch_size": 64},
        "vos": {"epochs": 2, "batch_size": 64, "queue_size": 32, "start_fraction": 0.5},
        "vos-alpha0": {"epochs": 1, "batch_size": 64}}
AUROC_FLOOR = 90.0
# The paper's method trains its own CVAE and n+1 classifier (no model to wrap): in the same contract, at the
# smoke budget.
CONTRACT = {**DETECTORS, "oodgen": lambda _model, **kw: OODGen(profile="smoke", **kw)}


def build(name, model):
    return CONTRACT[name](model, **FAST.get(name, {}))


def blobs(n: int, rng: np.random.Generator):
    yy, xx = np.mgrid[0:28, 0:28]
    y = rng.integers(0, 2, n)
    centre = np.where(y == 0, 8.0, 19.0)
    cx, cy = centre + rng.normal(0, 1, n), centre + rng.normal(0, 1, n)
    img = np.exp(-((xx[None] - cx[:, None, None]) ** 2 + (yy[None] - cy[:, None, None]) ** 2) / 18.0)
    img = np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1)
    return img[:, None].astype(np.float32), y.astype(np.int64)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x, y = blobs(256, rng)
    xt, yt = blobs(120, rng)
    noise = rng.uniform(0, 1, (120, 1, 28, 28)).astype(np.float32)
    return x, y, xt, yt, noise


@pytest.fixture(scope="module")
def model(data):
    x, y = (torch.from_numpy(a) for a in data[:2])
    torch.manual_seed(0)
    net = Fig6cCNN(2)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(20):
        idx = torch.randint(0, len(x), (64,))
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    assert (net(torch.from_numpy(data[2])).argmax(1).numpy() == data[3]).mean() > 0.95
    return net


@pytest.fixture(scope="module")
def fitted(model, data):
    """One fitted detector per registry name, shared by the tests below."""
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = build(name, model).fit(data[0], data[1])
        return cache[name]
    return get


@pytest.mark.parametrize("name", list(CONTRACT))
def test_contract(name, model, data, fitted):
    x, y, xt, _, noise = data
    fresh = build(name, model)
    with pytest.raises(NotFittedError, match="call fit"):
        fresh.score(xt)
    before = [p.detach().clone() for p in model.parameters()]
    det = fitted(name)
    s = det.score(xt[:40])
    assert s.shape == (40,) and s.dtype == np.float64 and np.isfinite(s).all()
    np.testing.assert_array_equal(s, det.score(xt[:40]))
    assert np.isfinite(det.score(noise)).all()
    # The trained classifier is neither changed nor left in training mode.
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert not model.training
    if name == "confident":
        return
    # Determinism under a seed: a second detector fitted the same way scores the same.
    again = build(name, model).fit(x, y)
    np.testing.assert_array_equal(s, again.score(xt[:40]))


@pytest.mark.parametrize("name", list(CONTRACT))
def test_auroc_floor_on_far_noise(name, data, fitted):
    """Uniform noise is far from both blob classes: every detector must separate it."""
    _, _, xt, _, noise = data
    det = fitted(name)
    auroc = ood_metrics(det.score(xt), det.score(noise))["auroc"]
    assert auroc >= AUROC_FLOOR, f"{name}: AUROC {auroc:.1f} < {AUROC_FLOOR}"


@pytest.mark.parametrize("name", POST_HOC)
def test_cached_outputs_give_the_same_scores(name, fitted, data):
    det = fitted(name)
    assert isinstance(det, PostHocDetector)
    xt = data[2][:30]
    if det.needs_images:
        with pytest.raises(InputError, match="needs the images"):
            det.score_outputs(**det.outputs(xt))
        return
    np.testing.assert_allclose(det.score_outputs(**det.outputs(xt)), det.score(xt), rtol=1e-6, atol=1e-9)


def test_msp_energy_max_logit_formulas(model, data, fitted):
    xt = data[2][:20]
    logits = model(torch.from_numpy(xt)).double().detach()
    p = torch.softmax(logits, 1)
    np.testing.assert_allclose(fitted("msp").score(xt), 1 - p.max(1).values.numpy(), atol=1e-6)
    np.testing.assert_allclose(fitted("energy").score(xt), -torch.logsumexp(logits, 1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(fitted("max-logit").score(xt), -logits.max(1).values.numpy(), rtol=1e-5)
    # ODIN without perturbation at T = 1 is the max-softmax baseline.
    odin = ODIN(model, temperature=1.0, eps=0.0).fit(data[0])
    np.testing.assert_allclose(odin.score(xt), fitted("msp").score(xt), atol=1e-6)


def test_odin_perturbation_raises_confidence(model, data):
    """The ODIN step lowers the tempered cross-entropy, so in-distribution scores drop."""
    xt = data[2][:30]
    base = ODIN(model, temperature=10.0, eps=0.0).fit(xt).score(xt)
    stepped = ODIN(model, temperature=10.0, eps=0.002).fit(xt).score(xt)
    assert (stepped <= base + 1e-9).mean() > 0.9


def test_tune_odin_picks_the_grid_minimum(model, data):
    _, _, xt, _, noise = data
    res = tune_odin(model, xt[:40], noise[:40], grid_T=[1, 1000], grid_eps=[0.0, 0.002])
    assert len(res["grid"]) == 4
    assert res["temperature"] in (1.0, 1000.0) and res["eps"] in (0.0, 0.002)
    assert res["fpr95"] == min(r["fpr95"] for r in res["grid"])
    with pytest.raises(ValueError, match="temperatures must be > 0"):
        tune_odin(model, xt[:5], noise[:5], grid_T=[0], grid_eps=[0.0])


def test_one_generic_sweep_reproduces_each_detectors_own_tuning(model, data):
    from oodgen.detectors.mahalanobis import MAHALANOBIS_EPSILONS, Mahalanobis, mahalanobis_grid_scores
    from oodgen.detectors.odin import ODIN, odin_grid_scores, select_odin
    from oodgen.detectors.posthoc import grid_points, model_outputs, select_point
    x, yy, xt, _, noise = data
    odin = ODIN.for_tuning(model)
    g_in, g_out = odin.grid_scores(xt[:20]), odin.grid_scores(noise[:20])
    full = odin_grid_scores(model, xt[:20])
    assert g_in.shape == (full.shape[0] * full.shape[1], 20)
    np.testing.assert_array_equal(g_in, full.reshape(-1, 20))
    choice = select_point(grid_points(ODIN.param_grid), g_in, g_out)
    assert choice == select_odin(full, odin_grid_scores(model, noise[:20]))
    one = {"temperature": choice["temperature"], "eps": choice["eps"]}
    k = grid_points(ODIN.param_grid).index(one)
    np.testing.assert_allclose(odin.grid_scores(xt[:20], [one])[0], g_in[k])
    feats = model_outputs(model, torch.as_tensor(x), ("features",))["features"]
    md = Mahalanobis.for_tuning(model, features=feats, y=np.asarray(yy))
    np.testing.assert_array_equal(md.grid_scores(xt[:10]), mahalanobis_grid_scores(md, xt[:10], MAHALANOBIS_EPSILONS))


def test_mahalanobis_matches_sklearn_and_tunes(model, data):
    rng = np.random.default_rng(1)
    f = rng.normal(size=(300, 6)) + np.repeat(np.eye(6)[:3] * 4, 100, axis=0)
    y = np.repeat(np.arange(3), 100)
    det = Mahalanobis(model).fit_outputs(features=f, y=y)
    centred = f - det.means_[y]
    ref = EmpiricalCovariance().fit(centred)
    np.testing.assert_allclose(det.precision_, ref.precision_, rtol=1e-8)
    d = det.distances(det.means_)
    np.testing.assert_allclose(np.diag(d), 0.0, atol=1e-9)
    np.testing.assert_allclose(det.score_outputs(features=f[:5]),
                               0.5 * np.min([ref.mahalanobis(f[:5] - m) for m in det.means_], axis=0), rtol=1e-8)
    with pytest.raises(InputError, match="labels"):
        Mahalanobis(model).fit_outputs(features=f)
    # threshold_ from the training outputs' scores (95 % at or below), without scoring any image
    train_scores = det.score_outputs(features=f)
    assert det.threshold_ == float(np.quantile(train_scores, 0.95, method="higher"))
    # Pre-processing on the real model; tuning returns a grid point.
    x, yy, xt, _, noise = data
    md = Mahalanobis(model).fit(x, yy)
    grid = mahalanobis_grid_scores(md, xt[:20], [0.0, 0.005])
    assert grid.shape == (2, 20) and (grid[1] <= grid[0] + 1e-6).mean() > 0.9   # moves towards the mean
    res = tune_mahalanobis(md, xt[:30], noise[:30], grid_eps=[0.0, 0.005])
    assert res["eps"] in (0.0, 0.005)


def test_mc_dropout_fast_path_matches_forward(model, data):
    """With dropout off (p = 0) the MC mean is the plain softmax, on both code paths."""
    class Generic(Fig6cCNN):      # a subclass takes the generic (full-forward) path
        pass
    xt = torch.from_numpy(data[2][:16])
    fast, generic = Fig6cCNN(2), Generic(2)
    fast.load_state_dict(model.state_dict())
    generic.load_state_dict(model.state_dict())
    for net in (fast, generic):
        net.drop1.p = net.drop2.p = 0.0
        mean_p, _ = mc_dropout_moments(net, xt, n_passes=2)
        np.testing.assert_allclose(mean_p, torch.softmax(model(xt).double(), 1).detach().numpy(), atol=1e-6)


def test_mc_dropout_seeding(model, data, fitted):
    xt = data[2][:16]
    state = torch.get_rng_state()
    a = mc_dropout_moments(model, xt, n_passes=4, seed=3)[0]
    assert torch.equal(state, torch.get_rng_state())      # the global RNG is left alone
    np.testing.assert_array_equal(a, mc_dropout_moments(model, xt, n_passes=4, seed=3)[0])
    assert not np.array_equal(a, mc_dropout_moments(model, xt, n_passes=4, seed=4)[0])
    assert (fitted("mutual-info").score(xt) >= 0).all()


def test_knn_matches_brute_force(model):
    rng = np.random.default_rng(2)
    bank, query = rng.normal(size=(50, 8)), rng.normal(size=(7, 8))
    det = make_detector("knn", model, k=3).fit_outputs(features=bank)
    nb = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    nq = query / np.linalg.norm(query, axis=1, keepdims=True)
    ref = np.sort(np.linalg.norm(nq[:, None] - nb[None], axis=2), axis=1)[:, 2]
    np.testing.assert_allclose(det.score_outputs(features=query), ref, atol=1e-5)
    with pytest.raises(InputError, match="exceeds"):
        make_detector("knn", model, k=51).fit_outputs(features=bank)


def test_bad_inputs_fail_clearly(model, fitted):
    with pytest.raises(ValueError, match="unknown detector"):
        make_detector("nope", model)
    with pytest.raises(ValueError, match="detector 'msp'"):
        make_detector("msp", model, temperature=2)
    bad = np.zeros((3, 128))
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        fitted("knn").score_outputs(features=bad)
    with pytest.raises(InputError, match="shape"):
        fitted("msp").score(np.zeros((2, 3, 28, 28), np.float32))
    with pytest.raises(ValueError, match="dim"):
        make_detector("vim", model, dim=500).fit_outputs(features=np.random.default_rng(0).random((20, 128)))


def test_confident_checkpoint_resumes(tmp_path, data):
    x, y, xt = data[0][:64], data[1][:64], data[2][:10]
    path = tmp_path / "confident.pt"
    kw = dict(epochs=1, batch_size=32, seed=1, checkpoint_path=str(path))
    first = ConfidentClassifier(**kw).fit(x, y)
    assert path.exists() and len(first.history_["loss_c"]) == 1
    resumed = ConfidentClassifier(**kw).fit(x, y)       # finished: loads, trains nothing more
    np.testing.assert_array_equal(first.score(xt), resumed.score(xt))
    with pytest.raises(InputError, match="other settings"):
        ConfidentClassifier(**{**kw, "beta": 0.5}).fit(x, y)


def test_pytorch_ood_adapter_is_optional(model, data, monkeypatch):
    import sys

    from oodgen.detectors.pytorch_ood_adapter import PytorchOOD
    det = PytorchOOD(model, "MaxSoftmax")               # constructing needs nothing
    monkeypatch.setitem(sys.modules, "pytorch_ood", None)
    monkeypatch.setitem(sys.modules, "pytorch_ood.detector", None)
    with pytest.raises(ImportError, match="pip install pytorch-ood"):
        det.fit(data[0][:10])


def test_knn_dead_columns_do_not_change_distances():
    """Columns that are zero in every bank row are skipped in the search; distances are the full ones."""
    from oodgen.detectors.knn import KNN
    rng = np.random.default_rng(0)
    bank = np.maximum(rng.normal(size=(300, 32)), 0).astype(np.float32)
    bank[:, ::3] = 0.0                                   # dead units
    q = np.maximum(rng.normal(size=(50, 32)), 0).astype(np.float32)    # queries use them too
    knn = KNN(None, k=7).fit_outputs(features=bank)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    bn = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    d = np.sqrt(((qn[:, None, :] - bn[None]) ** 2).sum(-1))
    np.testing.assert_allclose(knn.score_outputs(features=q), np.sort(d, axis=1)[:, 6], atol=1e-5)


def test_kth_largest_is_exactly_topk():
    """The block selection returns topk's k-th value bit for bit: remainders, ties, negatives, every k."""
    import torch

    from oodgen.detectors.knn import kth_largest
    g = torch.Generator().manual_seed(0)
    cases = [torch.randn(64, 1103, generator=g),                                   # n % block != 0
             torch.randint(-3, 4, (64, 1000), generator=g).float(),                # heavy ties
             -torch.rand(64, 997, generator=g),                                    # all negative
             torch.randn(8, 50, generator=g)]                                      # too few columns: topk
    spiked = torch.randn(32, 2000, generator=g)
    spiked[:, :40] += 10.0                                                         # a few columns far above the rest
    cases.append(spiked)
    for sim in cases:
        for k in (1, 2, 10, 25):
            if k > sim.shape[1]:
                continue
            want = sim.topk(k, dim=1).values[:, -1]
            for block in (None, 2, 7, 16, 33):
                assert torch.equal(kth_largest(sim, k, block), want), (sim.shape, k, block)


def test_sklearn_parameter_protocol_on_every_registered_detector():
    """get_params / set_params round trip (scikit-learn's contract) and PyOD's decision_function."""
    import torch

    from oodgen.detectors.registry import DETECTORS
    from oodgen.models import Fig6cCNN
    model = Fig6cCNN(3)
    for name, cls in CONTRACT.items():
        det = OODGen() if name == "oodgen" else cls(None if name in ("confident", "pixel-knn") else model)
        params = det.get_params()
        assert det.set_params(**params) is det and det.get_params().keys() == params.keys(), name
        with pytest.raises(ValueError, match="unknown parameter"):
            det.set_params(no_such_parameter=1)
    knn = DETECTORS["knn"](model, k=3)
    knn.set_params(k=5)
    assert knn.k == 5
    x, y = torch.rand(40, 1, 28, 28), torch.arange(40) % 3
    knn.fit(x, y)
    np.testing.assert_array_equal(knn.decision_function(x[:5]), knn.score(x[:5]))
