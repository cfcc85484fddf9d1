"""jaxcnn.activations: the exact GELU's erf form against JAX's erfc form and float64 maths."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.activations import ACTIVATIONS, gelu_exact


def test_gelu_exact_is_the_erf_form_within_a_micro_of_jax_erfc_form():
    x = jnp.linspace(-12.0, 12.0, 20001, dtype=jnp.float32)
    ours, theirs = jax.jit(gelu_exact)(x), jax.jit(lambda v: nn.gelu(v, approximate=False))(x)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    # The float64 truth of x / 2 * (1 + erf(x / sqrt 2)), PyTorch's formula.
    exact = np.array([v / 2 * (1 + math.erf(v / math.sqrt(2))) for v in np.asarray(x, float)])
    np.testing.assert_allclose(ours, exact, rtol=1e-6, atol=1e-6)
    grads = jax.jit(jax.vmap(jax.grad(gelu_exact)))(x)
    pdf = np.exp(-(np.asarray(x, float) ** 2) / 2) / math.sqrt(2 * math.pi)
    cdf = np.array([(1 + math.erf(v / math.sqrt(2))) / 2 for v in np.asarray(x, float)])
    np.testing.assert_allclose(grads, cdf + np.asarray(x, float) * pdf, rtol=1e-6, atol=1e-6)


def test_gelu_exact_keeps_dtype_and_is_the_named_activation():
    assert ACTIVATIONS["gelu_exact"] is gelu_exact
    assert gelu_exact(jnp.ones(2, jnp.bfloat16)).dtype == jnp.bfloat16
