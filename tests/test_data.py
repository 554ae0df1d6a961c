import gzip

import numpy as np
import pytest

from oodgen import data as D
from oodgen.data.idx import IDXError, parse_idx, read_idx, write_idx


def test_idx_round_trip(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        write_idx(tmp_path / name, arr)
        np.testing.assert_array_equal(read_idx(tmp_path / name), arr)


def test_idx_truncated_and_garbage(tmp_path):
    arr = np.zeros((3, 28, 28), np.uint8)
    write_idx(tmp_path / "x.idx", arr)
    raw = (tmp_path / "x.idx").read_bytes()
    with pytest.raises(IDXError, match="truncated"):
        parse_idx(raw[:-5], "x")
    with pytest.raises(IDXError, match="not an IDX"):
        parse_idx(b"hello world", "x")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(raw)[:-20])
    with pytest.raises(IDXError, match="bad.gz"):
        read_idx(tmp_path / "bad.gz")


def test_real_sets_load_and_verify():
    for name, n in [("mnist", 10000), ("notmnist", 10000), ("omniglot", 13180), ("kmnist", 10000), ("fmnist", 10000)]:
        s = D.load(name)
        assert s.images.shape == (n, 1, 28, 28) and s.images.dtype == np.float32
        assert 0 <= s.images.min() and s.images.max() <= 1
    assert len(D.load("mnist", "train")) == 60000


def test_class_subsets():
    a, b = D.load("mnist0-4"), D.load("mnist5-9")
    assert len(a) == 5139 and len(b) == 4861
    assert set(np.unique(a.labels)) == set(range(5)) and set(np.unique(b.labels)) == set(range(5))
    assert len(D.load("fmnist0-4")) == 5000


def test_synthetic_sets():
    g = D.load("gaussian", n=100, seed=1)
    assert g.images.shape == (100, 1, 28, 28) and g.images.min() >= 0 and g.images.max() <= 1
    np.testing.assert_array_equal(g.images, D.load("gaussian", n=100, seed=1).images)
    assert not np.array_equal(g.images, D.load("gaussian", n=100, seed=2).images)
    assert D.load("gaussian-unclipped", n=100).images.min() < 0
    u = D.load("uniform", n=50).images
    assert 0 <= u.min() and u.max() <= 1
    s = D.load("sphere", n=64, sphere_radius=17.0).images.reshape(64, -1)
    np.testing.assert_allclose(np.linalg.norm(s, axis=1), 17.0, rtol=1e-5)
    assert len(D.load("uniform")) == 10000
    with pytest.raises(D.DataError, match="sphere_radius"):
        D.load("sphere")


def test_missing_dataset_lists_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("OODGEN_DATA", str(tmp_path))
    with pytest.raises(D.DataError) as err:
        D.locate("emnist-letters", "test", data_dir=tmp_path / "nowhere")
    msg = str(err.value)
    assert "nowhere" in msg and str(tmp_path) in msg and "How to get it" in msg


def test_checksum_mismatch_is_reported(tmp_path):
    folder = tmp_path / "kmnist"
    folder.mkdir()
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(2, np.uint8))
    with pytest.raises(D.DataError, match="checksum mismatch"):
        D.load("kmnist", data_dir=tmp_path)


def test_data_dir_and_env_take_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("OODGEN_DATA", str(tmp_path / "env"))
    path = D.search_path(tmp_path / "cli")
    assert path[0] == tmp_path / "cli" and path[1] == tmp_path / "env"


def test_unknown_names():
    with pytest.raises(D.DataError, match="unknown dataset"):
        D.load("imagenet")
    with pytest.raises(D.DataError, match="unknown in-distribution setting"):
        D.ood_sets("svhn")


def test_settings_skip_missing_emnist_only():
    sets = D.ood_sets("mnist")
    assert "fmnist" in sets and "sphere" in sets and "kmnist" in sets
    assert ("emnist-letters" in sets) == D.available("emnist-letters")
    assert D.ood_sets("mnist0-4")[0] == "mnist5-9"
