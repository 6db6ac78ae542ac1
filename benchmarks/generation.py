"""Generation speed: seconds per image and images/s through the shipped generation path.

(a) a tiny random SD 1.5-layout checkpoint on the CPU, loaded from an original-layout single file;
(b) on CUDA only, a full-size SD 1.5 pipeline (UNet 860M, VAE, CLIP-L text tower) with random
    weights built from ``resources/diffusers/sd1`` (the same compute as a real checkpoint, nothing
    downloaded) at 512x512: batch size 1 in fp32 and fp16 against the batched fp16 path we ship.
    Without CUDA, (b) is skipped with a note.

Ratios are against the batch-size-1 baseline measured in the same process.
Run from the repository root: ``python benchmarks/generation.py [--images 8 --steps 10]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gmi_desktop.engine.device import DeviceChoice  # noqa: E402
from gmi_desktop.engine.generation import GenerationBackend, GenerationOptions, LoadedPipeline, plan_images  # noqa: E402
from gmi_desktop.engine.pipelines import make_scheduler  # noqa: E402
from gmi_desktop.engine.verdicts import Verdicts  # noqa: E402

PROMPTS = ["a lighthouse on a cliff at sunset", "portrait of an old fisherman, oil painting",
           "a bowl of fruit on a wooden table", "a futuristic city street at night, neon lights"]


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _measure(loaded: LoadedPipeline, n_images: int) -> float:
    jobs = plan_images(PROMPTS, (n_images + len(PROMPTS) - 1) // len(PROMPTS), base_seed=0)[:n_images]
    loaded.generate([jobs[0].prompt], [jobs[0].seed])  # warm-up
    _sync()
    start = time.perf_counter()
    loaded.generate([j.prompt for j in jobs], [j.seed for j in jobs])
    _sync()
    return time.perf_counter() - start


def _report(label: str, seconds: float, n_images: int, baseline: float | None) -> float:
    per_image = seconds / n_images
    ratio = f"  x{baseline / per_image:.2f} vs batch 1" if baseline else ""
    print(f"  {label:<28} {per_image:8.3f} s/image  {1 / per_image:8.2f} images/s{ratio}")
    return per_image


def bench_tiny(n_images: int, steps: int, resolution: int) -> None:
    from tests.support.tiny_sd import make_tiny_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        ck = make_tiny_checkpoint(Path(tmp), "sd1", seed=0)
        print(f"(a) tiny SD 1.5-layout checkpoint, CPU, {resolution}x{resolution}, {steps} steps, {n_images} images")
        baseline = None
        for batch in (1, 4):
            options = GenerationOptions(steps=steps, resolution=resolution, batch_size=batch, device="cpu")
            loaded = GenerationBackend(Verdicts(None)).load(ck.path, "sd1", options=options, config_dir=ck.config_dir)
            per_image = _report(f"batch {batch} fp32", _measure(loaded, n_images), n_images, baseline)
            baseline = baseline or per_image
            loaded.close()


def full_size_sd15(dtype_name: str, device: str = "cuda") -> object:
    """Full-size SD 1.5 pipeline with random weights, initialised directly on ``device``."""
    import diffusers
    import torch
    import transformers

    from gmi_desktop.engine.pipelines import clip_tokenizer
    from gmi_desktop.engine.sd_configs import config_dir

    folder = config_dir("sd1")
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    with torch.device(device):
        unet = diffusers.UNet2DConditionModel.from_config(diffusers.UNet2DConditionModel.load_config(folder / "unet"))
        vae = diffusers.AutoencoderKL.from_config(diffusers.AutoencoderKL.load_config(folder / "vae"))
        text = transformers.CLIPTextModel(transformers.CLIPTextConfig.from_pretrained(folder / "text_encoder"))
    scheduler = diffusers.PNDMScheduler.from_pretrained(folder, subfolder="scheduler")
    pipe = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=clip_tokenizer(), unet=unet,
                                             scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    return pipe.to(device, dtype)


def bench_full(n_images: int, steps: int) -> None:
    import torch

    if not torch.cuda.is_available():
        print("(b) full-size SD 1.5 UNet at 512x512: SKIPPED, no CUDA GPU on this machine "
              "(run this script on a GPU machine to measure it)")
        return
    print(f"(b) full-size SD 1.5 (random weights), {torch.cuda.get_device_name()}, 512x512, {steps} steps, "
          f"{n_images} images")
    baseline = None
    for label, dtype_name, batch in (("batch 1 fp32", "float32", 1), ("batch 1 fp16", "float16", 1),
                                     ("batch 4 fp16 (shipped)", "float16", 4)):
        options = GenerationOptions(steps=steps, resolution=512, batch_size=batch, device="cuda")
        pipe = full_size_sd15(dtype_name)
        pipe.scheduler = make_scheduler(options.scheduler, pipe.scheduler.config)
        loaded = LoadedPipeline(pipe, "sd1", "normal", Path("random-sd15"), DeviceChoice("cuda", dtype_name),
                                options, 512, verdicts=Verdicts(None))
        per_image = _report(label, _measure(loaded, n_images), n_images, baseline)
        baseline = baseline or per_image
        print(f"    peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB, fallbacks used: "
              f"{loaded.tried or 'none'}")
        loaded.close()
        torch.cuda.reset_peak_memory_stats()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=64, help="tiny pipeline resolution")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for (a)")
    parser.add_argument("--full-images", type=int, default=8)
    parser.add_argument("--full-steps", type=int, default=20)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s)")
    bench_tiny(args.images, args.steps, args.resolution)
    bench_full(args.full_images, args.full_steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
