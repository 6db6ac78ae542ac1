"""Generate images from prompts with a local Stable Diffusion checkpoint (paper: f_m, the model's images).

Design
------
* :class:`GenerationBackend` owns at most one loaded pipeline (the one GPU lane): loading another
  checkpoint releases the previous one first (``release_memory``). It is used through
  :meth:`gmi_desktop.engine.host.ModelHost.pipeline`.
* Seeds: image ``j`` of prompt ``i`` uses ``image_seed(base_seed, i, j)`` (SHA-256 of the triple, 63
  bits). Each image gets its own CPU ``torch.Generator``, so an image depends only on its prompt
  and seed: batched == one at a time, and CUDA runs start from the same noise as CPU runs.
* Options (:class:`GenerationOptions`) come from :class:`~gmi_desktop.store.settings.Settings`:
  scheduler ``dpmpp_2m``, 25 steps, guidance 7.0, batch 4, resolution 0 = the family's native size
  (SD 1.x 512, SD 2.x 768 (512 for 2.x-base and 2.x inpainting), SDXL 1024). fp16 on CUDA/MPS, fp32 on CPU.
* :meth:`LoadedPipeline.iter_generate` is a plain generator (no thread): it yields one
  :class:`~gmi_desktop.core.progress.Progress` per finished batch (``data`` = that batch's PIL
  images, ``done`` = images so far) and returns all images; per-step progress goes to an optional
  sink called from diffusers' ``callback_on_step_end``, which also polls ``cancel`` (a cancel
  stops the pipeline at that step and raises :class:`Cancelled`; the pipeline stays usable).
  :meth:`LoadedPipeline.generate` runs it to the end.
* Prediction type: the caller's (the probe's) finding, else the file's ``v_pred`` marker, else for
  SD 2.x one UNet evaluation as AUTOMATIC1111 does (:mod:`gmi_desktop.engine.prediction`), kept by
  content hash in :class:`~gmi_desktop.engine.verdicts.Verdicts`.
* Never a broken image: every batch is checked (:func:`~gmi_desktop.engine.memory_plan.broken_reason`);
  a broken batch is redone with an fp32 VAE, then fully in fp32; what worked is remembered per
  device and checkpoint; a batch broken even in fp32 fails the model (:class:`CorruptCheckpoint`).
* Memory plan (:mod:`gmi_desktop.engine.memory_plan`): VAE slicing + tiling from the start, the
  batch chosen from free VRAM and remembered, halved when steps collapse. Out of memory (CUDA or
  MPS): halve the batch down to one image, then (CUDA) model CPU offload, then sequential CPU
  offload; then :class:`OutOfMemory` naming what was tried.
* :attr:`LoadedPipeline.recipe` is what made the images (prediction type, zero-terminal SNR,
  precision, scheduler, steps, guidance, resolution): a specification records it.
* Inpainting checkpoints generate from a mid-grey image with a full mask, the SDXL refiner from a
  mid-grey image at strength 1.0: both are then text-to-image. A refiner is not identifiable that
  way (:data:`~gmi_desktop.engine.sd_configs.NOT_IDENTIFIABLE`), so loading one needs
  ``allow_refiner=True``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gmi_desktop.core.errors import Cancelled, CorruptCheckpoint, OutOfMemory, SettingsError, UnsupportedCheckpoint
from gmi_desktop.core.progress import CancelFn, Progress, ProgressSink, check_cancel, run
from gmi_desktop.engine.device import (
    DeviceChoice, choose_device, device_error, free_memory_bytes, is_device_error, is_out_of_memory, release_memory,
)
from gmi_desktop.engine.memory_plan import SpeedWatch, broken_reason, plan_batch, spilled
from gmi_desktop.engine.pipelines import (
    SCHEDULER_NAMES, header_markers, load_diffusers_folder, load_single_file, make_scheduler, read_safetensors_header,
)
from gmi_desktop.engine.sd_configs import native_resolution, not_identifiable
from gmi_desktop.engine.verdicts import Verdicts

OFFLOADS = ("model CPU offload", "sequential CPU offload")
PRECISIONS = ("fp16", "fp16, fp32 VAE", "fp32")  # each a retry of the one before for broken images


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
    precision: str = "auto"  # "auto" (fp16 on a GPU, fp32 on the CPU), "fp16" or "fp32"

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> "GenerationOptions":
        names = ("scheduler", "steps", "guidance_scale", "resolution", "batch_size", "device", "low_vram", "precision")
        values = {name: getattr(settings, name) for name in names if hasattr(settings, name)}
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
        if self.precision not in ("auto", "fp16", "fp32"):
            raise SettingsError(None, f"unknown precision {self.precision!r}", "use auto, fp16 or fp32")


class _Stop(Exception):
    """Raised from the step callback to leave the diffusers loop at once."""


def _cast_inputs_to_weights(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook: floating inputs in the module's own dtype (an fp32 VAE fed fp16 latents)."""
    dtype = next(module.parameters()).dtype
    cast = lambda v: v.to(dtype) if hasattr(v, "is_floating_point") and v.is_floating_point() else v  # noqa: E731
    return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}


