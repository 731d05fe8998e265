"""Sweeps on a real two-node Ray cluster, in a network namespace that has only loopback.

On Linux Ray binds the machine's interface address whatever ``--node-ip-address`` says; tests here must
never use it. So this test re-runs tests/cluster/ray_cluster_checks.py with pytest under ``unshare -n``
(as root), after ``ip link set lo up``: there every Ray node, the jobs and the tracking store use
127.0.0.1 and nothing else exists. What the checks prove is written in that file:

- a 4-job smoke sweep with ``hydra/launcher=ray_cluster`` finishes on both nodes, one MLflow parent, the
  children FINISHED with the jobs' params, one thread per one-CPU job, the node of each job tagged, the
  splits staged once per machine and verified;
- a job whose Ray worker is killed mid-training is reported (one line, exit 1), its run is ended KILLED
  (not left RUNNING), the other job's run stays FINISHED, and re-running the sweep completes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

pytest.importorskip("ray", reason="the cluster extra is not installed (pip install -e '.[cluster]')")
pytest.importorskip("hydra_plugins.hydra_ray_launcher")

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ROOT / "tests" / "cluster" / "ray_cluster_checks.py"


def test_ray_cluster_sweeps_pass_inside_a_loopback_only_network_namespace(tmp_path):
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip to make a loopback-only network namespace")
    inner = (
        f"ip link set lo up && exec {sys.executable} -m pytest -q -p no:cacheprovider -s "
        f"--basetemp={tmp_path / 'inner'} {CHECKS}"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", inner], cwd=ROOT, env=env, capture_output=True, text=True, timeout=840
    )
    print(done.stdout[-6000:])
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-4000:]
    assert re.search(r"\b2 passed", done.stdout), done.stdout[-2000:]
