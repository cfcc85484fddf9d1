"""Optimisers and learning-rate schedules from a config, through optax.

The config speaks in epochs (people think in epochs); the schedules optax builds
count optimiser steps, so every length here is converted with ``steps_per_epoch``.

Config shape (both are ``ml_collections.ConfigDict`` or plain mappings)::

    optimizer = {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True,
                 "weight_decay": 5e-4, "grad_clip_norm": 0.0, "b1": 0.9, "b2": 0.999,
                 "eps": 1e-8, "frozen": ["whiten/*kernel"], "weight_decay_on": "kernels",
                 "lr_multipliers": [("*/norm/bias", 64.0)]}
    schedule = {"name": "warmup_cosine", "warmup_epochs": 1.0, "end_factor": 0.0,
                # pct_start and div_factor also shape linear_onecycle
                "boundaries_epochs": [], "factors": [], "pct_start": 0.25,
                "div_factor": 25.0, "final_div_factor": 1e4}
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

SCHEDULES = (
    "constant",
    "cosine",
    "warmup_cosine",
    "onecycle",
    "linear_onecycle",
    "piecewise",
    "linear",
)
# Optimisers whose weight decay is decoupled (applied to the weights, not the gradient).
_DECOUPLED = ("adamw", "lamb", "lion", "lars")
# Optimisers that take the classic L2 weight decay added to the gradient.
_COUPLED = ("sgd", "adam", "nadam", "radam", "rmsprop", "adagrad", "adabelief")
OPTIMIZERS = _COUPLED + _DECOUPLED
WEIGHT_DECAY_ON = ("kernels", "all")


def _get(mapping: Mapping, key: str, default: Any) -> Any:
    value = mapping.get(key, default) if hasattr(mapping, "get") else default
    return default if value is None else value


def build_schedule(
    schedule: Mapping, base_lr: float, steps_per_epoch: int, num_epochs: int
) -> optax.Schedule:
    """Learning rate as a function of the optimiser step.

    Args:
      schedule: ``{"name": one of SCHEDULES, ...}`` (see the module docstring);
        ``warmup_epochs`` (warmup_cosine), ``end_factor`` (final lr / base lr for
        cosine, warmup_cosine and linear), ``boundaries_epochs`` and ``factors``
        (piecewise: lr is multiplied by ``factors[i]`` at ``boundaries_epochs[i]``),
        ``pct_start``, ``div_factor``, ``final_div_factor`` (onecycle, as in PyTorch).
        ``linear_onecycle`` (airbench's triangle): linear from ``base_lr / div_factor``
        up to ``base_lr`` over the first ``pct_start`` of the steps, then linear down
        to ``base_lr * end_factor``.
      base_lr: the peak learning rate.
      steps_per_epoch: optimiser steps per epoch (> 0).
      num_epochs: length of training (> 0).

    Returns:
      An optax schedule ``step -> lr``.

    Examples:
      >>> s = build_schedule({"name": "piecewise", "boundaries_epochs": [1],
      ...                     "factors": [0.1]}, 1.0, steps_per_epoch=10, num_epochs=2)
      >>> float(s(9)), round(float(s(10)), 6)
      (1.0, 0.1)
    """
    name = _get(schedule, "name", "constant")
    if name not in SCHEDULES:
        raise ValueError(f"schedule.name must be one of {SCHEDULES}; got {name!r}")
    if steps_per_epoch <= 0 or num_epochs <= 0:
        raise ValueError(
            f"steps_per_epoch and num_epochs must be > 0; got {steps_per_epoch}, {num_epochs}"
        )
    if not base_lr > 0:
        raise ValueError(f"optimizer.learning_rate must be > 0; got {base_lr!r}")
    total = steps_per_epoch * num_epochs
    end_factor = float(_get(schedule, "end_factor", 0.0))
    if name == "constant":
        return optax.constant_schedule(base_lr)
    if name == "cosine":
        return optax.cosine_decay_schedule(base_lr, decay_steps=total, alpha=end_factor)
    if name == "linear":
        return optax.linear_schedule(base_lr, base_lr * end_factor, transition_steps=total)
    if name == "warmup_cosine":
        warmup_epochs = float(_get(schedule, "warmup_epochs", 1.0))
        warmup = int(round(warmup_epochs * steps_per_epoch))
        if not 0 <= warmup < total:
            raise ValueError(
                f"schedule.warmup_epochs = {warmup_epochs:g} gives {warmup} warm-up steps but "
                f"the whole run has {total} ({num_epochs} epochs of {steps_per_epoch}); valid: "
                f"0 <= warmup_epochs < num_epochs, e.g. --config.schedule.warmup_epochs="
                f"{num_epochs / 2:g} for a {num_epochs}-epoch run"
            )
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=base_lr,
            warmup_steps=warmup,
            decay_steps=total,
            end_value=base_lr * end_factor,
        )
    if name == "onecycle":
        pct_start = float(_get(schedule, "pct_start", 0.25))
        if not 0.0 < pct_start < 1.0:
            raise ValueError(f"schedule.pct_start must be in (0, 1); got {pct_start!r}")
        return optax.cosine_onecycle_schedule(
            transition_steps=total,
            peak_value=base_lr,
            pct_start=pct_start,
            div_factor=float(_get(schedule, "div_factor", 25.0)),
            final_div_factor=float(_get(schedule, "final_div_factor", 1e4)),
        )
    if name == "linear_onecycle":
        pct_start = float(_get(schedule, "pct_start", 0.25))
        warmup = int(round(pct_start * total))
        if not 0 < warmup < total:
            raise ValueError(
                f"schedule.pct_start={pct_start!r} must give between 1 and {total - 1} warm-up "
                f"steps of the {total}; got {warmup}"
            )
        start = base_lr / float(_get(schedule, "div_factor", 25.0))
        return optax.join_schedules(
            [
                optax.linear_schedule(start, base_lr, warmup),
                optax.linear_schedule(base_lr, base_lr * end_factor, total - warmup),
            ],
            [warmup],
        )
    # piecewise
    boundaries = list(_get(schedule, "boundaries_epochs", []))
    factors = list(_get(schedule, "factors", []))
    if len(boundaries) != len(factors):
        raise ValueError(
            "schedule.boundaries_epochs and schedule.factors must have the same length; got "
            f"{boundaries!r} and {factors!r}"
        )
    steps = [int(round(float(epoch) * steps_per_epoch)) for epoch in boundaries]
    if steps != sorted(steps) or any(step <= 0 for step in steps):
        raise ValueError(
            f"schedule.boundaries_epochs must be increasing and > 0; got {boundaries!r}"
        )
    return optax.piecewise_constant_schedule(
        base_lr, dict(zip(steps, map(float, factors), strict=True))
    )


def weight_decay_mask(params: Any) -> Any:
    """``True`` for weights that should decay: kernels, not biases or norm scales.

    Biases and batch-norm scales/offsets are 1-D; decaying them only shrinks the
    model's ability to shift and scale activations, so the mask keeps arrays of
    rank >= 2 (dense and convolution kernels).

    Examples:
      >>> import jax.numpy as jnp
      >>> weight_decay_mask({"kernel": jnp.ones((3, 3, 1, 4)), "bias": jnp.ones(4)})
      {'bias': False, 'kernel': True}
    """
    return jax.tree_util.tree_map(lambda leaf: leaf.ndim > 1, params)


def parameter_path(path: Sequence[Any]) -> str:
    """A ``tree_flatten_with_path`` key path as ``"layer/sublayer/kernel"``."""
    return "/".join(str(getattr(key, "key", getattr(key, "idx", key))) for key in path)


def is_frozen(path: str, patterns: Sequence[str]) -> bool:
    """Whether the parameter at ``path`` matches one of ``patterns``.

    A pattern matches the parameter itself, everything under a layer it names, or
    any path it matches as an ``fnmatch`` glob (``*`` also crosses ``/``).

    Examples:
      >>> is_frozen("conv1/kernel", ["conv1"]), is_frozen("conv10/kernel", ["conv1"])
      (True, False)
      >>> is_frozen("whiten/conv/kernel", ["whiten/*kernel"])
      True
    """
    return any(
        path == pattern or path.startswith(pattern + "/") or fnmatch.fnmatchcase(path, pattern)
        for pattern in patterns
    )


def frozen_mask(patterns: Sequence[str]) -> Callable[[Any], Any]:
    """``params -> tree of bools``: True for parameters :func:`is_frozen` by ``patterns``."""
    patterns = tuple(patterns)
    return lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: is_frozen(parameter_path(path), patterns), params
    )


def unmatched_patterns(params: Any, patterns: Sequence[str]) -> list[str]:
    """The patterns that match no parameter of ``params`` (most likely typos).

    Examples:
      >>> unmatched_patterns({"conv1": {"kernel": 0, "bias": 0}}, ["conv1/bias", "conv2"])
      ['conv2']
    """
    paths = [parameter_path(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return [p for p in patterns if not any(is_frozen(path, [p]) for path in paths)]


def _pattern_pairs(
    optimizer: Mapping, field: str, number: str, example: str, *, zero_ok: bool
) -> list[tuple[str, float]]:
    """``optimizer[field]`` as checked ``(pattern, number)`` pairs, numbers > 0 (or >= 0)."""
    pairs = []
    for entry in _get(optimizer, field, ()):
        ok = isinstance(entry, Sequence) and not isinstance(entry, str) and len(entry) == 2
        if ok:
            pattern, value = entry
            ok = isinstance(pattern, str) and bool(pattern)
            ok = ok and isinstance(value, int | float) and not isinstance(value, bool)
            ok = ok and (value >= 0 if zero_ok else value > 0)
        if not ok:
            raise ValueError(
                f"optimizer.{field} entry {entry!r} is invalid: each entry is a "
                f"(parameter path or glob, {number}) pair, e.g. {example}"
            )
        pairs.append((pattern, float(value)))
    return pairs


def lr_multiplier_pairs(optimizer: Mapping) -> list[tuple[str, float]]:
    """``optimizer.lr_multipliers`` as checked ``(pattern, factor)`` pairs.

    Examples:
      >>> lr_multiplier_pairs({"lr_multipliers": [["*/norm/bias", 64]]})
      [('*/norm/bias', 64.0)]
    """
    return _pattern_pairs(
        optimizer, "lr_multipliers", "factor > 0", "('*/norm/bias', 64.0)", zero_ok=False
    )


def freeze_after_pairs(optimizer: Mapping) -> list[tuple[str, float]]:
    """``optimizer.freeze_after`` as checked ``(pattern, epochs)`` pairs.

    Examples:
      >>> freeze_after_pairs({"freeze_after": [("whiten/*bias", 3)]})
      [('whiten/*bias', 3.0)]
    """
    return _pattern_pairs(
        optimizer, "freeze_after", "epochs >= 0", "('whiten/*bias', 3)", zero_ok=True
    )


def multiplier_labels(pairs: Sequence[tuple[str, float]]) -> Callable[[Any], Any]:
    """``params -> tree of labels``: ``"x{i}"`` for the first of ``pairs`` that matches, else
    ``"base"`` (the labels :func:`build_optimizer` hands to ``optax.multi_transform``).

    Examples:
      >>> multiplier_labels([("conv1/bias", 2.0)])({"conv1": {"bias": 0, "kernel": 0}})
      {'conv1': {'bias': 'x0', 'kernel': 'base'}}
    """
    patterns = [pattern for pattern, _ in pairs]

    def label(path: Any, _: Any) -> str:
        name = parameter_path(path)
        for i, pattern in enumerate(patterns):
            if is_frozen(name, [pattern]):
                return f"x{i}"
        return "base"

    return lambda params: jax.tree_util.tree_map_with_path(label, params)


def build_optimizer(
    optimizer: Mapping, schedule: optax.Schedule, steps_per_epoch: int | None = None
) -> optax.GradientTransformation:
    """An optax transformation from the config: optimiser, weight decay, clipping.

    Args:
      optimizer: ``{"name": one of OPTIMIZERS, "learning_rate", "momentum",
        "nesterov", "weight_decay", "grad_clip_norm", "b1", "b2", "eps"}``.
        ``weight_decay`` is decoupled for adamw/lamb/lion/lars and classic L2 (added to
        the gradient) for the others. ``weight_decay_on``: ``"kernels"`` (the default:
        biases and norm scales never decay, :func:`weight_decay_mask`) or ``"all"``.
        ``grad_clip_norm > 0`` clips the global gradient norm first. ``frozen``: paths
        of parameters that keep their initial values (:func:`is_frozen`; like Keras'
        ``layer.trainable = False``), e.g. ``["conv1"]`` or ``["whiten/*kernel"]``.
        ``lr_multipliers``: ``(pattern, factor)`` pairs; the parameters a pattern
        matches (first match wins, same matching as ``frozen``) take ``factor`` times
        the learning rate, while their weight decay per step stays what it was (the
        decay coefficient is divided by ``factor``), as airbench's 64x rate for the
        batch-norm biases. ``freeze_after``: ``(pattern, epochs)`` pairs; the matched
        parameters stop changing after that many epochs (airbench trains its
        whitening bias for 3 epochs only).
      schedule: the learning rate as a function of the step.
      steps_per_epoch: optimiser steps per epoch; needed by ``freeze_after``.

    Returns:
      The composed ``optax.GradientTransformation``.

    Examples:
      >>> tx = build_optimizer({"name": "adamw", "weight_decay": 1e-4}, lambda step: 1e-3)
      >>> isinstance(tx, optax.GradientTransformation)
      True
      >>> tx = build_optimizer({"lr_multipliers": [("*bias", 64.0)]}, lambda step: 0.1)
      >>> import jax.numpy as jnp
      >>> params = {"kernel": jnp.ones(2), "bias": jnp.ones(2)}
      >>> updates, _ = tx.update(params, tx.init(params), params)
      >>> round(float(updates["kernel"][0]), 6), round(float(updates["bias"][0]), 6)
      (-0.1, -6.4)
    """
    name = _get(optimizer, "name", "sgd")
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name must be one of {OPTIMIZERS}; got {name!r}")
    weight_decay = float(_get(optimizer, "weight_decay", 0.0))
    clip = float(_get(optimizer, "grad_clip_norm", 0.0))
    if weight_decay < 0 or clip < 0:
        raise ValueError(
            "optimizer.weight_decay and optimizer.grad_clip_norm must be >= 0; got "
            f"{weight_decay!r}, {clip!r}"
        )
    decay_on = _get(optimizer, "weight_decay_on", "kernels")
    if decay_on not in WEIGHT_DECAY_ON:
        raise ValueError(
            f"optimizer.weight_decay_on must be one of {WEIGHT_DECAY_ON}; got {decay_on!r}"
        )
    mask = weight_decay_mask if decay_on == "kernels" else None
    pairs = lr_multiplier_pairs(optimizer)
    parts = []
    if clip > 0:
        parts.append(optax.clip_by_global_norm(clip))
    if pairs:
        transforms = {"base": _core(name, optimizer, schedule, weight_decay, mask)}
        for i, (_, factor) in enumerate(pairs):
            transforms[f"x{i}"] = _core(
                name, optimizer, _scaled(schedule, factor), weight_decay / factor, mask
            )
        parts.append(optax.multi_transform(transforms, multiplier_labels(pairs)))
    else:
        parts.append(_core(name, optimizer, schedule, weight_decay, mask))
    frozen = list(_get(optimizer, "frozen", []))
    if frozen:
        # Last in the chain: weight decay and momentum must not move these either.
        parts.append(optax.freeze(frozen_mask(frozen)))
    freeze_after = freeze_after_pairs(optimizer)
    if freeze_after and not steps_per_epoch:
        raise ValueError(
            f"optimizer.freeze_after={freeze_after!r} counts epochs: build_optimizer needs "
            f"steps_per_epoch (got {steps_per_epoch!r})"
        )
    for pattern, epochs in freeze_after:
        parts.append(
            optax.masked(_zero_from(round(epochs * steps_per_epoch)), frozen_mask([pattern]))
        )
    return optax.chain(*parts)


def _zero_from(step: int) -> optax.GradientTransformation:
    """Pass updates through for the first ``step`` optimiser steps, then zero them."""
    return optax.scale_by_schedule(lambda count: (count < step).astype(jnp.float32))


def _scaled(schedule: optax.Schedule, factor: float) -> optax.Schedule:
    return lambda step: factor * schedule(step)


def _core(
    name: str,
    optimizer: Mapping,
    schedule: optax.Schedule,
    weight_decay: float,
    mask: Callable[[Any], Any] | None,
) -> optax.GradientTransformation:
    """The optimiser ``name`` with its weight decay (coupled or decoupled) at this rate."""
    momentum = float(_get(optimizer, "momentum", 0.9))
    nesterov = bool(_get(optimizer, "nesterov", False))
    b1 = float(_get(optimizer, "b1", 0.9))
    b2 = float(_get(optimizer, "b2", 0.999))
    eps = float(_get(optimizer, "eps", 1e-8))
    builders: dict[str, Callable[[], optax.GradientTransformation]] = {
        "sgd": lambda: optax.sgd(schedule, momentum=momentum or None, nesterov=nesterov),
        "adam": lambda: optax.adam(schedule, b1=b1, b2=b2, eps=eps),
        "nadam": lambda: optax.nadam(schedule, b1=b1, b2=b2, eps=eps),
        "radam": lambda: optax.radam(schedule, b1=b1, b2=b2, eps=eps),
        "adabelief": lambda: optax.adabelief(schedule, b1=b1, b2=b2, eps=eps),
        "rmsprop": lambda: optax.rmsprop(schedule, eps=eps, momentum=momentum, nesterov=nesterov),
        "adagrad": lambda: optax.adagrad(schedule, eps=eps),
        "adamw": lambda: optax.adamw(
            schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=mask
        ),
        "lamb": lambda: optax.lamb(
            schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=mask
        ),
        # Lion's authors use b2=0.99; set it in the config (the shared default is Adam's).
        "lion": lambda: optax.lion(schedule, b1=b1, b2=b2, weight_decay=weight_decay, mask=mask),
        "lars": lambda: optax.lars(
            schedule,
            weight_decay=weight_decay,
            weight_decay_mask=mask if mask is not None else True,
            trust_ratio_mask=weight_decay_mask,
            momentum=momentum,
            nesterov=nesterov,
        ),
    }
    if name in _COUPLED and weight_decay > 0:
        return optax.chain(optax.add_decayed_weights(weight_decay, mask=mask), builders[name]())
    return builders[name]()
