"""jaxcnn.viz on a tiny real run: every plot is a non-empty PNG of the promised size,
and the feature maps shown are the activations the model computes."""

from __future__ import annotations

import json
import os
import stat

import flax.linen as nn
import numpy as np
import pytest
from conftest import TINY_EPOCHS
from PIL import Image

from jaxcnn import data, kernels, viz


@pytest.fixture(scope="module")
def run(tiny_digits_run):
    return tiny_digits_run


def png_size(path) -> tuple[int, int]:
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # decodes: a truncated file fails here
        return image.size


def test_training_curves_png(run, tmp_path):
    out = tmp_path / "curves.png"
    figure = viz.plot_training_curves(run["workdir"], path=out)
    assert png_size(out) == (1100, 440)
    log = viz.read_metrics(run["workdir"])
    assert [r["epoch"] for r in log.epochs] == list(range(1, TINY_EPOCHS + 1))
    verdict = log.verdict[0]
    assert figure.get_suptitle().startswith(verdict)  # annotated with the verdict
    loss_axes = figure.axes[0]
    train_line = loss_axes.get_lines()[0]
    np.testing.assert_allclose(train_line.get_ydata(), [r["train_loss"] for r in log.epochs])


def test_confusion_matrix_png(run, tmp_path):
    matrix = viz.confusion_matrix(run["labels"], run["predictions"], 10)
    assert matrix.sum() == len(run["labels"]) == 359
    assert np.trace(matrix) == (run["labels"] == run["predictions"]).sum()
    out = tmp_path / "confusion.png"
    viz.plot_confusion_matrix(matrix, [str(i) for i in range(10)], path=out)
    assert png_size(out) == (620, 560)


def test_misclassified_png(run, tmp_path):
    labels, predictions = run["labels"], run["predictions"]
    wrong = int((labels != predictions).sum())
    assert wrong > 0, "a 2-epoch digits run should still make mistakes"
    out = tmp_path / "mistakes.png"
    figure = viz.plot_misclassified(run["images"], labels, predictions, max_examples=16, path=out)
    shown = min(16, wrong)
    cols = min(8, shown)
    rows = -(-shown // cols)
    # 128 px cells under a 30 px title band each, a 36 px heading on top.
    assert png_size(out) == (cols * 128, rows * (128 + 30) + 36)
    first = viz.misclassified_indices(labels, predictions, 16)[0]
    assert figure.axes[0].get_title() == f"true: {labels[first]}\npred: {predictions[first]}"


def test_filters_png(run, tmp_path):
    name, kernel = viz.first_layer_filters(run["restored"].variables)
    assert name == "conv1/conv" and kernel.shape == (3, 3, 1, 32)
    out = tmp_path / "filters.png"
    viz.plot_filters(kernel, layer_name=name, path=out)
    assert png_size(out) == (8 * 128, 4 * (128 + 30) + 36)  # 32 filters, 8 per row
    with pytest.raises(ValueError, match=r"kernel is a \(path, kernel\) pair.*layer_name=path"):
        viz.plot_filters(viz.first_layer_filters(run["restored"].variables))


def test_feature_maps_png(run, tmp_path):
    restored = run["restored"]
    maps = viz.feature_maps(restored.model, restored.variables, run["inputs"])
    assert list(maps) == ["conv1/conv", "conv2/conv"]
    one = {path: values[0] for path, values in maps.items()}
    out = tmp_path / "maps.png"
    viz.plot_feature_maps(one, run["images"][0], path=out)
    # 110 px row labels + 8 cells; rows: input, conv1, conv2.
    assert png_size(out) == (110 + 8 * 128, 3 * (128 + 30) + 36)


def test_feature_maps_are_each_layers_activations(run):
    """Each captured map equals a direct apply of that conv sub-module to its own input."""
    restored = run["restored"]
    x = run["inputs"]
    maps = viz.feature_maps(restored.model, restored.variables, x)
    calls = []

    def record(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, nn.Conv) and context.method_name == "__call__":
            # The same layer, unbound, with its own params, and the input it received.
            unbound = module.clone(parent=None)
            calls.append(("/".join(module.scope.path), unbound, module.variables, args))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        restored.model.apply(restored.variables, x, train=False)
    assert [path for path, *_ in calls] == list(maps)
    for path, unbound, variables, args in calls:
        alone = np.asarray(unbound.apply(variables, *args))
        np.testing.assert_allclose(maps[path], alone, rtol=1e-5, atol=1e-5)


def test_first_feature_map_is_kernels_convolve_with_the_learned_filters(run):
    """The first conv layer is jaxcnn.kernels.convolve with its learned 3x3 filters + bias."""
    restored = run["restored"]
    x = run["inputs"]
    maps = viz.feature_maps(restored.model, restored.variables, x)
    params = restored.variables["params"]["conv1"]["conv"]
    kernel, bias = np.asarray(params["kernel"]), np.asarray(params["bias"])
    for channel in (0, 7, 31):
        expected = kernels.convolve(x[0], kernel[:, :, :, channel], padding="SAME", channels="sum")
        np.testing.assert_allclose(
            maps["conv1/conv"][0, ..., channel], np.asarray(expected) + bias[channel], atol=1e-5
        )


def test_kernel_demo_and_image_grid_share_the_helper(tmp_path):
    out = tmp_path / "demo.png"
    image = np.tile(np.linspace(0, 1, 16, dtype=np.float32) ** 2, (12, 1))
    figure = viz.plot_kernel_demo(image, "laplacian", cell_px=200, path=out)
    assert png_size(out) == viz.grid_size_px(1, 3, cell_px=200, header=True) == (600, 266)
    shown = figure.axes[2].get_images()[0].get_array()
    expected = np.asarray(kernels.convolve(image, "laplacian"))
    span = expected.max() - expected.min()
    np.testing.assert_allclose(shown, (expected - expected.min()) / span, atol=1e-6)


def test_augmentation_preview_png(tmp_path):
    images = data.load("digits").train.images[:3]
    out = tmp_path / "augment.png"
    spec = {"rotation": 15.0, "translate": 0.125}
    figure = viz.plot_augmentation_preview(images, spec, num_variants=5, seed=1, path=out)
    assert png_size(out) == (6 * 128, 3 * (128 + 30) + 36)
    shown = figure.axes[0].get_images()[0].get_array()
    np.testing.assert_array_equal(shown, images[0][..., 0])  # the original, untouched
    varied = [figure.axes[i].get_images()[0].get_array() for i in range(1, 6)]
    assert any(not np.allclose(v, images[0][..., 0] / 255.0) for v in varied)


def test_augmentation_preview_shows_alternating_flips_epoch_by_epoch():
    images = data.load("digits").train.images[:2]
    spec = {"flip": True, "flip_mode": "alternate"}
    figure = viz.plot_augmentation_preview(images, spec, num_variants=4, seed=0)
    for row in range(2):
        original = images[row][..., 0] / 255.0
        columns = [figure.axes[row * 5 + i].get_images()[0].get_array() for i in range(1, 5)]
        mirrored = [not np.allclose(column, original) for column in columns]
        assert mirrored in ([True, False, True, False], [False, True, False, True])
        np.testing.assert_allclose(columns[int(not mirrored[0])], original[:, ::-1])


def test_image_grid_layout_and_errors(tmp_path):
    figure = viz.image_grid(
        [np.zeros((5, 5, 3), np.uint8), None, np.ones((4, 4))],
        titles=["a", "b", "c"],
        num_cols=2,
        row_labels=["first", "second"],
        path=tmp_path / "grid.png",
    )
    assert png_size(tmp_path / "grid.png") == (110 + 2 * 128, 2 * (128 + 30))
    assert [axes.get_title() for axes in figure.axes] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="titles must have 3 entries"):
        viz.image_grid([np.zeros((2, 2))] * 3, titles=["x"])
    with pytest.raises(ValueError, match="image must be"):
        viz.image_grid([np.zeros((2, 2, 2))])
    with pytest.raises(ValueError, match="at least one image"):
        viz.image_grid([])


