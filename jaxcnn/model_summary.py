"""The layer table of a Linen model: output shape, parameters, FLOPs, receptive field.

``summary(model, input_shape)`` traces the model abstractly (``jax.eval_shape``:
nothing is computed or allocated, so VGG-16 at 224x224 costs well under a second),
records every module call with ``flax.linen.intercept_methods``, and returns a
:class:`SummaryTable` that prints like Keras' ``model.summary()`` and iterates as
data.

Conventions, stated once:
  * **Parameters are counted once.** Each parameter array belongs to exactly one row:
    the deepest printed row whose path contains it. The blocks of
    :mod:`jaxcnn.layers` (``ConvBlock``, ``Pool``, ``GlobalPool``, ``Flatten``) are one
    row each (their inner conv / norm are not printed); other modules print their
    children. So the ``Params`` column sums to the total — no double counting of
    nested modules (flax#2930).
  * **FLOPs = 2 x multiply-accumulates (MACs)** of convolutions, transposed
    convolutions and dense layers, counted exactly from kernel and output shapes
    (the full kernel at every output position, padding included). Bias, norm,
    activation, pooling and residual additions are not counted (they are
    O(activations), small next to the MACs).
  * **Receptive field** (per spatial axis, in input pixels) and **jump** (input pixels
    between neighbouring outputs) come from :func:`jaxcnn.shapes.receptive_field`
    along the path of convolutions and pools that produced the row's output; where
    branches merge (a residual addition) the larger field is reported. Pools count as
    modules or as Flax's functions (``nn.max_pool``); after a layer with no formula
    (a transposed convolution) the field is ``None``, printed ``-``.
  * Trainable = the ``params`` collection; non-trainable = every other collection
    (``batch_stats``: BatchNorm running means and variances).
  * Output shapes are cross-checked against ``jax.eval_shape`` of ``model.apply``
    with ``capture_intermediates``; a mismatch raises ``RuntimeError``.

Examples:
    >>> from jaxcnn import models
    >>> table = summary(models.get("mnist_cnn"), (28, 28, 1))
    >>> table.trainable_params
    34826
    >>> [row.output_shape for row in table][:2]
    [(1, 13, 13, 32), (1, 5, 5, 64)]
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import flax.linen as nn
import flax.linen.pooling as flax_pooling
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import shapes
from jaxcnn.layers import ConvBlock, Flatten, GlobalPool, Pool

# jaxcnn layers shown as one row each (their inner flax modules are implementation).
ATOMIC_LAYERS = (ConvBlock, Pool, GlobalPool, Flatten)
FLOPS_CONVENTION = "FLOPs = 2 x multiply-accumulates of conv / dense layers"


@dataclass(frozen=True)
class SummaryRow:
    """One module call of the model.

    Attributes:
      path: module path joined by ``/`` (e.g. ``"layer1_0/conv1"``).
      type: the module's class name.
      depth: nesting depth (1 = child of the model).
      output_shape: shape of the output (the first array if it returns several).
      params: trainable parameters counted on this row (see the module docstring).
      non_trainable: non-trainable variables (batch statistics) counted on this row.
      flops: 2 x MACs of the convs / dense layers in this call (a module called twice
        has two rows; its parameters are counted on the first, its FLOPs on both).
      receptive_field: receptive-field size per spatial axis, or ``None`` when the
        output has no spatial axes.
      jump: input pixels between neighbouring output pixels, per axis, or ``None``.
    """

    path: str
    type: str
    depth: int
    output_shape: tuple[int, ...]
    params: int
    non_trainable: int
    flops: int
    receptive_field: tuple[int, ...] | None
    jump: tuple[int, ...] | None

    def as_dict(self) -> dict[str, Any]:
        """The row as a plain dict (for JSON or a DataFrame)."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class SummaryTable:
    """What :func:`summary` returns: iterate for rows, ``str()`` for the table.

    Attributes:
      model_type: class name of the model.
      input_shape: the traced input shape, batch included.
      input_dtype: its dtype name.
      output_shape: shape of the model output (first array).
      rows: one :class:`SummaryRow` per printed module call, in call order.
      trainable_params: size of the ``params`` collection.
      non_trainable_params: size of every other collection (``batch_stats``).
      trainable_bytes: memory of the ``params`` arrays.
      non_trainable_bytes: memory of the other collections.
      flops: total 2 x MACs for one forward pass of ``input_shape``.
    """

    model_type: str
    input_shape: tuple[int, ...]
    input_dtype: str
    output_shape: tuple[int, ...]
    rows: tuple[SummaryRow, ...]
    trainable_params: int
    non_trainable_params: int
    trainable_bytes: int
    non_trainable_bytes: int
    flops: int

    @property
    def total_params(self) -> int:
        """Trainable + non-trainable."""
        return self.trainable_params + self.non_trainable_params

    @property
    def total_bytes(self) -> int:
        """Memory of all variables."""
        return self.trainable_bytes + self.non_trainable_bytes

    def __iter__(self) -> Iterator[SummaryRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> SummaryRow:
        return self.rows[index]

    def as_dicts(self) -> list[dict[str, Any]]:
        """Rows as plain dicts."""
        return [row.as_dict() for row in self.rows]

    def __str__(self) -> str:
        return _render(self)


def _format_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _format_count(n: int) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.2f} {suffix}"
    return str(n)


