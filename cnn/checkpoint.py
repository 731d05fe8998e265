"""Checkpoint I/O without pickle: the ``.npz`` container and the NumPy model's layout inside it.

The container (any framework):

* :func:`write_npz_atomic` -- an uncompressed ``.npz`` written through :func:`cnn.atomic.atomic_open`
  (temporary name, fsync, rename), refusing object arrays;
* :func:`read_npz` -- every member read eagerly and without pickle; a missing, truncated or corrupt file,
  a member whose header does not match its size, or a zip bomb raises :class:`~cnn.errors.CheckpointError`
  naming the file and the member (sizes are checked before anything is allocated);
* :func:`encode_json` / :func:`decode_json` -- JSON documents as 0-d unicode members;
* :func:`format_members` / :func:`check_format` -- the ``__format__`` / ``__version__`` tags;
* :func:`pack_state` / :func:`unpack_state` -- nested optimizer/scheduler state as JSON + named arrays;
* :func:`rng_state` / :func:`set_rng_state` -- a NumPy ``Generator``'s state as JSON-ready data.

The NumPy :class:`~cnn.model.CNN`'s files (``CNN.save`` / ``CNN.load`` and the resume checkpoint of
``CNN.fit``) are one ``.npz``::

    __format__   "cnn-checkpoint" (JSON)        __version__  1 (JSON)
    __config__   ArchConfig.to_dict() (JSON)    __dtype__    "float32" | "float64" (JSON)
    __seed__     the model seed (JSON)          <state_dict key>  one array per parameter / buffer

A resume checkpoint is the same file plus ``__resume__`` (JSON: epoch, batch, history, RNG states,
optimizer/scheduler state with their arrays under ``optimizer/<i>`` and ``scheduler/<i>``), so
``CNN.load`` also reads the model out of a resume checkpoint: :func:`model_members`,
:func:`read_model`, :func:`save_resume`, :func:`restore_resume`.

Nothing here imports a deep-learning framework; torch tensors pass through :func:`pack_state` as anything
with ``__array__`` does.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cnn.architecture import ArchConfig, LayerSpec, build_spec
from cnn.atomic import atomic_open
from cnn.errors import CheckpointError, ConfigError
from cnn.training import History, check_run_key

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "check_format",
    "decode_json",
    "encode_json",
    "format_members",
    "model_members",
    "pack_state",
    "read_model",
    "read_npz",
    "restore_resume",
    "rng_state",
    "save_resume",
    "set_rng_state",
    "unpack_state",
    "write_npz_atomic",
]

#: Value of the ``__format__`` member of every ``.npz`` checkpoint this library writes.
CHECKPOINT_FORMAT = "cnn-checkpoint"
#: Bumped when the checkpoint layout changes incompatibly; loaders reject newer versions.
CHECKPOINT_VERSION = 1


# --------------------------------------------------------------------------------------------------------
# The container
# --------------------------------------------------------------------------------------------------------
def encode_json(obj: Any) -> np.ndarray:
    """A JSON document as a 0-d unicode array: an ``.npz`` member that loads without pickle."""
    return np.array(json.dumps(obj, sort_keys=True))


def decode_json(members: Mapping[str, np.ndarray], key: str, path: str | os.PathLike[str]) -> Any:
    """Parse the JSON member ``key`` of a loaded checkpoint; :class:`CheckpointError` if it is not one."""
    if key not in members:
        raise CheckpointError(f"{path}: not a cnn checkpoint (missing key '{key}')")
    arr = members[key]
    if arr.ndim != 0 or arr.dtype.kind != "U":
        raise CheckpointError(f"{path}: member '{key}' must be a JSON string, found {arr.dtype} {arr.shape}")
    try:
        return json.loads(str(arr))
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: member '{key}' is not valid JSON ({exc})") from None


def write_npz_atomic(path: str | os.PathLike[str], members: Mapping[str, np.ndarray]) -> Path:
    """Write ``members`` as an uncompressed ``.npz`` at ``path`` atomically.

    The data go to a temporary file beside ``path`` that is flushed to disk, then renamed over ``path``
    (:func:`cnn.atomic.atomic_open`), so a reader or a crash sees the old file or the new one, never half
    of one. Parent directories are created. No member may need pickle (object arrays are refused).
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise CheckpointError(f"{path}: checkpoint files must end in .npz")
    arrays = {k: np.asarray(v) for k, v in members.items()}
    for k, v in arrays.items():
        if v.dtype.hasobject:
            raise CheckpointError(f"{path}: member '{k}' is an object array, which would need pickle")
    with atomic_open(path) as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub: **kwds typed as allow_pickle
    return path


