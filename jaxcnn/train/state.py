"""The train state: one pytree with everything a step changes.

``params``, ``batch_stats`` (empty for models without batch norm), the optimiser
state, the step counter and the base random key. The optimiser (an optax
``GradientTransformation``) rides along as static data so that
``state.apply_gradients`` needs nothing else. Everything random in a step is
derived from ``fold_in(rng, step)``, so a run restored at step ``k`` draws exactly
the numbers the uninterrupted run drew at step ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxcnn.train import sharding as sharding_lib
from jaxcnn.train.lookahead import Lookahead
from jaxcnn.train.lookahead import from_config as lookahead_from_config
from jaxcnn.train.optim import build_optimizer, build_schedule


def ema_decay_at(step: jax.Array, decay: float) -> jax.Array:
    """The averaging weight of the old average at optimiser ``step`` (0-based).

    ``min(decay, (1 + step) / (10 + step))``: early on the average follows the weights
    closely, so it is not dragged back to the random initialisation for the first
    ``1 / (1 - decay)`` steps (as TensorFlow's ``ExponentialMovingAverage`` with
    ``num_updates``).

    Examples:
      >>> round(float(ema_decay_at(0, 0.99)), 6), round(float(ema_decay_at(10_000, 0.99)), 6)
      (0.1, 0.99)
    """
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


@flax.struct.dataclass
class TrainState:
    """Parameters, batch statistics, optimiser state, step and base key.

    ``ema_params`` is ``None``, or an exponential moving average of ``params`` (weight
    ``ema_decay`` on the old average, see :func:`ema_decay_at`) that evaluation uses:
    averaging the last few hundred steps' weights smooths out the noise of the last
    steps of SGD.

    ``lookahead_slow`` is ``None``, or the slow copy ``{"params", "batch_stats"}`` of
    :mod:`jaxcnn.train.lookahead`, which ``lookahead`` (static) syncs with the weights
    every few steps.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    ema_params: Any = None
    ema_decay: float = flax.struct.field(pytree_node=False, default=0.0)
    lookahead_slow: Any = None
    lookahead: Lookahead | None = flax.struct.field(pytree_node=False, default=None)

    @property
    def has_batch_norm(self) -> bool:
        """Whether the model keeps batch statistics (the steps and XLA's scheduler ask)."""
        return bool(self.batch_stats)

    @property
    def variables(self) -> dict:
        """``{'params': ..., 'batch_stats': ...}`` of the trained weights, for ``model.apply``."""
        if self.batch_stats:
            return {"params": self.params, "batch_stats": self.batch_stats}
        return {"params": self.params}

    @property
    def eval_variables(self) -> dict:
        """:attr:`variables` with the moving average of the weights, when one is kept.

        The batch statistics are the running averages of training, which are moving
        averages already.
        """
        if self.ema_params is None:
            return self.variables
        return {**self.variables, "params": self.ema_params}

    def apply_gradients(self, grads: Any, batch_stats: Any) -> TrainState:
        """One optimiser update; returns the new state with ``step + 1``."""
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        slow = self.lookahead_slow
        if self.lookahead is not None:
            slow, fast = self.lookahead.apply(
                self.step + 1, slow, {"params": params, "batch_stats": batch_stats}
            )
            params, batch_stats = fast["params"], fast["batch_stats"]
        ema_params = self.ema_params
        if ema_params is not None:
            decay = ema_decay_at(self.step, self.ema_decay)
            ema_params = jax.tree_util.tree_map(
                lambda old, new: (decay * old + (1.0 - decay) * new).astype(old.dtype),
                ema_params,
                params,
            )
        return self.replace(
            step=self.step + 1,
            params=params,
            batch_stats=batch_stats,
            opt_state=opt_state,
            ema_params=ema_params,
            lookahead_slow=slow,
        )

    def with_params(self, params: Any) -> TrainState:
        """This state restarted from new ``params``: optimiser state and averages reset."""
        # Copies: the step donates the state, and one buffer cannot be donated twice.
        ema_params = None if self.ema_params is None else jax.tree_util.tree_map(jnp.copy, params)
        slow = self.lookahead_slow
        if slow is not None:
            slow = _slow_copy(params, self.batch_stats)
        return self.replace(
            params=params,
            opt_state=self.tx.init(params),
            ema_params=ema_params,
            lookahead_slow=slow,
        )

    def checkpoint_tree(self) -> dict:
        """The arrays to save (everything but the static optimiser)."""
        tree = {
            "step": self.step,
            "params": self.params,
            "batch_stats": self.batch_stats,
            "opt_state": self.opt_state,
            "rng": self.rng,
        }
        if self.ema_params is not None:
            tree["ema_params"] = self.ema_params
        if self.lookahead_slow is not None:
            tree["lookahead_slow"] = self.lookahead_slow
        return tree

    def from_checkpoint_tree(self, tree: dict) -> TrainState:
        """This state with the arrays of a restored :meth:`checkpoint_tree`."""
        return self.replace(**tree)