def test_plot_input_errors(tmp_path):
    with pytest.raises(ValueError, match="labels must lie in"):
        viz.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
        viz.confusion_matrix([], [], 0)  # named, not taken for a float labels array
    assert viz.confusion_matrix([], [], 2).tolist() == [[0, 0], [0, 0]]
    with pytest.raises(ValueError, match=r"figures are written as PNG; give a .png name"):
        viz.plot_filters(np.zeros((3, 3, 1, 2)), path=tmp_path / "filters.jpg")
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="square"):
        viz.plot_confusion_matrix(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\(kh, kw, in, out\)"):
        viz.plot_filters(np.zeros((3, 3, 1)))
    with pytest.raises(FileNotFoundError, match="metrics log not found"):
        viz.read_metrics(tmp_path)
    bad = tmp_path / "metrics.jsonl"
    bad.write_text('{"epoch": 1}\nnot json\n{"epoch": 2}\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2"):
        viz.read_metrics(bad)


def test_metrics_log_tolerates_a_half_written_last_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    record = {"epoch": 1, "train_loss": 1.0, "val_loss": 1.2}
    log.write_text(json.dumps(record) + '\n{"epoch": 2, "train_lo')
    parsed = viz.read_metrics(tmp_path)
    assert parsed.epochs == (record,) and parsed.verdict is None
    figure = viz.plot_training_curves(parsed)
    assert "no diagnosis" in figure.get_suptitle()


def test_png_writes_are_atomic(tmp_path, monkeypatch):
    out = tmp_path / "keep.png"
    viz.save_png(viz.new_figure((10, 10)), out)
    before = out.read_bytes()
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # as open() would, not 0600

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("jaxcnn.viz._figures.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        viz.save_png(viz.new_figure((20, 20)), out)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]  # no temp file left