class LoadedPipeline:
    """One checkpoint ready to generate. Not thread-safe: use it from one worker thread."""

    def __init__(self, pipe: Any, family: str, variant: str, source: Path, device: DeviceChoice,
                 options: GenerationOptions, resolution: int, *, checkpoint_key: str | None = None,
                 verdicts: Verdicts | None = None, clock: Callable[[], float] = time.perf_counter):
        self.pipe = pipe
        self.family = family
        self.variant = variant
        self.source = source
        self.device = device
        self.options = options
        self.resolution = resolution
        self.checkpoint_key = checkpoint_key or str(source)
        self.verdicts = verdicts if verdicts is not None else Verdicts(None)
        self.clock = clock
        self.precision = "fp16" if device.dtype_name == "float16" else "fp32"
        self.batch_size = options.batch_size
        self.tried: list[str] = []  # memory fallbacks used, in order
        self.notes: list[str] = []  # one line each for the user: retries, shrunk batches
        self.fallbacks = OFFLOADS if device.is_cuda else ()
        self._speed = SpeedWatch()
        self._masked_latents: Any = None
        self._hooked = False
        self._notes_told = 0  # notes already handed out in a Progress message
        pipe.set_progress_bar_config(disable=True)
        pipe.vae.enable_slicing()
        pipe.vae.enable_tiling()

    # -- what made the images ----------------------------------------------------------------
    @property
    def recipe(self) -> dict[str, Any]:
        """The generation facts a specification must record to stay comparable."""
        config = self.pipe.scheduler.config
        return {
            "scheduler": self.options.scheduler, "steps": self.options.steps,
            "guidance_scale": self.options.guidance_scale, "resolution": self.resolution,
            "negative_prompt": self.options.negative_prompt,
            "prediction_type": config.get("prediction_type", "epsilon"),
            "zero_terminal_snr": bool(config.get("rescale_betas_zero_snr", False)),
            "precision": self.precision,
        }

    def _key(self, *parts: Any) -> str:
        return "|".join([self.device.key, *map(str, parts)])

    # -- precision ---------------------------------------------------------------------------
    def set_precision(self, precision: str) -> None:
        """Run at ``precision`` (one of :data:`PRECISIONS`); only ever raises precision."""
        import torch

        if precision not in PRECISIONS or PRECISIONS.index(precision) <= PRECISIONS.index(self.precision):
            return
        if precision == "fp32":
            self.pipe.to(dtype=torch.float32)
        else:
            self.pipe.vae.to(dtype=torch.float32)
        if not self._hooked:
            vae = self.pipe.vae
            for part in ("encoder", "quant_conv", "post_quant_conv", "decoder"):
                module = getattr(vae, part, None)
                if module is not None:
                    module.register_forward_pre_hook(_cast_inputs_to_weights, with_kwargs=True)
            self._hooked = True
        self.precision = precision
        self._masked_latents = None

    # -- memory ------------------------------------------------------------------------------
    def plan_memory(self) -> None:
        """Choose the batch size from free memory, capped by what fitted on this kind of device
        after it last ran out of memory or slowed down (the ``batch`` verdict)."""
        free = free_memory_bytes(self.device)
        planned = plan_batch(self.family, self.resolution, free, self.options.batch_size, self.precision == "fp32")
        remembered = self.verdicts.get("batch", self._key(self.family, self.resolution))
        self.batch_size = max(1, min(planned, int(remembered or planned)))

    def apply_fallback(self, name: str) -> None:
        pipe = self.pipe
        if name == "model CPU offload":
            pipe.enable_model_cpu_offload(device=self.device.device)
        elif name == "sequential CPU offload":
            pipe.remove_all_hooks()
            pipe.enable_sequential_cpu_offload(device=self.device.device)
        else:
            raise ValueError(f"unknown fallback {name!r}")
        self.tried.append(name)

    def _after_out_of_memory(self, exc: BaseException) -> None:
        self.pipe.maybe_free_model_hooks()
        release_memory()
        if self.batch_size > 1:
            self.batch_size //= 2
            self.tried.append(f"batch of {self.batch_size}")
            self.verdicts.put("batch", self._key(self.family, self.resolution), self.batch_size)
            return
        remaining = [f for f in self.fallbacks if f not in self.tried]
        if not remaining:
            raise OutOfMemory(f"generating {self.resolution}x{self.resolution} images with {self.source.name}",
                              self.tried) from exc
        self.apply_fallback(remaining[0])

    def _watch_speed(self, batch: int, seconds: float) -> str | None:
        per_image_step = seconds / (batch * self.options.steps)
        if not (self._speed.collapsed(batch, per_image_step) or spilled(self.device)) or batch == 1:
            return None
        self.batch_size = max(1, batch // 2)
        self.verdicts.put("batch", self._key(self.family, self.resolution), self.batch_size)
        return (f"steps slowed down sharply at {batch} images per batch (GPU memory spilling into system RAM?): "
                f"{self.batch_size} per batch from now on")

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
            "output_type": "np",
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
            self._masked_latents = latents.to(self.pipe.unet.dtype)
        return self._masked_latents

    def _run_batch(self, first: int, prompts: list[str], seeds: list[int], total: int,
                   cancel: CancelFn | None, on_step: ProgressSink | None) -> tuple[Any, Any]:
        """One pipeline call: ``(final latents, float images (n, h, w, 3))``."""
        import torch

        steps = self.options.steps
        final: dict[str, Any] = {}
        span = f"images {first + 1}-{first + len(prompts)} of {total}" if len(prompts) > 1 else f"image {first + 1} of {total}"

        def callback(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if step + 1 == steps:
                final["latents"] = tensors.get("latents")
            if on_step is not None:
                on_step(Progress("generating", first, total, self.source.name, message=f"step {step + 1}/{steps}, {span}"))
            if cancel is not None and cancel():
                raise _Stop
            return tensors

        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        with torch.inference_mode():
            result = self.pipe(**self._call_args(prompts, generators, callback))
        return final.get("latents"), result.images

    def _checked_batch(self, first: int, prompts: list[str], seeds: list[int], total: int,
                       cancel: CancelFn | None, on_step: ProgressSink | None) -> list[Any]:
        """A batch as PIL images, redone at higher precision while it is broken."""
        from diffusers.image_processor import VaeImageProcessor

        while True:
            start = self.clock()
            latents, images = self._run_batch(first, prompts, seeds, total, cancel, on_step)
            reason = broken_reason(latents, images)
            if reason is None:
                note = self._watch_speed(len(prompts), self.clock() - start)
                if note:
                    self.notes.append(note)
                return VaeImageProcessor.numpy_to_pil(images)
            higher = PRECISIONS[PRECISIONS.index(self.precision) + 1:]
            if not higher:
                raise CorruptCheckpoint(self.source, f"makes broken images ({reason}) even in full precision (fp32) "
                                                     f"on {self.device.name or self.device.device}",
                                        "the weights are probably damaged: re-download the file")
            self.notes.append(f"{reason} at {self.precision}: redoing the batch with {higher[0]}")
            self.set_precision(higher[0])
            self.verdicts.put("precision", self._key(self.checkpoint_key), self.precision)

    def iter_generate(self, prompts: Sequence[str], seeds: Sequence[int], cancel: CancelFn | None = None,
                      on_step: ProgressSink | None = None) -> Generator[Progress, None, list[Any]]:
        """One image per ``(prompts[k], seeds[k])``, in order: yields a :class:`Progress` per batch
        (``data`` = the batch's PIL images) and returns them all."""
        prompts, seeds = list(prompts), [int(s) for s in seeds]
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        images: list[Any] = []
        total = len(prompts)
        while len(images) < total:
            check_cancel(cancel, "generation cancelled")
            first = len(images)
            batch = slice(first, first + self.batch_size)
            try:
                new = self._checked_batch(first, prompts[batch], seeds[batch], total, cancel, on_step)
            except _Stop:
                self.pipe.maybe_free_model_hooks()  # what diffusers does at the end of a normal run
                raise Cancelled("generation cancelled") from None
            except (RuntimeError, AssertionError) as exc:
                if is_out_of_memory(exc):
                    self._after_out_of_memory(exc)
                    continue
                if is_device_error(exc):
                    raise device_error(exc, f"generating with {self.source.name}") from exc
                raise
            images.extend(new)
            message = "; ".join(self.notes[self._notes_told:]) or f"{len(images)}/{total} images"
            self._notes_told = len(self.notes)
            yield Progress("generating", len(images), total, self.source.name, message=message, data=new)
        return images

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], cancel: CancelFn | None = None,
                 on_step: ProgressSink | None = None) -> list[Any]:
        """One image per ``(prompts[k], seeds[k])``, in order, as PIL images."""
        return run(self.iter_generate(prompts, seeds, cancel, on_step))

    def close(self) -> None:
        if self.pipe is not None:
            self.pipe.remove_all_hooks()
            self.pipe = None
        release_memory()


