"""jaxcnn.data.augment: shape/dtype kept, deterministic per key, identity at zero, rot90."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.data import augment

SHAPE = (4, 12, 12, 3)
EVERYTHING = {
    "crop_padding": 2,
    "flip": True,
    "rotation": 30.0,
    "translate": 0.2,
    "cutout": 4,
    "brightness": 0.2,
    "contrast": 0.3,
}


@pytest.fixture(scope="module")
def images():
    return jax.random.uniform(jax.random.key(42), SHAPE)


@pytest.fixture(scope="module")
def full_pipeline():
    return jax.jit(augment.build(EVERYTHING))


def test_build_keeps_shape_and_dtype_and_is_deterministic(images, full_pipeline):
    out = full_pipeline(jax.random.key(0), images)
    assert out.shape == SHAPE and out.dtype == images.dtype
    np.testing.assert_array_equal(out, full_pipeline(jax.random.key(0), images))
    assert not np.array_equal(out, full_pipeline(jax.random.key(1), images))
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # Per example: each gets its own key, so identical inputs come out different.
    same = jnp.broadcast_to(images[:1], SHAPE)
    varied = full_pipeline(jax.random.key(3), same)
    assert not np.array_equal(varied[0], varied[1])


@pytest.mark.parametrize(
    ("op", "strength"),
    [
        (augment.random_crop, 3),
        (lambda k, x, s: augment.horizontal_flip(k, x, s), 0.5),
        (augment.rotate, 45.0),
        (augment.translate, 0.25),
        (augment.cutout, 5),
        (lambda k, x, s: augment.brightness_contrast(k, x, s, s), 0.3),
    ],
    ids=["crop", "flip", "rotate", "translate", "cutout", "brightness_contrast"],
)
def test_each_op_shape_dtype_determinism_and_zero_identity(images, op, strength):
    image = images[0]
    one = jax.jit(lambda k, x: op(k, x, strength))
    out = one(jax.random.key(7), image)
    assert out.shape == image.shape and out.dtype == image.dtype
    np.testing.assert_array_equal(out, one(jax.random.key(7), image))
    outs = [one(jax.random.key(seed), image) for seed in range(6)]
    assert any(not np.array_equal(o, image) for o in outs)  # it does something
    np.testing.assert_array_equal(op(jax.random.key(7), image, 0), image)


def test_all_zero_spec_is_identity(images):
    for spec in (None, {}, augment.DEFAULTS, {"flip": False, "rotation": 0}):
        np.testing.assert_array_equal(augment.build(spec)(jax.random.key(0), images), images)


def test_rotation_by_90_degrees_equals_rot90():
    square = jax.random.uniform(jax.random.key(5), (9, 9, 2))
    rotate_by = jax.jit(augment.rotate_by)  # one compile for the four angles
    np.testing.assert_allclose(rotate_by(square, 90.0), jnp.rot90(square), atol=1e-5)
    np.testing.assert_allclose(rotate_by(square, -90.0), jnp.rot90(square, -1), atol=1e-5)
    np.testing.assert_allclose(rotate_by(square, 180.0), jnp.rot90(square, 2), atol=1e-5)
    np.testing.assert_allclose(rotate_by(square, 0.0), square, atol=1e-6)


def test_flip_probability_one_mirrors_and_crop_shifts_content():
    image = jnp.arange(16.0).reshape(4, 4, 1) / 16
    np.testing.assert_array_equal(
        augment.horizontal_flip(jax.random.key(0), image, 1.0), image[:, ::-1]
    )
    shifted = augment.shift_by(image, 1, -1)
    np.testing.assert_array_equal(shifted[1:, :3], image[:3, 1:])
    assert float(shifted[0].sum()) == 0 and float(shifted[:, 3].sum()) == 0
    crops = {
        tuple(np.asarray(augment.random_crop(jax.random.key(s), image, 1)).ravel())
        for s in range(20)
    }
    assert len(crops) > 3  # several offsets are drawn


def test_reflect_crop_never_brings_in_black_pixels():
    ones = jnp.ones((6, 6, 1))
    keys = jax.random.split(jax.random.key(3), 16)
    zeros_mode = jax.vmap(lambda k: augment.random_crop(k, ones, 2))(keys)
    reflect = jax.vmap(lambda k: augment.random_crop(k, ones, 2, "reflect"))(keys)
    assert float(zeros_mode.min()) == 0.0 and float(reflect.min()) == 1.0
    with pytest.raises(ValueError, match=r"augment crop_mode='edge': must be one of"):
        augment.build({"crop_padding": 2, "crop_mode": "edge"})


def test_cutout_zeroes_at_most_a_square():
    out = augment.cutout(jax.random.key(2), jnp.ones((10, 10, 3)), 4)
    zeroed = np.asarray(out[..., 0] == 0)
    assert 0 < zeroed.sum() <= 16 and np.all((out == 0).all(-1) == zeroed)


def test_build_accepts_config_dict_and_rejects_bad_specs():
    from ml_collections import ConfigDict

    fn = augment.build(ConfigDict({"rotation": 10.0, "flip": True}))
    assert fn.spec["rotation"] == 10.0 and fn.spec["flip"] == 0.5
    with pytest.raises(ValueError, match=r"unknown augment key\(s\) \['rotate'\]; valid keys"):
        augment.build({"rotate": 10})
    with pytest.raises(ValueError, match=r"augment rotation=270: must be a number in \[0, 180\]"):
        augment.build({"rotation": 270})
    with pytest.raises(ValueError, match="augment crop_padding=1.5: must be an int"):
        augment.build({"crop_padding": 1.5})
    with pytest.raises(ValueError, match="augment expects float images"):
        augment.build({"flip": True})(jax.random.key(0), jnp.zeros((2, 4, 4, 1), jnp.uint8))


@pytest.mark.parametrize("key, value", [("crop_padding", 8), ("cutout", 9)])
def test_sizes_as_large_as_the_images_are_refused_when_the_batch_is_seen(key, value):
    fn = augment.build({key: value})
    with pytest.raises(ValueError, match=rf"augment {key}={value} is not smaller than these 8x8"):
        fn(jax.random.key(0), jnp.ones((2, 8, 8, 1)))
    assert fn(jax.random.key(0), jnp.ones((2, 16, 16, 1))).shape == (2, 16, 16, 1)
