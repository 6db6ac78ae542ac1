"""GPU smoke test: full-size random-weight pipelines of every family, through the shipped engine.

For each family (SD 1.x, SD 2.x 768-v, SDXL) a pipeline is built from the shipped config folder
(``resources/diffusers/<name>``: the published architectures, random weights initialised directly
on the GPU, nothing downloaded) in the shipped precision (fp16) and run through
:class:`~gmi_desktop.engine.generation.LoadedPipeline` at the native resolution: the broken-image
check, the fp32 retries and the memory plan are the production ones. Printed per family and batch
size: peak GPU memory, seconds per image, whether the images were finite (and at which precision),
and the batch the memory plan chooses from the free memory. A few minutes on one GPU.

Without a usable CUDA GPU it says why in one line and exits with status 2.
Run from the repository root: ``python benchmarks/gpu_smoke.py [--steps 4 --batches 1,2,4]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gmi_desktop.core.errors import CorruptCheckpoint, OutOfMemory  # noqa: E402
from gmi_desktop.engine.device import DeviceChoice, cuda_facts, cuda_problem  # noqa: E402
from gmi_desktop.engine.generation import GenerationOptions, LoadedPipeline, plan_images  # noqa: E402
from gmi_desktop.engine.verdicts import Verdicts  # noqa: E402

FAMILIES = {"sd1": ("sd1", 512), "sd2": ("sd2", 768), "sdxl": ("sdxl", 1024)}  # family -> (config, native size)
PROMPTS = ["a lighthouse on a cliff at sunset", "portrait of an old fisherman, oil painting",
           "a bowl of fruit on a wooden table", "a futuristic city street at night, neon lights"]


def build_pipeline(folder: Path, device: str, dtype_name: str) -> object:
    """A diffusers pipeline of the config folder with random weights, created directly on ``device``."""
    import diffusers
    import torch
    import transformers

    from gmi_desktop.engine.pipelines import clip_tokenizer

    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    torch.manual_seed(0)
    parts: dict = {}
    with torch.device(device):
        parts["unet"] = diffusers.UNet2DConditionModel.from_config(diffusers.UNet2DConditionModel.load_config(str(folder / "unet")))
        parts["vae"] = diffusers.AutoencoderKL.from_config(diffusers.AutoencoderKL.load_config(str(folder / "vae")))
        for slot, tok_slot in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
            if (index.get(slot) or [None])[0] is None:
                continue
            cls = getattr(transformers, index[slot][1])
            parts[slot] = cls(cls.config_class.from_pretrained(str(folder / slot)))
            openclip = slot == "text_encoder_2" or parts[slot].config.hidden_act == "gelu"
            parts[tok_slot] = clip_tokenizer("!" if openclip else "<|endoftext|>")
    scheduler_cls = getattr(diffusers, index["scheduler"][1])
    parts["scheduler"] = scheduler_cls.from_pretrained(str(folder), subfolder="scheduler")
    cls = getattr(diffusers, index["_class_name"])
    if "XL" in cls.__name__:
        parts.update(add_watermarker=False)
    else:
        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = cls(**parts)
    return pipe.to(device, getattr(torch, dtype_name))


def smoke_family(family: str, folder: Path, device: DeviceChoice, resolution: int, steps: int,
                 batches: list[int]) -> dict:
    """Build one family's pipeline and run each batch size; a dict of what was measured."""
    import torch

    cuda = device.is_cuda
    pipe = build_pipeline(folder, device.device, device.dtype_name)
    options = GenerationOptions(steps=steps, resolution=resolution, batch_size=max(batches), device=device.device)
    loaded = LoadedPipeline(pipe, family, "normal", Path(f"random-{family}"), device, options, resolution,
                            verdicts=Verdicts(None))
    loaded.plan_memory()
    result: dict = {"family": family, "resolution": resolution, "planned_batch": loaded.batch_size, "runs": []}
    if cuda:
        result["free_gib_after_weights"] = round(torch.cuda.mem_get_info()[0] / 2**30, 2)
    loaded.batch_size = 1
    loaded.generate(PROMPTS[:1], [0])  # warm-up (kernels, allocator)
    for batch in batches:
        jobs = plan_images(PROMPTS, (batch + len(PROMPTS) - 1) // len(PROMPTS), base_seed=0)[:batch]
        loaded.batch_size = batch
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        run: dict = {"batch": batch}
        start = time.perf_counter()
        try:
            images = loaded.generate([j.prompt for j in jobs], [j.seed for j in jobs])
        except (OutOfMemory, CorruptCheckpoint) as exc:
            run["error"] = str(exc)
        else:
            if cuda:
                torch.cuda.synchronize()
            run["seconds_per_image"] = round((time.perf_counter() - start) / batch, 3)
            run["finite"] = len(images) == batch  # every batch handed out passed the broken-image check
            run["precision"] = loaded.precision
            run["batch_used"] = loaded.batch_size
        if cuda:
            run["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["runs"].append(run)
    result["notes"] = loaded.notes
    loaded.close()
    return result


def _print(result: dict) -> None:
    print(f"{result['family']} {result['resolution']}x{result['resolution']}: memory plan chooses batch "
          f"{result['planned_batch']}" + (f" ({result['free_gib_after_weights']} GiB free after the weights)"
                                           if "free_gib_after_weights" in result else ""))
    for run in result["runs"]:
        if "error" in run:
            print(f"  batch {run['batch']}: {run['error']}")
            continue
        peak = f"peak {run['peak_gib']:6.2f} GiB  " if "peak_gib" in run else ""
        print(f"  batch {run['batch']}: {peak}{run['seconds_per_image']:7.3f} s/image  finite={run['finite']}  "
              f"precision={run['precision']}")
    for note in result["notes"]:
        print(f"  note: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated: sd1,sd2,sdxl")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batches", default="1,2,4", help="comma-separated batch sizes")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}; use {', '.join(FAMILIES)}")
    facts = cuda_facts()
    problem = cuda_problem(facts)
    if not facts.available or not facts.gpus or problem:
        sys.stderr.write(f"gpu_smoke: needs a usable CUDA GPU ({problem or 'none on this machine'}); nothing run\n")
        return 2
    import torch

    from gmi_desktop.engine.sd_configs import config_dir

    name = facts.gpus[0][0]
    print(f"{name}, torch {torch.__version__} (CUDA {torch.version.cuda}), {args.steps} steps")
    device = DeviceChoice("cuda", "float16", "", name)
    batches = [int(b) for b in args.batches.split(",") if b]
    results = []
    for family in families:
        config, native = FAMILIES[family]
        result = smoke_family(family, config_dir(config), device, native, args.steps, batches)
        _print(result)
        results.append(result)
    if args.json:
        args.json.write_text(json.dumps({"gpu": name, "steps": args.steps, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