def _checkpoint_key(path: Path, sha256: str | None) -> str:
    """What verdicts about a checkpoint are keyed by: its content hash, else path, size and mtime."""
    if sha256:
        return sha256.lower()
    stat = path.stat()
    return f"file:{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


class GenerationBackend:
    """Loads checkpoints one at a time and keeps the current one."""

    def __init__(self, verdicts: Verdicts | None = None) -> None:
        self.current: LoadedPipeline | None = None
        self._verdicts = verdicts

    @property
    def verdicts(self) -> Verdicts:
        if self._verdicts is None:
            self._verdicts = Verdicts.default()
        return self._verdicts

    def unload(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None

    def load(self, path: str | Path, family: str, variant: str = "normal", settings: Any = None, *,
             options: GenerationOptions | None = None, config_dir: Path | None = None,
             prediction_type: str | None = None, sha256: str | None = None,
             allow_refiner: bool = False) -> LoadedPipeline:
        """Load a single ``.safetensors`` file or a diffusers folder for generation.

        ``options`` wins over ``settings``; with neither, the defaults. ``config_dir`` replaces the
        shipped config folder of the family (tests pass tiny-width configs). ``prediction_type`` is
        the probe's finding; ``sha256`` (the catalog's content hash) keys what is remembered.
        """
        if options is None:
            options = GenerationOptions.from_settings(settings) if settings is not None else GenerationOptions()
        options.validate()
        path = Path(path)
        refusal = not_identifiable(family)
        if refusal is not None and not allow_refiner:
            raise UnsupportedCheckpoint(path, *refusal)
        device = choose_device(options.device, half=options.precision != "fp32")
        if options.precision == "fp16" and device.dtype_name != "float16":
            device = DeviceChoice(device.device, "float16", device.note, device.name)
        self.unload()
        key = _checkpoint_key(path, sha256) if path.exists() else str(path)
        verdicts = self.verdicts
        if path.is_dir():
            pipe = load_diffusers_folder(path, family, dtype=device.dtype)
            prediction_type = pipe.scheduler.config.get("prediction_type")  # the folder's own scheduler
        else:
            if prediction_type is None and family == "sd2" and variant == "normal":
                prediction_type = (header_markers(read_safetensors_header(path))[0]
                                   or verdicts.get("prediction", key))
            pipe = load_single_file(path, family, variant, dtype=device.dtype, config_dir=config_dir,
                                    prediction_type=prediction_type)
            if prediction_type is None and family == "sd2" and variant == "normal":
                pipe, prediction_type = _decide_sd2(pipe, path, key, verdicts, device, config_dir)
        pipe.scheduler = make_scheduler(options.scheduler, pipe.scheduler.config)
        resolution = options.resolution or native_resolution(family, prediction_type, variant)
        loaded = LoadedPipeline(pipe, family, variant, path, device, options, resolution, checkpoint_key=key,
                                verdicts=verdicts)
        if device.note:
            loaded.notes.append(device.note)
        remembered = verdicts.get("precision", loaded._key(key))
        if remembered and device.dtype_name == "float16":
            loaded.set_precision(remembered)
        _place(loaded)
        loaded.plan_memory()
        self.current = loaded
        return loaded


def _decide_sd2(pipe: Any, path: Path, key: str, verdicts: Verdicts, device: DeviceChoice,
                config_dir: Path | None) -> tuple[Any, str]:
    """Decide an undeclared SD 2.x file's prediction type on its loaded UNet; an epsilon model is
    reloaded with the 512-base config (so a later load, which knows the verdict, is identical)."""
    from gmi_desktop.engine.prediction import sd2_prediction_type

    try:
        verdict = sd2_prediction_type(pipe.unet)
    except (RuntimeError, AssertionError) as exc:
        if is_device_error(exc):
            raise device_error(exc, f"testing {path.name}'s prediction type") from exc
        raise
    verdicts.put("prediction", key, verdict)
    if verdict == "v_prediction":
        return pipe, verdict
    del pipe
    release_memory()
    return load_single_file(path, "sd2", "normal", dtype=device.dtype, config_dir=config_dir,
                            prediction_type="epsilon"), verdict


def _place(loaded: LoadedPipeline) -> None:
    """Move the pipeline to its device; low-VRAM mode (or an OOM while moving) offloads instead."""
    if loaded.options.low_vram:
        if loaded.device.is_cuda:
            loaded.apply_fallback("model CPU offload")
        else:
            loaded.pipe.to(loaded.device.device)
        return
    try:
        loaded.pipe.to(loaded.device.device)
    except (RuntimeError, AssertionError) as exc:
        if not (is_out_of_memory(exc) and loaded.device.is_cuda):
            if is_device_error(exc):
                raise device_error(exc, f"moving {loaded.source.name} to {loaded.device.device}") from exc
            raise
        loaded.pipe.to("cpu")
        release_memory()
        try:
            loaded.apply_fallback("model CPU offload")
        except RuntimeError as again:
            if is_out_of_memory(again):
                raise OutOfMemory(f"loading {loaded.source.name}", loaded.tried) from again
            raise
