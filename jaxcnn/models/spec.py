"""A CNN built from plain data: a list of stages and a head.

The spec is made of dicts, lists, strings and numbers only, so it fits in an
``ml_collections.ConfigDict`` and in JSON. Each stage and head item is a dict
with a ``"type"``; every other key is optional (defaults below)::

    spec = {
        "spatial_dims": 2,                     # 1, 2 or 3 (default 2)
        "kernel_init": "lecun_normal",         # see KERNEL_INITS (default: flax's, lecun_normal)
        "stages": [                            # spatial layers, in order
            {"type": "conv", "features": 32, "kernel": 3, "pool": "max"},
            {"type": "conv", "features": 64, "kernel": 3, "repeat": 2, "norm": "batch"},
            {"type": "pool", "kind": "max", "window": 2},
            {"type": "residual", "features": 64, "blocks": 2, "stride": 2},
            {"type": "dropout", "rate": 0.25},
        ],
        "head": [                              # must start with flatten or global_pool
            {"type": "flatten"},
            {"type": "dense", "features": 64, "activation": "relu"},
            {"type": "dropout", "rate": 0.5},
        ],
        "logit_scale": 1.0,                    # logits are multiplied by this (default 1)
        "classifier_bias": True,               # False: the classifier has no bias (airbench)
    }

The classifier ``Dense(num_classes)`` (named ``"classifier"``) is appended after
the head; logits come out in float32 whatever the computation dtype. A
``logit_scale`` below 1 (airbench uses 1/9) tempers the softmax early in training,
when a fresh classifier is overconfident.

Item keys (defaults):
  conv: features (required), kernel 3, stride 1, padding "VALID", dilation 1,
    groups 1 (or "depthwise"), norm None, norm_momentum 0.9 (BatchNorm's running
    average keeps this much of the old value: 0.9 is PyTorch's 0.1), norm_epsilon
    None (each norm's default), activation "relu", pool None, pool_window 2,
    pool_stride None, pool_padding "VALID", pool_first False (pool before the norm
    and activation), use_bias None,
    space_to_depth None (conv + max pool as one space-to-depth convolution: None
    automatic, True, False; see ``jaxcnn.layers.ConvBlock``), repeat 1 (stride on
    the first repeat, pool after the last), name None.
  pool: kind "max", window 2, stride None, padding "VALID", name None.
  residual: features (required), blocks 1, stride 1, block "basic" or
    "bottleneck", shortcut "B" (1x1 projection) or "A" (subsample + zero channels),
    norm "batch", activation "relu", materialize True (each block's output written
    once on CPU: ``jaxcnn.fast_ops.materialize``), name None (blocks are named
    ``{name}_{j}``).
  dropout: rate (required).
  flatten: (no keys). global_pool: kind "avg" or "max".
  dense: features (required), activation "relu", use_bias True, name None.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from jaxcnn import initializers, shapes
from jaxcnn.dropout import Dropout
from jaxcnn.layers import (
    GLOBAL_POOL_KINDS,
    NORMS,
    POOL_KINDS,
    ConvBlock,
    Flatten,
    GlobalPool,
    Pool,
    activate,
    get_activation,
)
from jaxcnn.models.residual import BottleneckBlock, ResidualBlock

# jaxcnn.initializers gives jax's values drawn flat: XLA:CPU compiles that in a fraction
# of the time (perf_notes item 81).
KERNEL_INITS = {
    "lecun_normal": initializers.lecun_normal(),
    "glorot_uniform": initializers.variance_scaling(1.0, "fan_avg", "uniform"),  # Keras'
    "he_normal": initializers.variance_scaling(2.0, "fan_in", "truncated_normal"),
    # torchvision's ResNet / VGG conv init (kaiming_normal_, mode="fan_out").
    "he_normal_fan_out": initializers.variance_scaling(2.0, "fan_out", "normal"),
    # PyTorch's nn.Conv2d / nn.Linear default (kaiming_uniform_ with a=sqrt(5)):
    # U(+-1/sqrt(fan_in)), variance 1 / (3 fan_in). Under batch norm the weight's scale
    # sets the effective learning rate (lr / |w|^2), so recipes tuned in PyTorch need
    # its init to transfer.
    "torch_default": initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
}


def identity_first(base: nn.initializers.Initializer) -> nn.initializers.Initializer:
    """``base``, with the first ``min(in, out)`` filters of a conv kernel set to the identity.

    Filter ``i`` passes input channel ``i`` through unchanged (a 1 at the kernel's centre,
    0 elsewhere): airbench's "implicit residual" (PyTorch's ``dirac_`` on those filters),
    so a fresh deep stack starts close to a shallower one.

    Examples:
      >>> import jax
      >>> k = identity_first(nn.initializers.normal())(jax.random.PRNGKey(0), (3, 3, 2, 4))
      >>> k[1, 1, :, :2].tolist(), k[0, 0, :, :2].tolist()
      ([[1.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]])
    """

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        kernel = base(key, shape, dtype)
        *spatial, fan_in, fan_out = shape
        n = min(fan_in, fan_out)
        channel = jnp.arange(n)
        centre = tuple(size // 2 for size in spatial)
        identity = jnp.zeros((*spatial, fan_in, n), dtype).at[(*centre, channel, channel)].set(1)
        return kernel.at[..., :n].set(identity)

    return init


# PyTorch's default init with airbench's identity filters.
KERNEL_INITS["torch_default_dirac"] = identity_first(KERNEL_INITS["torch_default"])

_ITEM_DEFAULTS: dict[str, dict[str, Any]] = {
    "conv": {
        "features": None,
        "kernel": 3,
        "stride": 1,
        "padding": "VALID",
        "dilation": 1,
        "groups": 1,
        "norm": None,
        "norm_momentum": 0.9,
        "norm_epsilon": None,
        "activation": "relu",
        "pool": None,
        "pool_window": 2,
        "pool_stride": None,
        "pool_padding": "VALID",
        "pool_first": False,
        "use_bias": None,
        "space_to_depth": None,
        "repeat": 1,
        "name": None,
    },
    "pool": {"kind": "max", "window": 2, "stride": None, "padding": "VALID", "name": None},
    "residual": {
        "features": None,
        "blocks": 1,
        "stride": 1,
        "block": "basic",
        "shortcut": "B",
        "norm": "batch",
        "activation": "relu",
        "materialize": True,
        "name": None,
    },
    "dropout": {"rate": None},
    "flatten": {},
    "global_pool": {"kind": "avg"},
    "dense": {"features": None, "activation": "relu", "use_bias": True, "name": None},
}
STAGE_TYPES = ("conv", "pool", "residual", "dropout")
HEAD_TYPES = ("flatten", "global_pool", "dense", "dropout")
_TOP_KEYS = (
    "spatial_dims",
    "kernel_init",
    "stages",
    "head",
    "logit_scale",
    "classifier_bias",
)


def _plain(value: Any) -> Any:
    """ConfigDict / FrozenDict / list -> plain dicts and tuples (hashable leaves stay)."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(_plain(v) for v in value)
    return value


