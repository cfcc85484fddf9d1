"""Peer runner: the same nets in Keras 3, ``model.fit`` on in-memory arrays.

``--variant jax`` or ``--variant tensorflow`` picks the Keras backend (``KERAS_BACKEND`` is
set before Keras is imported). Adam(1e-3), sparse categorical cross-entropy on logits,
bfloat16 through the ``mixed_bfloat16`` policy (float32 variables).

Timing maps the common protocol onto ``fit``: the arrays hold ``steps`` batches, so one
epoch is one window; epoch 0 is the warm-up (it compiles), epochs 1.. are the timed
windows, timed by a callback between ``on_epoch_begin`` and ``on_epoch_end`` (Keras
synchronises at epoch end to produce the logs). ``first_step_s`` is the time from the
``fit`` call to the end of batch 0. ``--warmup`` is ignored: Keras' warm-up is the first
epoch.

``--device``: Keras puts work where its backend does (``common.use_jax_device`` for JAX;
for TensorFlow, ``cpu`` hides its GPUs and ``gpu`` needs one). Keras' own defaults
otherwise, on either device.

    python benchmarks/keras_peer.py --net cifar_cnn --variant tensorflow
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402


def build(keras, net: str):
    """The benchmark net ``net`` as a Keras model (same layers as benchmarks/nets_flax.py).

    Args:
      keras: the imported ``keras`` module (imported after the backend is chosen).
      net: ``mnist_cnn``, ``cifar_cnn``, ``resnet20`` or ``fast_cifar``.

    Returns:
      A ``keras.Model`` taking NHWC input.
    """
    L = keras.layers
    shape, classes = common.NETS[net]
    inputs = keras.Input(shape)
    if net == "mnist_cnn":
        x = L.MaxPooling2D(2)(L.Conv2D(32, 3, activation="relu")(inputs))
        x = L.MaxPooling2D(2)(L.Conv2D(64, 3, activation="relu")(x))
        x = L.Dropout(0.5)(L.Flatten()(x))
        x = L.Dense(classes)(x)
    elif net == "cifar_cnn":
        x = L.MaxPooling2D(2)(L.Conv2D(32, 3, activation="relu")(inputs))
        x = L.MaxPooling2D(2)(L.Conv2D(64, 3, activation="relu")(x))
        x = L.Flatten()(L.Conv2D(64, 3, activation="relu")(x))
        x = L.Dense(classes)(L.Dense(64, activation="relu")(x))
    elif net == "resnet20":
        bn = lambda: L.BatchNormalization(momentum=0.9)
        x = L.ReLU()(bn()(L.Conv2D(16, 3, padding="same", use_bias=False)(inputs)))
        for stage, features in enumerate((16, 32, 64)):
            for block in range(3):
                stride = 2 if stage and not block else 1
                y = L.Conv2D(features, 3, stride, padding="same", use_bias=False)(x)
                y = L.ReLU()(bn()(y))
                y = bn()(L.Conv2D(features, 3, padding="same", use_bias=False)(y))
                if stride != 1 or x.shape[-1] != features:
                    x = bn()(L.Conv2D(features, 1, stride, use_bias=False)(x))
                x = L.ReLU()(L.Add()([x, y]))
        x = L.Dense(classes)(L.GlobalAveragePooling2D()(x))
    elif net == "fast_cifar":
        bn = lambda: L.BatchNormalization(momentum=0.9)
        x = L.Conv2D(24, 2, activation="gelu")(inputs)
        for features in (64, 256, 256):
            x = L.MaxPooling2D(2)(L.Conv2D(features, 3, padding="same", use_bias=False)(x))
            x = L.Activation("gelu")(bn()(x))
            x = L.Conv2D(features, 3, padding="same", use_bias=False)(x)
            x = L.Activation("gelu")(bn()(x))
        x = L.Dense(classes, use_bias=False)(L.GlobalMaxPooling2D()(x))
    else:
        raise ValueError(f"unknown net {net!r}")
    return keras.Model(inputs, L.Activation("linear", dtype="float32")(x))


def main(argv=None) -> int:
    args = common.parse_args("keras", argv)
    backend = args.variant or "tensorflow"
    if backend not in ("jax", "tensorflow"):
        raise ValueError(f"--variant must be jax or tensorflow, got {backend!r}")
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        where = _place(backend, args.device)
    except common.DeviceUnavailable as error:
        common.emit_unsupported("keras", args, str(error))
        return 0
    import keras

    if args.dtype == "bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(args.seed)
    images, labels = common.random_data(args.net, args.steps * args.batch, args.seed)
    model = build(keras, args.net)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )

    marks: dict[str, list[float]] = {"begin": [], "end": [], "first": [], "cpu": []}

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            marks["begin"].append(time.perf_counter())
            marks["cpu"].append(time.process_time())

        def on_epoch_end(self, epoch, logs=None):
            marks["end"].append(time.perf_counter())
            marks["cpu"][-1] = time.process_time() - marks["cpu"][-1]

        def on_train_batch_end(self, batch, logs=None):
            if not marks["first"]:
                float(logs["loss"])  # wait for the first step's result
                marks["first"].append(time.perf_counter())

    start = time.perf_counter()
    model.fit(
        images,
        labels,
        batch_size=args.batch,
        epochs=1 + args.windows,
        shuffle=False,
        verbose=0,
        callbacks=[Clock()],
    )
    rates = [
        args.steps * args.batch / (end - begin)
        for begin, end in zip(marks["begin"][1:], marks["end"][1:], strict=True)
    ]
    measured = {
        "first_step_s": marks["first"][0] - start,
        "images_per_sec": rates,
        "images_per_cpu_sec": [args.steps * args.batch / c for c in marks["cpu"][1:]],
    }
    versions = {"keras": keras.__version__}
    if backend == "tensorflow":
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    else:
        import jax

        versions["jax"] = jax.__version__
    args.variant = backend
    common.emit("keras", args, measured, params=model.count_params(), versions=versions,
                device_peak_mb=_device_peak_mb(backend, where["device"]), **where)  # fmt: skip
    return 0


def _place(backend: str, requested: str) -> dict:
    """Sets the backend's device for ``--device`` before Keras starts it (see common)."""
    if backend == "jax":
        common.use_jax_device(requested)
        return common.jax_device_info(requested)
    import tensorflow as tf

    if requested == "cpu":
        tf.config.set_visible_devices([], "GPU")
    gpus = tf.config.list_logical_devices("GPU")
    name = None
    if gpus:
        details = tf.config.experimental.get_device_details(
            tf.config.list_physical_devices("GPU")[0]
        )
        name = details.get("device_name", gpus[0].name)
    kind = common.pick_device(requested, name, "tensorflow")
    return {"device": kind, "device_name": name if kind == "gpu" else "cpu"}


def _device_peak_mb(backend: str, device: str) -> float | None:
    if device != "gpu":
        return None
    if backend == "jax":
        return common.jax_device_peak_mb()
    import tensorflow as tf

    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20


if __name__ == "__main__":
    sys.exit(main())
