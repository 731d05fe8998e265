"""A real local Ray cluster for tests: a head node and one more node joined with ``ray start --address``.

Only inside a network namespace that has nothing but loopback (see tests/test_cluster_ray.py): on Linux
Ray binds the machine's interface address whatever ``--node-ip-address`` says, and tests here must never
use it. Each node is one ``ray start --block`` process in a session of its own; stopping the cluster
signals those two process groups and nothing else (never ``ray stop``, which stops every Ray on the
machine).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers.services import free_port

START_TIMEOUT_S = 120
# Per node. Ray's default (30% of RAM, in /dev/shm) is far more than a smoke sweep needs.
OBJECT_STORE_BYTES = 150_000_000


def only_loopback() -> bool:
    """True when this process's network namespace has no interface but ``lo``."""
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]  # per namespace (/sys/class/net is not)
    return sorted(line.split(":", 1)[0].strip() for line in lines) == ["lo"]


def _ray() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # raylet, GCS and workers share the group
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def alive_nodes(address: str) -> int:
    """How many nodes the cluster at ``address`` reports alive (asked from a separate driver process)."""
    code = (
        "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
        "print(sum(1 for n in ray.nodes() if n['Alive']))"
    )
    out = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True, timeout=120)
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0


@contextmanager
def local_ray_cluster(workdir: Path, cpus: tuple[int, int] = (2, 2)) -> Iterator[str]:
    """Start a head (``cpus[0]`` CPUs) and a second node (``cpus[1]``), dashboard off; yield the address."""
    if not only_loopback():
        raise RuntimeError("refusing to start Ray outside a loopback-only network namespace")
    port = free_port()
    address = f"127.0.0.1:{port}"
    temp = Path(os.environ.get("RAY_TEST_TEMP", "/tmp")) / f"rt{os.getpid()}"  # short: socket paths
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--block", "--disable-usage-stats", "--include-dashboard=false"]
    procs: list[subprocess.Popen] = []
    try:
        head_log = (workdir / "ray-head.log").open("w")
        procs.append(
            subprocess.Popen(
                [
                    _ray(),
                    "start",
                    "--head",
                    f"--port={port}",
                    f"--num-cpus={cpus[0]}",
                    "--num-gpus=0",
                    f"--object-store-memory={OBJECT_STORE_BYTES}",
                    f"--temp-dir={temp}",
                    *common,
                ],
                stdout=head_log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if procs[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Ray head did not start:\n{(workdir / 'ray-head.log').read_text()}")
            time.sleep(0.5)
        worker_log = (workdir / "ray-worker.log").open("w")
        procs.append(
            subprocess.Popen(
                [
                    _ray(),
                    "start",
                    f"--address={address}",
                    f"--num-cpus={cpus[1]}",
                    "--num-gpus=0",
                    f"--object-store-memory={OBJECT_STORE_BYTES}",
                    "--disable-usage-stats",
                    "--block",
                ],
                stdout=worker_log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        )
        while alive_nodes(address) < 2:
            if procs[1].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"second Ray node did not join:\n{(workdir / 'ray-worker.log').read_text()}"
                )
            time.sleep(1)
        yield address
    finally:
        for proc in reversed(procs):
            _stop(proc)
        subprocess.run(["rm", "-rf", str(temp)], check=False)
