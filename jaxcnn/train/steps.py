"""Pure train and eval steps, and their index-gathering forms the fit loop jits.

``train_step(state, batch) -> (state, metric_sums)`` and
``eval_step(state, batch) -> metric_sums`` take a batch of **uint8** images: the
conversion to [0, 1], the augmentation (training only) and the normalisation
with the training split's mean/std all happen inside the compiled step, so the
host never touches pixels.

The fit loop does not even send batches: the whole uint8 split sits on the device
and the step gathers its batch with an index array (:func:`gathering_train_step`,
:func:`gathering_eval_step`). Batch shapes are fixed (the last training batch is
dropped, the last evaluation batch is padded and masked), so each step compiles
exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from jaxcnn import conv_backend, placement
from jaxcnn.train.eval_slices import (
    EVAL_SLICE_IMAGES,
    auto_eval_splits,
    eval_slice_plan,
    sliced_apply,
)
from jaxcnn.train.losses import add_metrics, batch_metrics, cross_entropy
from jaxcnn.train.optim import frozen_mask
from jaxcnn.train.tta import TTA_VIEW_COUNTS, check_fill, check_tta_mode, tta_logits

Batch = Mapping[str, jax.Array]
Augment = Callable[[jax.Array, jax.Array], jax.Array]


def unit_range(images: jax.Array) -> jax.Array:
    """uint8 0..255 as float32 0..1; float images are taken to be in [0, 1] already.

    Examples:
      >>> import jax.numpy as jnp
      >>> unit_range(jnp.array([0, 255], jnp.uint8)).tolist()
      [0.0, 1.0]
    """
    return images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images


def preprocess(images: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """uint8 ``(N, *spatial, C)`` -> float32 normalised with per-channel ``mean``/``std``.

    ``mean`` and ``std`` are in [0, 1] units (as ``jaxcnn.data.normalization_stats``
    returns them); float input is taken to be in [0, 1] already.

    Examples:
      >>> import jax.numpy as jnp
      >>> preprocess(jnp.full((1, 1, 1), 255, jnp.uint8), jnp.array([0.5]), jnp.array([0.5]))
      Array([[[1.]]], dtype=float32)
    """
    x = unit_range(images).astype(jnp.float32)
    # Explicit per-channel broadcast (the tests run with rank promotion set to "raise").
    shape = (1,) * (x.ndim - 1) + (-1,)
    mean = jnp.asarray(mean, jnp.float32).reshape(shape)
    std = jnp.asarray(std, jnp.float32).reshape(shape)
    return (x - mean) / std


def eval_logits(
    model: nn.Module,
    variables: Any,
    images: jax.Array,
    mean: Any,
    std: Any,
    tta: str = "none",
    tta_fill: str = "zeros",
    batch_splits: int = 0,
) -> jax.Array:
    """Evaluation-mode logits of uint8 (or [0, 1] float) images, averaged over ``tta``'s views.

    The views are taken before normalisation, so a zero fill is black; ``tta_fill``
    should be the training crops' ``crop_mode`` (:func:`jaxcnn.train.tta.tta_logits`).
    ``batch_splits``: compute the batch in this many equal slices (the last padded),
    one group after another, a group being up to 4 forward passes side by side (slices x
    test-time views) or, where jaxcnn's binding runs every convolution, one slice
    (:mod:`jaxcnn.train.eval_slices`); the same logits up to rounding. ``0`` picks
    :func:`~jaxcnn.train.eval_slices.auto_eval_splits`: slices of at most 128 images on
    a single CPU device, the whole batch elsewhere.
    """
    if not isinstance(batch_splits, int) or not 0 <= batch_splits <= max(1, images.shape[0]):
        raise ValueError(
            f"batch_splits={batch_splits!r}; valid: 0 (automatic) or an int from 1 to the "
            f"{images.shape[0]} images in the batch"
        )
    images = unit_range(images)

    def one_view(view):
        return model.apply(variables, preprocess(view, mean, std), train=False)

    def all_views(images):
        return tta_logits(one_view, images, tta, tta_fill)

    views = TTA_VIEW_COUNTS[check_tta_mode(tta, "eval_tta")]
    if (batch_splits or auto_eval_splits(images.shape[0])) == 1:
        return all_views(images)
    # A slice's shape is enough to see the routes: traced abstractly, not run.
    slice_shape = (min(images.shape[0], EVAL_SLICE_IMAGES), *images.shape[1:])
    routes = convolution_routes(one_view, jax.ShapeDtypeStruct(slice_shape, images.dtype))
    all_on_binding = bool(routes) and "xla" not in routes
    slices, side_by_side = eval_slice_plan(images.shape[0], batch_splits, views, all_on_binding)
    return sliced_apply(all_views, images, slices, side_by_side)


def _variables(state: Any) -> dict:
    """A variables dict, or a TrainState's evaluation variables (its EMA weights if kept)."""
    if isinstance(state, Mapping):
        return dict(state)
    return getattr(state, "eval_variables", None) or state.variables