def _render(table: SummaryTable) -> str:
    header = ("Layer (path)", "Type", "Output shape", "Params", "FLOPs", "Receptive field")
    body = []
    for row in table.rows:
        rf = "-"
        if row.receptive_field is not None:
            rf = "x".join(map(str, row.receptive_field)) + " /" + "x".join(map(str, row.jump))
        body.append(
            (
                "  " * (row.depth - 1) + row.path.rsplit("/", 1)[-1] if row.depth > 1 else row.path,
                row.type,
                str(row.output_shape),
                f"{row.params:,}",
                _format_count(row.flops) if row.flops else "-",
                rf,
            )
        )
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    right = (False, False, False, True, True, False)

    def line(cells):
        aligned = zip(cells, widths, right, strict=True)
        parts = [c.rjust(w) if r else c.ljust(w) for c, w, r in aligned]
        return "  ".join(parts).rstrip()

    rule = "=" * len(line(header))
    lines = [
        f'Model: "{table.model_type}"   input {table.input_shape} {table.input_dtype}'
        f" -> output {table.output_shape}",
        rule,
        line(header),
        rule.replace("=", "-"),
        *(line(cells) for cells in body),
        rule,
        f"Total params: {table.total_params:,} ({_format_bytes(table.total_bytes)})",
        f"Trainable params: {table.trainable_params:,} ({_format_bytes(table.trainable_bytes)})",
        f"Non-trainable params (batch_stats): {table.non_trainable_params:,} "
        f"({_format_bytes(table.non_trainable_bytes)})",
        f"FLOPs: {table.flops:,} ({_format_count(table.flops)}; "
        f"{FLOPS_CONVENTION}, batch {table.input_shape[0]})",
        "Receptive field: size per axis / jump per axis, in input pixels",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- tracing
@dataclass
class _Call:
    path: tuple[str, ...]
    module: nn.Module
    input_shape: tuple[int, ...] | None
    output: Any = None
    rf_path: tuple | None = None  # conv/pool specs that produced the output
    children: list = field(default_factory=list)


def _first_array(tree: Any) -> Any:
    leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, "shape")]
    return leaves[0] if leaves else None


def _layer_specs(module: nn.Module, rank: int) -> list | None:
    """The module's own conv / pool specs, or ``None`` if it is not a spatial layer."""
    if isinstance(module, ConvBlock):
        pool = module.pool_spec(rank)
        return [module.conv_spec(rank)] + ([pool] if pool is not None else [])
    if isinstance(module, Pool):
        window = module.window
        window = (window,) * rank if isinstance(window, int) else tuple(window)
        stride = window if module.stride is None else module.stride
        return [shapes.PoolSpec(window, stride, module.padding)]
    if isinstance(module, nn.Conv):
        return [
            shapes.ConvSpec(
                module.kernel_size,
                module.strides or 1,
                _hashable_padding(module.padding),
                module.kernel_dilation or 1,
            )
        ]
    return None


def _hashable_padding(padding):
    """Flax takes lists of pairs; the calculator's specs want them hashable."""
    if isinstance(padding, str | int):
        return padding
    return tuple(tuple(p) if isinstance(p, Sequence) else p for p in padding)


