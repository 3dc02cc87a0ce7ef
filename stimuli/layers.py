"""Layer names: one spelling for every consumer.

``python -m stimuli layers`` prints the names of torchvision's feature extraction
(:func:`torchvision.models.feature_extraction.get_graph_node_names`, eval mode): graph nodes such as
``layer3.1.relu_1`` (the second call of ``layer3.1.relu``) or ``layer3.1.add`` (a function, not a
module), and the module paths that contain them (``layer3``: the output of its last node). Module
paths of called modules are therefore names too, so either spelling works.

Activations are read by the feature extractor itself (:mod:`stimuli.activations`), which takes these
names directly. Completeness, influence and attribution read or replace a layer's value through eager
forward hooks on the network; :func:`resolve` turns a name into the :class:`Site` where that value
passes — which call of which module, and whether it is that call's output or its input (a function
node's value is the input of the module that reads it) — and :func:`hook` installs a function there.

A layer's value comes in one of four layouts (:class:`Layout`): a convolutional map (B, C, H, W),
transformer tokens (B, T, C) with or without a class token (and register tokens) before the patch
tokens, a channels-last map (B, H, W, C) such as Swin's, or a vector (B, C). Units always live in the
channel dimension: :meth:`Layout.positions` gives the values at each position (B, P, C) whatever the
layout, and :meth:`Layout.spatial` puts patch tokens back onto their grid where a map is needed.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .settings.activations import POOLINGS

# what ``layers`` leaves out: the graph's input and output placeholders
_NOT_LAYERS = ("x", "input", "output")


@dataclass(frozen=True)
class Site:
    """Where a layer's value passes in an eager forward pass: the ``call``-th call (0: the first) of
    the module at ``module``, and its ``output`` or its first ``input``."""

    layer: str
    module: str
    call: int = 0
    reads: str = "output"


def _tracer_kwargs() -> dict:
    """The tracer settings of torchvision's feature extraction (its ``_set_default_tracer_kwargs``):
    torchvision ops are leaves, so the names match what the extractor accepts. Once timm is imported
    (a ``timm:`` network), its registered no-trace modules and functions too, as timm's own feature
    extraction passes them (``timm.layers._fx``): its ViTs' position embedding and attention hold
    control flow FX cannot trace."""
    import inspect
    import sys

    import torchvision

    leaves = [obj for _, obj in inspect.getmembers(torchvision.ops)
              if inspect.isclass(obj) and issubclass(obj, nn.Module)]
    kwargs = {"autowrap_modules": (math, torchvision.ops), "leaf_modules": leaves}
    if "timm" in sys.modules:
        from timm.layers import get_notrace_functions, get_notrace_modules

        kwargs["leaf_modules"] = leaves + get_notrace_modules()
        kwargs["autowrap_functions"] = get_notrace_functions()
    return kwargs


def tracer_settings() -> dict:
    """The tracer settings for torchvision's feature extractor, so that it traces as :func:`list_layers`
    names (torchvision merges its own defaults in; timm's no-trace modules and functions are the
    addition)."""
    return _tracer_kwargs()


def _trace(model: nn.Module):
    """``(graph nodes, {node: name})`` of ``model`` traced in eval mode, in execution order."""
    from torchvision.models.feature_extraction import NodePathTracer

    tracer = NodePathTracer(**_tracer_kwargs())
    training = model.training
    try:
        graph = tracer.trace(model.eval())
    finally:
        model.train(training)
    return list(graph.nodes), dict(tracer.node_to_qualname)


def list_layers(model: nn.Module) -> list[str]:
    """Names of the hookable layers: graph nodes in eval mode (input and output excluded) and the
    modules that contain them (``layer3`` for ``layer3.1.relu_1``: its output is the block's). A
    TorchScript model (which FX cannot trace) lists its module paths."""
    if isinstance(model, torch.jit.ScriptModule):
        return [name for name, _ in model.named_modules() if name]
    _, names_of = _trace(model)
    names: dict[str, None] = {}
    for node in names_of.values():
        if node in _NOT_LAYERS:
            continue
        parts = node.split(".")
        for i in range(1, len(parts)):
            names.setdefault(".".join(parts[:i]), None)
        names.setdefault(node, None)
    return list(names)


def _unknown(layers: list[str], known: list[str]) -> ValueError:
    shown = ", ".join(known[:40]) + (" …" if len(known) > 40 else "")
    return ValueError(f"unknown layer(s) {', '.join(layers)}; the layers of this network "
                      f"(python -m stimuli layers) are: {shown}")


def _last_node(nodes, names_of, layer: str):
    """The node ``layer`` names: itself, or the last node inside the module path ``layer``."""
    depth = layer.count(".")
    for n in reversed(nodes):
        name = names_of.get(n)
        if name is not None and name not in _NOT_LAYERS and ".".join(name.split(".")[:depth + 1]) == layer:
            return n
    return None


def graph_nodes(model: nn.Module, layers) -> dict[str, str]:
    """``{layer: graph node name}``: the node each name stands for, so that names of one node (a
    container and its last operation) are extracted once. TorchScript models keep their names."""
    if isinstance(model, torch.jit.ScriptModule):
        return {layer: layer for layer in layers}
    nodes, names_of = _trace(model)
    out = {}
    for layer in layers:
        node = _last_node(nodes, names_of, layer)
        if node is None:
            raise _unknown([l for l in layers if _last_node(nodes, names_of, l) is None], list_layers(model))
        out[layer] = names_of[node]
    return out


def traced_node(model: nn.Module, layer: str):
    """``(graph, node)``: the torch.fx graph of ``model`` traced as torchvision's feature extraction
    traces it (eval mode), and the node ``layer`` names in it (None where it names none)."""
    nodes, names_of = _trace(model)
    return (nodes[0].graph if nodes else None), _last_node(nodes, names_of, layer)


# sites per model and module tree: attribution overlays hook a layer twice per image, and tracing a
# ResNet-50 costs about a tenth of a second
_SITES: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


def resolve(model: nn.Module, layer: str) -> Site:
    """The :class:`Site` of ``layer`` (a name :func:`list_layers` prints, or a module path).

    A module path stands for the last node inside it, as in torchvision's feature extractor, so a
    container and its last operation are one site.
    """
    if isinstance(model, torch.jit.ScriptModule):
        # TorchScript modules take no Python hooks; the consumer's own error explains that
        return Site(layer, layer)
    tree = tuple((name, type(m)) for name, m in model.named_modules())
    sites = _SITES.setdefault(model, {})
    if (tree, layer) not in sites:
        sites[(tree, layer)] = _resolve(model, layer)
    return sites[(tree, layer)]


def _resolve(model: nn.Module, layer: str) -> Site:
    nodes, names_of = _trace(model)
    node = _last_node(nodes, names_of, layer)
    if node is None:
        raise _unknown([layer], list_layers(model))
    if node.op == "call_module":
        return Site(layer, str(node.target), _call_index(nodes, node), "output")
    if _is_module_path(model, layer):
        # a block whose last node is a function (a transformer block's residual addition, read by the next
        # block twice): the block's own output is that value, and its forward hook replaces it everywhere
        return Site(layer, layer, 0, "output")
    # a function's result (an addition, a flatten) has no module of its own: it is what the module
    # after it reads. Only when that module is its one reader: a value that also flows elsewhere (a
    # transformer's residual stream) would be replaced on one path and not the other.
    (user, *others) = list(node.users) or [None]
    if not others and user is not None and user.op == "call_module" and user.args and user.args[0] is node:
        return Site(layer, str(user.target), _call_index(nodes, user), "input")
    raise ValueError(f"layer {layer!r} is the result of {node.target!r}, which is not read by exactly one "
                     f"module, so it cannot be hooked; choose a module layer just before or after it")


def _is_module_path(model: nn.Module, layer: str) -> bool:
    try:
        model.get_submodule(layer)
    except AttributeError:
        return False
    return True


def _call_index(nodes, node) -> int:
    """How many calls of ``node``'s module come before it in one forward pass."""
    before = nodes[:nodes.index(node)]
    return sum(1 for n in before if n.op == "call_module" and n.target == node.target)


@contextlib.contextmanager
def hook(model: nn.Module, layer: str, fn: Callable[[torch.Tensor], torch.Tensor | None], *,
         site: Site | None = None) -> Iterator[Site]:
    """Call ``fn(value)`` with ``layer``'s value on every forward pass of ``model`` while the block
    runs; a tensor it returns replaces the value for the rest of the pass.

    The rest of the pass receives a copy, so ``value`` stays what the layer gave even where the
    network then changes it in place (``ReLU(inplace=True)``, a residual ``+=``), and a leaf
    ``fn`` returns can be modified by such operations. ``fn`` may raise to end the pass.

    ``site`` is one :func:`resolve` gave earlier, for a model whose forward methods have since been
    patched so that FX can no longer trace it (zennit's canonizers).
    """
    site = site or resolve(model, layer)
    try:
        module = model.get_submodule(site.module)
    except AttributeError:
        raise ValueError(f"layer {layer!r}: the network has no module {site.module!r}") from None
    seen = [0]

    def reset(_m, _args):
        seen[0] = 0

    def take(value):
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"layer {layer!r} gives a {type(value).__name__}, not a tensor")
        out = fn(value)
        return (value if out is None else out).clone()

    def on_output(_m, _args, out):
        seen[0] += 1
        if seen[0] - 1 == site.call:
            return take(out)
        return None

    def on_input(_m, args):
        seen[0] += 1
        if seen[0] - 1 == site.call:
            return (take(args[0]), *args[1:])
        return None

    handles = [model.register_forward_pre_hook(reset)]
    try:
        if site.reads == "output":
            handles.append(module.register_forward_hook(on_output))
        else:
            handles.append(module.register_forward_pre_hook(on_input))
        yield site
    finally:
        for h in handles:
            h.remove()



