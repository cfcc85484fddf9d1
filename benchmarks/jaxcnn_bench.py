"""The jaxcnn runner: jaxcnn's model and training step, under the common protocol.

By default it does what ``jaxcnn.train`` does on a CPU: ``jaxcnn.xla_flags.configure_cpu()``
before JAX starts, then the zoo model (``jaxcnn.models.get(net, dtype=...)``) trained by
jaxcnn's jit step. While a piece of jaxcnn is missing (the zoo lacks the net, or
``jaxcnn.train`` has no ``train_step`` yet) it falls back to the benchmark's own Flax net
with ``jaxcnn.fast_ops`` pooling (``pool=fused``: conv without bias, pool, bias, ReLU) and
the minimal loop, and says so in the ``impl`` field of its result.

``--variant`` switches one thing at a time for experiments, as comma-separated key=value:

* ``flags=default|none``: jaxcnn's CPU XLA flags and its XLA:CPU scheduler for the step
  (``jaxcnn.xla_scheduler``, ``JAXCNN_XLA_SCHEDULER``) on (default), or XLA's defaults;
* ``pool=fused|fast_relu|fast|nn``: the stand-in net's pooling (see benchmarks/nets_flax.py);
* ``conv=xla|im2col``: the stand-in net's convolution (``lax`` or the im2col loser);
* ``impl=auto|standin``: force the stand-in (and the minimal loop) even when the zoo has
  the net;
* ``step=engine|minimal``: jaxcnn.train's ``make_train_step`` (default) or the minimal
  loop of ``flax_minimal.py``;
* ``materialize=on|off``: the residual blocks write their outputs once
  (``jaxcnn.fast_ops.materialize``, default) or leave fusion to XLA (``off``);
* ``s2d=auto|on|off``: the zoo net's conv + max-pool blocks as one space-to-depth
  convolution (``jaxcnn.conv_pool``): automatic (default), wherever it applies, never.

Both rewrite the zoo model's spec (its ``residual`` / pooled ``conv`` items).

* ``splits=auto|N``: jaxcnn.train's ``batch_splits`` (``auto`` = 0, the default:
  ``jaxcnn.train.auto_batch_splits``);
* ``backend=auto|xla|onednn``: who runs the convolutions (``jaxcnn.conv_backend``; the
  default ``auto`` honours ``JAXCNN_CONV_BACKEND``). The result's ``impl`` names the one
  that ran.
* ``crop=on|off``: fused conv -> max-pool blocks convolve only the outputs the pool reads
  (``jaxcnn.conv_pool.conv_for_tiled_pool``, default) or every output (``off``, an
  ablation: the library has no switch for it, the values are the same).

    python benchmarks/jaxcnn_bench.py --net cifar_cnn --variant flags=none,pool=nn
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

VARIANT_DEFAULTS = {
    "flags": "default", "pool": "fused", "conv": "xla", "impl": "auto", "step": "engine",
    "materialize": "on", "s2d": "auto", "splits": "auto", "backend": "auto", "crop": "on",
}  # fmt: skip
SPEC_SWITCHES = {  # variant key -> (spec item type, item key, {value: spec value})
    "materialize": ("residual", "materialize", {"on": True, "off": False}),
    "s2d": ("conv", "space_to_depth", {"auto": None, "on": True, "off": False}),
}


def parse_variant(text: str) -> dict[str, str]:
    """Parses ``"flags=none,pool=nn"`` into a dict over ``VARIANT_DEFAULTS``.

    Args:
      text: comma-separated ``key=value`` pairs (may be empty).

    Returns:
      The defaults updated with the given pairs.

    Raises:
      ValueError: for an unknown key or a pair without ``=``.

    Examples:
      >>> parse_variant("pool=nn")["pool"], parse_variant("")["flags"]
      ('nn', 'default')
    """
    options = dict(VARIANT_DEFAULTS)
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in options:
            raise ValueError(
                f"--variant item {item!r} must be key=value with key in {sorted(options)}"
            )
        options[key] = value
    return options


def check_variant(options: dict[str, str]) -> None:
    """Raises ValueError naming the first ``--variant`` value its key does not accept.

    Examples:
      >>> check_variant(parse_variant("splits=2,s2d=off"))
      >>> check_variant(parse_variant("crop=maybe"))
      Traceback (most recent call last):
      ...
      ValueError: --variant crop='maybe'; valid: on, off
    """
    for key, (_, _, values) in SPEC_SWITCHES.items():
        if options[key] not in values:
            raise ValueError(f"--variant {key}={options[key]!r}; valid: {', '.join(values)}")
    splits = options["splits"]
    if not (splits == "auto" or splits.isdigit() and int(splits) >= 1):
        raise ValueError(f"--variant splits={splits!r}; valid: auto or an int >= 1")
    if options["crop"] not in ("on", "off"):
        raise ValueError(f"--variant crop={options['crop']!r}; valid: on, off")


def _zoo_model(net: str, dtype: str):
    """jaxcnn's zoo model for ``net``, or None (with the reason) when the zoo lacks it."""
    try:
        import jax.numpy as jnp

        from jaxcnn import models
    except ImportError as error:
        return None, f"jaxcnn.models not importable ({error})"
    if not hasattr(models, "get") or net not in models.names():
        return None, f"jaxcnn.models has no {net!r}"
    compute = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    return models.get(net, dtype=compute), "zoo"


