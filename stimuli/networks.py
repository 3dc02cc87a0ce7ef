"""Networks: the built-in demo CNN, torchvision architectures, timm models (``timm:<name>``), open_clip
image towers (``open_clip:<name>``) and local checkpoints (their layers' names: :mod:`stimuli.layers`).

Each source builds its architecture without weights and then takes them from ``checkpoint`` (a local
file: a state dict, or a whole pickled module) or, with ``weights``, from the library's own hub cache
(torchvision: ``TORCH_HOME``; timm and open_clip: the Hugging Face cache, ``HF_HOME``), downloading
only when ``allow_download``. Preprocessing comes from the model's own configuration: the weights'
transform for torchvision, timm's data config (``timm.data.resolve_data_config``), open_clip's
``preprocess_cfg``.

A :class:`LoadedNetwork` carries the model in eval mode, how to turn a PIL image into its input
tensor (``preprocess``), and what the manifest says about it (``describe()``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

DEMO_NAME = "demo"
DEMO_LAYER = "conv2"
# bump when the architecture or the training recipe changes, so a stale cache is never loaded
DEMO_VERSION = 1
DEMO_SEED = 0
DEMO_TRAIN = {"epochs": 25, "batch_size": 32, "lr": 3e-3, "weight_decay": 1e-4, "test_fraction": 0.2}

# the zero-shot classifier of an open_clip image tower: one prompt per class name, CLIP's own single
# template (Radford et al. 2021, "Learning transferable visual models from natural language supervision")
CLIP_PROMPT_TEMPLATE = "a photo of a {}."
TIMM_PREFIX = "timm:"
OPEN_CLIP_PREFIX = "open_clip:"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class NetworkLoadError(ValueError):
    """A network could not be loaded; the message says what to do."""


# ---------------------------------------------------------------------------------------------
# the demo network
# ---------------------------------------------------------------------------------------------
class DemoNet(nn.Module):
    """A small CNN for scikit-learn's 8x8 digits. Named modules, so layers read like a paper's."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.conv1(x))
        x = self.pool(self.relu2(self.conv2(x)))
        x = self.relu3(self.fc1(self.flatten(x)))
        return self.fc2(x)


