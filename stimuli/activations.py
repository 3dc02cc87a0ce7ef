"""One forward pass over an image set, returning a spatially pooled N x C float32 matrix per layer.

Pooling happens inside the batch loop, so nothing of shape N x C x H x W is ever held. Loading follows
torchvision's reference classification scripts (``references/classification/train.py``): decoding in
DataLoader worker processes, pinned host memory and non-blocking copies on CUDA, and on CUDA a
channels-last, bfloat16-autocast forward pass whose pooled rows are reduced and kept in float32.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .datasets import READ_ERRORS, ImageSet
from .heap import TRIM_EVERY_BATCHES, release_free_heap
from .layers import Layout
from .settings.activations import ACTIVATIONS, POOLINGS  # noqa: F401 - the options of this module


@dataclass
class Activations:
    """``values[layer]`` is N x C float32; row j belongs to image ``indices[j]`` of the image set.

    ``indices`` leaves out images that failed to decode (counted in ``n_failed``).
    """

    values: dict[str, np.ndarray]
    indices: np.ndarray
    n_failed: int = 0
    shapes: dict[str, tuple[int, ...]] | None = None

    def layout(self, layer: str) -> Layout | None:
        """The layout of ``layer``'s value (:class:`stimuli.layers.Layout`), from its recorded shape."""
        shape = (self.shapes or {}).get(layer)
        return None if shape is None else Layout.detect((1, *shape))


class NoImageRead(ValueError):
    """Not one image of the set could be read."""


def pool(t: torch.Tensor, pooling: str = "mean", layout: Layout | None = None) -> torch.Tensor:
    """A layer's value -> B x C float32, C its channel dimension whatever the layout
    (:class:`stimuli.layers.Layout`, read from the shape when not given): the mean or max over the
    spatial positions (a transformer's patch tokens), or a transformer's class token. A mean of
    bfloat16 maps (autocast on CUDA) is accumulated in float32, not in their 8-bit mantissa."""
    layout = layout or Layout.detect(t.shape)
    if layout.kind == "BC":
        return t.float()
    if layout.kind == "BCHW" and pooling != "class_token":
        # reduce over the spatial dimensions in place of flatten(2), which copies channels-last maps
        dims = tuple(range(2, t.ndim))
        if pooling == "mean":
            return t.mean(dims, dtype=torch.float32) if t.is_floating_point() else t.float().mean(dims)
        if pooling == "max":
            return t.amax(dims).float()
    p = layout.pooled_positions(t, pooling)
    if pooling == "max":
        return p.amax(2).float()
    return p.mean(2, dtype=torch.float32) if p.is_floating_point() else p.float().mean(2)


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, images: ImageSet, preprocess: Callable) -> None:
        self.images = images
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        try:
            return i, self.preprocess(self.images.load(i))
        except READ_ERRORS:
            return i, None


def _collate(items):
    ok = [(i, t) for i, t in items if t is not None]
    failed = len(items) - len(ok)
    if not ok:
        return torch.empty(0, dtype=torch.long), None, failed
    return torch.tensor([i for i, _ in ok]), torch.stack([t for _, t in ok]), failed


MAX_AUTO_WORKERS = 8
PREFETCH_FACTOR = 4


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask, which containers and ``taskset`` narrow),
    not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def may_fork_workers() -> bool:
    """False in a daemonic process (a Celery prefork child, a multiprocessing pool worker), which
    may not start processes of its own: DataLoader workers there fail with an AssertionError."""
    if multiprocessing.current_process().daemon:
        return False
    try:
        import billiard  # Celery's fork of multiprocessing marks its pool children here
    except ImportError:
        return True
    return not billiard.current_process().daemon


def auto_num_workers(images: ImageSet) -> int:
    """The loader worker count a job gets when its configuration leaves it open: the usable cores
    (capped at :data:`MAX_AUTO_WORKERS`) for a folder of files, none for an in-memory set (the
    digits decode in microseconds; a worker would cost more than it saves) or where this process may
    not fork."""
    from .datasets import FolderImageSet, SubsetImageSet

    base = images.base if isinstance(images, SubsetImageSet) else images
    if not isinstance(base, FolderImageSet) or not may_fork_workers():
        return 0
    return min(usable_cores(), MAX_AUTO_WORKERS)


def loader(images: ImageSet, preprocess: Callable, batch_size: int = 256, num_workers: int = 0,
           device: torch.device | str = "cpu") -> torch.utils.data.DataLoader:
    """The DataLoader of an activation pass: in file order, pinned batches when they go to a CUDA
    device, workers kept for the loader's life and ``PREFETCH_FACTOR`` batches ahead per worker."""
    device = torch.device(device)
    options: dict = {}
    if num_workers > 0:
        options.update(persistent_workers=True, prefetch_factor=PREFETCH_FACTOR)
    return torch.utils.data.DataLoader(_Indexed(images, preprocess), batch_size=batch_size, shuffle=False,
                                       num_workers=num_workers, collate_fn=_collate,
                                       pin_memory=device.type == "cuda", **options)


