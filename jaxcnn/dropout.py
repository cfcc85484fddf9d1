"""Dropout whose mask costs a few random bits per element instead of 32.

``flax.linen.Dropout`` draws one float32 uniform (32 random bits) per element and keeps
those below ``1 - rate``. On CPU, JAX's threefry generator is the expensive part: for the
MNIST net's 128 x 1600 mask it took about 0.7 ms of a 10.7 ms training step on the
Intel Xeon (``docs/perf_notes.md``, session 20). Most rates used in practice (0.5, 0.25,
0.75, 0.125) make the keep probability a multiple of ``2**-b`` for a small ``b``; then
``b`` uniform random bits decide an element exactly: keep it when those bits, read as an
integer ``v`` in ``[0, 2**b)``, satisfy ``v < keep * 2**b``. A 32-bit word then serves
``32 // b`` elements. Other rates fall back to Flax's own draw, so every rate keeps
exactly Bernoulli(``1 - rate``) elements.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> mask_bits(0.5), mask_bits(0.75), mask_bits(0.7)
    (1, 2, None)
    >>> mask = bernoulli_mask(jax.random.key(0), 0.5, (4, 1000))
    >>> mask.shape, mask.dtype
    ((4, 1000), dtype('bool'))
    >>> 0.45 < float(mask.mean()) < 0.55
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# Chunk sizes that divide a 32-bit word evenly, so a word unpacks with shifts alone.
_CHUNK_BITS = (1, 2, 4, 8, 16)


def mask_bits(keep: float) -> int | None:
    """The fewest random bits (1, 2, 4, 8 or 16) that decide Bernoulli(``keep``) exactly.

    ``None`` when ``keep * 2**16`` is not an integer (e.g. 0.7): such a probability
    needs Flax's 32-bit draw.

    Examples:
        >>> mask_bits(0.5), mask_bits(0.875), mask_bits(1 - 0.3)
        (1, 4, None)
    """
    for bits in _CHUNK_BITS:
        scaled = keep * (1 << bits)
        if scaled == math.floor(scaled):
            return bits
    return None


def bernoulli_mask(key: jax.Array, keep: float, shape: Sequence[int]) -> jax.Array:
    """A boolean array of ``shape`` whose elements are independently True with prob. ``keep``.

    Args:
      key: a JAX random key.
      keep: the probability of True, in ``(0, 1]``.
      shape: the mask's shape.

    Returns:
      The mask; for a ``keep`` that :func:`mask_bits` cannot serve, exactly
      ``jax.random.bernoulli(key, keep, shape)``.

    Examples:
        >>> bool(bernoulli_mask(jax.random.key(1), 1.0, (3,)).all())
        True
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"bernoulli_mask: keep={keep}; valid: 0 < keep <= 1")
    shape = tuple(shape)
    bits = mask_bits(keep)
    if bits is None:
        return jax.random.bernoulli(key, keep, shape)
    size = math.prod(shape)
    per_word = 32 // bits
    words = jax.random.bits(key, (-(-size // per_word),), jnp.uint32)
    shifts = jnp.arange(per_word, dtype=jnp.uint32) * jnp.uint32(bits)
    chunks = (words[:, None] >> shifts[None, :]) & jnp.uint32((1 << bits) - 1)
    threshold = jnp.uint32(round(keep * (1 << bits)))
    # For keep == 1 the threshold is 2**bits, above every chunk: all True.
    return (chunks.reshape(-1)[:size] < threshold).reshape(shape)


class Dropout(nn.Module):
    """``flax.linen.Dropout`` with the cheaper mask of :func:`bernoulli_mask`.

    Same attributes, call signature, scaling (kept elements times ``1 / (1 - rate)``)
    and module name, so it replaces Flax's layer in a model without changing its
    variables; the random masks differ from Flax's for rates :func:`mask_bits` serves.

    Attributes:
      rate: the probability of zeroing an element, in ``[0, 1]``.
      broadcast_dims: axes along which one mask value is shared.
      deterministic: if True, return the input unchanged (evaluation).
      rng_collection: the rng stream the mask's key comes from.

    Examples:
        >>> layer = Dropout(0.5)
        >>> x = jnp.ones((2, 8))
        >>> y = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
        >>> sorted(set(y.ravel().tolist()))
        [0.0, 2.0]
    """

    rate: float
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(
        self, inputs: jax.Array, deterministic: bool | None = None, rng: jax.Array | None = None
    ) -> jax.Array:
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"Dropout: rate={self.rate}; valid: 0 <= rate <= 1")
        if self.rate == 0.0 or deterministic:
            return inputs
        if self.rate == 1.0:  # no element survives; dividing by keep would give NaN
            return jnp.zeros_like(inputs)
        keep = 1.0 - self.rate
        if rng is None:
            rng = self.make_rng(self.rng_collection)
        shape = list(inputs.shape)
        for axis in self.broadcast_dims:  # negative axes count from the end, as in Flax
            shape[axis] = 1
        mask = jnp.broadcast_to(bernoulli_mask(rng, keep, shape), inputs.shape)
        return lax.select(mask, inputs / keep, jnp.zeros_like(inputs))
