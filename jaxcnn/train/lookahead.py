"""Lookahead with a growing average (airbench's): every few steps the weights are pulled back.

Plain SGD ends wherever the last noisy steps left it. Here a slow copy of the
weights (and batch-norm statistics) follows the fast ones: every ``every`` steps
it moves toward them, ``slow <- rho * slow + (1 - rho) * fast``, and the fast
weights restart from it. ``rho = decay_base ** every * (step / total) ** decay_power``
grows from 0 (the slow copy just follows) to about 0.77 at the end (a strong
average of the last syncs), so the run moves fast early and averages late. At
the end of each epoch the fast weights are reset to the slow ones, so checkpoints,
validation and the final model are the averaged weights. It starts after
``start_step`` steps: the first sync after that copies the weights into the slow
copy. Unlike an exponential moving average kept only for evaluation
(``config.ema_decay``), the average feeds back into training.

Examples:
    >>> la = Lookahead(every=5, start_step=0, total_steps=100, steps_per_epoch=50)
    >>> la.first_sync, round(float(la.decay_at(100)), 4)
    (5, 0.7738)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Lookahead:
    """When and how strongly the fast weights are pulled back (all counts in optimiser steps).

    Attributes:
      every: steps between syncs (airbench: 5).
      start_step: no sync before this many steps (airbench: 3 epochs).
      total_steps: the run's length; ``rho`` reaches ``decay_base ** every`` there.
      steps_per_epoch: the fast weights restart from the slow ones at each epoch's end.
      decay_base: the per-step decay the average tends to (0.95).
      decay_power: how late the averaging sets in (3: cubic in the run's progress).
    """

    every: int
    start_step: int
    total_steps: int
    steps_per_epoch: int
    decay_base: float = 0.95
    decay_power: float = 3.0

    def __post_init__(self):
        for name in ("every", "total_steps", "steps_per_epoch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Lookahead {name}={value!r}: must be an int >= 1")
        if not isinstance(self.start_step, int) or not 0 <= self.start_step < self.total_steps:
            raise ValueError(
                f"Lookahead start_step={self.start_step!r}: must be an int in "
                f"[0, total_steps={self.total_steps})"
            )
        if not 0 < self.decay_base <= 1:
            raise ValueError(f"Lookahead decay_base={self.decay_base!r}: must be in (0, 1]")
        if not self.decay_power >= 0:
            raise ValueError(f"Lookahead decay_power={self.decay_power!r}: must be >= 0")

    @property
    def first_sync(self) -> int:
        """The step count at which the slow copy is taken: the first multiple of ``every``
        after ``start_step``."""
        return (self.start_step // self.every + 1) * self.every

    def decay_at(self, step: Any) -> jax.Array:
        """``rho``, the slow copy's weight, at a sync after ``step`` optimiser steps."""
        progress = jnp.asarray(step, jnp.float32) / self.total_steps
        return self.decay_base**self.every * progress**self.decay_power

    def apply(self, step: Any, slow: Any, fast: Any) -> tuple[Any, Any]:
        """``(slow, fast)`` after the update that brought the count to ``step`` (1-based).

        ``slow`` and ``fast`` are trees of the same structure (weights and batch-norm
        statistics). Jit-able: the branches are ``jnp.where``, so one compiled step
        serves syncs and plain steps.

        Examples:
          >>> la = Lookahead(every=2, start_step=0, total_steps=4, steps_per_epoch=4)
          >>> slow, fast = la.apply(2, jnp.zeros(1), jnp.ones(1))  # first sync: copy
          >>> float(slow[0]), float(fast[0])
          (1.0, 1.0)
          >>> slow, fast = la.apply(4, slow, jnp.full(1, 3.0))  # rho = 0.95 ** 2 = 0.9025
          >>> round(float(slow[0]), 4), round(float(fast[0]), 4)
          (1.195, 1.195)
        """
        step = jnp.asarray(step)
        first = step == self.first_sync
        started = step >= self.first_sync
        sync = started & (step % self.every == 0)
        restart = started & (sync | (step % self.steps_per_epoch == 0))
        rho = jnp.where(first, 0.0, self.decay_at(step))

        def moved(s, f):
            return jnp.where(sync, (s + (1.0 - rho) * (f - s)).astype(s.dtype), s)

        new_slow = jax.tree.map(moved, slow, fast)
        new_fast = jax.tree.map(lambda s, f: jnp.where(restart, s, f), new_slow, fast)
        return new_slow, new_fast


def from_config(config: Any, steps_per_epoch: int | None) -> Lookahead | None:
    """The :class:`Lookahead` that ``config.lookahead`` describes, or ``None`` when off.

    Examples:
      >>> import ml_collections
      >>> cfg = ml_collections.ConfigDict(dict(num_epochs=10, lookahead=dict(
      ...     every_steps=5, start_epochs=3.0, decay_base=0.95, decay_power=3.0)))
      >>> from_config(cfg, 48).start_step
      144
    """
    settings = config.get("lookahead", None)
    every = int(settings.get("every_steps", 0) or 0) if settings else 0
    if not every:
        return None
    if not steps_per_epoch:
        raise ValueError(
            "config.lookahead counts epochs: steps_per_epoch is needed; pass steps_per_epoch="
        )
    return Lookahead(
        every=every,
        start_step=int(round(float(settings.get("start_epochs", 0.0)) * steps_per_epoch)),
        total_steps=int(config.num_epochs) * steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        decay_base=float(settings.get("decay_base", 0.95)),
        decay_power=float(settings.get("decay_power", 3.0)),
    )