# ---------------------------------------------------------------------------------------------
# layouts: where the channels are
# ---------------------------------------------------------------------------------------------
LAYOUTS = ("BCHW", "BTC", "BHWC", "BC")
# the most tokens a transformer puts before its patch tokens (a class token and up to 15 registers)
MAX_PREFIX_TOKENS = 16


@dataclass(frozen=True)
class Layout:
    """Where the channel dimension of a layer's value lies, read from its shape (:meth:`detect`).

    ``kind`` is one of :data:`LAYOUTS`; ``n_prefix`` counts the tokens before the patch tokens (a class
    token, registers) of a ``BTC`` layer; ``grid`` is the (rows, columns) of its positions where they
    form one (None for tokens that fill no square grid).
    """

    kind: str
    n_channels: int
    n_prefix: int = 0
    grid: tuple[int, int] | None = None

    @classmethod
    def detect(cls, shape) -> Layout:
        """The layout of a value of ``shape`` (batch first).

        * 2 dims: a vector per image;
        * 3 dims: tokens (B, T, C); the prefix is the fewest leading tokens (at most
          :data:`MAX_PREFIX_TOKENS`) that leave a square number of patch tokens (ViT-B/32 at 224 px: 50
          tokens, a class token and 7 x 7 patches). Inputs are square crops, so the grid is square;
        * 4 dims (B, a, b, c): channels-last when ``a == b != c`` (Swin's (B, 28, 28, 192)), else
          channels-first. The layouts coincide only where a map's side equals its channel count, and
          channels-first is taken then (every convolutional network in torchvision and timm).
        """
        shape = tuple(int(d) for d in shape)
        if len(shape) == 2:
            return cls("BC", shape[1])
        if len(shape) == 3:
            tokens = shape[1]
            for prefix in range(min(MAX_PREFIX_TOKENS, tokens - 1) + 1):
                side = math.isqrt(tokens - prefix)
                if side >= 1 and side * side == tokens - prefix:
                    return cls("BTC", shape[2], prefix, (side, side))
            return cls("BTC", shape[2], 0, None)
        if len(shape) == 4:
            _, a, b, c = shape
            if a == b and b != c:
                return cls("BHWC", c, 0, (a, b))
            return cls("BCHW", a, 0, (b, c))
        if len(shape) > 4:
            return cls("BCHW", shape[1], 0, None)
        raise ValueError(f"a layer's value has the batch first and at least one more dimension, not {shape}")

    def describe(self) -> dict:
        """The manifest's ``layout`` keys of a layer entry."""
        out: dict = {"layout": self.kind, "n_channels": self.n_channels}
        if self.kind == "BTC":
            out["prefix_tokens"] = self.n_prefix
        if self.grid is not None:
            out["grid"] = list(self.grid)
        return out

    def positions(self, t: torch.Tensor) -> torch.Tensor:
        """B x P x C: the value at every position (tokens in order, the class token first; a map's
        positions row by row), channels last. A view where the layout allows one."""
        if self.kind == "BC":
            return t.unsqueeze(1)
        if self.kind == "BCHW":
            return t.flatten(2).transpose(1, 2)
        return t.reshape(t.shape[0], -1, t.shape[-1])

    def from_positions(self, p: torch.Tensor, shape) -> torch.Tensor:
        """The inverse of :meth:`positions`: B x P x C back into this layout and ``shape``."""
        if self.kind == "BC":
            return p[:, 0]
        if self.kind == "BCHW":
            return p.transpose(1, 2).reshape(tuple(shape))
        return p.reshape(tuple(shape))

    def pooled_positions(self, t: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
        """B x C x P: the positions ``pooling`` reduces — the patch tokens of a transformer (its class
        token and registers left out), every position of a map, or the class token alone (P = 1)."""
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
        if pooling == "class_token":
            if self.kind != "BTC" or self.n_prefix < 1:
                raise ValueError(f"pooling 'class_token' needs a transformer layer with a class token "
                                 f"(B, T, C); this layer is {self.kind} with {self.n_prefix} prefix tokens")
            return t[:, :1, :].transpose(1, 2)
        if self.kind == "BC":
            return t.unsqueeze(2)
        if self.kind == "BCHW":
            return t.flatten(2)
        if self.kind == "BTC":
            return t[:, self.n_prefix:, :].transpose(1, 2)
        return t.reshape(t.shape[0], -1, t.shape[-1]).transpose(1, 2)

    def spatial(self, t: torch.Tensor) -> torch.Tensor:
        """B x C x H x W: the layer as a map (patch tokens onto the patch grid, a channels-last map
        permuted), for what draws maps: attribution overlays, Grad-CAM."""
        if self.kind == "BCHW" and t.ndim == 4:
            return t
        if self.kind == "BHWC":
            return t.permute(0, 3, 1, 2)
        if self.kind == "BTC" and self.grid is not None:
            patches = t[:, self.n_prefix:, :]
            return patches.transpose(1, 2).reshape(t.shape[0], t.shape[2], *self.grid)
        raise ValueError(f"a {self.kind} layer of shape {tuple(t.shape)} has no spatial map")


def layout_of(t: torch.Tensor) -> Layout:
    """The :class:`Layout` of a layer's value ``t`` (batch first)."""
    return Layout.detect(t.shape)


def layer_layouts(model: nn.Module, x: torch.Tensor) -> dict[str, Layout | None]:
    """``{layer: Layout}`` for every name :func:`list_layers` gives, from one forward pass of the input
    batch ``x`` through the traced graph (torch.fx's ``ShapeProp``); None for a name whose value is not
    a tensor (a shape, a size). TorchScript models list no layouts (None each)."""
    if isinstance(model, torch.jit.ScriptModule):
        return {name: None for name in list_layers(model)}
    from torch.fx.passes.shape_prop import ShapeProp

    nodes, names_of = _trace(model)
    graph_module = torch.fx.GraphModule(model, nodes[0].graph)
    training = model.training
    try:
        with torch.no_grad():
            ShapeProp(graph_module.eval()).propagate(x)
    finally:
        model.train(training)
    out: dict[str, Layout | None] = {}
    for name in list_layers(model):
        node = _last_node(nodes, names_of, name)
        meta = None if node is None else node.meta.get("tensor_meta")
        shape = getattr(meta, "shape", None)
        out[name] = Layout.detect(shape) if shape is not None and len(shape) >= 2 else None
    return out
