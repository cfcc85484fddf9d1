"""What a run leaves in its workdir besides checkpoints: JSON lines, TensorBoard, progress.

``metrics.jsonl`` holds one JSON object per finished epoch and the final
``{"event": ...}`` lines. It is rewritten from the checkpoint's history when a run
resumes, so a crash between writing a line and saving the checkpoint (or the
reverse) never leaves a duplicated or missing epoch.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from jaxcnn.files import write_atomic


def _json_safe(value: Any) -> Any:
    # JSON has no NaN/Inf; write them as strings a reader can still recognise.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def is_primary_process() -> bool:
    """True on the process that writes the workdir's files (process 0 of a multi-host run)."""
    import jax

    return jax.process_index() == 0


class MetricsLog:
    """``WORKDIR/metrics.jsonl``: append records, or rewrite it from a known history.

    Args:
      path: the file.
      writer: whether this process writes (on several hosts only process 0 does).
    """

    def __init__(self, path: str | Path, writer: bool = True):
        self.path = Path(path)
        self.writer = writer

    def rewrite(self, records: Iterable[Mapping]) -> None:
        """Replace the file's content with ``records`` (atomically)."""
        if not self.writer:
            return
        lines = [json.dumps({k: _json_safe(v) for k, v in r.items()}) + "\n" for r in records]
        write_atomic(self.path, "".join(lines))

    def append(self, record: Mapping) -> None:
        """Add one line (flushed, so a crash right after keeps it)."""
        if not self.writer:
            return
        with open(self.path, "a") as file:
            file.write(json.dumps({k: _json_safe(v) for k, v in record.items()}) + "\n")
            file.flush()

    def read(self) -> list[dict]:
        """All records (empty if the file does not exist)."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


class TensorBoardWriter:
    """TensorBoard scalars through ``tensorboardX`` when it is installed; otherwise nothing.

    TensorBoard is an optional extra (``pip install jaxcnn[tensorboard]``), so a
    missing package is not an error.
    """

    def __init__(self, logdir: str | Path, enabled: bool = True):
        self._writer = None
        if not enabled:
            return
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            return
        self._writer = SummaryWriter(str(logdir))

    @property
    def active(self) -> bool:
        """Whether event files are being written."""
        return self._writer is not None

    def scalars(self, record: Mapping, step: int) -> None:
        """Write every numeric field of ``record`` as a scalar at ``step``."""
        if self._writer is None:
            return
        for key, value in record.items():
            if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self._writer is not None:
            self._writer.close()


class ProgressBar:
    """One tqdm bar per epoch: loss, accuracy, images/s and the ETA of the whole run."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._bar = None

    def start_epoch(self, epoch: int, num_epochs: int, total_steps: int, done_steps: int) -> None:
        """Open the bar for ``epoch`` (1-based), already ``done_steps`` into it."""
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=total_steps,
            initial=done_steps,
            desc=f"epoch {epoch}/{num_epochs}",
            unit="step",
            dynamic_ncols=True,
            leave=True,
            file=sys.stderr,
        )

    def update(self, steps: int, postfix: Mapping[str, str] | None = None) -> None:
        """Advance by ``steps`` and show ``postfix`` (already formatted strings) if given."""
        if self._bar is not None:
            if postfix is not None:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(steps)

    def end_epoch(self, postfix: Mapping[str, str]) -> None:
        """Show the epoch's final numbers and close the bar."""
        if self._bar is not None:
            self._bar.set_postfix(postfix)
            self._bar.close()
            self._bar = None