# Failures that mean "these bytes are not a valid .npz": zip structure, npy headers (parsed with
# ast.literal_eval), data sizes, CRCs, absurd shapes.
_CORRUPT = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    SyntaxError,
    MemoryError,
    OverflowError,
    RecursionError,
    UnicodeDecodeError,
    NotImplementedError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
)


#: Deflated members may expand at most this much: real weights compress poorly, a zip bomb compresses ~1000x.
_MAX_COMPRESSION_RATIO = 200


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One ``.npy`` member, its header checked against the member's size before any data is allocated."""
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > max(
        _MAX_COMPRESSION_RATIO * info.compress_size, 2**20
    ):
        raise ValueError(
            f"compressed {info.compress_size} bytes claim to expand to {info.file_size} (a zip bomb?)"
        )
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
        if dtype.hasobject:
            raise ValueError("object array (would need pickle)")
        count = math.prod(shape)
        expected = f.tell() + count * dtype.itemsize
        if expected != info.file_size:
            raise ValueError(
                f"header says {shape} {dtype} ({expected} bytes) but the member holds {info.file_size}"
            )
        data = f.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise ValueError("truncated data")
    arr = np.frombuffer(data, dtype=dtype)
    if fortran:
        return arr.reshape(shape[::-1]).T.copy()
    return arr.reshape(shape).copy()


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every member of the ``.npz`` at ``path``, read eagerly and without pickle.

    Any file that is missing, not a zip, truncated, has a corrupt member (bad CRC, bad ``.npy`` header,
    size not matching its header, object dtype) raises :class:`CheckpointError` naming the file and the
    member; nothing else escapes (a fuzzed file cannot trigger a huge allocation: sizes are checked first).

    Returns:
        ``{member name without '.npy': array}``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    members: dict[str, np.ndarray] = {}
    name = None
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename
                if not name.endswith(".npy"):
                    raise ValueError("not a .npy member")
                members[name[: -len(".npy")]] = _read_member(zf, info)
    except _CORRUPT as exc:
        where = f" (member '{name}')" if name is not None else ""
        raise CheckpointError(f"{path}: not a readable .npz checkpoint{where}: {exc}") from None
    return members


def check_format(members: Mapping[str, np.ndarray], path: str | os.PathLike[str]) -> int:
    """Check the ``__format__``/``__version__`` tags of a loaded checkpoint; return its version."""
    fmt = decode_json(members, "__format__", path)
    if fmt != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a cnn checkpoint (__format__ is {fmt!r}, expected '{CHECKPOINT_FORMAT}')"
        )
    version = decode_json(members, "__version__", path)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {version!r} is not supported "
            f"(this library reads versions 1..{CHECKPOINT_VERSION})"
        )
    return version


def format_members() -> dict[str, np.ndarray]:
    """The ``__format__`` and ``__version__`` members every checkpoint starts with."""
    return {"__format__": encode_json(CHECKPOINT_FORMAT), "__version__": encode_json(CHECKPOINT_VERSION)}


