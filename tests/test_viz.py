"""cnn.pipeline.viz: every figure function writes a valid PNG of the documented size from small inputs."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from cnn.errors import CNNError
from cnn.pipeline import viz
from cnn.pipeline.metrics import confusion_matrix

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the file is a PNG that decodes."""
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    pixels = matplotlib.image.imread(path)  # decodes every chunk: a truncated file fails here
    assert pixels.shape[:2] == (height, width)
    assert pixels[..., :3].std() > 0.01, "the image is blank"
    return width, height


def history_rows(acc0: float, epochs: int = 3) -> list[dict]:
    return [
        {
            "epoch": e,
            "loss": 1 / e,
            "accuracy": acc0 + 0.01 * e,
            "val_loss": 1.1 / e,
            "val_accuracy": acc0 + 0.012 * e,
        }
        for e in range(1, epochs + 1)
    ]


@pytest.fixture
def small_cms(rng):
    y = rng.integers(0, 10, 300)
    noisy = np.where(rng.random(300) < 0.8, y, rng.integers(0, 10, 300))
    return {"NumPy CNN": confusion_matrix(y, noisy, 10), "PyTorch CNN": confusion_matrix(y, y, 10)}


def test_training_curves_png_is_1200_by_460(tmp_path):
    out = tmp_path / "figs" / "training_curves.png"  # parent is created
    fig = viz.plot_training_curves({"NumPy CNN": history_rows(0.8), "PyTorch CNN": history_rows(0.85)}, out)
    assert isinstance(fig, Figure)
    assert png_size(out) == (1200, 460)
    assert not list(out.parent.glob("*.tmp")), "the atomic write left its temporary file behind"


def test_training_curves_accept_fit_history_and_json_rows_alike(tmp_path):
    rows = history_rows(0.9)
    as_dict = {k: [r[k] for r in rows] for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
    viz.plot_training_curves({"m": rows}, tmp_path / "rows.png")
    viz.plot_training_curves({"m": as_dict}, tmp_path / "dict.png")
    assert (tmp_path / "rows.png").read_bytes() == (tmp_path / "dict.png").read_bytes()
    # A bare history (no model mapping) and a history without validation keys are fine too.
    viz.plot_training_curves({"loss": [1.0, 0.5], "accuracy": [0.5, 0.7]}, tmp_path / "bare.png")
    assert png_size(tmp_path / "bare.png") == (1200, 460)


def test_training_curves_need_a_loss():
    with pytest.raises(CNNError, match="loss"):
        viz.plot_training_curves({"m": {"accuracy": [0.1]}})


def test_confusion_matrix_png_has_a_row_of_two_panels_per_model(tmp_path, small_cms):
    out = tmp_path / "cm.png"
    fig = viz.plot_confusion_matrix(small_cms, out)
    assert png_size(out) == (1200, 1120)  # 560 px per model
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 4  # counts + row-normalised, for each model
    assert len(fig.axes) == 8  # ... each with its colour bar
    titles = [ax.get_title() for ax in images]
    assert "PyTorch CNN: counts (accuracy 100.00%)" in titles


def test_confusion_matrix_annotates_nonzero_cells_only(small_cms):
    cm = small_cms["NumPy CNN"]
    fig = viz.plot_confusion_matrix(cm)
    counts_ax = fig.axes[0]
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in counts_ax.texts}
    assert len(texts) == np.count_nonzero(cm)
    i, j = np.argwhere(cm > 0)[0]
    assert texts[(i, j)] == str(cm[i, j])


def test_confusion_matrix_rejects_mismatched_shapes():
    with pytest.raises(CNNError, match="square"):
        viz.plot_confusion_matrix({"a": np.eye(3, dtype=int), "b": np.eye(4, dtype=int)})
    with pytest.raises(CNNError, match="class_names"):
        viz.plot_confusion_matrix(np.eye(3, dtype=int), class_names=["a", "b"])


def test_conv_filters_png_is_600_px_per_model(tmp_path, rng):
    out = tmp_path / "filters.png"
    viz.plot_conv_filters(
        {"NumPy CNN": rng.normal(size=(32, 1, 3, 3)), "PyTorch CNN": rng.normal(size=(32, 1, 3, 3))}, out
    )
    assert png_size(out) == (1200, int((1.3 + 4.4 * 15 / 31) * viz.DPI))  # 4 x 8 tiles of 3x3, 1 px gaps
    viz.plot_conv_filters(rng.normal(size=(6, 3, 5, 5)), tmp_path / "rgb.png")  # multi-channel: mean shown
    assert png_size(tmp_path / "rgb.png")[0] == 600


def test_conv_filters_need_four_dimensional_weights(rng):
    with pytest.raises(CNNError, match=r"\(F, C, kh, kw\)"):
        viz.plot_conv_filters(rng.normal(size=(8, 3, 3)))


