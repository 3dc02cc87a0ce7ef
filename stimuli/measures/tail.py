"""A network cut at a layer: the head runs once per image, the tail once per intervention.

Essence curves and per-unit ablations change a layer's output many times per image. Re-running the
whole network each time would repeat the work before the layer; with the tail alone, an intervention
on ResNet-18's ``layer4`` costs the average pool and the classifier. The cut is made on a torch.fx
trace of the model (the layer kept as one leaf module): values computed before the layer that the tail
still reads (a skip connection around a cut inside a block) travel with the layer's output.

A layer that is not one module call (a function's result, a module's later call) is cut at the node
of that name in torchvision's trace of the model. Where the model cannot be traced (a TorchScript file,
data-dependent control flow), :func:`split_at` returns None and callers fall back to full forward passes
with a hook (:func:`stimuli.layers.hook`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.fx as fx

from ..layers import traced_node


class _LeafTracer(fx.Tracer):
    def __init__(self, leaf: str) -> None:
        super().__init__()
        self.leaf = leaf

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        return qualname == self.leaf or super().is_leaf_module(m, qualname)


@dataclass
class Split:
    """``head(x) -> (layer output, *carried)``; ``tail(layer output, *carried) -> logits``."""

    head: fx.GraphModule
    tail: fx.GraphModule
    n_carried: int


def _copy(graph: fx.Graph, nodes, env: dict) -> None:
    for node in nodes:
        env[node] = graph.node_copy(node, lambda n: env[n])


def split_at(model: torch.nn.Module, layer: str) -> Split | None:
    """The model cut after ``layer`` (a module, or any graph node name ``python -m stimuli layers``
    prints), or None where it cannot be cut (module docstring)."""
    if isinstance(model, torch.jit.ScriptModule):
        return None
    graph, cut = None, None
    try:
        graph = _LeafTracer(layer).trace(model)
        found = [n for n in graph.nodes if n.op == "call_module" and n.target == layer]
        cut = found[0] if len(found) == 1 else None
    except Exception:  # noqa: BLE001 - any tracing failure: try the graph-node names below
        pass
    if cut is None:
        # a graph node's name (a function's result such as `layer1.0.add`, a module's later call such as
        # `layer1.0.relu_1`): the node torchvision's feature extraction gives that name (stimuli.layers)
        try:
            graph, cut = traced_node(model, layer)
        except Exception:  # noqa: BLE001 - any tracing failure means: use the hook path
            return None
        if cut is None or cut.op in ("placeholder", "output"):
            return None
    nodes = list(graph.nodes)
    position = {n: i for i, n in enumerate(nodes)}
    after: set[fx.Node] = set()
    for n in nodes[position[cut] + 1:]:
        if any(a is cut or a in after for a in n.all_input_nodes):
            after.add(n)
    output = next(n for n in nodes if n.op == "output")
    if output not in after or any(a is not cut and a not in after for a in output.all_input_nodes):
        return None
    tail_nodes = [n for n in nodes if n in after and n.op != "output"]
    # constants are copied into the tail; any other value from before the cut is carried
    carried, constants = [], []
    for n in tail_nodes:
        for a in n.all_input_nodes:
            if a is cut or a in after:
                continue
            if a.op == "get_attr":
                if a not in constants:
                    constants.append(a)
            elif a not in carried:
                carried.append(a)

    tail = fx.Graph()
    env: dict = {cut: tail.placeholder("layer_output")}
    for j, a in enumerate(carried):
        env[a] = tail.placeholder(f"carried_{j}")
    _copy(tail, constants, env)
    _copy(tail, tail_nodes, env)
    tail.output(env[output.args[0]] if len(output.args) == 1 else tuple(env[a] for a in output.args))

    needed: set[fx.Node] = set()
    stack = [cut, *carried]
    while stack:
        n = stack.pop()
        if n in needed:
            continue
        needed.add(n)
        stack.extend(n.all_input_nodes)
    head = fx.Graph()
    env = {}
    _copy(head, [n for n in nodes if n in needed], env)
    head.output((env[cut], *(env[a] for a in carried)))
    try:
        return Split(head=fx.GraphModule(model, head), tail=fx.GraphModule(model, tail), n_carried=len(carried))
    except Exception:  # noqa: BLE001
        return None


def checked(split: Split | None, model: torch.nn.Module, x: torch.Tensor, state: dict) -> Split | None:
    """The cut network if it gives the whole network's logits on the first images, else None (a trace
    can succeed and still differ, e.g. where the forward pass branches on a value fixed while tracing).
    The whole pass runs through the caller's layer hook, which only captures here (``state`` is the
    hook's: ``replace`` None, ``captured`` dropped afterwards)."""
    if split is None:
        return None
    try:
        t, *carried = split.head(x)
        cut = split.tail(t, *carried).float()
    except Exception:  # noqa: BLE001 - any failure of the traced graph means: use the hook path
        return None
    state["replace"] = None
    whole = model(x).float()
    state.pop("captured", None)
    return split if cut.shape == whole.shape and torch.allclose(cut, whole, rtol=1e-4, atol=1e-4) else None


def stack_size(n_rows: int, batch_size: int, device: torch.device) -> int:
    """How many interventions on a batch of ``n_rows`` images one tail call takes. On CUDA as many as keep
    the call within ``batch_size`` rows (the memory the job was given for a batch), at least one: a small
    batch leaves the GPU idle between kernel launches. On the CPU one: a larger call is no faster there
    (ResNet-18's tail after ``layer1.0.add``, 48 images: 6.2–10.3 s for 10 calls one by one, 7.4–8.5 s five
    at a time, bench/README.md) and raised the 48-image job's peak RSS by a quarter."""
    return max(1, batch_size // max(1, n_rows)) if torch.device(device).type == "cuda" else 1


def stacked_tails(split: Split, changed: Iterable[Callable[[], torch.Tensor]], carried, per_call: int):
    """``split.tail`` of each changed layer output (``changed`` yields functions that build one, so
    only ``per_call`` of them exist at a time), ``per_call`` stacked along the batch per call and the
    carried values repeated to match: one call per group instead of one per intervention, which keeps
    a GPU busy on small batches and spares the per-call overhead of every module. A network in
    evaluation mode treats each row on its own, so a row's logits are those of its own call up to the
    order of float sums in a larger convolution. Yields the float32 logits of each intervention, in order."""
    group: list[torch.Tensor] = []

    def flush():
        if len(group) == 1:
            yield split.tail(group[0], *carried).float()
        else:
            reps = [c.repeat(len(group), *[1] * (c.ndim - 1)) if isinstance(c, torch.Tensor) else c for c in carried]
            yield from split.tail(torch.cat(group), *reps).float().split(len(group[0]))
        group.clear()

    for build in changed:
        group.append(build())
        if len(group) == per_call:
            yield from flush()
    if group:
        yield from flush()