class _Recorder:
    """Records module calls and the conv/pool path behind every tensor seen."""

    def __init__(self, input_array, spatial_rank: int):
        self.rank = spatial_rank
        self.calls: list[_Call] = []
        self.stack: list[_Call] = []
        # id -> (array, specs). The array is kept so its id cannot be reused.
        self.tensors: dict[int, tuple[Any, tuple]] = {id(input_array): (input_array, ())}
        self.input_spatial = tuple(input_array.shape[1:-1])
        self.order: list[int] = [id(input_array)]
        self.fields: dict[tuple, shapes.ReceptiveField] = {}

    def _spatial(self, array) -> tuple[int, ...] | None:
        if array is None or array.ndim != self.rank + 2:
            return None
        return tuple(array.shape[1:-1])

    def _lookup(self, array) -> tuple | None:
        if array is None:
            return None
        if id(array) in self.tensors:
            return self.tensors[id(array)][1]
        # Made by a plain function (activation, add): take the latest tensor of the
        # same spatial shape, since elementwise ops keep the shape. If that tensor's
        # path is unknown (a transposed conv's output), so is this one's: an older
        # tensor of the same shape would be a guess from another branch.
        spatial = self._spatial(array)
        for key in reversed(self.order):
            known, specs = self.tensors[key]
            if self._spatial(known) == spatial:
                return specs
        return None

    def _store(self, array, specs) -> None:
        if array is not None and id(array) not in self.tensors:
            self.order.append(id(array))
        if array is not None:
            self.tensors[id(array)] = (array, specs)

    def record_pool_function(self, inputs, output, window_shape, strides, padding) -> None:
        """Extends the path by a pool called as a function (``nn.max_pool``,
        ``nn.avg_pool``), which no module call shows: without it a stride-1 SAME pool
        would be missed and a strided one would cut the path."""
        if self._spatial(inputs) is None or self._spatial(output) is None:
            return
        in_specs = self._lookup(inputs)
        if in_specs is None:
            self._store(output, None)
            return
        pool = shapes.PoolSpec(
            tuple(window_shape),
            None if strides is None else tuple(strides),
            _hashable_padding(padding),
        )
        self._store(output, (*in_specs, pool))

    def field(self, specs: tuple) -> shapes.ReceptiveField:
        """The last layer's receptive field along ``specs`` (cached: paths share prefixes
        and a ResNet asks for hundreds of them)."""
        if specs not in self.fields:
            self.fields[specs] = shapes.receptive_field(list(specs), self.input_spatial)[-1]
        return self.fields[specs]

    def _rf_size(self, specs) -> int:
        return math.prod(self.field(specs).size) if specs else 1

    def __call__(self, next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        module = context.module
        x = _first_array((args, kwargs))
        call = _Call(tuple(module.path), module, None if x is None else tuple(x.shape))
        if self.stack:
            self.stack[-1].children.append(call)
        self.calls.append(call)
        self.stack.append(call)
        start = len(self.order)
        try:
            out = next_fun(*args, **kwargs)
        finally:
            self.stack.pop()
        call.output = out
        y = _first_array(out)
        in_specs = self._lookup(x)
        own = _layer_specs(module, self.rank) if self._spatial(x) is not None else None
        if y is None or self._spatial(y) is None:
            specs = None  # flattened / pooled away: no receptive field per axis
        elif own is not None and in_specs is not None:
            specs = tuple(in_specs) + tuple(own)
        else:
            # A container (e.g. a residual block) or an elementwise module: the largest
            # field among same-shaped tensors made inside it, else the input's.
            made = [self.tensors[k][1] for k in self.order[start:]]
            made = [
                s
                for k, s in zip(self.order[start:], made, strict=True)
                if s is not None and self._spatial(self.tensors[k][0]) == self._spatial(y)
            ]
            if made:
                specs = max(made, key=self._rf_size)
            elif self._spatial(y) == self._spatial(x):
                specs = in_specs
            else:
                # It changed the spatial shape in a way the calculator has no spec for
                # (a transposed convolution, an upsampling): unknown, not a guess.
                specs = None
        self._store(y, specs)
        call.rf_path = specs
        return out


@contextlib.contextmanager
def _recording_pool_functions(recorder: _Recorder):
    """Within: Flax's pooling functions report their windows to ``recorder``.

    ``nn.max_pool``, ``nn.avg_pool`` and ``nn.min_pool`` all call
    ``flax.linen.pooling.pool`` by its module-level name, so swapping that one name
    sees them all (the Flax examples pool this way, not with a module)."""
    original = flax_pooling.pool

    def pool(inputs, init, reduce_fn, window_shape, strides=None, padding="VALID"):
        output = original(inputs, init, reduce_fn, window_shape, strides, padding)
        recorder.record_pool_function(inputs, output, window_shape, strides, padding)
        return output

    flax_pooling.pool = pool
    try:
        yield
    finally:
        flax_pooling.pool = original


# ----------------------------------------------------------------------------- counting
def _flatten_variables(variables) -> list[tuple[str, tuple[str, ...], Any]]:
    """(collection, module path, leaf) for every variable."""
    out = []
    for collection, tree in variables.items():
        for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            names = tuple(str(getattr(k, "key", k)) for k in key_path)
            out.append((collection, names[:-1], leaf))
    return out


def _macs(call: _Call, variables) -> int:
    """Multiply-accumulates of a flax Conv / ConvTranspose / Dense call."""
    module = call.module
    if not isinstance(module, nn.Conv | nn.ConvTranspose | nn.Dense):
        return 0
    kernel = variables.get("params", {})
    for name in call.path:
        kernel = kernel[name]
    kernel = kernel["kernel"]
    if isinstance(module, nn.ConvTranspose):
        # Every input pixel is multiplied with the whole kernel.
        return math.prod(call.input_shape[:-1]) * math.prod(kernel.shape)
    y = _first_array(call.output)
    return math.prod(y.shape[:-1]) * math.prod(kernel.shape)


def _is_prefix(prefix: tuple, path: tuple) -> bool:
    return path[: len(prefix)] == prefix


def _visible(calls: list[_Call]) -> list[_Call]:
    """Calls that get a row: all but the root and the insides of atomic layers."""
    hidden_under: list[tuple] = []
    rows = []
    for call in calls:
        inside = any(len(call.path) > len(p) and _is_prefix(p, call.path) for p in hidden_under)
        if not call.path or inside:
            continue
        rows.append(call)
        if isinstance(call.module, ATOMIC_LAYERS):
            hidden_under.append(call.path)
    return rows


def _owner(path: tuple, row_paths: list[tuple]) -> tuple | None:
    best = None
    for candidate in row_paths:
        if _is_prefix(candidate, path) and (best is None or len(candidate) > len(best)):
            best = candidate
    return best


def _default_apply_kwargs(model: nn.Module, apply_kwargs: dict) -> dict:
    if "train" not in apply_kwargs:
        try:
            if "train" in inspect.signature(type(model).__call__).parameters:
                return {**apply_kwargs, "train": False}
        except (TypeError, ValueError):
            pass
    return apply_kwargs


def parse_input_shape(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"224x224x3"`` (or a sequence of ints) -> ``(224, 224, 3)``.

    Args:
      text: sizes joined by ``x`` or ``,``, or a sequence of ints.

    Returns:
      The shape as a tuple of positive ints.

    Examples:
      >>> parse_input_shape("28x28x1")
      (28, 28, 1)
    """
    parts = text.replace(",", "x").lower().split("x") if isinstance(text, str) else text
    try:
        shape = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        shape = ()
    if not shape or any(s < 1 for s in shape):
        raise ValueError(
            f"input_shape={text!r}; valid: positive sizes without the batch axis, "
            "e.g. '28x28x1' or (28, 28, 1)"
        )
    return shape


def summary(
    model: nn.Module,
    input_shape: str | Sequence[int],
    *,
    batch_size: int = 1,
    dtype: Any = jnp.float32,
    **apply_kwargs: Any,
) -> SummaryTable:
    """The layer table of ``model`` for inputs of ``input_shape``.

    Args:
      model: a Flax Linen module taking ``(batch, *spatial, channels)`` input.
      input_shape: one example's shape, no batch axis: ``(28, 28, 1)`` or ``"28x28x1"``.
      batch_size: batch size of the traced input (FLOPs and shapes scale with it).
      dtype: input dtype.
      **apply_kwargs: extra arguments of ``model.__call__``; ``train=False`` is passed
        by default when the model takes ``train``.

    Returns:
      A :class:`SummaryTable`; ``print(table)`` for the table, iterate for rows.

    Examples:
      >>> from jaxcnn import models
      >>> table = summary(models.get("resnet20"), "32x32x3")
      >>> table.trainable_params, table.non_trainable_params
      (269722, 1376)
    """
    shape = (int(batch_size), *parse_input_shape(input_shape))
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}; valid: an int >= 1")
    spec = jax.ShapeDtypeStruct(shape, jnp.dtype(dtype))
    kwargs = _default_apply_kwargs(model, apply_kwargs)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    recorder: _Recorder | None = None

    def init(x):
        nonlocal recorder
        recorder = _Recorder(x, len(shape) - 2)
        with nn.intercept_methods(recorder), _recording_pool_functions(recorder):
            return model.init(rngs, x, **kwargs)

    variables = jax.eval_shape(init, spec)
    variables = dict(variables)
    calls = _visible(recorder.calls)
    _cross_check(model, variables, spec, kwargs, recorder.calls)

    row_paths = []
    for call in calls:
        if call.path not in row_paths:
            row_paths.append(call.path)
    params = {p: 0 for p in row_paths}
    non_trainable = {p: 0 for p in row_paths}
    orphans = {"params": 0, "other": 0}
    for collection, path, leaf in _flatten_variables(variables):
        owner = _owner(path, row_paths)
        size = math.prod(leaf.shape)
        target = params if collection == "params" else non_trainable
        if owner is None:
            orphans["params" if collection == "params" else "other"] += size
        else:
            target[owner] += size
    visible_ids = {id(call) for call in calls}

    def call_flops(call: _Call) -> int:
        # FLOPs belong to a call (a shared module called twice computes twice); a row
        # also carries the FLOPs of its hidden insides (a ConvBlock's conv).
        hidden = [c for c in call.children if id(c) not in visible_ids]
        return 2 * _macs(call, variables) + sum(call_flops(c) for c in hidden)

    rows, seen = [], set()
    if orphans["params"] or orphans["other"]:
        rows.append(
            SummaryRow(
                "(own variables)",
                type(model).__name__,
                1,
                (),
                orphans["params"],
                orphans["other"],
                0,
                None,
                None,
            )
        )
    for call in calls:
        first = call.path not in seen
        seen.add(call.path)
        y = _first_array(call.output)
        rf = jump = None
        if call.rf_path is not None:
            if call.rf_path:
                field_ = recorder.field(call.rf_path)
                rf, jump = tuple(field_.size), tuple(field_.jump)
            else:
                rf = jump = (1,) * (len(shape) - 2)
        rows.append(
            SummaryRow(
                path="/".join(call.path),
                type=type(call.module).__name__,
                depth=len(call.path),
                output_shape=() if y is None else tuple(y.shape),
                params=params[call.path] if first else 0,
                non_trainable=non_trainable[call.path] if first else 0,
                flops=call_flops(call),
                receptive_field=rf,
                jump=jump,
            )
        )
    leaves = _flatten_variables(variables)
    out = _first_array(recorder.calls[0].output) if recorder.calls else None
    return SummaryTable(
        model_type=type(model).__name__,
        input_shape=shape,
        input_dtype=jnp.dtype(dtype).name,
        output_shape=() if out is None else tuple(out.shape),
        rows=tuple(rows),
        trainable_params=sum(math.prod(x.shape) for c, _, x in leaves if c == "params"),
        non_trainable_params=sum(math.prod(x.shape) for c, _, x in leaves if c != "params"),
        trainable_bytes=sum(x.size * x.dtype.itemsize for c, _, x in leaves if c == "params"),
        non_trainable_bytes=sum(x.size * x.dtype.itemsize for c, _, x in leaves if c != "params"),
        flops=sum(row.flops for row in rows),
    )


def _cross_check(model, variables, spec, kwargs, calls: list[_Call]) -> None:
    """Row shapes vs ``eval_shape(apply, capture_intermediates=True)``; raises on mismatch."""
    mutable = ["intermediates"] + [c for c in variables if c != "params"]

    def apply(v, x):
        return model.apply(
            v,
            x,
            capture_intermediates=True,
            mutable=mutable,
            rngs={"dropout": jax.random.key(1)},
            **kwargs,
        )

    output, state = jax.eval_shape(apply, variables, spec)
    captured = state["intermediates"]
    root_out = _first_array(output)
    if calls and tuple(_first_array(calls[0].output).shape) != tuple(root_out.shape):
        raise RuntimeError("summary: traced output shape differs from jax.eval_shape's")
    counters: dict[tuple, int] = {}
    for call in calls:
        node = captured
        for name in call.path:
            node = node.get(name, {}) if hasattr(node, "get") else {}
        recorded = node.get("__call__") if hasattr(node, "get") else None
        index = counters.get(call.path, 0)
        counters[call.path] = index + 1
        if not recorded or index >= len(recorded):
            continue
        expected = _first_array(recorded[index])
        got = _first_array(call.output)
        if expected is not None and tuple(expected.shape) != tuple(got.shape):
            raise RuntimeError(
                f"summary: {'/'.join(call.path)} traced to {tuple(got.shape)} but "
                f"jax.eval_shape gives {tuple(expected.shape)}"
            )


# ----------------------------------------------------------------------------- explosion
@dataclass(frozen=True)
class ParameterComparison:
    """A fully connected first layer vs a convolutional one, for the same input.

    Attributes:
      input_shape: one example, e.g. ``(100, 100, 1)``.
      dense_units: units of the dense layer.
      dense_weights: ``prod(input_shape) * dense_units``.
      dense_params: weights + biases.
      conv_features: filters of the conv layer.
      kernel_size: the conv kernel.
      conv_params: its weights + biases (independent of the image size).
      model_params: all trainable parameters of ``model`` if one was given.
    """

    input_shape: tuple[int, ...]
    dense_units: int
    dense_weights: int
    dense_params: int
    conv_features: int
    kernel_size: tuple[int, ...]
    conv_params: int
    model_params: int | None = None

    @property
    def ratio(self) -> float:
        """How many times more parameters the dense layer has than the conv layer."""
        return self.dense_params / self.conv_params

    def __str__(self) -> str:
        image = "x".join(map(str, self.input_shape))
        kernel = "x".join(map(str, self.kernel_size))
        lines = [
            f"Input {image} = {math.prod(self.input_shape):,} values",
            f"Dense first layer, {self.dense_units:,} units: {self.dense_weights:,} weights "
            f"+ {self.dense_units:,} biases = {self.dense_params:,} parameters",
            f"Conv first layer, {self.conv_features} filters {kernel}: {self.conv_params:,} "
            f"parameters (the same for any image size)",
            f"Dense / conv: {self.ratio:,.0f}x",
        ]
        if self.model_params is not None:
            lines.append(
                f"The whole CNN: {self.model_params:,} parameters "
                f"({self.dense_params / self.model_params:,.1f}x fewer than the dense layer)"
            )
        return "\n".join(lines)


def parameter_explosion(
    input_shape: str | Sequence[int],
    dense_units: int | None = None,
    *,
    conv_features: int = 32,
    kernel_size: int | Sequence[int] = 3,
    model: nn.Module | None = None,
) -> ParameterComparison:
    """Why images need convolutions: parameters of a dense vs a conv first layer.

    Args:
      input_shape: one example, channels last, e.g. ``(100, 100, 1)`` or ``"100x100x1"``.
      dense_units: units of the dense layer; default one per pixel (``H * W``), i.e.
        a layer that keeps the image's resolution.
      conv_features: filters of the conv layer.
      kernel_size: conv kernel, int or one per spatial axis.
      model: optionally a CNN whose total trainable parameters to add to the comparison.

    Returns:
      A :class:`ParameterComparison`; ``print()`` it for the worked numbers.

    Examples:
      >>> c = parameter_explosion((100, 100, 1), dense_units=10_000)
      >>> c.dense_weights, c.conv_params
      (100000000, 320)
    """
    shape = parse_input_shape(input_shape)
    if len(shape) < 2:
        raise ValueError(f"input_shape={shape}; valid: (*spatial, channels), e.g. (100, 100, 1)")
    spatial, channels = shape[:-1], shape[-1]
    units = math.prod(spatial) if dense_units is None else dense_units
    if not isinstance(units, int | np.integer) or units < 1:
        raise ValueError(f"dense_units={dense_units!r}; valid: None or an int >= 1")
    if not isinstance(conv_features, int) or conv_features < 1:
        raise ValueError(f"conv_features={conv_features!r}; valid: an int >= 1")
    kernel = (kernel_size,) * len(spatial) if isinstance(kernel_size, int) else tuple(kernel_size)
    if len(kernel) != len(spatial) or any(k < 1 for k in kernel):
        raise ValueError(
            f"kernel_size={kernel_size!r}; valid: a positive int or {len(spatial)} of them"
        )
    weights = math.prod(shape) * int(units)
    model_params = None
    if model is not None:
        model_params = summary(model, shape).trainable_params
    return ParameterComparison(
        input_shape=shape,
        dense_units=int(units),
        dense_weights=weights,
        dense_params=weights + int(units),
        conv_features=conv_features,
        kernel_size=kernel,
        conv_params=math.prod(kernel) * channels * conv_features + conv_features,
        model_params=model_params,
    )
