"""Throwaway PostgreSQL and ``mlflow server`` on 127.0.0.1 for tests, as context managers.

The same recipe as tests/test_tracking_postgres.py (Debian's or PATH's PostgreSQL binaries; ``initdb``
refuses root, so as root the server runs as the ``postgres`` user), usable from any test or helper.
Every process started here is stopped on exit, by its own process id or group.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SERVER_START_TIMEOUT_S = 180  # the first start migrates the schema; slow on a busy 2-core machine


class ServiceUnavailable(RuntimeError):
    """The binaries a service needs are not installed (a test skips, or fails under CI)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin directory (Debian layout), or PATH's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def as_db_owner(cmd: list[str]) -> list[str]:
    """Run ``cmd`` as the ``postgres`` user when we are root (initdb and postgres refuse root)."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextmanager
def postgres(*databases: str) -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL cluster on 127.0.0.1 with ``databases``; yields ``{name: SQLAlchemy URL}``.

    URLs name the driver (``postgresql+psycopg2://``): SQLAlchemy 2.1 maps a bare ``postgresql://`` to
    psycopg 3, and the project installs psycopg2-binary.
    """
    bindir = postgres_bin()
    if bindir is None:
        raise ServiceUnavailable("PostgreSQL server binaries not installed (apt-get install postgresql)")
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise ServiceUnavailable("running as root and there is no 'postgres' user for initdb") from None
    base = Path(tempfile.mkdtemp(prefix="cnn-pg-"))  # not under pytest's tmp_path: private to root
    base.chmod(0o755)
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    data, log = base / "data", base / "server.log"
    port = free_port()
    started = False
    try:
        subprocess.run(
            as_db_owner([str(bindir / "initdb"), "-D", str(data), "-U", "cnn", "--auth=trust", "-E", "UTF8"]),
            check=True,
            capture_output=True,
        )
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            as_db_owner(
                [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        started = True
        for name in databases:
            subprocess.run(
                [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "cnn", name],
                check=True,
                capture_output=True,
                timeout=60,
            )
        yield {name: f"postgresql+psycopg2://cnn@127.0.0.1:{port}/{name}" for name in databases}
    finally:
        if started:
            subprocess.run(
                as_db_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(base, ignore_errors=True)


def local_mlflow_store(tmp_path: Path, monkeypatch: Any, experiment: str) -> str:
    """``sqlite:///<tmp_path>/mlflow.db``, made the tracking URI of this test (``MLFLOW_TRACKING_URI``
    unset through ``monkeypatch``) with ``experiment`` active, its artifacts under ``tmp_path/artifacts``
    (a SQLite store's default is ./mlruns in the working directory)."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    artifacts = (tmp_path / "artifacts").as_uri()
    mlflow.MlflowClient(uri).create_experiment(experiment, artifact_location=artifacts)
    mlflow.set_experiment(experiment)
    return uri


@contextmanager
def mlflow_server(backend_store_uri: str, workdir: Path) -> Iterator[str]:
    """``http://127.0.0.1:<port>``: ``mlflow server`` on ``backend_store_uri``, proxying artifacts to
    ``<workdir>/artifacts`` (``--artifacts-destination``), so clients need no shared filesystem."""
    port = free_port()
    log_path = workdir / "mlflow-server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("mlflow")),
                "server",
                "--backend-store-uri",
                backend_store_uri,
                "--artifacts-destination",
                str(workdir / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the uvicorn worker is stopped with it
        )
        uri = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + SERVER_START_TIMEOUT_S
            while True:
                if server.poll() is not None:
                    raise RuntimeError(
                        f"mlflow server exited with {server.returncode}:\n{log_path.read_text()}"
                    )
                try:
                    with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mlflow server not up after {SERVER_START_TIMEOUT_S} s:\n{log_path.read_text()}"
                    )
                time.sleep(1)
            yield uri
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)
                    server.wait(timeout=30)
