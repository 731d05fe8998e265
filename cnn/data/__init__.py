"""Data: fetch MNIST / Fashion-MNIST verified, parse IDX strictly, build normalised stratified splits.

Modules: :mod:`~cnn.data.idx` (IDX format), :mod:`~cnn.data.datasets` (file names, pinned digests),
:mod:`~cnn.data.sources` (local folder, HTTPS mirrors, npm, Debian; safe tar extraction),
:mod:`~cnn.data.fetch` (verified, atomic download), :mod:`~cnn.data.preprocess` (splits, normalisation,
``.npz`` I/O, the seed's ``load_mnist``). Everything here imports only NumPy and the standard library.
"""

from cnn.data.datasets import DATASETS, FASHION_MNIST, IDX_FILES, MNIST, DatasetSpec, get_dataset
from cnn.data.fetch import FetchResult, fetch_dataset, sha256_file, verify_dataset_dir
from cnn.data.idx import parse_idx, read_idx, read_idx_images, read_idx_labels, write_idx
from cnn.data.preprocess import (
    RawDataset,
    Split,
    load_mnist,
    load_split,
    normalize_images,
    pixel_stats,
    preprocess_dataset,
    preprocess_raw,
    read_idx_dir,
    save_split,
    stratified_split,
)
from cnn.data.sources import (
    DebianSource,
    LocalDirSource,
    MirrorSource,
    NpmSource,
    SourceUnavailable,
    default_sources,
    extract_tar_members,
)

__all__ = [
    "DATASETS",
    "FASHION_MNIST",
    "IDX_FILES",
    "MNIST",
    "DatasetSpec",
    "DebianSource",
    "FetchResult",
    "LocalDirSource",
    "MirrorSource",
    "NpmSource",
    "RawDataset",
    "SourceUnavailable",
    "Split",
    "default_sources",
    "extract_tar_members",
    "fetch_dataset",
    "get_dataset",
    "load_mnist",
    "load_split",
    "normalize_images",
    "parse_idx",
    "pixel_stats",
    "preprocess_dataset",
    "preprocess_raw",
    "read_idx",
    "read_idx_dir",
    "read_idx_images",
    "read_idx_labels",
    "save_split",
    "sha256_file",
    "stratified_split",
    "verify_dataset_dir",
    "write_idx",
]
