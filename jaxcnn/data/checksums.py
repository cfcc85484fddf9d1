"""Official file names, sizes, SHA-256 checksums and download locations.

Source of every checksum and size below: TensorFlow Datasets' registered URL
checksums, ``tensorflow_datasets/url_checksums/{mnist,fashion_mnist,kmnist,cifar10,
cifar100}.txt`` (github.com/tensorflow/datasets, also in the installed
tensorflow-datasets 4.9.10). The MNIST and Fashion-MNIST values also equal those
in ``../shared/data/README.md``, whose files match the official MD5s.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from jaxcnn.data.errors import ChecksumError


@dataclass(frozen=True)
class OfficialFile:
    """One file of an official distribution.

    Attributes:
        filename: its official name, e.g. ``train-images-idx3-ubyte.gz``.
        sha256: SHA-256 of the official file, hex.
        size: size in bytes.
    """

    filename: str
    sha256: str
    size: int


def _idx_files(sizes_and_sums: dict[str, tuple[int, str]]) -> tuple[OfficialFile, ...]:
    return tuple(
        OfficialFile(name, digest, size) for name, (size, digest) in sizes_and_sums.items()
    )


OFFICIAL_FILES: dict[str, tuple[OfficialFile, ...]] = {
    "mnist": _idx_files(
        {
            "train-images-idx3-ubyte.gz": (
                9912422,
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            ),
            "train-labels-idx1-ubyte.gz": (
                28881,
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            ),
            "t10k-images-idx3-ubyte.gz": (
                1648877,
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            ),
            "t10k-labels-idx1-ubyte.gz": (
                4542,
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            ),
        }
    ),
    "fashion_mnist": _idx_files(
        {
            "train-images-idx3-ubyte.gz": (
                26421880,
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            ),
            "train-labels-idx1-ubyte.gz": (
                29515,
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            ),
            "t10k-images-idx3-ubyte.gz": (
                4422102,
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            ),
            "t10k-labels-idx1-ubyte.gz": (
                5148,
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            ),
        }
    ),
    "kmnist": _idx_files(
        {
            "train-images-idx3-ubyte.gz": (
                18165135,
                "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
            ),
            "train-labels-idx1-ubyte.gz": (
                29497,
                "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
            ),
            "t10k-images-idx3-ubyte.gz": (
                3041136,
                "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
            ),
            "t10k-labels-idx1-ubyte.gz": (
                5120,
                "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
            ),
        }
    ),
    "cifar10": (
        OfficialFile(
            "cifar-10-binary.tar.gz",
            "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
            170052171,
        ),
    ),
    "cifar100": (
        OfficialFile(
            "cifar-100-binary.tar.gz",
            "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
            168513733,
        ),
    ),
}

# Base URLs, tried in order; a file's URL is base + filename. The official MNIST
# host (yann.lecun.com) is often unreachable, so the mirrors TFDS and torchvision use come first.
OFFICIAL_MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion_mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "kmnist": ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/",),
}


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file, hex, read in chunks.

    Examples:
        >>> import tempfile, os
        >>> with tempfile.NamedTemporaryFile(delete=False) as f:
        ...     _ = f.write(b"abc")
        >>> sha256_file(f.name)[:16]
        'ba7816bf8f01cfea'
        >>> os.unlink(f.name)
    """
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: str | Path, official: OfficialFile) -> str:
    """Check ``path`` against its official SHA-256; return the digest.

    Raises:
        ChecksumError: naming the file, both checksums and what to do.
    """
    actual = sha256_file(path)
    if actual != official.sha256:
        raise ChecksumError(
            path,
            official.sha256,
            actual,
            f"The file is corrupt, truncated or not the official {official.filename} "
            f"({official.size:,} bytes; this one has {Path(path).stat().st_size:,}). Delete it "
            "and load again to download it afresh, or replace it with the official file.",
        )
    return actual