def pack_state(tree: Any, prefix: str) -> tuple[Any, dict[str, np.ndarray]]:
    """Split a nested state (an optimizer's or scheduler's ``state_dict()``) into JSON and arrays.

    Arrays (anything with ``__array__`` that is not a Python scalar, e.g. ndarrays or CPU torch tensors)
    become members ``f"{prefix}{i}"`` and are replaced in the tree by ``{"__array__": name}``. Tuples and
    dicts with non-string keys are tagged so :func:`unpack_state` rebuilds them exactly; NumPy scalars
    become Python numbers.

    Returns:
        ``(json_tree, {member name: ndarray})``.
    """
    arrays: dict[str, np.ndarray] = {}

    def enc(x: Any) -> Any:
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, Mapping):
            if all(isinstance(k, str) for k in x):
                if any(k.startswith("__") and k.endswith("__") for k in x):
                    return {"__items__": [[k, enc(v)] for k, v in x.items()]}
                return {k: enc(v) for k, v in x.items()}
            return {"__items__": [[enc(k), enc(v)] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {"__tuple__": [enc(v) for v in x]}
        if isinstance(x, list):
            return [enc(v) for v in x]
        if hasattr(x, "__array__"):
            name = f"{prefix}{len(arrays)}"
            arrays[name] = np.array(x)  # a copy: the caller keeps mutating its state
            return {"__array__": name}
        raise TypeError(f"cannot store a {type(x).__name__} in a checkpoint state")

    return enc(tree), arrays


def unpack_state(
    tree: Any,
    members: Mapping[str, np.ndarray],
    path: str | os.PathLike[str],
    to_array: Callable[[np.ndarray], Any] | None = None,
) -> Any:
    """Inverse of :func:`pack_state`; ``to_array`` converts each array (e.g. ``torch.from_numpy``).

    Raises :class:`CheckpointError` if the tree names a member the file does not have.
    """

    def dec(x: Any) -> Any:
        if isinstance(x, list):
            return [dec(v) for v in x]
        if isinstance(x, dict):
            if set(x) == {"__array__"}:
                name = x["__array__"]
                if not isinstance(name, str) or name not in members:
                    raise CheckpointError(f"{path}: state refers to array member {name!r}, which is missing")
                arr = members[name]
                return to_array(arr) if to_array is not None else arr
            if set(x) == {"__tuple__"}:
                return tuple(dec(v) for v in x["__tuple__"])
            if set(x) == {"__items__"}:
                return {_hashable(dec(k)): dec(v) for k, v in x["__items__"]}
            return {k: dec(v) for k, v in x.items()}
        return x

    try:
        return dec(tree)
    except (TypeError, ValueError, RecursionError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path}: malformed state ({exc})") from None


def _hashable(k: Any) -> Any:
    if isinstance(k, list):
        return tuple(_hashable(v) for v in k)
    return k


def rng_state(gen: np.random.Generator) -> dict[str, Any]:
    """The state of ``gen``'s bit generator as JSON-ready data (Python ints are arbitrary precision)."""
    return dict(gen.bit_generator.state)


def set_rng_state(gen: np.random.Generator, state: Mapping[str, Any], what: str = "rng") -> None:
    """Restore a state from :func:`rng_state`; :class:`CheckpointError` if it does not fit ``gen``."""
    try:
        gen.bit_generator.state = dict(state)
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"cannot restore {what}: expected a {type(gen.bit_generator).__name__} state, found {exc}"
        ) from None


# --------------------------------------------------------------------------------------------------------
# The NumPy CNN's files
# --------------------------------------------------------------------------------------------------------
def model_members(model: Any) -> dict[str, np.ndarray]:
    """The members of ``CNN.save``'s file: format tags, ``__config__``, ``__dtype__``, ``__seed__`` and
    the model's ``state_dict`` (``model`` is a :class:`~cnn.model.CNN`)."""
    members = format_members()
    members["__config__"] = encode_json(model.config.to_dict())
    members["__dtype__"] = encode_json(model.dtype.name)
    members["__seed__"] = encode_json(model.seed)
    members.update(model.state_dict())
    return members


def read_header(members: Mapping[str, np.ndarray], path: Path | str) -> tuple[ArchConfig, np.dtype, int]:
    """``(config, dtype, seed)`` of a loaded model checkpoint, each checked; :class:`CheckpointError`
    naming the member otherwise (a missing ``__seed__`` reads as 0)."""
    raw = decode_json(members, "__config__", path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: '__config__' must be a JSON object, found {type(raw).__name__}")
    unknown = sorted(set(raw) - set(ArchConfig.__dataclass_fields__))
    if unknown:
        raise CheckpointError(f"{path}: '__config__' has unknown key '{unknown[0]}'")
    try:
        config = ArchConfig(**raw)
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: '__config__' is not a valid architecture ({exc})") from None
    dtype_name = decode_json(members, "__dtype__", path)
    if dtype_name not in ("float16", "float32", "float64"):
        raise CheckpointError(f"{path}: '__dtype__' must be float32 or float64, found {dtype_name!r}")
    seed = decode_json(members, "__seed__", path) if "__seed__" in members else 0
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise CheckpointError(f"{path}: '__seed__' must be a non-negative int, found {seed!r}")
    return config, np.dtype(dtype_name), seed


def model_state(members: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ``state_dict`` members of a checkpoint (not the ``__tags__``, not ``optimizer/<i>`` arrays)."""
    return {k: v for k, v in members.items() if not k.startswith("__") and "/" not in k}


def _weight_shape(spec: LayerSpec) -> tuple[int, ...] | None:
    """The ``weight`` shape of a conv/dense spec (torch layout), else None."""
    kw = spec.kwargs
    if spec.kind == "conv2d":
        k = kw["kernel_size"]
        return (kw["out_channels"], kw["in_channels"], k, k)
    if spec.kind == "dense":
        return (kw["out_features"], kw["in_features"])
    return None


def read_model(path: Path) -> tuple[ArchConfig, np.dtype, int, dict[str, np.ndarray]]:
    """``(config, dtype, seed, state_dict)`` of the model checkpoint at ``path`` (a resume checkpoint
    too). The conv/dense weights' shapes are checked against the config *before* the caller allocates a
    network, so a corrupt config cannot make it allocate gigabytes."""
    members = read_npz(path)
    check_format(members, path)
    config, dtype, seed = read_header(members, path)
    state = model_state(members)
    for part, specs in build_spec(config).items():
        for i, spec in enumerate(specs):
            want = _weight_shape(spec)
            key = f"{part}.{i}.weight"
            if want is not None and key in state and state[key].shape != want:
                raise CheckpointError(
                    f"{path}: shape mismatch for '{key}': config says {want}, "
                    f"checkpoint has {state[key].shape}"
                )
    return config, dtype, seed, state


def _dropout_layers(model: Any) -> Iterator[tuple[str, Any]]:
    return ((name, layer) for name, layer in model.named_layers() if hasattr(layer, "rng"))


def save_resume(
    model: Any,
    path: Path,
    opt: Any,
    sched: Any,
    run_key: dict[str, Any],
    history: History,
    epoch: int,
    batch: int,
    partial: dict[str, float] | None,
) -> None:
    """Write ``CNN.fit``'s resume checkpoint: ``epoch`` epochs completed plus ``batch`` batches of the next
    (with the epoch's ``partial`` sums), the optimizer, scheduler and dropout RNG states, the history."""
    opt_tree, opt_arrays = pack_state(opt.state_dict(), "optimizer/")
    sched_tree, sched_arrays = pack_state(None if sched is None else sched.state_dict(), "scheduler/")
    resume = {
        "epoch": epoch,
        "batch": batch,
        "partial": partial,
        "history": dict(history),
        "rng": {name: rng_state(layer.rng) for name, layer in _dropout_layers(model)},
        "optimizer": opt_tree,
        "scheduler": sched_tree,
        "run": run_key,
    }
    members = model_members(model)
    members["__resume__"] = encode_json(resume)
    members.update(opt_arrays)
    members.update(sched_arrays)
    write_npz_atomic(path, members)


def restore_resume(
    model: Any, path: Path, opt: Any, sched: Any, run_key: dict[str, Any]
) -> tuple[int, int, dict[str, float] | None, History]:
    """Load a resume checkpoint into ``model``, ``opt`` and ``sched``, all or nothing.

    Returns:
        ``(start_epoch, start_batch, partial, history)``: where to continue.

    Raises:
        CheckpointError: another model, a model-only file, another run set-up
            (:func:`cnn.training.check_run_key`), or a malformed state; the model is left as it was.
    """
    members = read_npz(path)
    check_format(members, path)
    config, dtype, _ = read_header(members, path)
    if config != model.config or dtype != model.dtype:
        raise CheckpointError(
            f"{path}: checkpoint is of another model ({config}, {dtype}); this model is "
            f"({model.config}, {model.dtype})"
        )
    if "__resume__" not in members:
        raise CheckpointError(
            f"{path}: not a resume checkpoint (missing key '__resume__'): a model saved by CNN.save "
            f"holds weights only; train it further with fit() without resume"
        )
    state = decode_json(members, "__resume__", path)
    try:
        check_run_key(state["run"], run_key, path)
        epoch, batch, partial = int(state["epoch"]), int(state["batch"]), state["partial"]
        history = History(state["history"])
        if any(len(history[k]) != epoch for k in history) or (batch > 0) != (partial is not None):
            raise CheckpointError(f"{path}: resume state is inconsistent (epoch {epoch}, batch {batch})")
        if partial is not None:
            partial = {k: partial[k] for k in ("loss_sum", "correct", "seen", "elapsed")}
        rngs = dict(_dropout_layers(model))
        if set(state["rng"]) != set(rngs):
            raise CheckpointError(f"{path}: RNG states for {sorted(state['rng'])}, expected {sorted(rngs)}")
        opt_state = unpack_state(state["optimizer"], members, path)
        sched_state = None if sched is None else unpack_state(state["scheduler"], members, path)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path}: malformed resume state ({type(exc).__name__}: {exc})") from None

    # Load everything or nothing: the model is restored if the optimizer or scheduler refuses its state.
    backup = model.state_dict(), {name: rng_state(layer.rng) for name, layer in rngs.items()}
    try:
        model.load_state_dict(model_state(members), source=str(path))
        for name, st in state["rng"].items():
            set_rng_state(rngs[name].rng, st, what=f"{path}: RNG of {name}")
        opt.load_state_dict(opt_state)
        if sched is not None:
            sched.load_state_dict(sched_state)
    except (CheckpointError, KeyError, TypeError, ValueError) as exc:
        model.load_state_dict(backup[0])
        for name, st in backup[1].items():
            set_rng_state(rngs[name].rng, st)
        msg = str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}"
        raise CheckpointError(msg) from None
    return epoch + 1, batch, partial, history
