"""jaxcnn.kernels: named kernels and ``convolve`` held against scipy.signal.correlate2d."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image
from scipy import signal

from jaxcnn import kernels, shapes
from jaxcnn.commands import kernel as kernel_command

NP_PAD_MODES = {"REFLECT": "reflect", "CIRCULAR": "wrap"}


def reference(image, kernel, stride, padding, dilation=1, channels="separate"):
    """SciPy's cross-correlation of the padded image, subsampled by the stride."""
    image = np.asarray(image, np.float64)
    kernel = np.asarray(kernel, np.float64)
    planes = image[..., None] if image.ndim == 2 else image
    if kernel.ndim == 2:
        kernel = np.repeat(kernel[..., None], planes.shape[-1], axis=-1)
    # Dilation = zeros between the kernel taps.
    dilated = np.zeros(
        (
            (kernel.shape[0] - 1) * dilation + 1,
            (kernel.shape[1] - 1) * dilation + 1,
            kernel.shape[2],
        )
    )
    dilated[::dilation, ::dilation] = kernel
    pads = shapes.resolve_padding(padding, planes.shape[:2], kernel.shape[:2], stride, dilation)
    mode = NP_PAD_MODES.get(padding, "constant") if isinstance(padding, str) else "constant"
    outputs = []
    for c in range(planes.shape[-1]):
        padded = np.pad(planes[..., c], pads, mode=mode)
        full = signal.correlate2d(padded, dilated[..., c], mode="valid")
        outputs.append(full[::stride, ::stride])
    stacked = np.stack(outputs, axis=-1)
    if channels == "sum":
        return stacked.sum(axis=-1)
    return stacked[..., 0] if image.ndim == 2 else stacked


def assert_matches_scipy(image, kernel, stride, padding, dilation=1, channels="separate"):
    got = np.asarray(
        kernels.convolve(image, kernel, stride, padding, dilation=dilation, channels=channels)
    )
    want = reference(image, kernel, stride, padding, dilation, channels)
    assert got.dtype == np.float32
    assert got.shape == want.shape
    scale = float(np.abs(image).max() * np.abs(kernel).sum()) or 1.0
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * scale)


PADDINGS = ["VALID", "SAME", "SAME_LOWER", "REFLECT", "CIRCULAR", 1, ((2, 0), (0, 1))]
CASES = list(itertools.product([1, 2, 3], PADDINGS))


@pytest.mark.parametrize(("stride", "padding"), CASES)
def test_grayscale_matches_scipy(stride, padding):
    rng = np.random.default_rng(stride)
    image = rng.normal(size=(13, 10)).astype(np.float32)
    kernel = rng.normal(size=(3, 4)).astype(np.float32)  # non-square: catches swapped axes
    assert_matches_scipy(image, kernel, stride, padding)


@pytest.mark.parametrize(("stride", "padding"), CASES)
@pytest.mark.parametrize("channels", ["separate", "sum"])
def test_rgb_matches_scipy(stride, padding, channels):
    rng = np.random.default_rng(10 + stride)
    image = rng.uniform(0, 255, size=(11, 12, 3)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 3)).astype(np.float32)  # one slice per channel
    assert_matches_scipy(image, kernel, stride, padding, channels=channels)


@pytest.mark.parametrize("name", kernels.names())
def test_every_named_kernel_matches_scipy_on_rgb(name):
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, size=(12, 9, 3), dtype=np.uint8)
    assert_matches_scipy(image, kernels.get(name), 2, "SAME")
    assert_matches_scipy(image, kernels.get(name), 1, "VALID", channels="sum")


def test_reflect_border_wider_than_the_image_reflects_again():
    # A 9x9 kernel on a 4x4 image: a border of 4 > 3, reflected twice, as nn.Conv does.
    rng = np.random.default_rng(5)
    image = rng.normal(size=(4, 4)).astype(np.float32)
    assert_matches_scipy(image, rng.normal(size=(9, 9)).astype(np.float32), 1, "REFLECT")


def test_dilation_matches_scipy():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(15, 14)).astype(np.float32)
    assert_matches_scipy(image, kernels.get("sobel_y"), 2, "SAME", dilation=2)


def test_is_cross_correlation_not_convolution():
    image = np.zeros((5, 5), np.float32)
    image[2, 2] = 1.0
    asymmetric = np.arange(9, dtype=np.float32).reshape(3, 3)
    out = np.asarray(kernels.convolve(image, asymmetric, padding="SAME"))
    # A unit impulse under cross-correlation gives the kernel rotated by 180 degrees.
    np.testing.assert_array_equal(out[1:4, 1:4], asymmetric[::-1, ::-1])
    np.testing.assert_allclose(out, signal.correlate2d(image, asymmetric, mode="same"))


def test_output_shape_is_the_calculators():
    image = np.ones((17, 23, 3), np.float32)
    for stride, padding in CASES:
        got = kernels.convolve(image, "gaussian_blur_5x5", stride, padding).shape
        want = shapes.conv_output_shape((17, 23), 5, stride, padding)
        assert got == (*want, 3), (stride, padding)