def batches(images: ImageSet, preprocess: Callable, batch_size: int = 256, num_workers: int = 0,
            device: torch.device | str = "cpu"):
    """Yield ``(indices, input batch, n_failed)``; decoding failures are dropped and counted."""
    yield from loader(images, preprocess, batch_size, num_workers, device)


def _keep_rows(values: np.ndarray, rows: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """``values[rows]`` for ascending ``rows``, moved up in place rather than copied, so dropping a few
    unreadable images does not hold the N x C matrix twice. Safe because ``rows[j] >= j``: a chunk
    reads only rows at or after the ones it writes, and later chunks read beyond them."""
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        values[start:start + len(part)] = values[part]
    return values[:len(rows)]


def layer_extractor(model: nn.Module, layers: Sequence[str]) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """A callable returning ``{layer: output}``: torchvision's feature extractor, or for a
    TorchScript model (which FX cannot trace and which refuses forward hooks) a copy of its forward
    graph that returns the layers' outputs (:class:`ScriptLayerExtractor`)."""
    if isinstance(model, torch.jit.ScriptModule):
        return ScriptLayerExtractor(model, layers)
    from torchvision.models.feature_extraction import create_feature_extractor

    from .layers import graph_nodes, tracer_settings

    # names of one node (``layer1`` and its last operation) would each claim it; ask for it once
    node_of = graph_nodes(model, layers)
    extractor = create_feature_extractor(model, return_nodes={n: n for n in dict.fromkeys(node_of.values())},
                                         tracer_kwargs=tracer_settings())

    def outputs(x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = extractor(x)
        return {layer: out[node] for layer, node in node_of.items()}

    return outputs


class ScriptLayerExtractor:
    """Layer outputs of a TorchScript module, from a rewritten copy of its ``forward`` graph.

    A layer is a submodule path (``layer3.1``). The copy's calls along that path are inlined one
    level at a time until the call of the layer's own ``forward`` is reached; its result becomes an
    output of the copy, and what only fed the original output is dropped. The loaded module itself is
    not changed. A submodule that ``forward`` never calls, or calls more than once (so that "its
    output" is ambiguous), is refused with a message.
    """

    def __init__(self, model: torch.jit.ScriptModule, layers: Sequence[str]) -> None:
        self.model = model
        self.layers = list(layers)
        modules = dict(model.named_modules())
        missing = [l for l in self.layers if l not in modules or not l]
        if missing:
            raise ValueError(f"unknown layer(s) {', '.join(missing)}; layers are: "
                             f"{', '.join(n for n in modules if n)}")
        graph = model.forward.graph.copy()
        this = next(iter(graph.inputs()))
        for _ in range(len(list(graph.outputs()))):
            graph.eraseOutput(0)
        inlined: dict = {}
        for layer in self.layers:
            # registered at once: later inlining redirects graph outputs along with every other use
            graph.registerOutput(_tap(graph, this, model, layer, inlined))
        graph.makeMultiOutputIntoTuple()
        torch._C._jit_pass_dce(graph)
        self.graph = graph
        self.function = torch._C._create_function_from_graph("stimuli_layer_outputs", graph)

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = self.function(self.model._c, x)
        return dict(zip(self.layers, outs))


def _forward_calls(graph, obj, name: str | None) -> list:
    """Top-level ``prim::CallMethod`` nodes on ``obj``'s child ``name`` (its ``forward``), or on
    ``obj`` itself when ``name`` is None (any method: ``forward`` delegating to ``_forward_impl``)."""
    found = []
    for node in graph.nodes():
        if node.kind() != "prim::CallMethod":
            continue
        target = node.inputsAt(0)
        if name is None:
            if target.unique() == obj.unique():
                found.append(node)
            continue
        get = target.node()
        if (node.s("name") == "forward" and get.kind() == "prim::GetAttr" and get.s("name") == name
                and get.inputsAt(0).unique() == obj.unique()):
            found.append(node)
    return found


def _inline(graph, node, module) -> None:
    callee = getattr(module, node.s("name")).graph
    with graph.insert_point_guard(node):
        outs = graph.insertGraph(callee, list(node.inputs()))
    for old, new in zip(node.outputs(), outs):
        old.replaceAllUsesWith(new)
    node.destroy()


def _tap(graph, this, model, layer: str, inlined: dict):
    """The value of ``layer``'s output in ``graph``; ``inlined`` maps the module paths whose calls
    were already inlined (by an earlier layer) to their object value and module."""
    parts = layer.split(".")
    obj, module = this, model
    for depth, name in enumerate(parts):
        path = ".".join(parts[:depth + 1])
        if path in inlined and depth < len(parts) - 1:
            obj, module = inlined[path]
            continue
        for node in _forward_calls(graph, obj, None):
            _inline(graph, node, module)
        calls = _forward_calls(graph, obj, name)
        if len(calls) != 1:
            how = "never calls it directly" if not calls else f"calls it {len(calls)} times"
            raise ValueError(f"layer {layer!r} of this TorchScript model cannot be read: the forward of the "
                             f"module holding {name!r} {how}; choose another layer or save a state dict "
                             f"for its architecture")
        call = calls[0]
        child = dict(module.named_children())[name]
        if depth == len(parts) - 1:
            return call.output()
        obj, module = call.inputsAt(0), child
        _inline(graph, call, child)
        inlined[path] = (obj, module)
    raise AssertionError("unreachable")


def uses_channels_last(model: nn.Module, device: torch.device) -> bool:
    """Whether extraction feeds ``model`` channels-last batches: CNNs on CPU or CUDA, where oneDNN and
    cuDNN convolve NHWC faster (ResNet-18 on a 2-core CPU: 1.5x) and every later layer follows the
    input's layout. Only the input changes; the caller's model is left as it is."""
    return (device.type in ("cpu", "cuda") and not isinstance(model, torch.jit.ScriptModule)
            and any(isinstance(m, nn.Conv2d) for m in model.modules()))


def autocast(device: torch.device, enabled: bool | None = None):
    """bfloat16 autocast on CUDA (``enabled=None``), where tensor cores run it at several times the
    float32 rate; a no-op elsewhere, so CPU results stay float32 and bit-identical between runs."""
    if enabled is None:
        enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def extract(model: nn.Module, images: ImageSet, preprocess: Callable, layers: Sequence[str],
            pooling: str = "mean", activation: str = "post_relu", device: torch.device | str = "cpu",
            batch_size: int = 256, num_workers: int | None = 0,
            progress: Callable[[float], None] | None = None, mixed_precision: bool | None = None,
            decode: str = "auto") -> Activations:
    """Pooled activations of ``layers`` for every image; ``post_relu`` applies a ReLU to each hooked
    output first (the NMF basis needs non-negative data). ``num_workers=None`` picks
    :func:`auto_num_workers`; ``mixed_precision=None`` autocasts to bfloat16 on CUDA only; ``decode``
    "auto" decodes JPEGs on a CUDA device (:mod:`stimuli.decoding`) and with PIL elsewhere."""
    from .decoding import device_batches, use_device_decoding

    device = torch.device(device)
    if num_workers is None:
        num_workers = auto_num_workers(images)
    source = device_batches if use_device_decoding(images, preprocess, device, decode) else batches
    model = model.to(device).eval()
    channels_last = uses_channels_last(model, device)
    extractor = layer_extractor(model, layers)
    n = len(images)
    values: dict[str, np.ndarray] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    kept = np.zeros(n, dtype=bool)
    n_failed = 0
    done = 0
    n_batches = 0
    with torch.inference_mode(), autocast(device, mixed_precision):
        for idx, x, failed in source(images, preprocess, batch_size, num_workers, device):
            n_failed += failed
            done += len(idx) + failed
            if x is not None:
                x = x.to(device, non_blocking=True)
                if channels_last and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                out = extractor(x)
                for layer in layers:
                    t = out[layer]
                    if activation == "post_relu":
                        # in place: the forward pass is over, and a ReLU is idempotent should two
                        # layer names share one tensor; no second B x C x H x W copy
                        t = t.clamp_(min=0) if t.is_floating_point() else torch.relu(t)
                    pooled = pool(t, pooling).cpu().numpy()
                    if layer not in values:
                        shapes[layer] = tuple(t.shape[1:])
                        values[layer] = np.zeros((n, pooled.shape[1]), dtype=np.float32)
                    values[layer][idx.numpy()] = pooled
                kept[idx.numpy()] = True
                # only pooled rows outlive the batch: the feature maps go before the next one is built
                del out, t, x
                n_batches += 1
                if n_batches % TRIM_EVERY_BATCHES == 0:
                    release_free_heap()  # keeps resident memory flat in the number of images
            if progress:
                progress(done / n)
    indices = np.flatnonzero(kept)
    if len(indices) == 0:
        raise NoImageRead("no image could be read")
    if len(indices) < n:
        values = {k: _keep_rows(v, indices) for k, v in values.items()}
    return Activations(values=values, indices=indices, n_failed=n_failed, shapes=shapes)
