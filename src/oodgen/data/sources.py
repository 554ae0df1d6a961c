"""Where each image dataset lives on disk, its files, their checksums and publishers.

Every file has one or more accepted SHA-256 digests of its exact bytes.  Debian's
``dataset-fashion-mnist`` re-compresses the original Fashion-MNIST files, so both the
publisher's and Debian's digests are accepted for it (the decompressed payloads are identical).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FileSpec:
    name: str
    sha256: tuple[str, ...]
    urls: tuple[str, ...] = ()
    md5: tuple[str, ...] = ()
    # digests of the decompressed contents of a gzip'd file that is converted here, not downloaded as is
    # (Omniglot): its compressed bytes depend on the compressor, its contents do not
    payload_sha256: tuple[str, ...] = ()


@dataclass(frozen=True)
class Source:
    """One image dataset: folder names to look for, and its files per split."""

    name: str
    folders: tuple[str, ...]
    splits: dict[str, tuple[FileSpec, FileSpec]]
    description: str
    how_to_get: str
    transpose: bool = False
    label_offset: int = 0
    extra: tuple[FileSpec, ...] = field(default_factory=tuple)
    # "idx": (images, labels) IDX files; "cifar-binary": both entries of a split are the CIFAR
    # binary archive, read in place; "svhn-mat": both entries are the split's MATLAB file.
    format: str = "idx"


_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_KMNIST_URL = "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"
_NOTMNIST_URL = "https://raw.githubusercontent.com/davidflanagan/notMNIST-to-MNIST/17823f4d4a3acd8317c07866702d2eb2ac79c7a0/"
_EMNIST_URL = "https://biometrics.nist.gov/cs_links/EMNIST/"
_OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"


def _f(name: str, sha: str | tuple[str, ...], urls: tuple[str, ...] = (), md5: tuple[str, ...] = ()) -> FileSpec:
    return FileSpec(name, (sha,) if isinstance(sha, str) else sha, urls, md5)


# SHA-256 of the CIFAR-10 binary archive (170,052,171 bytes) beside the authors' published MD5;
# SVHN publishes no digests: the MD5s are the ones torchvision checks.
_CIFAR10 = _f("cifar-10-binary.tar.gz", "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
              ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",), ("c32a1d4ab5d03f1284b67883e8d87530",))
_SVHN_TRAIN = _f("train_32x32.mat", (), ("http://ufldl.stanford.edu/housenumbers/train_32x32.mat",),
                 ("e26dedcc434d2e4c54c9b2d4a06d8373",))
_SVHN_TEST = _f("test_32x32.mat", (), ("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",),
                ("eb5a983be6a315427106f1b164d9cef3",))


SOURCES: dict[str, Source] = {
    "mnist": Source(
        name="mnist",
        folders=("mnist", "MNIST", "MNIST/raw"),
        splits={
            "train": (
                _f("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                   (_MNIST_URL + "train-images-idx3-ubyte.gz",)),
                _f("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                   (_MNIST_URL + "train-labels-idx1-ubyte.gz",)),
            ),
            "test": (
                _f("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                   (_MNIST_URL + "t10k-images-idx3-ubyte.gz",)),
                _f("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                   (_MNIST_URL + "t10k-labels-idx1-ubyte.gz",)),
            ),
        },
        description="MNIST handwritten digits (LeCun et al. 1998)",
        how_to_get="`oodgen data download mnist`, or copy the four MNIST .gz files into a folder `mnist/` on the search path",
    ),
    "fmnist": Source(
        name="fmnist",
        folders=("fashion-mnist", "fmnist", "FashionMNIST/raw"),
        splits={
            # First digest: Debian's re-compressed copy; the publisher's files are checked by MD5
            # (the digests torchvision publishes for them).
            "train": (
                _f("train-images-idx3-ubyte.gz", "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
                   (_FMNIST_URL + "train-images-idx3-ubyte.gz",), ("8d4fb7e6c68d591d4c3dfef9ec88bf0d",)),
                _f("train-labels-idx1-ubyte.gz", "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
                   (_FMNIST_URL + "train-labels-idx1-ubyte.gz",), ("25c81989df183df01b3e8a0aad5dffbe",)),
            ),
            "test": (
                _f("t10k-images-idx3-ubyte.gz", "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
                   (_FMNIST_URL + "t10k-images-idx3-ubyte.gz",), ("bef4ecab320f06d8554ea6380940ec79",)),
                _f("t10k-labels-idx1-ubyte.gz", "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
                   (_FMNIST_URL + "t10k-labels-idx1-ubyte.gz",), ("bb300cfdad3c16e7a12a480ee83cd310",)),
            ),
        },
        description="Fashion-MNIST (Xiao et al. 2017)",
        how_to_get="`apt-get install dataset-fashion-mnist` (Debian) or `oodgen data download fmnist`",
    ),
    "notmnist": Source(
        name="notmnist",
        folders=("notmnist", "notMNIST"),
        splits={
            "test": (
                _f("t10k-images-idx3-ubyte.gz", "70ae9e06201f2827e5b0a3781a3169d735dd2efc69996b9eeaee7f10ed4044d7",
                   (_NOTMNIST_URL + "t10k-images-idx3-ubyte.gz",)),
                _f("t10k-labels-idx1-ubyte.gz", "1fa03836e01c862542f8eb83463bb951bebec6fcb3efa28dad748c6b38a9021b",
                   (_NOTMNIST_URL + "t10k-labels-idx1-ubyte.gz",)),
            ),
        },
        description="notMNIST glyphs A-J, 10,000 images of notMNIST_small in MNIST format",
        how_to_get="`oodgen data download notmnist`",
    ),
    "kmnist": Source(
        name="kmnist",
        folders=("kmnist", "KMNIST"),
        splits={
            "test": (
                _f("t10k-images-idx3-ubyte.gz", "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
                   (_KMNIST_URL + "t10k-images-idx3-ubyte.gz",)),
                _f("t10k-labels-idx1-ubyte.gz", "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
                   (_KMNIST_URL + "t10k-labels-idx1-ubyte.gz",)),
            ),
        },
        description="Kuzushiji-MNIST cursive hiragana (Clanuwat et al. 2018)",
        how_to_get="`oodgen data download kmnist`",
    ),
    "omniglot": Source(
        name="omniglot",
        folders=("omniglot",),
        splits={
            "test": (
                FileSpec("t10k-images-idx3-ubyte.gz",
                         ("0b61d023ea8f3400da7a3a43438cb7835c1757818d047f8f73fa4a3c99fa686b",),
                         (_OMNIGLOT_URL + "images_evaluation.zip",),
                         payload_sha256=("a104be89d2190f46b2b64b5ab4a8c8febf2b20bfdec6cf88aba13edac24b49ad",)),
                FileSpec("t10k-labels-idx1-ubyte.gz",
                         ("ff4529398b876b8fb6acdc9bdb89c252264520461117288e8145d68cd6bede9b",),
                         (_OMNIGLOT_URL + "images_evaluation.zip",),
                         payload_sha256=("39e867ceb8e601bb0f6b889adc172ec33d827cfe9b35062716b8d09c653f82d8",)),
            ),
            "train": (
                FileSpec("train-images-idx3-ubyte.gz",
                         ("eaae8ced00ea932b6baba4b10cf91301b7110309b38331371ae9925c08f144cf",),
                         (_OMNIGLOT_URL + "images_background.zip",),
                         payload_sha256=("692a0367dd9a273d97431629d59421b08397a075dff4cd7baf875dbdff501c10",)),
                FileSpec("train-labels-idx1-ubyte.gz",
                         ("757b88a90ffe3770208b309d2ce87bed56f2578468eea660bcbe967775ed1a0b",),
                         (_OMNIGLOT_URL + "images_background.zip",),
                         payload_sha256=("167fd40cfe8eaa62010712a29d04c2fe2c0348a1fc6ff950148cbc3d794c1a54",)),
            ),
        },
        description="Omniglot (Lake et al. 2015), 105x105 box-filtered to 28x28, evaluation set as 'test'",
        how_to_get="`oodgen data download omniglot` (the publisher's two zips, converted and checked: "
                   "oodgen.data.omniglot), or copy the MNIST-format Omniglot files into a folder `omniglot/`",
    ),
    "emnist-letters": Source(
        name="emnist-letters",
        folders=("emnist-letters", "emnist", "EMNIST/raw"),
        splits={
            "test": (
                _f("emnist-letters-test-images-idx3-ubyte.gz",
                   "50f0e93d75b99b463e9760b8345866f22587fa2c2fba472730a5ba09c693412d"),
                _f("emnist-letters-test-labels-idx1-ubyte.gz",
                   "924955c31fe7fd809b7303b5c0141282955f4b8390c74cdfd5d80435e0f4b4cb"),
            ),
        },
        description="EMNIST-letters (Cohen et al. 2017); images transposed to MNIST orientation, labels 0-25",
        how_to_get="`oodgen data download emnist-letters` (fetches the NIST gzip archive, about 560 MB) "
                   "or copy emnist-letters-test-*-ubyte.gz into a folder `emnist-letters/`",
        transpose=True,
        label_offset=-1,
    ),
    # Colour sets for users with internet (nothing committed depends on them).
    "cifar10": Source(
        name="cifar10",
        folders=("cifar10", "cifar-10", "CIFAR10"),
        splits={"train": (_CIFAR10, _CIFAR10), "test": (_CIFAR10, _CIFAR10)},
        description="CIFAR-10 (Krizhevsky 2009), 32x32x3, the binary version read from its archive",
        how_to_get="`oodgen data download cifar10` (162 MB from the authors' page) or copy "
                   "cifar-10-binary.tar.gz into a folder `cifar10/`",
        format="cifar-binary",
    ),
    "svhn": Source(
        name="svhn",
        folders=("svhn", "SVHN"),
        splits={"train": (_SVHN_TRAIN, _SVHN_TRAIN), "test": (_SVHN_TEST, _SVHN_TEST)},
        description="SVHN cropped digits (Netzer et al. 2011), 32x32x3, format 2 (.mat); label 10 read as 0",
        how_to_get="`oodgen data download svhn` (the format-2 .mat files, 182 + 64 MB) or copy "
                   "train_32x32.mat / test_32x32.mat into a folder `svhn/`",
        format="svhn-mat",
    ),
}

EMNIST_ARCHIVE_URL = _EMNIST_URL + "gzip.zip"

#: Every dataset name: the real sets above, class subsets of them, and seeded synthetic sets.
REAL_SETS = tuple(SOURCES)
SYNTHETIC_SETS = ("gaussian", "gaussian-unclipped", "uniform", "sphere")
SUBSETS = {"mnist0-4": ("mnist", range(0, 5)), "mnist5-9": ("mnist", range(5, 10)),
           "fmnist0-4": ("fmnist", range(0, 5)), "fmnist5-9": ("fmnist", range(5, 10))}
ALL_SETS = REAL_SETS + tuple(SUBSETS) + SYNTHETIC_SETS
