"""JPEG decoding on the device with torchvision's ``decode_jpeg`` (nvJPEG on CUDA), for the activation pass.

Loader workers only read the files' bytes; each batch is decoded in one ``decode_jpeg`` call on the
device and preprocessed there with the network's tensor transform, so a GPU is not fed by CPU decoders.
It is chosen only where it pays: on CUDA, for a folder, with a preprocessing that takes tensors
(torchvision's weight transforms). On the CPU it is slower than PIL end to end (measured on 500 x 375
photographs with ResNet-50's transform: decoding 3.5 ms against PIL's 4.4 ms, but the tensor resize
makes it 15.3 ms per image against PIL's 11.3 ms), so the CPU keeps PIL; it runs there only when asked,
which is how the tests check it. Files ``decode_jpeg`` refuses (another format, a damaged file) are
decoded one by one with ``decode_image`` on the CPU; those that still fail are dropped and counted,
as the PIL path drops them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

from .datasets import FolderImageSet, ImageSet, SubsetImageSet

DECODE_MODES = ("auto", "pil", "torchvision")


def _folder_and_rows(images: ImageSet):
    if isinstance(images, SubsetImageSet) and isinstance(images.base, FolderImageSet):
        return images.base, images.indices
    if isinstance(images, FolderImageSet):
        return images, None
    return None, None


def tensor_transform(preprocess: Callable) -> Callable | None:
    """The preprocessing's transform of a CHW uint8 RGB tensor, where it declares one."""
    return getattr(preprocess, "tensor_transform", None)


def use_device_decoding(images: ImageSet, preprocess: Callable, device: torch.device, mode: str = "auto") -> bool:
    if mode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {', '.join(DECODE_MODES)}, not {mode!r}")
    possible = _folder_and_rows(images)[0] is not None and tensor_transform(preprocess) is not None
    if mode == "torchvision" and not possible:
        raise ValueError("decode 'torchvision' needs a folder of images and a network whose preprocessing "
                         "takes tensors (torchvision weights)")
    return possible and (mode == "torchvision" or (mode == "auto" and device.type == "cuda"))


class _EncodedFiles(torch.utils.data.Dataset):
    def __init__(self, images: ImageSet) -> None:
        self.folder, self.rows = _folder_and_rows(images)
        self.n = len(images)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        row = i if self.rows is None else int(self.rows[i])
        try:
            # read by Python: torchvision's read_file hung in a forked loader worker (torchvision 0.29)
            return i, self.folder.files[row].read_bytes()
        except OSError:
            return i, None


def _collate(items):
    return [i for i, _ in items], [None if data is None else torch.frombuffer(bytearray(data), dtype=torch.uint8)
                                   for _, data in items]


def decode(datas: list, device: torch.device) -> list:
    """RGB CHW uint8 images on ``device``; None for a file that cannot be decoded."""
    present = [d for d in datas if d is not None]
    try:
        decoded = iter(decode_jpeg(present, mode=ImageReadMode.RGB, device=device)) if present else iter(())
        return [None if d is None else next(decoded) for d in datas]
    except RuntimeError:
        pass
    out = []
    for d in datas:
        image = None
        if d is not None:
            try:
                image = decode_jpeg(d, mode=ImageReadMode.RGB, device=device)
            except RuntimeError:
                try:
                    image = decode_image(d, mode=ImageReadMode.RGB).to(device)
                except RuntimeError:
                    image = None
        out.append(image)
    return out


def device_batches(images: ImageSet, preprocess: Callable, batch_size: int, num_workers: int,
                   device: torch.device):
    """Like :func:`stimuli.activations.batches`: ``(indices, input batch on device, n_failed)``."""
    transform = tensor_transform(preprocess)
    options = {"persistent_workers": True, "prefetch_factor": 4} if num_workers > 0 else {}
    loader = torch.utils.data.DataLoader(_EncodedFiles(images), batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, collate_fn=_collate, **options)
    for idx, datas in loader:
        decoded = decode(datas, device)
        ok = [(i, im) for i, im in zip(idx, decoded) if im is not None]
        failed = len(idx) - len(ok)
        if not ok:
            yield torch.empty(0, dtype=torch.long), None, failed
            continue
        yield torch.tensor([i for i, _ in ok]), torch.stack([transform(im) for _, im in ok]), failed
