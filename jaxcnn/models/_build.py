"""Shared helper of the zoo: spec + common arguments -> :class:`CNN`."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jaxcnn.models.spec import CNN, from_spec


def as_dtype(value: Any) -> Any:
    """``None`` stays ``None``; a name such as ``"bfloat16"`` (from a config) becomes a dtype."""
    if value is None:
        return None
    try:
        return jnp.dtype(value)
    except TypeError as error:
        raise ValueError(f"dtype={value!r} is not a dtype; e.g. 'float32', 'bfloat16'") from error


def build(
    spec: dict, num_classes: int, in_channels: int | None, dtype: Any, param_dtype: Any
) -> CNN:
    """Checks the common zoo arguments and builds the CNN."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r}; valid: an int >= 1")
    if in_channels is not None and (not isinstance(in_channels, int) or in_channels < 1):
        raise ValueError(f"in_channels={in_channels!r}; valid: None or an int >= 1")
    return from_spec(
        spec,
        num_classes=num_classes,
        in_channels=in_channels,
        dtype=as_dtype(dtype),
        param_dtype=as_dtype(param_dtype),
    )
