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
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

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
    torchvision ops are leaves, so the names match what the extractor accepts."""
    import inspect

    import torchvision

    leaves = [obj for _, obj in inspect.getmembers(torchvision.ops)
              if inspect.isclass(obj) and issubclass(obj, nn.Module)]
    return {"autowrap_modules": (math, torchvision.ops), "leaf_modules": leaves}


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
    # a function's result (an addition, a flatten) has no module of its own: it is what the module
    # after it reads. Only when that module is its one reader: a value that also flows elsewhere (a
    # transformer's residual stream) would be replaced on one path and not the other.
    (user, *others) = list(node.users) or [None]
    if not others and user is not None and user.op == "call_module" and user.args and user.args[0] is node:
        return Site(layer, str(user.target), _call_index(nodes, user), "input")
    raise ValueError(f"layer {layer!r} is the result of {node.target!r}, which is not read by exactly one "
                     f"module, so it cannot be hooked; choose a module layer just before or after it")


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

