"""The activations section: which layers are read, and how (:mod:`stimuli.activations`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..sections import Section, cli, comma_list, is_int, need

# the mean or the max over the positions (a transformer's patch tokens, its class token and registers left
# out), or a transformer's class token alone (stimuli.layers.Layout)
POOLINGS = ("mean", "max", "class_token")
ACTIVATIONS = ("post_relu", "pre_relu")
# JPEG decoding (stimuli.decoding): "auto" with nvJPEG on a CUDA device and with PIL elsewhere
DECODERS = ("auto", "pil", "torchvision")


def _default_layers() -> list[str]:
    return ["conv2"]


@dataclass(frozen=True)
class ActivationSettings(Section):
    """The ``layers`` read in one forward pass per batch of ``batch_size`` images, pooled over positions
    (``pooling``) before (``pre_relu``) or after a ReLU (``activation``). ``num_workers``: DataLoader
    worker processes decoding images; None: the usable cores, capped, for a folder, and none for the
    in-memory digits or inside a daemonic process (:func:`stimuli.activations.auto_num_workers`).
    ``decode``: one of :data:`DECODERS`. The flat keys are the field names."""

    layers: list[str] = field(
        default_factory=_default_layers,
        metadata=cli(comma_list, "--layer", "--layers", help="layer name(s), comma separated"),
    )
    pooling: str = field(default="mean", metadata=cli(str, choices=POOLINGS))
    activation: str = field(default="post_relu", metadata=cli(str, choices=ACTIVATIONS))
    batch_size: int = field(default=256, metadata=cli(int))
    num_workers: int | None = None
    decode: str = "auto"

    def validate(self) -> None:
        need(
            isinstance(self.layers, list)
            and len(self.layers) > 0
            and all(isinstance(s, str) and s for s in self.layers),
            "layers must be a non-empty list of layer names (see `python -m stimuli layers`)",
        )
        need(len(set(self.layers)) == len(self.layers), f"layers are repeated: {self.layers}")
        need(self.pooling in POOLINGS, f"pooling must be one of {', '.join(POOLINGS)}, not {self.pooling!r}")
        need(
            self.activation in ACTIVATIONS,
            f"activation must be one of {', '.join(ACTIVATIONS)}, not {self.activation!r}",
        )
        need(
            is_int(self.batch_size) and self.batch_size >= 1,
            f"batch_size must be a positive integer, not {self.batch_size!r}",
        )
        need(
            self.num_workers is None or (is_int(self.num_workers) and self.num_workers >= 0),
            f"num_workers must be a non-negative integer or null (automatic), not {self.num_workers!r}",
        )
        need(self.decode in DECODERS, f"decode must be 'auto', 'pil' or 'torchvision', not {self.decode!r}")
