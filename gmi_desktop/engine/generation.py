"""Generate images from prompts with a local Stable Diffusion checkpoint (paper: f_m, the model's images).

Design
------
* :class:`GenerationBackend` owns at most one loaded pipeline (the one GPU lane): loading another
  checkpoint releases the previous one first (``release_memory``).
* Seeds: image ``j`` of prompt ``i`` uses ``image_seed(base_seed, i, j)`` (SHA-256 of the triple, 63
  bits). Each image gets its own CPU ``torch.Generator``, so an image depends only on its prompt
  and seed: batched == one at a time, and CUDA runs start from the same noise as CPU runs.
* Options (:class:`GenerationOptions`) come from :class:`~gmi_desktop.store.settings.Settings`:
  scheduler ``dpmpp_2m``, 25 steps, guidance 7.0, batch 4, resolution 0 = the family's native size
  (SD 1.x 512, SD 2.x 768 (512 for 2.x-base and 2.x inpainting), SDXL 1024). fp16 on CUDA/MPS, fp32 on CPU.
* Out of memory (CUDA): retry the same batch with attention slicing, then VAE slicing + tiling,
  then one image per batch, then model CPU offload, then sequential CPU offload; then
  :class:`OutOfMemory` naming what was tried. On CPU/MPS only the first three apply.
* Cancel: ``should_cancel`` is polled from ``callback_on_step_end`` after every denoising step; a
  cancel stops the pipeline there and raises :class:`Cancelled` (no partial result). The pipeline
  stays usable. ``on_step`` gets a :class:`StepProgress` after every step.
* Inpainting checkpoints generate from a mid-grey image with a full mask, the SDXL refiner from a
  mid-grey image at strength 1.0: both are then text-to-image.
* :meth:`LoadedPipeline.iter_generate` is the generator form (progress per step, images per batch)
  for a worker that turns ``yield`` into signals; closing it cancels the run.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gmi_desktop.core.errors import Cancelled, OutOfMemory, SettingsError
from gmi_desktop.engine.device import DeviceChoice, choose_device, release_memory
from gmi_desktop.engine.pipelines import SCHEDULER_NAMES, load_diffusers_folder, load_single_file, make_scheduler
from gmi_desktop.engine.sd_configs import native_resolution

FALLBACKS = ("attention slicing", "VAE slicing and tiling", "one image per batch",
             "model CPU offload", "sequential CPU offload")
_CPU_FALLBACKS = FALLBACKS[:3]


def image_seed(base_seed: int, prompt_index: int, image_index: int) -> int:
    """The seed of image ``image_index`` of prompt ``prompt_index``: stable across runs and machines."""
    digest = hashlib.sha256(f"gmi-seed:{base_seed}:{prompt_index}:{image_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass(frozen=True)
class ImageJob:
    prompt: str
    seed: int
    prompt_index: int
    image_index: int


def plan_images(prompts: Sequence[str], images_per_prompt: int, base_seed: int = 0) -> list[ImageJob]:
    """One job per (prompt, image) with its deterministic seed, prompt-major order."""
    return [ImageJob(p, image_seed(base_seed, i, j), i, j)
            for i, p in enumerate(prompts) for j in range(images_per_prompt)]


@dataclass(frozen=True)
class GenerationOptions:
    scheduler: str = "dpmpp_2m"
    steps: int = 25
    guidance_scale: float = 7.0
    resolution: int = 0  # 0 = the family's native size
    batch_size: int = 4
    negative_prompt: str = ""
    device: str = "auto"
    low_vram: bool = False

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> "GenerationOptions":
        values = {name: getattr(settings, name) for name in
                  ("scheduler", "steps", "guidance_scale", "resolution", "batch_size", "device", "low_vram")}
        values.update(overrides)
        return cls(**values)

    def validate(self) -> None:
        if self.steps < 1:
            raise SettingsError(None, f"steps must be at least 1, not {self.steps}")
        if self.batch_size < 1:
            raise SettingsError(None, f"batch_size must be at least 1, not {self.batch_size}")
        if self.resolution < 0 or self.resolution % 8:
            raise SettingsError(None, f"resolution must be 0 (native) or a positive multiple of 8, not {self.resolution}")
        if self.scheduler not in SCHEDULER_NAMES:
            raise SettingsError(None, f"unknown scheduler {self.scheduler!r}",
                                f"use one of {', '.join(SCHEDULER_NAMES)}")


@dataclass(frozen=True)
class StepProgress:
    first_image: int  # index (into the prompts/seeds given) of the batch's first image
    batch_images: int
    total_images: int
    step: int  # 1-based, steps done in this batch
    steps: int


@dataclass(frozen=True)
class ImagesDone:
    first_image: int
    images: list[Any]  # PIL images


class _Stop(Exception):
    """Raised from the step callback to leave the diffusers loop at once."""


def _is_oom(exc: BaseException) -> bool:
    import torch

    oom_type = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    if isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class LoadedPipeline:
    """One checkpoint ready to generate. Not thread-safe: use it from one worker thread."""

    def __init__(self, pipe: Any, family: str, variant: str, source: Path, device: DeviceChoice,
                 options: GenerationOptions, resolution: int):
        self.pipe = pipe
        self.family = family
        self.variant = variant
        self.source = source
        self.device = device
        self.options = options
        self.resolution = resolution
        self.tried: list[str] = []
        self.fallbacks = FALLBACKS if device.is_cuda else _CPU_FALLBACKS
        self._one_per_batch = False
        self._masked_latents: Any = None
        pipe.set_progress_bar_config(disable=True)

    # -- fallbacks ---------------------------------------------------------------------------
    def apply_fallback(self, name: str) -> None:
        pipe = self.pipe
        if name == "attention slicing":
            pipe.enable_attention_slicing("auto")
        elif name == "VAE slicing and tiling":
            pipe.vae.enable_slicing()
            pipe.vae.enable_tiling()
        elif name == "one image per batch":
            self._one_per_batch = True
        elif name == "model CPU offload":
            pipe.enable_model_cpu_offload(device=self.device.device)
        elif name == "sequential CPU offload":
            pipe.remove_all_hooks()
            pipe.enable_sequential_cpu_offload(device=self.device.device)
        else:
            raise ValueError(f"unknown fallback {name!r}")
        self.tried.append(name)

    def _next_fallback(self) -> bool:
        remaining = [f for f in self.fallbacks if f not in self.tried]
        if not remaining:
            return False
        self.apply_fallback(remaining[0])
        return True

    # -- generation --------------------------------------------------------------------------
    def _call_args(self, prompts: list[str], generators: list[Any], callback: Callable) -> dict[str, Any]:
        from PIL import Image

        size = self.resolution
        args: dict[str, Any] = {
            "prompt": prompts,
            "num_inference_steps": self.options.steps,
            "guidance_scale": self.options.guidance_scale,
            "generator": generators,
            "callback_on_step_end": callback,
            "output_type": "pil",
        }
        if self.options.negative_prompt:
            args["negative_prompt"] = [self.options.negative_prompt] * len(prompts)
        grey = Image.new("RGB", (size, size), (127, 127, 127))
        if self.variant == "inpaint":
            args.update(image=grey, mask_image=Image.new("L", (size, size), 255), strength=1.0,
                        height=size, width=size, masked_image_latents=self._masked_image_latents())
        elif self.family == "sdxl_refiner":
            args.update(image=grey, strength=1.0)
        else:
            args.update(height=size, width=size)
        return args

    def _masked_image_latents(self) -> Any:
        """Latents of the fully masked (all-zero) image, encoded once with the posterior mode.

        Left to diffusers, this encoding would draw from the first image's generator, so an image
        would depend on its batch; passing it in keeps batched == one at a time.
        """
        if self._masked_latents is None:
            import torch

            vae = self.pipe.vae
            dtype = next(vae.parameters()).dtype
            upcast = dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
            if upcast:
                vae.to(torch.float32)
            try:
                zeros = torch.zeros(1, 3, self.resolution, self.resolution, device=vae.device, dtype=vae.dtype)
                with torch.inference_mode():
                    latents = vae.encode(zeros).latent_dist.mode() * vae.config.scaling_factor
            finally:
                if upcast:
                    vae.to(dtype)
            self._masked_latents = latents.to(dtype)
        return self._masked_latents

    def _run_batch(self, first: int, prompts: list[str], seeds: list[int], total: int,
                   on_step: Callable[[StepProgress], None] | None,
                   should_cancel: Callable[[], bool] | None) -> list[Any]:
        import torch

        steps = self.options.steps

        def callback(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if on_step is not None:
                on_step(StepProgress(first, len(prompts), total, step + 1, steps))
            if should_cancel is not None and should_cancel():
                raise _Stop
            return tensors

        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        with torch.inference_mode():
            result = self.pipe(**self._call_args(prompts, generators, callback))
        return list(result.images)

    def generate(self, prompts: Sequence[str], seeds: Sequence[int],
                 on_step: Callable[[StepProgress], None] | None = None,
                 should_cancel: Callable[[], bool] | None = None,
                 on_images: Callable[[ImagesDone], None] | None = None) -> list[Any]:
        """One image per ``(prompts[k], seeds[k])``, in order, as PIL images."""
        prompts, seeds = list(prompts), [int(s) for s in seeds]
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        images: list[Any] = []
        while len(images) < len(prompts):
            if should_cancel is not None and should_cancel():
                raise Cancelled("generation cancelled")
            first = len(images)
            size = 1 if self._one_per_batch else self.options.batch_size
            batch = slice(first, first + size)
            try:
                new = self._run_batch(first, prompts[batch], seeds[batch], len(prompts), on_step, should_cancel)
            except _Stop:
                self.pipe.maybe_free_model_hooks()  # what diffusers does at the end of a normal run
                raise Cancelled("generation cancelled") from None
            except RuntimeError as exc:
                if not _is_oom(exc):
                    raise
                self.pipe.maybe_free_model_hooks()
                release_memory()
                if not self._next_fallback():
                    raise OutOfMemory(f"generating {self.resolution}x{self.resolution} images with {self.source.name}",
                                      self.tried) from exc
                continue
            images.extend(new)
            if on_images is not None:
                on_images(ImagesDone(first, new))
        return images

    def iter_generate(self, prompts: Sequence[str], seeds: Sequence[int],
                      should_cancel: Callable[[], bool] | None = None) -> Iterator[StepProgress | ImagesDone]:
        """Generator form of :meth:`generate`: yields StepProgress per step and ImagesDone per batch.

        The work runs on a helper thread; closing the generator early cancels it and waits for it.
        """
        events: queue.Queue = queue.Queue()
        stop = threading.Event()
        finished = object()

        def cancelled() -> bool:
            return stop.is_set() or (should_cancel is not None and should_cancel())

        def work() -> None:
            try:
                self.generate(prompts, seeds, on_step=events.put, should_cancel=cancelled, on_images=events.put)
                events.put(finished)
            except Exception as exc:  # handed to the consuming thread, re-raised there
                events.put(exc)

        worker = threading.Thread(target=work, name="gmi-generate", daemon=True)
        worker.start()
        try:
            while True:
                item = events.get()
                if item is finished:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            stop.set()
            worker.join()

    def close(self) -> None:
        if self.pipe is not None:
            self.pipe.remove_all_hooks()
            self.pipe = None
        release_memory()


class GenerationBackend:
    """Loads checkpoints one at a time and keeps the current one."""

    def __init__(self) -> None:
        self.current: LoadedPipeline | None = None

    def unload(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None

    def load(self, path: str | Path, family: str, variant: str = "normal", settings: Any = None, *,
             options: GenerationOptions | None = None, config_dir: Path | None = None,
             prediction_type: str | None = None) -> LoadedPipeline:
        """Load a single ``.safetensors`` file or a diffusers folder for generation.

        ``options`` wins over ``settings``; with neither, the defaults. ``config_dir`` replaces the
        shipped config folder of the family (tests pass tiny-width configs).
        """
        if options is None:
            options = GenerationOptions.from_settings(settings) if settings is not None else GenerationOptions()
        options.validate()
        device = choose_device(options.device)
        self.unload()
        path = Path(path)
        if path.is_dir():
            pipe = load_diffusers_folder(path, family, dtype=device.dtype)
        else:
            pipe = load_single_file(path, family, variant, dtype=device.dtype, config_dir=config_dir,
                                    prediction_type=prediction_type)
        pipe.scheduler = make_scheduler(options.scheduler, pipe.scheduler.config)
        resolution = options.resolution or native_resolution(family, prediction_type, variant)
        loaded = LoadedPipeline(pipe, family, variant, path, device, options, resolution)
        _place(loaded)
        self.current = loaded
        return loaded


def _place(loaded: LoadedPipeline) -> None:
    """Move the pipeline to its device; low-VRAM mode (or an OOM while moving) offloads instead."""
    if loaded.options.low_vram:
        for name in loaded.fallbacks[:2]:
            loaded.apply_fallback(name)
        if loaded.device.is_cuda:
            loaded.apply_fallback("model CPU offload")
        else:
            loaded.pipe.to(loaded.device.device)
        return
    try:
        loaded.pipe.to(loaded.device.device)
    except RuntimeError as exc:
        if not (_is_oom(exc) and loaded.device.is_cuda):
            raise
        loaded.pipe.to("cpu")
        release_memory()
        try:
            loaded.apply_fallback("model CPU offload")
        except RuntimeError as again:
            if _is_oom(again):
                raise OutOfMemory(f"loading {loaded.source.name}", loaded.tried) from again
            raise