def auto_batch_splits(
    batch_size: int, has_batch_norm: bool, convolutions_on_binding: bool = False
) -> int:
    """The batch split :func:`make_train_step` uses when ``batch_splits=0``.

    4 on a single CPU device for a model without batch norm when each slice keeps at
    least 16 images and XLA runs its convolutions (the best of 1, 2, 4 and 8 for the
    MNIST and CIFAR nets on 2 cores: XLA's convolutions use one core each, so slices fill
    the others), else 1: where jaxcnn's binding runs them (``convolutions_on_binding``:
    oneDNN, or the fused Winograd kernels on AVX2-only CPUs, :mod:`jaxcnn.conv_backend`)
    each call uses every core, and concurrent slices only compete (1 was 1.3x 4 on the
    CIFAR net with oneDNN; on the MNIST net with its conv2 fused, 1.3x, item 89); on
    GPU/TPU one large kernel beats several small ones, and a batch split over several
    devices is split already.

    Examples:
      >>> auto_batch_splits(128, has_batch_norm=True)
      1
      >>> auto_batch_splits(128, has_batch_norm=False, convolutions_on_binding=True)
      1
    """
    if not placement.one_cpu_device() or has_batch_norm or batch_size < 64:
        return 1
    if convolutions_on_binding or conv_backend.resolved_backend() == "onednn":
        return 1
    return 4


def convolution_routes(apply_fn: Callable[..., Any], *args: Any) -> list[str]:
    """The route of each convolution ``apply_fn(*args)`` traces (abstract values will do):
    ``"binding"`` (jaxcnn's Winograd kernels or oneDNN) or ``"xla"``
    (:func:`jaxcnn.conv_backend.record_routes`); traced, not run.

    Examples:
      >>> import jax.numpy as jnp
      >>> convolution_routes(lambda x: x * 2, jnp.ones(3))  # no convolution at all
      []
    """
    with conv_backend.record_routes() as routes:
        jax.eval_shape(apply_fn, *args)
    return routes


def convolutions_on_binding(apply_fn: Callable[..., Any], *args: Any) -> bool:
    """Whether ``apply_fn(*args)`` sends any convolution to jaxcnn's binding
    (:func:`convolution_routes`).

    Examples:
      >>> import jax.numpy as jnp
      >>> convolutions_on_binding(lambda x: x * 2, jnp.ones(3))
      False
    """
    return "binding" in convolution_routes(apply_fn, *args)


def _checked_splits(batch_splits: int, state: Any, batch_size: int, forward=None) -> int:
    """``batch_splits`` checked, or the automatic choice for ``0``; ``forward()`` traces
    the model's forward pass (abstractly) when that choice depends on its routes."""
    has_batch_norm = state.has_batch_norm
    if not isinstance(batch_splits, int) or batch_splits < 0:
        raise ValueError(f"batch_splits={batch_splits!r}; valid: 0 (automatic) or an int >= 1")
    if batch_splits == 0:
        splits = auto_batch_splits(batch_size, has_batch_norm)
        if splits > 1 and forward is not None and forward():
            return auto_batch_splits(batch_size, has_batch_norm, convolutions_on_binding=True)
        return splits
    if batch_splits > batch_size:
        raise ValueError(f"batch_splits={batch_splits} is more than the {batch_size} images "
                         "in a batch")  # fmt: skip
    if batch_splits > 1 and has_batch_norm:
        raise ValueError(
            f"batch_splits={batch_splits} with a batch-norm model would normalise each "
            "slice with its own statistics; use 1 (or 0, automatic)"
        )
    return batch_splits


