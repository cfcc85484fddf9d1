"""``report.html``: one self-contained page about a training run.

The page holds the config, the model's layer table, the training curves with
the over/underfitting diagnosis, test metrics, the confusion matrix, the most
confident mistakes, the first-layer filters and feature maps of a few test
images. Every picture is a base64 PNG inside the page and the CSS is inline, so
it opens from disk, offline, and can be mailed as one file.

Examples:
    >>> # from jaxcnn.report import write_report
    >>> # write_report("runs/digits")   # -> Path("runs/digits/report.html")
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import matplotlib.colors
import numpy as np

from jaxcnn import viz
from jaxcnn.files import write_atomic
from jaxcnn.viz.curves import VERDICT_COLORS

REPORT_NAME = "report.html"

_CSS = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1180px; padding: 0 16px 48px;
       color: #1d1d1f; }
h1 { margin-top: 24px; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 32px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f4f4f6; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; }
.verdict { font-size: 18px; font-weight: 600; padding: 8px 12px; border-radius: 6px;
           display: inline-block; color: white; }
.note { color: #666; font-size: 13px; }
nav a { margin-right: 12px; }
summary { cursor: pointer; color: #1f5fbf; }
"""


@dataclasses.dataclass
class _Section:
    anchor: str
    title: str
    body: str


def _img(figure, alt: str) -> str:
    data = base64.b64encode(viz.png_bytes(figure)).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


_EMBEDDED_PNG = re.compile(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]*)">')


def _export_pictures(page: str, directory: Path) -> list[Path]:
    # Each embedded picture, decoded back into its own PNG named after its alt text.
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for alt, data in _EMBEDDED_PNG.findall(page):
        path = directory / (re.sub(r"[^a-z0-9]+", "_", html.unescape(alt).lower()) + ".png")
        viz.save_png_bytes(base64.b64decode(data), path)
        paths.append(path)
    return paths


