"""The network section: which network a job loads, and where it runs (:mod:`stimuli.networks`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..sections import Section, cli, is_int, need

DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class NetworkSettings(Section):
    """``name`` is ``"demo"`` (the built-in digits CNN), a torchvision architecture name (``"resnet18"``,
    with ``weights`` such as ``"DEFAULT"`` or ``"IMAGENET1K_V1"``), ``"timm:<name>"``, ``"open_clip:<name>"``
    (the image tower, with a zero-shot head over the image set's class names), any of these with a
    ``checkpoint`` weights file (a state dict or a whole module), or a path to a local checkpoint (a
    state dict for ``architecture``, or a TorchScript file). ``num_classes`` is a state dict's class
    count; None reads it from the checkpoint (its classifier's weight). ``device``: ``"auto"`` (CUDA when
    present), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``."""

    FLAT = {"name": "network"}

    name: str = field(
        default="demo",
        metadata=cli(
            str, help="'demo', a torchvision architecture, timm:<name>, open_clip:<name>, or a checkpoint path"
        ),
    )
    weights: str | None = field(
        default=None,
        metadata=cli(
            str,
            help="pretrained weights from the library's hub: a torchvision weights enum name (DEFAULT, "
            "IMAGENET1K_V1), a timm or open_clip pretrained tag, or DEFAULT",
        ),
    )
    # a weights file for the named network (stimuli.networks.load_network)
    checkpoint: str | None = field(
        default=None, metadata=cli(str, help="a weights file for --network (a state dict or a whole module)")
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
            self.checkpoint is None or (isinstance(self.checkpoint, str) and self.checkpoint != ""),
            "checkpoint must be null or the path of a weights file",
        )
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
