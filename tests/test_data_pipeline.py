"""jaxcnn.data.pipeline: statistics, normalisation, batching indices, device placement."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxcnn import data
from jaxcnn.data import pipeline


def test_normalization_stats_match_numpy():
    images = np.random.default_rng(0).integers(0, 256, (50, 6, 5, 3), dtype=np.uint8)
    mean, std = data.normalization_stats(images, chunk=7)  # several partial sums
    as_float = images.astype(np.float64) / 255
    np.testing.assert_allclose(mean, as_float.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(std, as_float.std(axis=(0, 1, 2)), rtol=1e-5)
    assert mean.dtype == std.dtype == np.float32 and mean.shape == (3,)
    _, constant_std = data.normalization_stats(np.full((2, 2, 2, 1), 9, np.uint8))
    assert constant_std[0] == 1.0  # a constant channel is left unscaled, not divided by 0
    with pytest.raises(data.DataError, match="images_uint8 must be a non-empty uint8"):
        data.normalization_stats(images.astype(np.float32))


def test_normalize_uint8_and_float_agree_and_jit():
    images = np.random.default_rng(1).integers(0, 256, (4, 3, 3, 3), dtype=np.uint8)
    mean, std = data.normalization_stats(images)
    from_uint8 = jax.jit(data.normalize)(images, mean, std)
    from_float = data.normalize(images.astype(np.float32) / 255, mean, std)
    np.testing.assert_allclose(from_uint8, from_float, atol=1e-6)
    assert from_uint8.dtype == jnp.float32
    np.testing.assert_allclose(from_uint8.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(from_uint8.std(axis=(0, 1, 2)), 1, atol=1e-4)


def test_epoch_indices_deterministic_and_a_permutation():
    a = data.epoch_indices(103, 10, seed=5, epoch=2)
    np.testing.assert_array_equal(a, data.epoch_indices(103, 10, seed=5, epoch=2))
    assert a.shape == (10, 10) and a.dtype == np.int32 and len(set(a.ravel())) == 100
    assert not np.array_equal(a, data.epoch_indices(103, 10, seed=5, epoch=3))
    assert not np.array_equal(a, data.epoch_indices(103, 10, seed=6, epoch=2))
    # Pinned values: numpy's PCG64 seeded by SeedSequence([seed, epoch]) is the same everywhere.
    expected = np.random.Generator(np.random.PCG64(np.random.SeedSequence([5, 2]))).permutation(103)
    np.testing.assert_array_equal(a.ravel(), expected[:100])
    padded = data.epoch_indices(103, 10, seed=5, epoch=2, drop_remainder=False)
    assert padded.shape == (11, 10) and set(padded.ravel()) == set(range(103))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_examples": 5, "batch_size": 8, "seed": 0, "epoch": 0}, "no step would run"),
        ({"num_examples": 5, "batch_size": 0, "seed": 0, "epoch": 0}, "batch_size must be"),
        ({"num_examples": 5, "batch_size": 2, "seed": -1, "epoch": 0}, "seed must be"),
        ({"num_examples": 5, "batch_size": 2, "seed": 0, "epoch": 1.5}, "epoch must be"),
    ],
)
def test_epoch_indices_rejects_bad_input(kwargs, message):
    with pytest.raises(data.DataError, match=message):
        data.epoch_indices(**kwargs)


@given(st.integers(1, 500), st.integers(1, 64))
def test_eval_indices_cover_every_example_exactly_once(num_examples, batch_size):
    indices, mask = data.eval_indices(num_examples, batch_size)
    assert indices.shape == mask.shape and indices.shape[1] == batch_size
    assert indices.dtype == np.int32 and mask.dtype == bool
    assert sorted(indices[mask].tolist()) == list(range(num_examples))
    assert np.all(indices[~mask] == 0) and indices.shape[0] == -(-num_examples // batch_size)


def test_device_put_split_keeps_uint8_and_shards_the_batch_axis():
    split = data.Split(np.arange(8 * 4 * 4, dtype=np.uint8).reshape(8, 4, 4, 1), np.arange(8))
    images, labels = data.device_put_split(split)
    assert images.dtype == jnp.uint8 and labels.dtype == jnp.int32
    np.testing.assert_array_equal(images, split.images)
    sharding = pipeline.batch_sharding()
    on_mesh = data.device_put_split(split, sharding)
    assert on_mesh.images.sharding == sharding and on_mesh.labels.shape == (8,)
    devices = jax.devices()
    if len(devices) > 1:
        odd = data.Split(split.images[: len(devices) + 1], split.labels[: len(devices) + 1])
        with pytest.raises(data.DataError, match="cannot shard"):
            data.device_put_split(odd, sharding)
    with pytest.raises(data.DataError, match="split must be a jaxcnn.data.Split"):
        data.device_put_split((split.images, split.labels))