def _flatten(tree: Mapping, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            rows += _flatten(value, name)
        else:
            rows.append((name, value))
    return rows


def _table(header: list[str] | None, rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header or [])
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{html.escape(c)}</td>'
            if i in numeric
            else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    head_row = f"<tr>{head}</tr>" if head else ""
    return f"<table>{head_row}{''.join(body)}</table>"


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _config_section(config: Mapping) -> _Section:
    rows = [[name, json.dumps(value)] for name, value in _flatten(config)]
    if not rows:
        return _Section("config", "Config", '<p class="note">no config.json</p>')
    # Long and rarely read in full: folded, one click away.
    body = f"<details><summary>{len(rows)} fields</summary>{_table(['field', 'value'], rows)}"
    return _Section("config", "Config", body + "</details>")


def _overview_section(
    config: Mapping,
    log: viz.MetricsLog,
    results: Mapping,
    shown: tuple[str, int, int, float],
) -> _Section:
    test = log.events.get("test") or results
    optimizer = config.get("optimizer", {})
    rows = [
        ["dataset", str(config.get("dataset"))],
        ["model", str(config.get("model"))],
        ["epochs run", str(len(log.epochs))],
        ["optimizer", f"{optimizer.get('name')}, learning rate {optimizer.get('learning_rate')}"],
        ["batch size", str(config.get("batch_size"))],
    ]
    if results.get("stopped"):
        rows.append(["stopped", str(results["stopped"])])
    if "best_step" in results:
        rows.append(["best / latest step", f"{results['best_step']} / {results['latest_step']}"])
    # The pictures below are of one checkpoint; the test_* rows of the final parameters.
    which, step, epoch, accuracy = shown
    rows.append(
        [
            "pictures below",
            f"checkpoint {which!r}: step {step} (epoch {epoch}), test accuracy {accuracy:.4f}",
        ]
    )
    rows += [
        [f"{key} (final parameters)", f"{value:.4f}" if isinstance(value, float) else str(value)]
        for key, value in test.items()
        if key.startswith("test_") and not key.endswith("_s")  # metrics, not timings
    ]
    verdict = log.verdict or _recorded_verdict(results)
    return _Section("overview", "Overview", _verdict_badge(verdict) + _table(None, rows))


def _recorded_verdict(results: Mapping) -> tuple[str, str] | None:
    """results.json's diagnosis (written also by runs whose log lacks the line)."""
    diagnosis = results.get("diagnosis") or {}
    if not diagnosis.get("verdict"):
        return None
    return str(diagnosis["verdict"]), str(diagnosis.get("evidence", ""))


def _verdict_badge(verdict: tuple[str, str] | None) -> str:
    if verdict is None:
        return '<p class="note">no diagnosis recorded (the run may be unfinished)</p>'
    # The curves' colours (viz.curves.VERDICT_COLORS), as CSS: one table for both.
    named = VERDICT_COLORS.get(verdict[0])
    color = matplotlib.colors.to_hex(named) if named else "#555"
    return (
        f'<p><span class="verdict" style="background:{color}">'
        f"{html.escape(verdict[0])}</span> {html.escape(verdict[1])}</p>"
    )


def _summary_section(restored, input_shape: tuple[int, ...]) -> _Section:
    from jaxcnn import model_summary

    table = model_summary.summary(restored.model, input_shape)
    rows = []
    for row in table.rows:
        field = "x".join(map(str, row.receptive_field)) if row.receptive_field else "-"
        indent = "\u2003" * (row.depth - 1)
        flops = f"{row.flops:,}" if row.flops else "-"
        shape = str(row.output_shape)
        rows.append([indent + row.path, row.type, shape, f"{row.params:,}", flops, field])
    header = ["layer", "type", "output shape", "params", "FLOPs", "receptive field"]
    totals = (
        f"<p>{table.model_type}: input {table.input_shape} &rarr; output {table.output_shape}; "
        f"{table.trainable_params:,} trainable and {table.non_trainable_params:,} non-trainable "
        f"parameters; {table.flops:,} FLOPs per example.</p>"
    )
    return _Section("model", "Model", totals + _table(header, rows, numeric={3, 4}))


def _curves_section(log: viz.MetricsLog) -> _Section:
    if not log.epochs:
        return _Section("curves", "Training curves", '<p class="note">no epoch finished</p>')
    figure = viz.plot_training_curves(log)
    return _Section("curves", "Training curves", _img(figure, "training curves"))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _confusion_section(labels, predictions, class_names) -> _Section:
    matrix = viz.confusion_matrix(labels, predictions, len(class_names))
    figure = viz.plot_confusion_matrix(matrix, class_names)
    return _Section("confusion", "Confusion matrix (test split)", _img(figure, "confusion matrix"))


def _model_input(restored, images: np.ndarray) -> np.ndarray:
    # The preprocessing Restored.predict applies (scale to [0, 1], normalise with the
    # training split's stats); data.normalize broadcasts explicitly.
    from jaxcnn import data

    return np.asarray(data.normalize(images, restored.norm_mean, restored.norm_std))


def _middle_slice(array: np.ndarray, spatial_rank: int) -> np.ndarray:
    # 3-D inputs / maps (D, H, W, C) are shown by their middle depth slice.
    return array[array.shape[0] // 2] if spatial_rank == 3 else array


def _filters_section(restored) -> _Section:
    try:
        name, kernel = viz.first_layer_filters(restored.variables)
    except ValueError as error:
        note = f'<p class="note">{html.escape(str(error))}</p>'
        return _Section("filters", "First-layer filters", note)
    figure = viz.plot_filters(kernel, layer_name=name)
    return _Section("filters", "First-layer filters", _img(figure, "filters"))


def _feature_maps_section(restored, images, labels, predictions, class_names) -> _Section:
    maps = viz.feature_maps(restored.model, restored.variables, _model_input(restored, images))
    spatial_rank = images.ndim - 2
    parts = [
        '<p class="note">Output of every convolution (before normalisation and activation) '
        "for the first test images, recorded with Flax's capture_intermediates"
        + (", middle depth slice of each 3-D map" if spatial_rank == 3 else "")
        + ".</p>"
    ]
    for index in range(len(images)):
        one = {path: _middle_slice(values[index], spatial_rank) for path, values in maps.items()}
        truth, guess = class_names[labels[index]], class_names[predictions[index]]
        heading = f"test image {index}: true {truth}, predicted {guess}"
        image = _middle_slice(images[index], spatial_rank)
        parts.append(f"<h3>{html.escape(heading)}</h3>")
        parts.append(_img(viz.plot_feature_maps(one, image), f"feature maps {index}"))
    return _Section("feature-maps", "Feature maps", "".join(parts))


def _page(workdir: Path, sections: list[_Section]) -> str:
    nav = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(
        f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>{s.body}</section>'
        for s in sections
    )
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    title = html.escape(f"jaxcnn report: {workdir.name}")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_CSS}</style></head><body>"
        f'<h1>{title}</h1><p class="note">{html.escape(str(workdir))} &middot; written {stamp}'
        f"</p><nav>{nav}</nav>{body}</body></html>\n"
    )


