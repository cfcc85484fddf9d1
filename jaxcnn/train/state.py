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
from jaxcnn.train.optim import build_optimizer, build_schedule


@flax.struct.dataclass
class TrainState:
    """Parameters, batch statistics, optimiser state, step and base key."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @property
    def variables(self) -> dict:
        """``{'params': ..., 'batch_stats': ...}`` as ``model.apply`` wants them."""
        if self.batch_stats:
            return {"params": self.params, "batch_stats": self.batch_stats}
        return {"params": self.params}

    def apply_gradients(self, grads: Any, batch_stats: Any) -> TrainState:
        """One optimiser update; returns the new state with ``step + 1``."""
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        return self.replace(
            step=self.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
        )

    def checkpoint_tree(self) -> dict:
        """The arrays to save (everything but the static optimiser)."""
        return {
            "step": self.step,
            "params": self.params,
            "batch_stats": self.batch_stats,
            "opt_state": self.opt_state,
            "rng": self.rng,
        }

    def from_checkpoint_tree(self, tree: dict) -> TrainState:
        """This state with the arrays of a restored :meth:`checkpoint_tree`."""
        return self.replace(**tree)


def build_tx(config: Any, steps_per_epoch: int | None) -> tuple[optax.GradientTransformation, Any]:
    """The optimiser and schedule that ``config.optimizer`` / ``config.schedule`` describe."""
    schedule_name = config.schedule.get("name", "constant")
    if steps_per_epoch is None:
        if schedule_name != "constant":
            raise ValueError(
                f"steps_per_epoch is needed for schedule {schedule_name!r} (its length "
                "is counted in optimiser steps); pass steps_per_epoch="
            )
        steps_per_epoch = 1
    schedule = build_schedule(
        config.schedule,
        float(config.optimizer.learning_rate),
        steps_per_epoch,
        int(config.num_epochs),
    )
    return build_optimizer(config.optimizer, schedule), schedule


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
        _initializer(model, tx, sample_shape), out_shardings=sharding_lib.replicated(mesh)
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
    init = _initializer(model, tx, sample_shape)
    shapes = jax.eval_shape(lambda: init(*jax.random.split(jax.random.PRNGKey(0), 3)))
    return jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=replicated), shapes
    )


def _initializer(model: nn.Module, tx: optax.GradientTransformation, sample_shape: Sequence[int]):
    sample_shape = tuple(sample_shape)

    def init(init_key, dropout_key, train_key) -> TrainState:
        sample = jnp.zeros(sample_shape, jnp.float32)
        variables = model.init({"params": init_key, "dropout": dropout_key}, sample, train=False)
        params = variables["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=tx.init(params),
            rng=train_key,
            tx=tx,
        )

    return init
