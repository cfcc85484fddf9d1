"""Training curves from a workdir's ``metrics.jsonl``, with the fit verdict on top."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from matplotlib.figure import Figure

from jaxcnn.viz._figures import finish, new_figure

CURVES_SIZE_PX = (1100, 440)
# Verdict words written by jaxcnn.train.diagnose, coloured so the problem stands out.
VERDICT_COLORS = {
    "good fit": "tab:green",
    "still improving": "tab:blue",
    "overfitting": "tab:red",
    "underfitting": "tab:orange",
    "unstable": "tab:purple",
    "diverged": "darkred",
}


@dataclasses.dataclass(frozen=True)
class MetricsLog:
    """A parsed ``metrics.jsonl``.

    Attributes:
        epochs: per-epoch records (lines with an ``"epoch"`` key and no ``"event"``).
        events: the last record of each ``"event"`` kind, e.g. ``events["diagnosis"]``.
    """

    epochs: tuple[dict, ...]
    events: dict

    @property
    def verdict(self) -> tuple[str, str] | None:
        """``(verdict, evidence)`` from the diagnosis line, or ``None`` if there is none."""
        record = self.events.get("diagnosis")
        if record is None:
            return None
        return str(record.get("verdict", "")), str(record.get("evidence", ""))


def read_metrics(source: str | os.PathLike) -> MetricsLog:
    """Parse a workdir's metrics log.

    A half-written last line (a run still writing, or killed mid-line) is skipped;
    a malformed line anywhere else raises, naming the file and line.

    Args:
        source: the workdir, or the ``metrics.jsonl`` file itself.

    Returns:
        A ``MetricsLog``.

    Examples:
        >>> import tempfile
        >>> log = Path(tempfile.mkdtemp()) / "metrics.jsonl"
        >>> _ = log.write_text('{"epoch": 1, "train_loss": 0.5}\\n{"event": "diagnosis", '
        ...                    '"verdict": "good fit", "evidence": "..."}\\n')
        >>> read_metrics(log).verdict
        ('good fit', '...')
    """
    path = Path(source)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"metrics log not found: {path} (is it a training workdir?)")
    lines = path.read_text().splitlines()
    epochs, events = [], {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                break  # a line still being written
            raise ValueError(f"{path}:{number} is not a JSON object: {error}") from None
        if "event" in record:
            events[record["event"]] = record
        elif "epoch" in record:
            epochs.append(record)
    return MetricsLog(tuple(epochs), events)


def _series(epochs, key):
    pairs = [(r["epoch"], r[key]) for r in epochs if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_training_curves(
    source: str | os.PathLike | MetricsLog,
    *,
    size_px: tuple[int, int] = CURVES_SIZE_PX,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Loss and accuracy per epoch, train vs validation, titled with the verdict.

    The verdict is the ``diagnosis`` line ``jaxcnn.train`` writes at the end of
    ``fit``; a log without one (a run still going) is titled "no diagnosis yet".

    Args:
        source: a workdir, its ``metrics.jsonl``, or a ``MetricsLog``.
        size_px: figure size ``(width, height)`` in pixels.
        path: if given, the PNG is written there.

    Returns:
        The figure (two axes: loss, accuracy).

    Examples:
        >>> log = MetricsLog(({"epoch": 1, "train_loss": 1.0, "val_loss": 1.1},), {})
        >>> len(plot_training_curves(log).axes)
        2
    """
    log = source if isinstance(source, MetricsLog) else read_metrics(source)
    if not log.epochs:
        raise ValueError("the metrics log has no epoch records to plot")
    figure = new_figure(size_px)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    for axes, metric, label in (
        (loss_axes, "loss", "loss"),
        (accuracy_axes, "accuracy", "accuracy"),
    ):
        for split, style in (("train", "-o"), ("val", "-s")):
            xs, ys = _series(log.epochs, f"{split}_{metric}")
            if xs:
                name = "train" if split == "train" else "validation"
                axes.plot(xs, ys, style, markersize=3, label=name)
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        if axes.get_lines():
            axes.legend(fontsize=8)
    # Integer ticks: a 1-epoch run would otherwise get ticks at 0.96, 0.98, ...
    for axes in (loss_axes, accuracy_axes):
        axes.xaxis.get_major_locator().set_params(integer=True)
    verdict = log.verdict
    if verdict is None:
        heading, color = "no diagnosis yet (run unfinished?)", "gray"
    else:
        heading = f"{verdict[0]}: {verdict[1]}"
        color = VERDICT_COLORS.get(verdict[0], "black")
    figure.suptitle(_wrap(heading, size_px[0]), color=color, fontsize=10)
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.82, wspace=0.22)
    return finish(figure, path)


def _wrap(text: str, width_px: int) -> str:
    # ~7 px per character at fontsize 10: keep long evidence inside the figure.
    limit = max(20, width_px // 7)
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > limit:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return "\n".join(lines[:3]) + ("..." if len(lines) > 3 else "")


__all__ = ["MetricsLog", "plot_training_curves", "read_metrics", "VERDICT_COLORS"]