def _switched(model, options: dict[str, str]):
    """The zoo model with its spec items rewritten by the ``SPEC_SWITCHES`` variants.

    The default run gets the zoo's model untouched.
    """
    changed = [key for key in SPEC_SWITCHES if options[key] != VARIANT_DEFAULTS[key]]
    if model is None or not hasattr(model, "spec") or not changed:
        return model
    from jaxcnn.models.spec import normalize_spec

    spec = normalize_spec(model.spec)  # plain dicts, every default filled in
    for key in changed:
        kind, item_key, values = SPEC_SWITCHES[key]
        for item in spec["stages"]:
            if item["type"] == kind and (kind != "conv" or item["pool"] == "max"):
                item[item_key] = values[options[key]]
    return model.clone(spec=spec)


def _train_engine():
    """``(create_train_state, make_train_step, base_config)`` from jaxcnn.train, or a reason."""
    try:
        from jaxcnn.train import base_config, create_train_state, make_train_step
    except ImportError as error:
        return None, f"jaxcnn.train not usable ({error})"
    return (create_train_state, make_train_step, base_config), "jaxcnn.train"


def run_with_engine(args, model, engine, batch_splits: int = 0, scheduler: bool = True,
                    **extra) -> None:  # fmt: skip
    """Times jaxcnn.train's own jitted train_step (uint8 batches, normalisation inside).

    ``scheduler``: compile it with the XLA:CPU scheduler ``fit`` picks
    (``jaxcnn.xla_scheduler``), or with XLA's default (``flags=none``).
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcnn import xla_scheduler

    create_train_state, make_train_step, base_config = engine
    images, labels = common.random_data(args.net, args.steps * args.batch, args.seed)
    images = (images * 255).astype(np.uint8)  # the engine takes uint8 like the fit loop
    batches = [
        {"image": jnp.asarray(images[i : i + args.batch]),
         "label": jnp.asarray(labels[i : i + args.batch])}
        for i in range(0, len(images), args.batch)
    ]  # fmt: skip
    config = base_config()
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.schedule.name = "constant"
    config.num_epochs = 1
    channels = images.shape[-1]
    state = create_train_state(
        model, config, jax.random.key(args.seed), (1, *images.shape[1:]), steps_per_epoch=1
    )
    batch_norm = state.has_batch_norm
    options = (
        xla_scheduler.train_step_options(args.dtype, batch_norm=batch_norm) if scheduler else {}
    )
    train_step = jax.jit(
        make_train_step(model, mean=np.full(channels, 0.5, np.float32),
                        std=np.full(channels, 0.25, np.float32), batch_splits=batch_splits),
        donate_argnums=0,
        compiler_options=options,  # as fit compiles its step
    )  # fmt: skip
    holder = [state]

    def step(i):
        holder[0], sums = train_step(holder[0], batches[i % len(batches)])
        return sums

    measured = common.time_loop(args, step, jax.block_until_ready)
    common.emit(
        "jaxcnn",
        args,
        measured,
        params=sum(p.size for p in jax.tree.leaves(holder[0].params)),
        versions={"jax": jax.__version__, "jaxcnn": __import__("jaxcnn").__version__},
        xla_flags=__import__("os").environ.get("XLA_FLAGS", ""),
        step_compiler_options=options,
        device_peak_mb=common.jax_device_peak_mb(),
        **common.jax_device_info(args.device),
        **extra,
    )
    del jnp


def main(argv=None) -> int:
    args = common.parse_args("jaxcnn", argv)
    options = parse_variant(args.variant)
    check_variant(options)  # before anything is configured or traced
    from jaxcnn import xla_flags  # imports jax but starts no backend

    common.use_jax_device(args.device)  # before the flags: --device cpu makes them apply
    from jaxcnn import cpu_malloc

    def scratch():  # the step's scratch of the zoo model it will time, before the backend
        zoo = None if options["impl"] == "standin" else _zoo_model(args.net, args.dtype)[0]
        zoo = _switched(zoo, options)
        if zoo is not None:
            return cpu_malloc.scratch_estimate(zoo, common.NETS[args.net][0], args.batch)
        return None

    added = xla_flags.configure_cpu(scratch_bytes=scratch) if options["flags"] == "default" else ()
    malloc = cpu_malloc.state()  # what configure_cpu did to glibc malloc (item 47)
    try:
        common.jax_device_info(args.device)  # starts the backend, with the flags in place
    except common.DeviceUnavailable as error:
        common.emit_unsupported("jaxcnn", args, str(error))
        return 0

    from benchmarks import flax_minimal, nets_flax
    from jaxcnn import conv_backend, conv_pool, onednn

    splits = options["splits"]
    if options["crop"] == "off":  # every conv output computed, as before session 17
        conv_pool.conv_for_tiled_pool = lambda call, window: None
    if options["backend"] != "auto":  # auto: the environment (JAXCNN_CONV_BACKEND) decides
        conv_backend.set_conv_backend(options["backend"])
    convolutions = f"convolutions: {conv_backend.resolved_backend()}"
    avx2_rules = conv_backend.conv_backend() == "auto" and conv_backend.avx2_without_avx512_here()
    if convolutions.endswith("xla") and avx2_rules and onednn.available():
        convolutions += (
            " (AVX2-only CPU: 3x3 stride-1 from 16 channels as Winograd,"
            " other narrow ones on oneDNN)"
        )

    model, impl = (None, "stand-in forced") if options["impl"] == "standin" else (None, "")
    if options["impl"] != "standin":
        model, impl = _zoo_model(args.net, args.dtype)
        model = _switched(model, options)
    if model is None:
        model = nets_flax.build(args.net, args.dtype, pool=options["pool"], conv=options["conv"])
        impl = f"benchmarks/nets_flax.py pool={options['pool']} conv={options['conv']} ({impl})"
        convolutions = "convolutions: lax (the stand-in net)"
    engine, engine_why = (None, "minimal loop forced") if options["step"] == "minimal" else (
        _train_engine())  # fmt: skip
    if engine is not None and options["impl"] != "standin":
        run_with_engine(args, model, engine, impl=f"{impl}; step: {engine_why}; {convolutions}",
                        batch_splits=0 if splits == "auto" else int(splits),
                        scheduler=options["flags"] == "default",
                        flags_added=list(added), malloc=malloc)  # fmt: skip
    else:
        impl = f"{impl}; step: minimal loop ({engine_why}); {convolutions}"
        flax_minimal.run(args, model, "jaxcnn", impl=impl, flags_added=list(added), malloc=malloc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
