"""The MLflow Model Registry: the evaluate stage registers each model and moves ``champion`` on merit.

For each framework the evaluate stage calls :func:`register_and_promote` with the training run and the
test accuracy it measured:

1. the run's logged model (``<run>/model``, :mod:`cnn.pipeline.logged_models`) becomes a version of the
   registered model ``cnn-numpy`` / ``cnn-torch`` (created on first use); evaluating the same run again
   reuses its version instead of adding one;
2. the version gets the tags ``test_accuracy``, ``test_images`` and ``test_split_digest`` (SHA-256 of the
   test pixels and labels);
3. the alias ``champion`` moves to the new version only when its test accuracy is strictly higher than
   the current champion's **on the same test images**: the champion's recorded ``test_accuracy`` when its
   ``test_split_digest`` matches, otherwise the champion is re-evaluated on this test split (a smoke run
   scored on 200 images is not compared with a full run scored on 10,000);
4. the decision and its reason are recorded: the version's tag ``champion_decision`` (promoted or kept,
   with both accuracies) and, when the alias moves, the registered model's tag ``champion_reason``.

``mlflow models serve -m models:/cnn-numpy@champion`` (``make serve``) then serves the best model so far.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnn.errors import TrackingError

__all__ = [
    "CHAMPION_ALIAS",
    "REGISTERED_MODELS",
    "Promotion",
    "TestSplit",
    "register_and_promote",
    "register_evaluated",
]

log = logging.getLogger(__name__)

#: Registered model name per framework.
REGISTERED_MODELS = {"numpy": "cnn-numpy", "torch": "cnn-torch"}
CHAMPION_ALIAS = "champion"
_DESCRIPTIONS = {
    "numpy": "The from-scratch NumPy CNN on MNIST. predict(raw images: uint8 0-255 or float 0-1, "
    "(N, 28, 28) or (N, 1, 28, 28)) -> float32 logits (N, 10). Alias champion: the best test accuracy.",
    "torch": "The PyTorch twin of the NumPy CNN on MNIST. predict(raw images: uint8 0-255 or float 0-1, "
    "(N, 28, 28) or (N, 1, 28, 28)) -> float32 logits (N, 10). Alias champion: the best test accuracy.",
}


@dataclass(frozen=True)
class TestSplit:
    """The raw test images a champion is judged on.

    Attributes:
        pixels: uint8 ``(N, H, W)`` (or ``(N, C, H, W)``), what a user would send to the served model.
        labels: int ``(N,)``.
    """

    __test__ = False  # not a pytest test class

    pixels: np.ndarray
    labels: np.ndarray

    @property
    def digest(self) -> str:
        """SHA-256 of the pixels and labels: equal for the same images, whatever the normalisation."""
        h = hashlib.sha256(np.ascontiguousarray(self.pixels, dtype=np.uint8).tobytes())
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class Promotion:
    """What :func:`register_and_promote` did.

    Attributes:
        name: the registered model (``cnn-numpy``).
        version: the version registered (or found) for the run.
        champion: the version that holds ``champion`` afterwards.
        promoted: whether the alias moved to ``version`` now.
        reason: one line: whether it is the champion and why (the version's ``champion_decision`` tag).
    """

    name: str
    version: str
    champion: str
    promoted: bool
    reason: str


def register_and_promote(
    client: Any, framework: str, run_id: str, test_accuracy: float, split: TestSplit
) -> Promotion:
    """Register the model of training run ``run_id`` and move ``champion`` if it beats the current one.

    Args:
        client: an ``mlflow.MlflowClient`` on the tracking (and registry) store.
        framework: ``"numpy"`` or ``"torch"``: selects the registered model name.
        run_id: the training run holding the logged model.
        test_accuracy: the accuracy the evaluate stage measured on ``split``.
        split: the test images and labels.

    Raises:
        TrackingError: the run has no logged model.
    """
    name = REGISTERED_MODELS[framework]
    _ensure_registered_model(client, name, framework)
    version = _version_of_run(client, name, run_id)
    digest = split.digest
    for key, value in (
        ("test_accuracy", repr(float(test_accuracy))),  # round-trips exactly: a tie stays a tie
        ("test_images", str(len(split.labels))),
        ("test_split_digest", digest),
    ):
        client.set_model_version_tag(name, version, key, value)

    champion = _champion(client, name)
    if champion is None:
        promoted, reason = True, f"first version of {name}; test_accuracy {test_accuracy:.4f}"
    elif str(champion.version) == version:
        promoted, reason = False, f"already the champion; test_accuracy {test_accuracy:.4f}"
    else:
        best, how = _champion_accuracy(name, champion, split, digest)
        promoted = test_accuracy > best
        relation = ">" if promoted else "<="
        reason = (
            f"test_accuracy {test_accuracy:.4f} {relation} {best:.4f} of version {champion.version} "
            f"({how}, {len(split.labels)} test images)"
        )
    if promoted:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
        client.set_registered_model_tag(name, "champion_reason", f"version {version}: {reason}")
        decision = f"promoted to {CHAMPION_ALIAS}: {reason}"
    elif str(champion.version) == version:
        decision = f"{CHAMPION_ALIAS}: {reason}"
    else:
        decision = f"not {CHAMPION_ALIAS}: {reason}"
    client.set_model_version_tag(name, version, "champion_decision", decision)
    client.set_tag(run_id, "registered_model", f"{name}/{version}")
    holder = version if promoted else str(champion.version)
    return Promotion(name=name, version=version, champion=holder, promoted=promoted, reason=decision)


def logged_model_id(client: Any, run_id: str) -> str:
    """The id of the model logged by run ``run_id`` (``<run>/model``).

    Raises:
        TrackingError: the run logged no model.
    """
    run = client.get_run(run_id)
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
    )
    if not models:
        raise TrackingError(f"run {run_id} ({run.info.run_name}) logged no model; nothing to register")
    return sorted(models, key=lambda m: m.creation_timestamp)[-1].model_id


def _ensure_registered_model(client: Any, name: str, framework: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(
                name, tags={"framework": framework}, description=_DESCRIPTIONS[framework]
            )
        except MlflowException:  # created by a concurrent evaluate
            client.get_registered_model(name)


def _version_of_run(client: Any, name: str, run_id: str) -> str:
    """The version of ``name`` registered from ``run_id``: the existing one, else a new one."""
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        return str(min(int(v.version) for v in existing))
    model_id = logged_model_id(client, run_id)
    created = client.create_model_version(
        name, source=f"models:/{model_id}", run_id=run_id, model_id=model_id
    )
    return str(created.version)


def _champion(client: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:
        return None


def _champion_accuracy(name: str, champion: Any, split: TestSplit, digest: str) -> tuple[float, str]:
    """The champion's accuracy on ``split``: its recorded tag when measured on the same images, else
    measured now by loading it from the registry (it normalises its input itself)."""
    tags = champion.tags or {}
    if tags.get("test_split_digest") == digest and "test_accuracy" in tags:
        return float(tags["test_accuracy"]), "same test split"
    import mlflow

    model = mlflow.pyfunc.load_model(f"models:/{name}/{champion.version}")
    predicted = np.asarray(model.predict(split.pixels)).argmax(axis=1)
    accuracy = float(np.mean(predicted == split.labels))
    log.info(
        "%s: champion version %s re-evaluated on this test split: %.4f", name, champion.version, accuracy
    )
    return accuracy, "champion re-evaluated on this test split"


def register_evaluated(
    uri: str, run_ids: Mapping[str, str], test_accuracy: Mapping[str, float], split: TestSplit
) -> list[Promotion]:
    """:func:`register_and_promote` for each framework of ``run_ids`` (framework -> training run) on the
    store ``uri``; logs one line per model (a run without a logged model: a warning, not registered).
    What the evaluate stage calls."""
    import mlflow

    mlflow.set_tracking_uri(uri)  # the registry resolves ``models:/<id>`` sources on the global store
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    promotions = []
    for framework, run_id in run_ids.items():
        try:
            p = register_and_promote(client, framework, run_id, test_accuracy[framework], split)
        except TrackingError as err:  # a run made by hand, not by a training stage
            log.warning("%s; %s not registered", err, REGISTERED_MODELS[framework])
            continue
        log.info("%s version %s: %s", p.name, p.version, p.reason)
        promotions.append(p)
    return promotions
