"""The network section: which network a job loads, and where it runs (:mod:`stimuli.networks`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..sections import Section, cli, is_int, need

DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class NetworkSettings(Section):
    """``name`` is ``"demo"`` (the built-in digits CNN), a torchvision architecture name (``"resnet18"``,
    with ``weights`` such as ``"DEFAULT"`` or ``"IMAGENET1K_V1"``), or a path to a local checkpoint (a
    state dict for ``architecture``, or a TorchScript file). ``num_classes`` is a state dict's class
    count; None reads it from the checkpoint (its classifier's weight). ``device``: ``"auto"`` (CUDA when
    present), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``."""

    FLAT = {"name": "network"}

    name: str = field(
        default="demo", metadata=cli(str, help="'demo', a torchvision architecture, or a checkpoint path")
    )
    weights: str | None = field(
        default=None, metadata=cli(str, help="torchvision weights enum name, e.g. DEFAULT or IMAGENET1K_V1")
    )
    architecture: str | None = field(default=None, metadata=cli(str, help="architecture of a state-dict checkpoint"))
    num_classes: int | None = field(
        default=None,
        metadata=cli(int, help="classes of a state-dict checkpoint (default: read from its classifier's weight)"),
    )
    allow_download: bool = field(
        default=True, metadata=cli(bool, "--offline", action="store_false", help="never download weights")
    )
    device: str = field(default="auto", metadata=cli(str))

    def validate(self) -> None:
        need(
            isinstance(self.name, str) and self.name.strip() != "",
            "network must be 'demo', a torchvision architecture name or a checkpoint path",
        )
        need(self.weights is None or isinstance(self.weights, str), "weights must be null or an enum name")
        need(
            self.architecture is None or isinstance(self.architecture, str),
            "architecture must be null or a torchvision architecture name",
        )
        need(
            self.num_classes is None or (is_int(self.num_classes) and self.num_classes >= 1),
            "num_classes must be null or a positive integer",
        )
        need(isinstance(self.allow_download, bool), "allow_download must be true or false")
        need(
            isinstance(self.device, str) and (self.device in DEVICES or self.device.startswith("cuda:")),
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', not {self.device!r}",
        )