def write_report(
    workdir: str | os.PathLike,
    *,
    which: str = "best",
    num_feature_images: int = 3,
    max_misclassified: int = 24,
    image_dir: str | os.PathLike | None = None,
) -> Path:
    """Write ``WORKDIR/report.html`` for a training workdir.

    The file is written to a temporary name and renamed, so a failure never
    leaves half a report behind.

    Args:
        workdir: a directory ``jaxcnn.train.fit`` wrote (``config.json``,
            ``metrics.jsonl``, ``checkpoints/``, ``results.json``).
        which: checkpoint to show, ``"best"`` or ``"latest"``.
        num_feature_images: test images whose feature maps are shown.
        max_misclassified: at most this many mistakes in the grid.
        image_dir: if given, every picture of the page is also written there as
            its own PNG (``training_curves.png``, ``confusion_matrix.png``,
            ``misclassified.png``, ``filters.png``, ``feature_maps_0.png``, ...).

    Returns:
        The path of ``report.html``.

    Examples:
        >>> # write_report("runs/digits").name
        >>> # 'report.html'
    """
    from jaxcnn import train
    from jaxcnn.train.components import load_training_data

    workdir = Path(workdir)
    if not (workdir / "metrics.jsonl").is_file():
        raise FileNotFoundError(
            f"workdir={str(workdir)!r} has no metrics.jsonl: not a training workdir "
            "(train one with `jaxcnn train`)"
        )
    if not isinstance(num_feature_images, int) or num_feature_images < 0:
        raise ValueError(f"num_feature_images must be an int >= 0, got {num_feature_images!r}")
    restored = train.restore(workdir, which=which)
    # The test split exactly as training saw it (3-D volumes included).
    test = load_training_data(restored.config).test
    images, labels = test.images, test.labels
    class_names = [str(name) for name in restored.class_names]

    batch_size = int(restored.config.get("eval_batch_size", 256))
    logits = np.asarray(restored.predict(images, batch_size=batch_size), np.float64)
    probabilities = _softmax(logits)
    predictions = probabilities.argmax(axis=1)
    confidences = probabilities.max(axis=1)

    log = viz.read_metrics(workdir)
    config_json = _read_json(workdir / "config.json")
    spatial_rank = images.ndim - 2
    shown = images if spatial_rank == 2 else images[:, images.shape[1] // 2]
    mistakes = viz.plot_misclassified(
        shown,
        labels,
        predictions,
        class_names,
        confidences=confidences,
        max_examples=max_misclassified,
    )
    results = _read_json(workdir / "results.json")
    shown = (str(which), restored.step, restored.epoch, float(np.mean(predictions == labels)))
    sections = [
        _overview_section(config_json, log, results, shown),
        _curves_section(log),
        _confusion_section(labels, predictions, class_names),
        _Section("mistakes", "Misclassified test images", _img(mistakes, "misclassified")),
    ]
    sections.append(_filters_section(restored))  # the filters need no test image
    if num_feature_images:
        chosen = slice(0, num_feature_images)
        sections.append(
            _feature_maps_section(
                restored, images[chosen], labels[chosen], predictions[chosen], class_names
            )
        )
    sections += [
        _summary_section(restored, restored.example_shape),
        _config_section(config_json),
    ]
    path = workdir / REPORT_NAME
    page = _page(workdir.absolute(), sections)
    write_atomic(path, page.encode("utf-8"))
    if image_dir is not None:
        _export_pictures(page, Path(image_dir))
    return path