def test_visualize_feature_maps_keeps_the_seed_signature(tmp_path, rng):
    out = tmp_path / "fm.png"
    fig = viz.visualize_feature_maps(rng.random((1, 12, 7, 7)), save_path=out)
    assert png_size(out)[0] == 1000
    assert "12 channels of 7×7" in fig.get_suptitle()
    assert sum(1 for ax in fig.axes if ax.images) == 12


def test_feature_maps_figure_shows_the_input_and_one_row_per_layer(tmp_path, rng):
    out = tmp_path / "maps.png"
    maps = [
        {"layer": "block 1", "feature_map": rng.random((1, 32, 28, 28))},
        {"layer": "block 2", "feature_map": rng.random((64, 14, 14))},
    ]
    fig = viz.plot_feature_maps(rng.normal(size=(1, 28, 28)), maps, out, max_maps=16)
    w, h = png_size(out)
    assert w == 1200 and h > 300
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert "block 1: 16 of 32 channels, 28×28" in titles and "block 2: 16 of 64 channels, 14×14" in titles


def test_tile_lays_maps_row_major_with_nan_gaps():
    maps = np.arange(5 * 2 * 2, dtype=float).reshape(5, 2, 2)
    m = viz.tile(maps, ncols=3, pad=1)
    assert m.shape == (2 * 3 - 1, 3 * 3 - 1)
    np.testing.assert_array_equal(m[0:2, 3:5], maps[1])
    np.testing.assert_array_equal(m[3:5, 3:5], maps[4])
    assert np.isnan(m[2]).all() and np.isnan(m[3:5, 6:8]).all()  # gap row, unused last cell


def test_sample_predictions_frame_the_mistakes_in_red(tmp_path, rng):
    images = rng.normal(size=(16, 1, 28, 28))
    y = np.arange(16) % 10
    pred = y.copy()
    pred[[3, 7]] = (y[[3, 7]] + 1) % 10
    out = tmp_path / "samples.png"
    fig = viz.plot_sample_predictions(images, y, {"NumPy": pred, "torch": y}, out)
    w, h = png_size(out)
    assert w == 1200 and h == round((0.7 + 2 * 1.5 * 1.3) * viz.DPI)  # 2 rows of 8
    assert "14 of 16 correct" in fig.get_suptitle()
    red = [i for i, ax in enumerate(fig.axes) if ax.spines["left"].get_visible()]
    assert red == [3, 7]
    assert fig.axes[3].get_title() == f"true {y[3]}\nNumPy {pred[3]} · torch {y[3]}"


def test_sample_predictions_with_one_model_show_its_confidence(rng):
    proba = np.full((2, 10), 0.02)
    proba[0, 4], proba[1, 5] = 0.82, 0.82
    fig = viz.plot_sample_predictions(
        rng.normal(size=(2, 28, 28)), np.array([4, 1]), np.array([4, 5]), proba=proba
    )
    assert fig.axes[0].get_title() == "pred 4 (82%)\ntrue 4"
    assert "1 of 2 correct" in fig.get_suptitle()


def test_misclassified_shows_only_mistakes_most_confident_first(tmp_path, rng):
    y = np.array([0, 1, 2, 3, 4, 5])
    proba = np.full((6, 10), 0.01)
    for i, (cls, p) in enumerate([(0, 0.9), (7, 0.6), (2, 0.9), (8, 0.8), (4, 0.5), (9, 0.7)]):
        proba[i, cls] = p
    out = tmp_path / "wrong.png"
    fig = viz.plot_misclassified(rng.normal(size=(6, 1, 28, 28)), y, proba, out, model_name="NumPy CNN",
                                 indices=np.arange(100, 106))  # fmt: skip
    assert png_size(out)[0] == 1200
    shown = [ax.get_title().split()[0] for ax in fig.axes if ax.images]
    assert shown == ["#103", "#105", "#101"]  # wrong ones only, by the probability of the wrong class
    assert fig.axes[0].get_title() == "#103 true 3\n8: 80%  0: 1%"
    assert "3 of 6 images misclassified" in fig.get_suptitle()


def test_misclassified_with_no_mistakes_still_writes_a_figure(tmp_path, rng):
    proba = np.eye(3)
    viz.plot_misclassified(rng.normal(size=(3, 28, 28)), np.arange(3), proba, tmp_path / "none.png")
    assert png_size(tmp_path / "none.png")[0] == 1200


def test_figures_are_returned_without_writing_when_no_path_is_given(tmp_path, monkeypatch, rng):
    monkeypatch.chdir(tmp_path)
    fig = viz.visualize_feature_maps(rng.random((4, 5, 5)))
    assert isinstance(fig, Figure) and not list(tmp_path.iterdir())


def test_bad_image_shapes_raise_a_clear_error(rng):
    with pytest.raises(CNNError, match=r"\(N, C, H, W\)"):
        viz.plot_sample_predictions(rng.normal(size=(2, 2, 5, 5)), np.zeros(2, int), np.zeros(2, int))
    with pytest.raises(CNNError, match="one per image"):
        viz.plot_sample_predictions(rng.normal(size=(2, 5, 5)), np.zeros(3, int), np.zeros(3, int))