def cache_dir() -> Path:
    """Where trained demo weights live: ``$STIMULI_CACHE_DIR``, else ``~/.cache/stimuli``."""
    env = os.environ.get("STIMULI_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "stimuli"


def demo_cache_path() -> Path:
    return cache_dir() / f"demo-digits-cnn-v{DEMO_VERSION}-seed{DEMO_SEED}.pt"


def digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits as uint8 8x8 images (ink bright, 0..255) and their labels.

    The demo trains on exactly what :mod:`stimuli.datasets` hands out as PIL images, so the
    preprocessing of a stored image reproduces the training input bit for bit.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return images, bunch.target.astype(np.int64)


def demo_split(n: int, labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    train, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=labels)
    return np.sort(train), np.sort(test)


@contextlib.contextmanager
def _deterministic(seed: int):
    previous = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    rng_state = torch.random.get_rng_state()
    torch.use_deterministic_algorithms(True)
    # one thread: CPU reductions then sum in one order on every machine, and a network this small
    # trains faster without intra-op threading (which stalls badly on a busy machine)
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.set_num_threads(threads)
        torch.random.set_rng_state(rng_state)


def train_demo(log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train the demo CNN on the CPU from a fixed seed; return the checkpoint dictionary."""
    start = time.perf_counter()
    images, labels = digits_uint8()
    train_idx, test_idx = demo_split(len(images), labels, DEMO_TRAIN["test_fraction"], DEMO_SEED)
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    mean = float(x[train_idx].mean())
    std = float(x[train_idx].std())
    x = (x - mean) / std
    y = torch.from_numpy(labels)
    with _deterministic(DEMO_SEED):
        model = DemoNet()
        opt = torch.optim.AdamW(model.parameters(), lr=DEMO_TRAIN["lr"],
                                weight_decay=DEMO_TRAIN["weight_decay"])
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=DEMO_TRAIN["lr"], epochs=DEMO_TRAIN["epochs"],
            steps_per_epoch=-(-len(train_idx) // DEMO_TRAIN["batch_size"]))
        gen = torch.Generator().manual_seed(DEMO_SEED)
        tr = torch.from_numpy(train_idx)
        for _epoch in range(DEMO_TRAIN["epochs"]):
            model.train()
            order = tr[torch.randperm(len(tr), generator=gen)]
            for b in range(0, len(order), DEMO_TRAIN["batch_size"]):
                batch = order[b:b + DEMO_TRAIN["batch_size"]]
                loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        model.eval()
        with torch.no_grad():
            pred = model(x[torch.from_numpy(test_idx)]).argmax(1)
        accuracy = float((pred == y[torch.from_numpy(test_idx)]).float().mean())
    seconds = time.perf_counter() - start
    if log:
        log(f"trained the demo network in {seconds:.1f} s; test accuracy {accuracy:.4f}")
    return {
        "state_dict": model.state_dict(),
        "mean": mean,
        "std": std,
        "test_accuracy": accuracy,
        "train_seconds": seconds,
        "n_train": int(len(train_idx)),
        "n_test": int(len(test_idx)),
        "version": DEMO_VERSION,
        "train": json.dumps(DEMO_TRAIN),
    }


def load_demo_checkpoint(retrain: bool = False, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The demo checkpoint, trained on first use and cached (written atomically)."""
    path = demo_cache_path()
    if path.exists() and not retrain:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a corrupt cache file is retrained, not fatal
            pass
    ckpt = train_demo(log=log)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return ckpt


class DemoPreprocess:
    """PIL image -> 1x8x8 tensor normalised as in training (grayscale, box-resized to 8x8)."""

    def __init__(self, mean: float, std: float) -> None:
        self.mean = mean
        self.std = std

    def __call__(self, image) -> torch.Tensor:
        from PIL import Image

        image = image.convert("L")
        if image.size != (8, 8):
            image = image.resize((8, 8), Image.Resampling.BOX)
        arr = np.asarray(image, dtype=np.float32) / 255.0
        return torch.from_numpy((arr - self.mean) / self.std).unsqueeze(0)


# ---------------------------------------------------------------------------------------------
# loaded networks
# ---------------------------------------------------------------------------------------------
@dataclass
class LoadedNetwork:
    model: nn.Module
    name: str
    source: str  # builtin | torchvision | checkpoint | timm | open_clip
    preprocess: Callable[[Any], torch.Tensor]
    weights: str | None = None
    n_classes: int | None = None
    class_names: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    # an open_clip image tower's zero-shot head: class names -> the classifier (see for_classes)
    zero_shot: Callable[[list[str]], LoadedNetwork] | None = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "weights": self.weights, **self.info}

    def for_classes(self, class_names: list[str] | None) -> LoadedNetwork:
        """The network whose outputs score ``class_names`` (an image set's classes): an open_clip image
        tower gets its zero-shot head (:data:`CLIP_PROMPT_TEMPLATE`); any other network is itself."""
        if self.zero_shot is None:
            return self
        if not class_names:
            raise NetworkLoadError(f"{self.name} classifies by zero-shot prompts over the image set's class "
                                   f"names, and this image set has none: use a folder of class folders")
        return self.zero_shot(list(class_names))


def _weights_file(checkpoint: str | os.PathLike) -> Path:
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise NetworkLoadError(f"weights file not found: {path} (provide this file, or leave the checkpoint out "
                               f"to build the network without weights or with --weights from its hub)")
    return path


def load_network(spec: str = DEMO_NAME, weights: str | None = None, architecture: str | None = None,
                 num_classes: int | None = None, allow_download: bool = True,
                 log: Callable[[str], None] | None = None, checkpoint: str | None = None) -> LoadedNetwork:
    """Load ``spec``: ``"demo"``, a torchvision architecture name, ``timm:<name>``, ``open_clip:<name>``
    or a checkpoint file path (with ``architecture``). ``checkpoint`` is a weights file for the named
    architecture (a state dict, or a whole pickled module); ``weights`` a pretrained set from the
    library's hub (a torchvision weights enum; for timm and open_clip a pretrained tag, ``DEFAULT`` for
    the library's default)."""
    if spec.startswith(TIMM_PREFIX):
        return load_timm(spec[len(TIMM_PREFIX):], weights=weights, checkpoint=checkpoint, num_classes=num_classes,
                         allow_download=allow_download)
    if spec.startswith(OPEN_CLIP_PREFIX):
        return load_open_clip(spec[len(OPEN_CLIP_PREFIX):], weights=weights, checkpoint=checkpoint,
                              allow_download=allow_download)
    if checkpoint is not None:
        if spec != DEMO_NAME and _looks_like_file(spec):
            raise NetworkLoadError("give either a checkpoint file as the network (with its architecture) or an "
                                   "architecture with a checkpoint, not both")
        net = load_checkpoint(_weights_file(checkpoint), architecture=spec, num_classes=num_classes)
        # a named architecture with its weights file: the network is the architecture, the file its weights
        net.info["checkpoint"] = net.info.pop("file")
        net.name, net.source = spec, "torchvision" if spec != DEMO_NAME else "builtin"
        return net
    if spec == DEMO_NAME:
        return load_demo(log=log)
    if _looks_like_file(spec):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise NetworkLoadError(f"checkpoint file not found: {spec}")
        return load_checkpoint(path, architecture=architecture, num_classes=num_classes)
    return load_torchvision(spec, weights=weights, num_classes=num_classes, allow_download=allow_download)


def _looks_like_file(spec: str) -> bool:
    path = Path(spec).expanduser()
    return path.suffix in (".pt", ".pth", ".ckpt", ".ts", ".bin", ".safetensors") or path.exists() or os.sep in spec


def probe_input(net: LoadedNetwork) -> torch.Tensor:
    """A batch of one blank image through the network's own preprocessing: an input of the size the
    network sees (for reading its layers' shapes)."""
    from PIL import Image

    return net.preprocess(Image.new("RGB", (256, 256), (128, 128, 128))).unsqueeze(0)


def load_demo(log: Callable[[str], None] | None = None) -> LoadedNetwork:
    ckpt = load_demo_checkpoint(log=log)
    model = DemoNet()
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return LoadedNetwork(
        model=model, name=DEMO_NAME, source="builtin", weights=None, n_classes=10,
        class_names=[str(i) for i in range(10)], preprocess=DemoPreprocess(ckpt["mean"], ckpt["std"]),
        info={"test_accuracy": round(float(ckpt["test_accuracy"]), 6),
              "architecture": "DemoNet", "version": DEMO_VERSION})


# what torchvision's ImageNet classification weights use; the default for checkpoints and for
# torchvision architectures without weights, since most vision checkpoints are ImageNet models
IMAGENET_PREPROCESS = {"resize": 256, "crop": 224, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def imagenet_preprocess(resize: int = 256, crop: int = 224, mean=IMAGENET_MEAN,
                        std=IMAGENET_STD, interpolation: str = "bilinear") -> Callable[[Any], torch.Tensor]:
    """RGB, shorter side resized to ``resize`` (``interpolation``, antialiased), centre crop ``crop``,
    scaled to [0, 1] and normalised by ``mean`` / ``std``: the transform of torchvision's ImageNet
    weights, and (bicubic, their sizes and statistics) of timm's and open_clip's evaluation."""
    from torchvision.transforms import InterpolationMode, v2

    mode = InterpolationMode(interpolation)
    return _RGB(v2.Compose([v2.Resize(resize, interpolation=mode, antialias=True), v2.CenterCrop(crop),
                            v2.PILToTensor(),
                            v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(list(mean), list(std))]))


def checkpoint_preprocess(spec: Any = None) -> tuple[Callable[[Any], torch.Tensor], dict[str, Any]]:
    """The preprocessing for a checkpoint: :data:`IMAGENET_PREPROCESS`, with any of its keys
    (``resize``, ``crop``, ``mean``, ``std``) overridden by the checkpoint's own ``"preprocess"``
    entry. Returns the transform and the settings the manifest records."""
    settings = dict(IMAGENET_PREPROCESS)
    if spec is not None:
        if not isinstance(spec, dict) or set(spec) - set(settings):
            raise NetworkLoadError(f"a checkpoint's 'preprocess' entry must be a mapping with keys among "
                                   f"{', '.join(settings)}, not {spec!r}")
        settings.update(spec)
    try:
        resize, crop = int(settings["resize"]), int(settings["crop"])
        mean = [float(v) for v in settings["mean"]]
        std = [float(v) for v in settings["std"]]
    except (TypeError, ValueError):
        raise NetworkLoadError(f"bad 'preprocess' entry in checkpoint: {spec!r}") from None
    if not (crop >= 1 and resize >= crop and len(mean) == len(std) == 3 and min(std) > 0):
        raise NetworkLoadError(f"bad 'preprocess' entry in checkpoint: {spec!r} (resize >= crop >= 1, "
                               f"three means and three positive standard deviations)")
    settings = {"resize": resize, "crop": crop, "mean": mean, "std": std}
    return imagenet_preprocess(resize, crop, mean, std), settings


def weights_preprocess(weights) -> dict[str, Any]:
    """What a torchvision weights enum's own transform does, for the manifest."""
    t = weights.transforms()
    out: dict[str, Any] = {"transform": type(t).__name__}
    for key, attr in (("resize", "resize_size"), ("crop", "crop_size"), ("mean", "mean"), ("std", "std")):
        value = getattr(t, attr, None)
        if value is not None:
            out[key] = list(value) if isinstance(value, (list, tuple)) else value
    return out


class _RGB:
    """Weights' transforms expect three channels; grayscale inputs (digits) are converted first."""

    def __init__(self, transform: Callable) -> None:
        self.transform = transform

    def __call__(self, image) -> torch.Tensor:
        return self.transform(image.convert("RGB"))

    @property
    def tensor_transform(self) -> Callable:
        """The same transform for an RGB CHW uint8 tensor (torchvision's transforms take both), for
        decoding on the device (stimuli.decoding)."""
        return self.transform


def _resolve_weights(name: str, weights: str):
    from torchvision import models

    try:
        enum = models.get_model_weights(name)
    except (ValueError, KeyError):
        raise NetworkLoadError(f"unknown torchvision architecture {name!r}") from None
    if weights == "DEFAULT":
        return enum.DEFAULT
    key = weights.split(".", 1)[1] if "." in weights else weights
    try:
        return enum[key]
    except KeyError:
        choices = ", ".join(["DEFAULT", *[w.name for w in enum]])
        raise NetworkLoadError(f"unknown weights {weights!r} for {name}; choose from {choices}") from None


def weights_cache_file(weights) -> Path:
    """The file torch's hub cache holds for a weights enum (where ``load_state_dict_from_url`` looks)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def load_torchvision(name: str, weights: str | None = None, num_classes: int | None = None,
                     allow_download: bool = True) -> LoadedNetwork:
    from torchvision import models

    if name not in models.list_models():
        raise NetworkLoadError(f"unknown network {name!r}: not 'demo', not a checkpoint file and not a "
                               f"torchvision architecture (e.g. resnet18, vgg16, alexnet)")
    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if weights is None:
        model = models.get_model(name, weights=None, **kwargs)
        preprocess, pp_info = checkpoint_preprocess()
        class_names = None
        weights_name = None
    else:
        w = _resolve_weights(name, weights)
        expected = weights_cache_file(w)
        if not expected.exists() and not allow_download:
            raise NetworkLoadError(f"weights {w} are not in the torch cache and downloads are off: "
                                   f"expected file {expected} (download it on a machine with internet "
                                   f"or set TORCH_HOME)")
        try:
            model = models.get_model(name, weights=w, **kwargs)
        except (OSError, RuntimeError) as exc:
            if expected.exists():
                raise
            raise NetworkLoadError(f"could not download weights {w} ({exc.__class__.__name__}); "
                                   f"expected file {expected} in the torch cache") from None
        # the weights' own transform (resize, crop, interpolation, normalisation they were trained with)
        preprocess = _RGB(w.transforms())
        pp_info = weights_preprocess(w)
        class_names = list(w.meta.get("categories") or []) or None
        weights_name = str(w)
    model.eval()
    n_classes = len(class_names) if class_names else num_classes
    return LoadedNetwork(model=model, name=name, source="torchvision", weights=weights_name,
                         n_classes=n_classes, class_names=class_names, preprocess=preprocess,
                         info={"preprocess": pp_info})


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _classifier(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The module that gives the class scores: the last ``Linear`` (or, for networks with a
    convolutional head such as SqueezeNet, the last ``Conv2d``) in registration order."""
    last = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            last[type(m)] = (name, m)
    return last.get(nn.Linear) or last.get(nn.Conv2d)


def class_count(model: nn.Module) -> int | None:
    """How many classes ``model``'s classifier scores (its output size), or None without one."""
    head = _classifier(model)
    if head is None:
        return None
    m = head[1]
    return int(m.out_features if isinstance(m, nn.Linear) else m.out_channels)


def checkpoint_class_count(model: nn.Module, state: dict) -> int | None:
    """The class count a state dict was saved with: the first dimension of the weight it holds for
    ``model``'s classifier (None when it holds none)."""
    head = _classifier(model)
    weight = state.get(f"{head[0]}.weight") if head is not None else None
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.ndim >= 1 else None


def _check_state_dict(model: nn.Module, state: dict, what: str) -> None:
    """Refuse a state dict whose tensors do not fit ``model``, naming every mismatch in full."""
    own = model.state_dict()

    def shape(t):
        return tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__

    wrong = [f"{k}: checkpoint {shape(v)} vs model {tuple(own[k].shape)}"
             for k, v in state.items() if k in own and shape(v) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    problems = []
    if wrong:
        problems.append("shapes differ: " + "; ".join(wrong))
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing from the checkpoint: {', '.join(missing[:8])}"
                        + (", …" if len(missing) > 8 else ""))
    if extra:
        problems.append(f"{len(extra)} unexpected tensor(s): {', '.join(extra[:8])}"
                        + (", …" if len(extra) > 8 else ""))
    if problems:
        hint = ""
        if wrong and (head := _classifier(model)) is not None and any(k.startswith(head[0] + ".") for k in state):
            found = checkpoint_class_count(model, state)
            if found is not None and found != class_count(model):
                hint = (f" (the checkpoint's classifier {head[0]} scores {found} classes: pass --num-classes "
                        f"{found} or leave it out to read it from the checkpoint)")
        raise NetworkLoadError(f"{what}: " + "; ".join(problems) + hint)


def load_checkpoint(path: str | Path, architecture: str | None = None,
                    num_classes: int | None = None) -> LoadedNetwork:
    """A state dict for ``architecture`` (``"demo"`` or a torchvision name), or a TorchScript file.

    A state dict may be saved bare or inside a dictionary (under ``state_dict``, ``model`` or
    ``model_state_dict``) whose other entries may say ``class_names`` (a list; completeness then
    scores against folder labels with the same names) and ``preprocess`` (see
    :func:`checkpoint_preprocess`; ImageNet's transform when absent). TorchScript files get the
    ImageNet transform. The class count is ``num_classes`` when given, else read from the state dict
    (the rows of its classifier's weight); a state dict that does not fit says which tensors differ,
    with both shapes.
    """
    path = Path(path)
    info = {"file": path.name, "sha256": _sha256_file(path)}
    if architecture is None:
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except Exception:
            raise NetworkLoadError(f"{path.name} is not a TorchScript file; for a state dict give the "
                                   f"architecture it belongs to (architecture='resnet18' or 'demo')") from None
        model.eval()
        preprocess, pp_info = checkpoint_preprocess()
        return LoadedNetwork(model=model, name=path.name, source="checkpoint", weights=None, n_classes=num_classes,
                             preprocess=preprocess, info={**info, "format": "torchscript", "preprocess": pp_info})
    state = read_weights(path)
    if isinstance(state, nn.Module):
        model = state.eval()
        preprocess, pp_info = checkpoint_preprocess()
        return LoadedNetwork(model=model, name=path.name, source="checkpoint", weights=None,
                             n_classes=num_classes or class_count(model), preprocess=preprocess,
                             info={**info, "architecture": architecture, "format": "module", "preprocess": pp_info})
    if isinstance(state, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in state and isinstance(state[key], dict):
                extra = state
                state = state[key]
                break
        else:
            extra = {}
    else:
        raise NetworkLoadError(f"{path.name} does not hold a state dict")
    if architecture == DEMO_NAME:
        def build(n: int | None) -> nn.Module:
            return DemoNet(n or 10)

        preprocess = DemoPreprocess(float(extra.get("mean", 0.0)), float(extra.get("std", 1.0)))
    else:
        from torchvision import models

        if architecture not in models.list_models():
            raise NetworkLoadError(f"unknown architecture {architecture!r} for checkpoint {path.name}")

        def build(n: int | None) -> nn.Module:
            return models.get_model(architecture, weights=None, **({"num_classes": n} if n else {}))

        preprocess, pp_info = checkpoint_preprocess(extra.get("preprocess"))
        info["preprocess"] = pp_info
    model = build(num_classes)
    if num_classes is None:
        found = checkpoint_class_count(model, state)
        if found is not None and found != class_count(model):
            model = build(found)
    _check_state_dict(model, state, f"checkpoint {path.name} does not fit architecture {architecture}"
                      + (f" with num_classes={num_classes}" if num_classes else ""))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise NetworkLoadError(f"checkpoint {path.name} does not fit architecture {architecture}: "
                               f"{' '.join(str(exc).split())}") from None
    model.eval()
    class_names = extra.get("class_names")
    class_names = [str(c) for c in class_names] if isinstance(class_names, (list, tuple)) and class_names else None
    n_classes = class_count(model) or (len(class_names) if class_names else None)
    return LoadedNetwork(model=model, name=path.name, source="checkpoint", weights=None, n_classes=n_classes,
                         class_names=class_names, preprocess=preprocess,
                         info={**info, "architecture": architecture, "format": "state_dict"})


def read_weights(path: Path) -> dict | nn.Module:
    """A weights file's content: a state dict (read with ``weights_only``, which runs no code), or
    else a whole pickled module. Unpickling a module runs code from the file, as ``torch.load`` always
    does for modules: load only files you trust."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as safe_exc:  # noqa: BLE001 - not plain tensors: perhaps a whole module
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001
            raise NetworkLoadError(f"could not read weights file {path.name}: {safe_exc}") from None
        if not isinstance(obj, nn.Module):
            raise NetworkLoadError(f"weights file {path.name} holds a {type(obj).__name__}, neither a state "
                                   f"dict nor a module") from None
        return obj


def _state_of(obj: dict | nn.Module) -> dict:
    """The state dict of a weights file's content (bare, or under ``state_dict`` / ``model``)."""
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    for key in ("state_dict", "model", "model_state_dict"):
        if key in obj and isinstance(obj[key], dict):
            return obj[key]
    return obj


def _load_into(model: nn.Module, checkpoint: str | os.PathLike, what: str) -> dict[str, Any]:
    """Load a weights file into ``model`` (every tensor must fit: :func:`_check_state_dict`); the
    manifest's record of the file."""
    path = _weights_file(checkpoint)
    state = _state_of(read_weights(path))
    _check_state_dict(model, state, f"weights file {path.name} does not fit {what}")
    model.load_state_dict(state)
    return {"checkpoint": path.name, "sha256": _sha256_file(path)}


@contextlib.contextmanager
def _hub_offline(offline: bool):
    """The Hugging Face hub (timm's and open_clip's weights) on its cache only while ``offline``."""
    if not offline:
        yield
        return
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


def _hub_cache() -> str:
    return os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")


def load_timm(name: str, weights: str | None = None, checkpoint: str | None = None, num_classes: int | None = None,
              allow_download: bool = True) -> LoadedNetwork:
    """A timm model (``timm.create_model``): random weights, a local ``checkpoint``, or with ``weights``
    (``DEFAULT`` or a pretrained tag such as ``augreg_in21k``) timm's pretrained weights from the hub
    cache. Preprocessing is timm's data config for the model (``resolve_data_config``): input size,
    ``crop_pct``, interpolation, mean and std."""
    import timm
    from timm.data import resolve_data_config

    if not timm.list_models(name.split(".", 1)[0]):
        raise NetworkLoadError(f"unknown timm model {name!r} (timm.list_models() lists them)")
    kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    full = name if weights in (None, "DEFAULT") or "." in name else f"{name}.{weights}"
    pretrained = weights is not None and checkpoint is None
    info: dict[str, Any] = {"architecture": full}
    try:
        with _hub_offline(not allow_download):
            model = timm.create_model(full, pretrained=pretrained, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the hub's errors differ by version; each means: no weights
        if not pretrained:
            raise NetworkLoadError(f"timm could not build {full}: {exc}") from None
        raise NetworkLoadError(f"timm's pretrained weights for {full} are not in the hub cache ({_hub_cache()})"
                               f"{' and downloads are off' if not allow_download else ''} "
                               f"({exc.__class__.__name__}); give a weights file with --checkpoint") from None
    if checkpoint is not None:
        info.update(_load_into(model, checkpoint, f"timm model {full}"))
    model.eval()
    cfg = resolve_data_config({}, model=model)
    size = int(cfg["input_size"][-1])
    # timm's evaluation transform: the shorter side to floor(size / crop_pct), then a centre crop
    resize = int(math.floor(size / float(cfg.get("crop_pct") or 1.0)))
    interpolation = cfg.get("interpolation") or "bilinear"
    pp = {"resize": resize, "crop": size, "mean": [float(v) for v in cfg["mean"]],
          "std": [float(v) for v in cfg["std"]], "interpolation": interpolation, "from": "timm data config"}
    preprocess = imagenet_preprocess(resize, size, pp["mean"], pp["std"], interpolation)
    n_classes = getattr(model, "num_classes", None) or class_count(model)
    return LoadedNetwork(model=model, name=TIMM_PREFIX + name, source="timm",
                         weights=full if pretrained else None, n_classes=n_classes, preprocess=preprocess,
                         info={**info, "preprocess": pp})


class ZeroShotClassifier(nn.Module):
    """An open_clip image tower with a zero-shot head: the cosine similarity of the image embedding
    with each class's prompt embedding, times CLIP's logit scale — CLIP's own zero-shot classifier.

    Without class embeddings (before :meth:`LoadedNetwork.for_classes`) it gives the normalised image
    embedding; either way the tower's layers are named ``visual.…``."""

    def __init__(self, visual: nn.Module, class_embeddings: torch.Tensor | None = None,
                 logit_scale: float = 100.0) -> None:
        super().__init__()
        self.visual = visual
        self.head: nn.Module = nn.Identity()
        if class_embeddings is not None:
            self.head = nn.Linear(class_embeddings.shape[1], class_embeddings.shape[0], bias=False)
            with torch.no_grad():
                self.head.weight.copy_(class_embeddings * logit_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.visual(x)
        return self.head(nn.functional.normalize(features, dim=-1))


def load_open_clip(name: str, weights: str | None = None, checkpoint: str | None = None,
                   allow_download: bool = True) -> LoadedNetwork:
    """An open_clip model's image tower (``open_clip.create_model``): random weights, a local
    ``checkpoint`` (the whole CLIP model's state dict, or the module), or ``weights`` (a pretrained tag
    such as ``openai``) from the hub cache. Its layers are the image tower's, named ``visual.…``;
    :meth:`LoadedNetwork.for_classes` adds the zero-shot head over an image set's class names, one
    prompt per class (:data:`CLIP_PROMPT_TEMPLATE`). Preprocessing is the model's ``preprocess_cfg``
    (shorter side to the input size, centre crop, CLIP's mean and std, bicubic)."""
    import open_clip

    if name not in open_clip.list_models():
        raise NetworkLoadError(f"unknown open_clip model {name!r} (open_clip.list_models() lists them)")
    pretrained = None if checkpoint is not None or weights is None else weights
    if pretrained == "DEFAULT":
        tags = open_clip.list_pretrained_tags_by_model(name)
        pretrained = tags[0] if tags else None
    info: dict[str, Any] = {"architecture": name}
    try:
        with _hub_offline(not allow_download):
            clip = open_clip.create_model(name, pretrained=pretrained)
    except Exception as exc:  # noqa: BLE001
        if pretrained is None:
            raise NetworkLoadError(f"open_clip could not build {name}: {exc}") from None
        raise NetworkLoadError(f"open_clip's weights {name}/{pretrained} are not in the hub cache ({_hub_cache()})"
                               f"{' and downloads are off' if not allow_download else ''} "
                               f"({exc.__class__.__name__}); give a weights file with --checkpoint") from None
    if checkpoint is not None:
        info.update(_load_into(clip, checkpoint, f"open_clip model {name}"))
    clip.eval()
    cfg = dict(clip.visual.preprocess_cfg)
    size = cfg["size"]
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    interpolation = cfg.get("interpolation") or "bicubic"
    pp = {"resize": size, "crop": size, "mean": [float(v) for v in cfg["mean"]],
          "std": [float(v) for v in cfg["std"]], "interpolation": interpolation, "from": "open_clip preprocess_cfg"}
    preprocess = imagenet_preprocess(size, size, pp["mean"], pp["std"], interpolation)
    tokenizer = open_clip.get_tokenizer(name)
    info.update(preprocess=pp, prompt_template=CLIP_PROMPT_TEMPLATE)
    describe = {"name": OPEN_CLIP_PREFIX + name, "source": "open_clip", "weights": pretrained}

    def zero_shot(class_names: list[str]) -> LoadedNetwork:
        with torch.no_grad():
            text = clip.encode_text(tokenizer([CLIP_PROMPT_TEMPLATE.format(c) for c in class_names]))
            embeddings = nn.functional.normalize(text.float(), dim=-1)
        scale = float(clip.logit_scale.detach().exp()) if hasattr(clip, "logit_scale") else 100.0
        model = ZeroShotClassifier(clip.visual, embeddings, scale).eval()
        return LoadedNetwork(model=model, preprocess=preprocess, n_classes=len(class_names),
                             class_names=list(class_names), info={**info, "zero_shot_classes": len(class_names)},
                             **describe)

    return LoadedNetwork(model=ZeroShotClassifier(clip.visual).eval(), preprocess=preprocess, info=info,
                         zero_shot=zero_shot, **describe)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available")
    return torch.device(device)
