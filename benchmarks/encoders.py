"""CLIP encoder throughput: batch size 1 (baseline) against the batched path we ship.

Runs (a) the tiny test CLIP and (b) a full-size open_clip ViT-L-14 with random weights (same
compute as the real one, nothing downloaded) through :class:`gmi_desktop.engine.clip.ClipModel`,
on the device ``choose_device`` picks (fp16 on CUDA). Prints images/s and texts/s, the batched /
batch-1 ratio, and what that means for clip-interrogator's ~112 000 label embeddings.

    python benchmarks/encoders.py            # a few images on CPU, more on a GPU
    python benchmarks/encoders.py --images 64 --texts 2048
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gmi_desktop.engine.clip import ClipModel  # noqa: E402
from gmi_desktop.engine.device import choose_device  # noqa: E402
from gmi_desktop.engine.weights import ResolvedWeights  # noqa: E402

INTERROGATOR_LABELS = 112_000


def _random_clip(name: str, device: str) -> ClipModel:
    import open_clip
    import torch

    choice = choose_device(device)
    torch.manual_seed(0)
    precision = "fp16" if choice.dtype_name == "float16" else "fp32"
    module, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None, precision=precision,
                                                                  device=choice.device)
    module.eval()
    dim = open_clip.get_model_config(name)["embed_dim"]
    return ClipModel(module, preprocess, open_clip.get_tokenizer(name), model=name, pretrained="random",
                     feature_dim=dim, device=choice, weights=ResolvedWeights(f"random {name}", Path("."), "random"))


def _rate(fn, items, batch_size: int, repeats: int) -> float:
    fn(items[: min(len(items), batch_size)], batch_size=batch_size)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(items, batch_size=batch_size)
        best = min(best, time.perf_counter() - start)
    return len(items) / best


def run(name: str, clip: ClipModel, n_images: int, n_texts: int, batch_images: int, batch_texts: int,
        repeats: int = 2) -> None:
    from tests.support.tiny_clip import random_images

    images = random_images(n_images, seed=1, size=(256, 256))
    texts = [f"a photo of object number {i}, highly detailed" for i in range(n_texts)]
    img1 = _rate(clip.encode_images, images, 1, repeats)
    imgb = _rate(clip.encode_images, images, batch_images, repeats)
    txt1 = _rate(clip.encode_texts, texts, 1, repeats)
    txtb = _rate(clip.encode_texts, texts, batch_texts, repeats)
    print(f"{name} on {clip.device.device} ({clip.device.dtype_name}):")
    print(f"  images: batch 1 {img1:9.1f}/s | batch {batch_images:4d} {imgb:9.1f}/s | ratio {imgb / img1:5.2f}x")
    print(f"  texts : batch 1 {txt1:9.1f}/s | batch {batch_texts:4d} {txtb:9.1f}/s | ratio {txtb / txt1:5.2f}x")
    print(f"  interrogator label cache ({INTERROGATOR_LABELS} labels): ~{INTERROGATOR_LABELS / txtb:.0f} s batched, "
          f"~{INTERROGATOR_LABELS / txt1:.0f} s one by one")


def main() -> int:
    import torch

    from tests.support.tiny_clip import TINY_CLIP, register_tiny_clip

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=0, help="images per run (default: 4 CPU, 128 GPU)")
    parser.add_argument("--texts", type=int, default=0, help="texts per run (default: 16 CPU, 4096 GPU)")
    args = parser.parse_args()
    gpu = choose_device(args.device).device != "cpu"
    n_images = args.images or (128 if gpu else 4)
    n_texts = args.texts or (4096 if gpu else 16)
    torch.set_grad_enabled(False)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    register_tiny_clip()
    run("tiny CLIP (test fixture)", _random_clip(TINY_CLIP, args.device), 64, 512, 32, 256)
    run("ViT-L-14 (random weights, real size)", _random_clip("ViT-L-14", args.device), n_images, n_texts,
        min(32, n_images), min(256, n_texts), repeats=2 if gpu else 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