def _slices(total: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous (start, stop) ranges covering ``total``, sizes differing by <= 1."""
    bounds = [total * i // parts for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _example_ids(augment: Augment, batch: Batch) -> dict:
    """The ``example_ids`` and ``epoch`` an augmentation asks for (alternating flips)."""
    if not getattr(augment, "needs_example_ids", False):
        return {}
    if "index" not in batch or "epoch" not in batch:
        raise ValueError(
            "this augmentation (flip_mode='alternate') needs the batch's 'index' (each "
            "image's row in the training split) and 'epoch'; gathering_train_step adds "
            f"them, this batch has only {sorted(batch)}"
        )
    return {"example_ids": batch["index"], "epoch": batch["epoch"]}


def make_train_step(
    model: nn.Module,
    *,
    mean: Any,
    std: Any,
    augment: Augment | None = None,
    label_smoothing: float = 0.0,
    top5: bool = False,
    batch_splits: int = 0,
    frozen: Sequence[str] = (),
) -> Callable[[Any, Batch], tuple[Any, dict]]:
    """The pure training step for ``model``.

    Args:
      model: Linen module; ``apply(..., train=True)`` uses the ``'dropout'`` rng
        stream and updates ``'batch_stats'`` when it has batch norm.
      mean, std: per-channel normalisation stats of the training split, [0, 1] units.
      augment: ``fn(key, images_float01) -> images`` (``jaxcnn.data.augment.build``),
        or ``None`` for none.
      label_smoothing: passed to :func:`~jaxcnn.train.losses.cross_entropy`.
      top5: also count top-5 hits (for more than 5 classes).
      batch_splits: compute the gradient as the size-weighted mean of the gradients of
        this many slices of the batch, each its own forward and backward pass. Equal to
        the whole batch's gradient up to float rounding (dropout draws its masks per
        slice), but the slices are independent work that XLA:CPU runs concurrently on
        different cores: its elementwise loops run on one core each, so a single
        chain of small ops leaves the other cores idle (1.15-1.2x faster training of
        the MNIST and CIFAR nets on 2 cores, ``docs/perf_notes.md``). ``0`` (default)
        picks :func:`auto_batch_splits` when the step is traced. Models with batch norm
        need 1: each slice would be normalised with its own statistics.
      frozen: parameter path patterns (:func:`jaxcnn.train.optim.is_frozen`) whose
        gradient is not computed: the step stops it before the forward pass (as Keras'
        ``trainable=False`` or PyTorch's ``requires_grad=False``), so XLA drops their
        kernel gradients, and they get zeros. The optimiser must keep them fixed too
        (``optimizer.frozen``; ``jaxcnn.train`` passes the same patterns to both).

    Raises:
      ValueError: (when traced) ``batch_splits`` > 1 with batch norm, or more splits
        than images.

    Returns:
      ``train_step(state, batch) -> (new_state, metric_sums)`` where ``batch`` has
      ``"image"`` (uint8 0..255, or float 0..1) and ``"label"`` (int32), and for an
      augmentation with ``needs_example_ids`` also ``"index"`` (each image's row in the
      training split) and ``"epoch"``. Pure: jit it, donating ``state``.

    Examples:
      >>> # step = jax.jit(make_train_step(model, mean=m, std=s), donate_argnums=0)
      >>> # state, sums = step(state, {"image": x_uint8, "label": y})
    """
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    frozen_in = frozen_mask(frozen) if frozen else None

    def train_step(state, batch: Batch):
        # One key per step, from the step number: resuming at step k replays step k exactly.
        step_key = jax.random.fold_in(state.rng, state.step)
        augment_key, dropout_key = jax.random.split(step_key)
        # uint8 0..255 (what jaxcnn.data keeps) or float 0..1, as the eval step takes.
        images = unit_range(batch["image"]).astype(jnp.float32)
        if augment is not None:
            images = augment(augment_key, images, **_example_ids(augment, batch))
        inputs = preprocess(images, mean, std)
        labels = batch["label"]

        def forward_on_binding() -> bool:
            def forward(params, x):
                return model.apply({"params": params}, x, train=False)

            return convolutions_on_binding(forward, state.params, inputs)

        splits = _checked_splits(batch_splits, state, labels.shape[0], forward_on_binding)

        def loss_fn(params, inputs, labels, dropout_key):
            if frozen_in is not None:  # constants to autodiff: no gradient work for them
                params = jax.tree.map(
                    lambda p, fixed: jax.lax.stop_gradient(p) if fixed else p,
                    params,
                    frozen_in(params),
                )
            variables = {"params": params}
            if state.batch_stats:
                variables["batch_stats"] = state.batch_stats
            logits, updates = model.apply(
                variables,
                inputs,
                train=True,
                rngs={"dropout": dropout_key},
                mutable=["batch_stats"],
            )
            losses = cross_entropy(logits, labels, label_smoothing)
            return jnp.mean(losses), (logits, losses, updates)

        grad_fn = jax.grad(loss_fn, has_aux=True)
        if splits == 1:
            grads, (logits, losses, updates) = grad_fn(state.params, inputs, labels, dropout_key)
        else:
            # Python-unrolled on purpose: independent subgraphs XLA may run concurrently
            # (a scan or vmap would chain or re-merge them). No batch norm here, so
            # ``updates`` is empty.
            parts, updates = [], {}
            for i, (start, stop) in enumerate(_slices(labels.shape[0], splits)):
                key = jax.random.fold_in(dropout_key, i)
                parts.append((stop - start, grad_fn(
                    state.params, inputs[start:stop], labels[start:stop], key)))  # fmt: skip
            total = labels.shape[0]
            grads = jax.tree.map(
                lambda *g: sum(n / total * gi for (n, _), gi in zip(parts, g, strict=True)),
                *(grad for _, (grad, _) in parts),
            )
            logits = jnp.concatenate([aux[0] for _, (_, aux) in parts])
            losses = jnp.concatenate([aux[1] for _, (_, aux) in parts])
        new_state = state.apply_gradients(grads, updates.get("batch_stats", state.batch_stats))
        return new_state, batch_metrics(logits, labels, losses, top5=top5)

    return train_step


def make_eval_step(
    model: nn.Module,
    *,
    mean: Any,
    std: Any,
    top5: bool = False,
    num_classes: int = 0,
    tta: str = "none",
    tta_fill: str = "zeros",
) -> Callable[[Any, Batch], dict]:
    """The pure evaluation step: metric sums of one (possibly padded) batch.

    Args:
      model: Linen module, applied with ``train=False`` (running batch-norm stats).
      mean, std: the training split's normalisation stats.
      top5: also count top-5 hits.
      num_classes: when > 0, also accumulate a ``confusion`` matrix
        ``(num_classes, num_classes)`` (rows: true class, columns: predicted).
      tta: test-time augmentation, one of ``jaxcnn.train.tta.TTA_MODES``: the metrics
        are those of the mean logits over the views (:func:`jaxcnn.train.tta.tta_logits`).
      tta_fill: how shifted views fill their border, ``"zeros"`` or ``"reflect"`` (as
        the training crops: ``config.augment.crop_mode``).

    Returns:
      ``eval_step(state_or_variables, batch) -> metric_sums``; ``batch`` has
      ``"image"``, ``"label"`` and optionally ``"mask"`` (bool, False = padding).

    Examples:
      >>> # sums = jax.jit(make_eval_step(model, mean=m, std=s))(state, batch)
    """
    check_tta_mode(tta)
    check_fill(tta_fill)
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)

    def eval_step(state, batch: Batch):
        logits = eval_logits(model, _variables(state), batch["image"], mean, std, tta, tta_fill)
        labels = batch["label"]
        mask = batch.get("mask")
        sums = batch_metrics(logits, labels, cross_entropy(logits, labels), mask, top5=top5)
        if num_classes:
            weights = jnp.ones(labels.shape) if mask is None else mask.astype(jnp.float32)
            true = jax.nn.one_hot(labels, num_classes) * weights[:, None]
            predicted = jax.nn.one_hot(jnp.argmax(logits, axis=-1), num_classes)
            sums["confusion"] = true.T @ predicted
        return sums

    return eval_step


def gathering_train_step(
    train_step: Callable, steps_per_epoch: int, batch_sharding: NamedSharding | None = None
) -> Callable:
    """``(state, totals, images, labels, epoch_indices) -> (state, totals)``.

    The row of ``epoch_indices`` (``(steps_per_epoch, batch)`` int32) is chosen by
    ``state.step % steps_per_epoch`` on the device, so the host sends nothing per
    step and a run resumed mid-epoch continues with the right batch. The batch also
    carries the rows it gathered (``"index"``) and the 0-based ``"epoch"``.
    """

    def step(state, totals, images, labels, epoch_indices):
        row = jax.lax.rem(state.step, steps_per_epoch)
        indices = jax.lax.dynamic_index_in_dim(epoch_indices, row, keepdims=False)
        batch = {"image": images[indices], "label": labels[indices], "index": indices}
        if batch_sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        batch["epoch"] = jax.lax.div(state.step, steps_per_epoch)
        state, sums = train_step(state, batch)
        return state, add_metrics(totals, sums)

    return step


def gathering_eval_step(eval_step: Callable, batch_sharding: NamedSharding | None = None):
    """``(state, totals, images, labels, indices, mask, row) -> totals``."""

    def step(state, totals, images, labels, indices, mask, row):
        rows = jax.lax.dynamic_index_in_dim(indices, row, keepdims=False)
        batch = {
            "image": images[rows],
            "label": labels[rows],
            "mask": jax.lax.dynamic_index_in_dim(mask, row, keepdims=False),
        }
        if batch_sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        return add_metrics(totals, eval_step(state, batch))

    return step
