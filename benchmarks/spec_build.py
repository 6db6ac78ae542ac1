"""Spec building speed: images/s of the spec builder against a naive diffusers loop, same checkpoint.

- **builder**: ``SpecBuilder.build()`` end to end on a one-model library (catalogued by the real
  scan): generation in batches of ``batch_size`` (fp16 on CUDA), CLIP encoding per batch, features
  saved after every batch, thumbnails, coarse pass then refinement.
- **naive**: what a script written from the diffusers docs does: ``from_single_file`` (with our
  shipped config, so offline), fp32, one prompt at a time, then CLIP on each image.

Both use the same prompts (the default set), seeds, scheduler, steps and resolution; the naive loop
runs the first ``--naive-images`` prompts. The CLIP features of the images both make are compared
(max |difference| of unit vectors: batched vs one at a time, fp16 vs fp32 on CUDA).

``--mode cpu`` (default): a tiny random SD 1.x checkpoint and a tiny CLIP at 64x64.
``--mode gpu``: a full-size SD 1.5 with random weights written as an original-layout single file
(fp16, ~2 GB) and a random ViT-L-14 CLIP, at 512x512 (needs CUDA).
Run from the repository root: ``python benchmarks/spec_build.py [--mode gpu]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _full_size_checkpoint(folder: Path) -> Path:
    """Full-size SD 1.5 (random weights) as an original-layout fp16 single file."""
    import diffusers
    import torch
    import transformers
    from safetensors.torch import save_file

    from gmi_desktop.engine.sd_configs import config_dir
    from tests.support.tiny_sd import original_state_dict

    cfg = config_dir("sd1")
    torch.manual_seed(0)
    with torch.device("cuda"):
        parts = {
            "unet": diffusers.UNet2DConditionModel.from_config(diffusers.UNet2DConditionModel.load_config(cfg / "unet")),
            "vae": diffusers.AutoencoderKL.from_config(diffusers.AutoencoderKL.load_config(cfg / "vae")),
            "text_encoder": transformers.CLIPTextModel(transformers.CLIPTextConfig.from_pretrained(cfg / "text_encoder")),
        }
    state = {k: v.half().cpu() if v.is_floating_point() else v.cpu() for k, v in original_state_dict(parts, "sd1").items()}
    path = folder / "library" / "random-sd15.safetensors"
    path.parent.mkdir(parents=True)
    save_file(state, str(path), metadata={"format": "pt"})
    return path


def _random_vit_l14(folder: Path) -> Path:
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-L-14", pretrained=None)
    path = folder / "clip" / "random-vit-l-14.safetensors"
    path.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def setup(mode: str, folder: Path, steps: int):
    """Settings and the one-model library for ``mode``; returns (settings, checkpoint path, probe)."""
    from gmi_desktop.store.settings import Settings

    os.environ["GMI_DATA_DIR"] = str(folder / "data")
    os.environ["GMI_CACHE_DIR"] = str(folder / "cache")
    if mode == "cpu":
        from tests.support.spec_build import tiny_probe, tiny_resources, tiny_settings
        from tests.support.tiny_clip import register_tiny_clip
        from tests.support.tiny_sd import make_tiny_checkpoint

        register_tiny_clip()
        os.environ["GMI_RESOURCES_DIR"] = str(tiny_resources(folder / "resources"))
        ck = make_tiny_checkpoint(folder / "build", "sd1", seed=0).path
        path = folder / "library" / "tiny.safetensors"
        path.parent.mkdir(parents=True)
        path.write_bytes(ck.read_bytes())
        return tiny_settings(steps=steps), path, tiny_probe
    from gmi_desktop.store.probe import probe

    clip = _random_vit_l14(folder)
    return (Settings(clip_model="ViT-L-14", clip_pretrained="openai", clip_weights=str(clip), device="cuda",
                     steps=steps, allow_downloads=False), _full_size_checkpoint(folder), probe)


def run_builder(settings, path: Path, probe_fn):
    from gmi_desktop.core.progress import run
    from gmi_desktop.engine.host import ModelHost
    from gmi_desktop.services.library import Library, run as run_scan
    from gmi_desktop.services.specs import SpecBuilder
    from gmi_desktop.store.catalog import Catalog
    from gmi_desktop.store.specfile import SpecStore

    catalog = Catalog()
    library = Library(catalog, probe_fn=probe_fn)
    library.add_folder(path.parent)
    run_scan(library.scan())
    with ModelHost(settings) as host:
        host.clip()  # both sides get a loaded CLIP for free
        _sync()
        start = time.perf_counter()
        summary = run(SpecBuilder(settings, host, catalog=catalog).build())
        _sync()
        wall = time.perf_counter() - start
    catalog.close()
    (spec,) = SpecStore(Path(os.environ["GMI_DATA_DIR"]) / "specs").specs
    return spec, summary, wall


def run_naive(settings, path: Path, prompts, n_images: int):
    import diffusers
    import torch

    from gmi_desktop.engine.clip import load_clip_for
    from gmi_desktop.engine.generation import image_seed
    from gmi_desktop.engine.pipelines import clip_tokenizer, make_scheduler
    from gmi_desktop.engine.quiet import quiet_loading
    from gmi_desktop.engine.sd_configs import config_dir, native_resolution

    clip = load_clip_for(settings)
    device = "cuda" if settings.device == "cuda" else "cpu"
    size = settings.resolution or native_resolution("sd1")
    _sync()
    start = time.perf_counter()
    with quiet_loading():
        pipe = diffusers.StableDiffusionPipeline.from_single_file(
            str(path), config=str(config_dir("sd1")), local_files_only=True, tokenizer=clip_tokenizer(),
            safety_checker=None, requires_safety_checker=False, torch_dtype=torch.float32)
    pipe.scheduler = make_scheduler(settings.scheduler, pipe.scheduler.config)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    loaded = time.perf_counter()
    image_rows, text_rows = [], []
    for i, prompt in enumerate(prompts[:n_images]):
        generator = torch.Generator("cpu").manual_seed(image_seed(settings.seed, i, 0))
        image = pipe(prompt, num_inference_steps=settings.steps, guidance_scale=settings.guidance_scale,
                     height=size, width=size, generator=generator).images[0]
        image_rows.append(clip.encode_images([image])[0])
        text_rows.append(clip.encode_texts([prompt])[0])
    _sync()
    end = time.perf_counter()
    import numpy as np

    return np.stack(image_rows), end - start, end - loaded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps (the settings' default: 25)")
    parser.add_argument("--naive-images", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    import numpy as np
    import torch

    if args.mode == "gpu" and not torch.cuda.is_available():
        print("--mode gpu: SKIPPED, no CUDA GPU on this machine")
        return 0
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        settings, path, probe_fn = setup(args.mode, Path(tmp), args.steps)
        spec, summary, wall = run_builder(settings, path, probe_fn)
        n = min(args.naive_images, spec.n_images)
        naive_features, naive_wall, naive_gen = run_naive(settings, path, spec.prompts, n)
    where = torch.cuda.get_device_name() if args.mode == "gpu" else f"CPU, {torch.get_num_threads()} thread(s)"
    res = settings.resolution or 512
    print(f"spec build, {args.mode} ({where}), {res}x{res}, {settings.steps} steps {settings.scheduler}, "
          f"batch {settings.batch_size}, torch {torch.__version__}")
    rate = summary.images / wall
    gen_rate = summary.images_per_second
    naive_rate, naive_gen_rate = n / naive_wall, n / naive_gen
    print(f"  builder  {summary.images:3d} images  {rate:7.2f} images/s with loading, "
          f"{gen_rate:7.2f} images/s generating + encoding + saving")
    print(f"  naive    {n:3d} images  {naive_rate:7.2f} images/s with loading, {naive_gen_rate:7.2f} images/s in the loop")
    print(f"  ratio    x{rate / naive_rate:.2f} with loading, x{gen_rate / naive_gen_rate:.2f} in the loop")
    diff = float(np.abs(spec.image_features[:n] - naive_features).max())
    print(f"  same images: max |CLIP feature difference| builder vs naive = {diff:.2e} (unit vectors)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