def _frozen(value: Any) -> Any:
    """Like ``_plain`` but with ``FrozenDict`` mappings, so a CNN can be hashed (jit static)."""
    value = _plain(value)
    if isinstance(value, Mapping):
        return FrozenDict({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, tuple):
        return tuple(_frozen(v) for v in value)
    return value


def _normalize_item(item: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(item, Mapping) or "type" not in item:
        raise ValueError(f"{where}={item!r} must be a dict with a 'type' key; types: {allowed}")
    kind = item["type"]
    if kind not in allowed:
        raise ValueError(f"{where}.type={kind!r} is not valid here; valid: {allowed}")
    defaults = _ITEM_DEFAULTS[kind]
    unknown = sorted(set(item) - set(defaults) - {"type"})
    if unknown:
        raise ValueError(
            f"{where} ({kind}) has unknown keys {unknown}; valid keys: {sorted(defaults)}"
        )
    out = {"type": kind, **copy.deepcopy(defaults), **item}
    for key, value in out.items():
        if value is None and key in ("features", "rate"):
            raise ValueError(f"{where} ({kind}) needs {key!r}")
    if kind == "dropout" and not 0.0 <= out["rate"] < 1.0:
        raise ValueError(f"{where}.rate={out['rate']}; valid: 0 <= rate < 1")
    for key in ("repeat", "blocks"):
        if key in out and (not isinstance(out[key], int) or out[key] < 1):
            raise ValueError(f"{where}.{key}={out[key]!r}; valid: an int >= 1")
    if kind == "residual":
        if out["block"] not in ("basic", "bottleneck"):
            raise ValueError(f"{where}.block={out['block']!r}; valid: 'basic', 'bottleneck'")
        if out["shortcut"] not in ("A", "B"):
            raise ValueError(f"{where}.shortcut={out['shortcut']!r}; valid: 'A', 'B'")
        if not isinstance(out["materialize"], bool):
            raise ValueError(f"{where}.materialize={out['materialize']!r}; valid: True, False")
    if kind == "conv" and not 0.0 <= out["norm_momentum"] < 1.0:
        raise ValueError(f"{where}.norm_momentum={out['norm_momentum']!r}; valid: 0 <= m < 1")
    epsilon = out.get("norm_epsilon") if kind == "conv" else None
    if epsilon is not None and (
        isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not epsilon > 0
    ):
        raise ValueError(f"{where}.norm_epsilon={epsilon!r}; valid: None or a number > 0")
    if kind == "conv" and not isinstance(out["pool_first"], bool):
        raise ValueError(f"{where}.pool_first={out['pool_first']!r}; valid: True, False")
    if kind == "conv" and not (
        out["space_to_depth"] is None or isinstance(out["space_to_depth"], bool)
    ):
        raise ValueError(
            f"{where}.space_to_depth={out['space_to_depth']!r}; valid: None, True, False"
        )
    if "activation" in out:
        get_activation(out["activation"])  # raises on an unknown name
    _check_layer_values(out, where)
    return out


def _check_layer_values(item: dict[str, Any], where: str) -> None:
    """Widths, names and conv / pool geometry of one complete item, checked when the
    spec is read, so a typo names its stage instead of surfacing at ``init``."""
    kind = item["type"]
    features = item.get("features")
    if features is not None and (
        isinstance(features, bool) or not isinstance(features, int) or features < 1
    ):
        raise ValueError(f"{where}.features={features!r}; valid: an int >= 1")
    for key, valid in (("norm", NORMS), ("pool", POOL_KINDS)):
        if kind == "conv" and item[key] is not None and item[key] not in valid:
            raise ValueError(f"{where}.{key}={item[key]!r}; valid: None or one of {valid}")
    if kind in ("pool", "global_pool"):
        valid = POOL_KINDS if kind == "pool" else GLOBAL_POOL_KINDS
        if item["kind"] not in valid:
            raise ValueError(f"{where}.kind={item['kind']!r}; valid: one of {valid}")
    try:
        if kind in ("conv", "residual"):
            # The calculator's own checks; its messages name the field (kernel, ...).
            conv = {"kernel": 3, "padding": "VALID", "dilation": 1} | item
            shapes.ConvSpec(conv["kernel"], conv["stride"], conv["padding"], conv["dilation"])
        if kind == "pool":
            stride = item["window"] if item["stride"] is None else item["stride"]
            shapes.PoolSpec(item["window"], stride, item["padding"])
    except ValueError as error:
        raise ValueError(f"{where} ({kind}): {error}") from error
    if kind == "conv" and item["pool"] is not None:
        window, stride = item["pool_window"], item["pool_stride"]
        try:
            shapes.PoolSpec(window, window if stride is None else stride, item["pool_padding"])
        except ValueError as error:
            raise ValueError(f"{where} (conv): pool_{error}") from error


def normalize_spec(spec: Any) -> dict[str, Any]:
    """Validates a CNN spec and fills in every default.

    Args:
      spec: a mapping (dict, ``ConfigDict``) in the format of this module's docstring.

    Returns:
      A plain dict with keys ``spatial_dims``, ``kernel_init``, ``stages`` and ``head``
      (tuples of complete item dicts) and ``logit_scale``.

    Examples:
      >>> normalize_spec({"stages": [{"type": "conv", "features": 8}]})["head"]
      ({'type': 'global_pool', 'kind': 'avg'},)
    """
    spec = _plain(spec)
    if not isinstance(spec, Mapping):
        raise ValueError(f"spec must be a mapping with keys {_TOP_KEYS}; got {spec!r}")
    unknown = sorted(set(spec) - set(_TOP_KEYS))
    if unknown:
        raise ValueError(f"spec has unknown keys {unknown}; valid keys: {list(_TOP_KEYS)}")
    spatial_dims = spec.get("spatial_dims", 2)
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"spec.spatial_dims={spatial_dims!r}; valid: 1, 2 or 3")
    kernel_init = spec.get("kernel_init")
    if kernel_init is not None and kernel_init not in KERNEL_INITS:
        raise ValueError(
            f"spec.kernel_init={kernel_init!r}; valid: None or one of {list(KERNEL_INITS)}"
        )
    stages = tuple(
        _normalize_item(item, f"spec.stages[{i}]", STAGE_TYPES)
        for i, item in enumerate(spec.get("stages", ()))
    )
    head = spec.get("head") or ({"type": "global_pool"},)
    head = tuple(
        _normalize_item(item, f"spec.head[{i}]", HEAD_TYPES) for i, item in enumerate(head)
    )
    if head[0]["type"] not in ("flatten", "global_pool"):
        raise ValueError(
            f"spec.head[0].type={head[0]['type']!r}: the head must start with 'flatten' or "
            "'global_pool' to leave the spatial axes"
        )
    logit_scale = spec.get("logit_scale", 1.0)
    if (
        isinstance(logit_scale, bool)
        or not isinstance(logit_scale, int | float)
        or not (logit_scale > 0)
    ):
        raise ValueError(f"spec.logit_scale={logit_scale!r}; valid: a number > 0")
    classifier_bias = spec.get("classifier_bias", True)
    if not isinstance(classifier_bias, bool):
        raise ValueError(f"spec.classifier_bias={classifier_bias!r}; valid: True, False")
    return {
        "spatial_dims": spatial_dims,
        "kernel_init": kernel_init,
        "stages": stages,
        "head": head,
        "logit_scale": float(logit_scale),
        "classifier_bias": classifier_bias,
    }


class CNN(nn.Module):
    """A convolutional network described by a spec (see the module docstring).

    Attributes:
      spec: the spec (dict / ConfigDict); validated on first use.
      num_classes: size of the classifier output.
      in_channels: if set, inputs must have this many channels.
      dtype: computation dtype (e.g. ``jnp.bfloat16``); logits are float32.
      param_dtype: parameter dtype.

    Examples:
      >>> spec = {"stages": [{"type": "conv", "features": 8, "pool": "max"}],
      ...         "head": [{"type": "flatten"}]}
      >>> model = CNN(spec, num_classes=10, in_channels=1)
      >>> x = jnp.zeros((2, 28, 28, 1))
      >>> variables = model.init(jax.random.key(0), x, train=False)
      >>> model.apply(variables, x, train=False).shape
      (2, 10)
    """

    spec: Any
    num_classes: int = 10
    in_channels: int | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        # A frozen copy: the module stays hashable (e.g. as a jit static argument) and a
        # caller's later edits to their dict cannot change a built model.
        object.__setattr__(self, "spec", _frozen(self.spec))
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        spec = normalize_spec(self.spec)
        rank = spec["spatial_dims"]
        if x.ndim != rank + 2:
            expected = "(batch, " + ", ".join(["spatial"] * rank) + ", channels)"
            raise ValueError(
                f"CNN: a {rank}-D network expects input {expected}; got shape {tuple(x.shape)}"
            )
        if self.in_channels is not None and x.shape[-1] != self.in_channels:
            raise ValueError(
                f"CNN: expected input with {self.in_channels} channels, shape "
                f"{(*x.shape[:-1], self.in_channels)}; got shape {tuple(x.shape)}"
            )
        common = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        dense_init = initializers.lecun_normal()  # flax's default, drawn flat
        init = KERNEL_INITS.get(spec["kernel_init"])
        first_conv = True
        for item in spec["stages"]:
            kind = item["type"]
            if kind == "conv":
                for r in range(item["repeat"]):
                    last = r == item["repeat"] - 1
                    name = item["name"]
                    if name is not None and item["repeat"] > 1:
                        name = f"{name}_{r}"
                    x = ConvBlock(
                        item["features"],
                        (item["kernel"],) * rank
                        if isinstance(item["kernel"], int)
                        else tuple(item["kernel"]),
                        stride=item["stride"] if r == 0 else 1,
                        padding=item["padding"],
                        dilation=item["dilation"],
                        feature_group_count=item["groups"],
                        in_channels=self.in_channels if first_conv else None,
                        norm=item["norm"],
                        norm_momentum=item["norm_momentum"],
                        norm_epsilon=item["norm_epsilon"],
                        activation=item["activation"],
                        pool=item["pool"] if last else None,
                        pool_window=item["pool_window"],
                        pool_stride=item["pool_stride"],
                        pool_padding=item["pool_padding"],
                        pool_first=item["pool_first"],
                        use_bias=item["use_bias"],
                        space_to_depth=item["space_to_depth"] if last else None,
                        kernel_init=init,
                        name=name,
                        **common,
                    )(x, train)
                    first_conv = False
            elif kind == "pool":
                window = item["window"]
                window = (window,) * rank if isinstance(window, int) else tuple(window)
                x = Pool(item["kind"], window, item["stride"], item["padding"], name=item["name"])(
                    x
                )
            elif kind == "residual":
                block_cls = BottleneckBlock if item["block"] == "bottleneck" else ResidualBlock
                for j in range(item["blocks"]):
                    name = None if item["name"] is None else f"{item['name']}_{j}"
                    x = block_cls(
                        item["features"],
                        stride=item["stride"] if j == 0 else 1,
                        shortcut=item["shortcut"],
                        norm=item["norm"],
                        activation=item["activation"],
                        materialize_output=item["materialize"],
                        kernel_init=init,
                        name=name,
                        **common,
                    )(x, train)
            else:  # dropout
                x = Dropout(item["rate"], deterministic=not train)(x)
        try:
            return self._head(spec, x, train, common, dense_init)
        except flax.errors.ScopeParamShapeError as error:
            # Flatten makes the first dense layer's width depend on the image size.
            raise ValueError(
                f"{type(self).__name__}: input of shape {tuple(x.shape[1:])} after the stages "
                "does not fit the dense head's weights, which were made for the input size "
                "used at init; pass images of that size (a 'global_pool' head takes any "
                f"size). Flax: {error}"
            ) from None

    def _head(self, spec, x, train, common, dense_init):
        for item in spec["head"]:
            kind = item["type"]
            if kind == "flatten":
                x = Flatten()(x)
            elif kind == "global_pool":
                x = GlobalPool(item["kind"])(x)
            elif kind == "dense":
                x = nn.Dense(
                    item["features"],
                    use_bias=item["use_bias"],
                    name=item["name"],
                    kernel_init=dense_init,
                    **common,
                )(x)
                x = activate(item["activation"], x)
            else:  # dropout
                x = Dropout(item["rate"], deterministic=not train)(x)
        logits = nn.Dense(
            self.num_classes,
            use_bias=spec["classifier_bias"],
            name="classifier",
            kernel_init=dense_init,
            **common,
        )(x)
        if spec["logit_scale"] != 1.0:
            logits = logits * spec["logit_scale"]
        return logits.astype(jnp.float32)


def from_spec(spec: Any, **kwargs: Any) -> CNN:
    """Validates ``spec`` now (errors at build time, not first call) and returns a CNN.

    Args:
      spec: the spec, see this module's docstring.
      **kwargs: :class:`CNN` attributes (``num_classes``, ``in_channels``, ``dtype``, ...).

    Returns:
      The :class:`CNN` module.

    Examples:
      >>> from_spec({"stages": [{"type": "conv", "features": 4}]}, num_classes=3).num_classes
      3
    """
    normalize_spec(spec)
    return CNN(spec, **kwargs)
