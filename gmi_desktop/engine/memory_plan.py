"""How many images to generate at once, and whether a finished batch is usable.

Memory plan (decided before the first batch, adjusted as batches run):

* VAE slicing and tiling are on from the start: the VAE decodes one image at a time (results are
  batch-size invariant already), and tiles above its native size. Attention slicing is never used:
  with PyTorch's scaled-dot-product attention it only slows generation down.
* :func:`plan_batch` picks the batch from the free accelerator memory once the weights are in
  place, per family and resolution (:data:`PER_IMAGE_BYTES`, measured by
  ``benchmarks/gpu_smoke.py``); a batch that had to be lowered is remembered per device kind.
* :class:`SpeedWatch` notices when steps get much slower per image than a batch of the same or a
  smaller size managed (Windows drivers spill VRAM into system RAM instead of failing: 5-10x
  slower), or CUDA reserved more than the card has: the batch is halved from then on.

Broken images (:func:`broken_reason`): fp16 overflows give NaN latents (GTX 16xx, some SD 1.x VAEs,
MPS), which diffusers turns into black images with only a warning. A batch whose latents or
images are not finite, or whose images are all black or one flat colour, is never handed out.
"""

from __future__ import annotations

from typing import Any

# Peak extra memory per image at the family's native resolution in fp16 with classifier-free
# guidance and PyTorch SDPA (UNet activations; the VAE decodes one image at a time, tiled).
PER_IMAGE_BYTES = {"sd1": 700 << 20, "sd2": 1100 << 20, "sdxl": 1600 << 20, "sdxl_refiner": 1600 << 20}
NATIVE = {"sd1": 512, "sd2": 768, "sdxl": 1024, "sdxl_refiner": 1024}
HEADROOM = 1 << 30  # for the VAE decode, the allocator's fragmentation and other programs
COLLAPSE = 3.0  # a step this many times slower per image than before means memory spilled


def plan_batch(family: str, resolution: int, free_bytes: int | None, wanted: int, fp32: bool = False) -> int:
    """The batch size that fits ``free_bytes`` (None: unknown, e.g. the CPU: ``wanted``)."""
    if free_bytes is None:
        return wanted
    per_image = PER_IMAGE_BYTES.get(family, PER_IMAGE_BYTES["sdxl"]) * (resolution / NATIVE.get(family, 1024)) ** 2
    per_image *= 2 if fp32 else 1
    return max(1, min(wanted, int((free_bytes - HEADROOM) // max(per_image, 1))))


def broken_reason(latents: Any, images: Any) -> str | None:
    """Why a batch is unusable (``latents``: the final torch latents or None; ``images``: float
    numpy array ``(n, h, w, 3)`` in [0, 1]), or None when every image is usable."""
    import numpy as np

    if latents is not None:
        import torch

        if not bool(torch.isfinite(latents).all()):
            return "NaN or infinite latents"
    if not np.isfinite(images).all():
        return "NaN or infinite pixels"
    for k, image in enumerate(images):
        if float(image.max()) <= 1.5 / 255:
            return f"image {k + 1} of the batch is all black"
        if float(image.max() - image.min()) <= 1.5 / 255:
            return f"image {k + 1} of the batch is one flat colour"
    return None


class SpeedWatch:
    """Seconds per image-step by batch size; says when a batch collapsed."""

    def __init__(self) -> None:
        self.best: dict[int, float] = {}

    def collapsed(self, batch: int, seconds_per_image_step: float) -> bool:
        """Record a finished batch; True when it ran :data:`COLLAPSE` times slower per image than a
        batch of the same or a smaller size did."""
        reference = [t for n, t in self.best.items() if n <= batch]
        slow = bool(reference) and seconds_per_image_step > COLLAPSE * min(reference)
        if not slow:
            self.best[batch] = min(self.best.get(batch, seconds_per_image_step), seconds_per_image_step)
        return slow


def spilled(device: Any) -> bool:
    """CUDA reserved more memory than the card has (a driver spilling into system RAM)."""
    if not device.is_cuda:
        return False
    import torch

    index = torch.device(device.device)
    _free, total = torch.cuda.mem_get_info(index)
    return torch.cuda.memory_reserved(index) > total