def test_named_kernels_behave_as_named():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(9, 9)).astype(np.float32)
    identity = np.asarray(kernels.convolve(image, "identity", padding="SAME"))
    np.testing.assert_array_equal(identity, image)
    ramp = np.tile(np.arange(8, dtype=np.float32), (8, 1))  # brightness rises to the right
    assert np.all(np.asarray(kernels.convolve(ramp, "sobel_x", padding="VALID")) == 8)
    assert np.all(np.asarray(kernels.convolve(ramp, "prewitt_x", padding="VALID")) == 6)
    assert np.all(np.asarray(kernels.convolve(ramp, "sobel_y", padding="VALID")) == 0)
    assert np.all(np.asarray(kernels.convolve(ramp, "laplacian", padding="VALID")) == 0)
    for name in ("box_blur", "gaussian_blur_3x3", "gaussian_blur_5x5", "sharpen", "emboss"):
        assert kernels.get(name).sum() == pytest.approx(1.0), name  # keeps flat areas' brightness
    for name in (
        "edge_diagonal",
        "edge_horizontal",
        "edge_vertical",
        "edge_4",
        "edge_8",
        "sobel_x",
        "sobel_y",
        "prewitt_x",
        "prewitt_y",
        "laplacian",
        "outline",
    ):
        assert kernels.get(name).sum() == 0, name  # flat areas go to zero
    np.testing.assert_array_equal(kernels.get("sobel_y"), kernels.get("sobel_x").T)
    np.testing.assert_array_equal(kernels.get("prewitt_y"), kernels.get("prewitt_x").T)
    assert kernels.get("gaussian_blur_5x5").shape == (5, 5)
    assert set(kernels.KERNELS) == set(kernels.names())
    assert all(kernels.describe(name) for name in kernels.names())


def test_get_returns_a_copy_and_the_registry_is_read_only():
    sobel = kernels.get("sobel_x")
    sobel[:] = 0
    assert kernels.get("sobel_x").any()
    with pytest.raises(ValueError):
        kernels.KERNELS["sobel_x"][0, 0] = 5


def test_custom_and_gaussian_kernels():
    np.testing.assert_array_equal(kernels.custom([[1, 2], [3, 4]]), [[1, 2], [3, 4]])
    g = kernels.gaussian(5, 1.0)
    assert g.shape == (5, 5) and g.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(g, g.T)
    assert g[2, 2] == g.max()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: kernels.get("sobel"), "kernel name 'sobel' is unknown"),
        (lambda: kernels.custom([1, 2, 3]), "must be 2-D"),
        (lambda: kernels.custom([[1, np.nan]]), "must be finite"),
        (lambda: kernels.custom([["a"]]), "nested numbers"),
        (lambda: kernels.gaussian(4, 1.0), "size must be an odd int"),
        (lambda: kernels.gaussian(3, 0.0), "sigma must be"),
        (lambda: kernels.convolve(np.ones((2, 4, 4, 1)), "identity"), "image must be"),
        (lambda: kernels.convolve(np.ones((4, 4, 3)), np.ones((3, 3, 2))), "2 channel slices"),
        (lambda: kernels.convolve(np.ones((4, 4)), "identity", channels="depth"), "channels"),
        (lambda: kernels.convolve(np.ones((4, 4)), "identity", stride=0), "stride"),
        (lambda: kernels.convolve(np.ones((4, 4)), "identity", padding="FULL"), "FULL"),
        (
            lambda: kernels.convolve(np.ones((2, 2)), "gaussian_blur_5x5", padding="VALID"),
            "output size below 1",
        ),
        (lambda: kernels.convolve(np.array([["a"]]), "identity"), "numbers"),
    ],
)
def test_bad_input_raises_with_a_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_kernel_command_writes_before_after_png(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert kernel_command.main(["sobel_x", "digit:5", "--out", str(out)]) == 0
    with Image.open(out) as png:
        # Three 320 px cells, a 30 px title band over them, a 36 px heading.
        assert png.size == (3 * 320, 320 + 30 + 36)
    assert "wrote" in capsys.readouterr().out


def test_kernel_command_custom_kernel_and_file_input(tmp_path):
    source = tmp_path / "in.png"
    Image.fromarray(np.tile(np.arange(0, 250, 10, dtype=np.uint8), (20, 1))).save(source)
    out = tmp_path / "out.png"
    argv = ["1,0,-1;1,0,-1;1,0,-1", str(source), "--padding", "valid", "--stride", "2"]
    assert kernel_command.main([*argv, "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    assert kernel_command.load_image(str(source)).shape == (20, 25)


def test_kernel_command_samples_and_errors(capsys):
    assert kernel_command.load_sample("china").shape == (427, 640, 3)
    assert kernel_command.load_sample("grace_hopper").ndim == 3
    assert kernel_command.load_sample("digit:9").dtype == np.uint8
    assert kernel_command.main(["nonsense", "digit"]) == 2
    assert "unknown" in capsys.readouterr().err
    assert kernel_command.main(["sobel_x", "no_such_sample_or_file"]) == 2
    assert "unknown sample" in capsys.readouterr().err
    assert kernel_command.main(["--list"]) == 0
    assert "gaussian_blur_5x5" in capsys.readouterr().out