def build_tx(config: Any, steps_per_epoch: int | None) -> tuple[optax.GradientTransformation, Any]:
    """The optimiser and schedule that ``config.optimizer`` / ``config.schedule`` describe."""
    schedule_name = config.schedule.get("name", "constant")
    if steps_per_epoch is None and schedule_name != "constant":
        raise ValueError(
            f"steps_per_epoch is needed for schedule {schedule_name!r} (its length "
            "is counted in optimiser steps); pass steps_per_epoch="
        )
    schedule = build_schedule(
        config.schedule,
        float(config.optimizer.learning_rate),
        steps_per_epoch or 1,  # a constant schedule has no length
        int(config.num_epochs),
    )
    optimizer = dict(config.optimizer)
    optimizer["frozen"] = frozen_patterns(config)
    return build_optimizer(optimizer, schedule, steps_per_epoch), schedule


def _slow_copy(params: Any, batch_stats: Any) -> dict:
    """A fresh lookahead slow copy (its values matter only from the first sync on)."""
    return jax.tree_util.tree_map(jnp.copy, {"params": params, "batch_stats": batch_stats})


def _ema_decay(config: Any) -> float:
    return float(config.get("ema_decay", 0.0) or 0.0)


def frozen_patterns(config: Any) -> list[str]:
    """``config.optimizer.frozen``, plus the whitened layer's kernel when it is kept fixed.

    Examples:
      >>> import ml_collections
      >>> frozen_patterns(ml_collections.ConfigDict(dict(optimizer=dict(frozen=["conv1"]),
      ...     whitening=dict(layer="whiten", freeze=True))))
      ['conv1', 'whiten/*kernel']
    """
    patterns = list(config.optimizer.get("frozen", None) or [])
    whitening = config.get("whitening", None)
    if whitening is not None and whitening.get("layer", "") and whitening.get("freeze", True):
        patterns.append(f"{whitening.layer}/*kernel")
    return patterns


def create_train_state(
    model: nn.Module,
    config: Any,
    rng: jax.Array,
    sample_shape: Sequence[int],
    *,
    steps_per_epoch: int | None = None,
    mesh: Mesh | None = None,
) -> TrainState:
    """Initialise the model and optimiser into a :class:`TrainState`.

    Args:
      model: a Linen module called as ``model.apply(variables, x, train=...)``.
      config: a config with ``optimizer``, ``schedule`` and ``num_epochs``.
      rng: a ``jax.random.PRNGKey``; split into init, dropout-init and training keys.
      sample_shape: input shape with a batch axis, e.g. ``(1, 28, 28, 1)``.
      steps_per_epoch: optimiser steps per epoch (needed by every schedule but
        ``constant``).
      mesh: place the state replicated on this mesh (default: all local devices).

    Returns:
      The state, step 0, replicated over the mesh.

    Examples:
      >>> import flax.linen as nn, jax, ml_collections
      >>> cfg = ml_collections.ConfigDict(dict(num_epochs=1, optimizer=dict(
      ...     name="sgd", learning_rate=0.1), schedule=dict(name="constant")))
      >>> class Linear(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x, train=False):
      ...         return nn.Dense(3)(x)
      >>> state = create_train_state(Linear(), cfg, jax.random.PRNGKey(0), (1, 4))
      >>> int(state.step), state.params["Dense_0"]["kernel"].shape
      (0, (4, 3))
    """
    tx, _ = build_tx(config, steps_per_epoch)
    mesh = mesh or sharding_lib.make_mesh()
    # jit: eager init of a deep net dispatches every op one by one (slow); the
    # out_shardings put the state replicated on every device of the mesh at once.
    init = jax.jit(
        _initializer(
            model,
            tx,
            sample_shape,
            _ema_decay(config),
            lookahead_from_config(config, steps_per_epoch),
        ),
        out_shardings=sharding_lib.replicated(mesh),
    )
    return init(*jax.random.split(rng, 3))


def abstract_train_state(
    model: nn.Module,
    config: Any,
    sample_shape: Sequence[int],
    *,
    steps_per_epoch: int | None = None,
    mesh: Mesh | None = None,
) -> TrainState:
    """The state's structure as ``jax.ShapeDtypeStruct`` leaves (replicated), without computing it.

    Orbax restores into this layout; nothing is initialised.
    """
    tx, _ = build_tx(config, steps_per_epoch)
    replicated = sharding_lib.replicated(mesh or sharding_lib.make_mesh())
    init = _initializer(
        model, tx, sample_shape, _ema_decay(config), lookahead_from_config(config, steps_per_epoch)
    )
    shapes = jax.eval_shape(lambda: init(*jax.random.split(jax.random.PRNGKey(0), 3)))
    return jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=replicated), shapes
    )


def _initializer(
    model: nn.Module,
    tx: optax.GradientTransformation,
    sample_shape: Sequence[int],
    ema_decay: float = 0.0,
    lookahead: Lookahead | None = None,
):
    sample_shape = tuple(sample_shape)

    def init(init_key, dropout_key, train_key) -> TrainState:
        sample = jnp.zeros(sample_shape, jnp.float32)
        variables = model.init({"params": init_key, "dropout": dropout_key}, sample, train=False)
        params = variables["params"]
        batch_stats = variables.get("batch_stats", {})
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=batch_stats,
            opt_state=tx.init(params),
            rng=train_key,
            tx=tx,
            ema_params=jax.tree_util.tree_map(jnp.copy, params) if ema_decay else None,
            ema_decay=ema_decay,
            lookahead_slow=_slow_copy(params, batch_stats) if lookahead else None,
            lookahead=lookahead,
        )

    return init
