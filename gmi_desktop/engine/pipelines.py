"""Load a Stable Diffusion pipeline from a user's checkpoint, fully offline.

* A single ``.safetensors`` file (original CompVis / A1111 layout) goes through
  ``<Pipeline>.from_single_file(path, config=<shipped config folder>, local_files_only=True)``; the
  shipped folder (:mod:`gmi_desktop.engine.sd_configs`) is what stops diffusers fetching a config
  from the hub. Tokenizers come from the one shipped CLIP tokenizer, passed in as objects.
* A diffusers folder (with ``model_index.json``) goes through ``from_pretrained(local_files_only=True)``.

The family (``sd1``/``sd2``/``sdxl``/``sdxl_refiner``) and variant come from the caller (the header
probe). Before diffusers sees the file, its safetensors header is checked against that family, so a
truncated or garbage file is a :class:`CorruptCheckpoint`, a LoRA/VAE a :class:`NotACheckpoint`, an
SD 1.x file loaded as SDXL an :class:`UnsupportedCheckpoint` — never a raw exception (diffusers'
``SingleFileComponentError`` included). A CUDA or driver failure is never reported as a damaged
file (:func:`~gmi_desktop.engine.device.is_device_error`).

What the probe calls loadable loads:

* SD 1.x files with the old text-encoder key layout (``cond_stage_model.transformer.embeddings.*``,
  no ``text_model.``; AUTOMATIC1111 remaps them) get their text encoder built here from the file
  and handed to diffusers, which would otherwise refuse the file.
* SDXL files marked ``v_pred`` load with the SDXL v-prediction config, and ``ztsnr`` adds
  zero-terminal-SNR rescaling (``rescale_betas_zero_snr``, trailing timesteps) to the scheduler.
* Diffusers folders holding only ``*.fp16.safetensors`` weights load with ``variant="fp16"``.

No safety checker is ever loaded or downloaded, and SDXL's invisible watermark is never added (it
would make the same recipe give different pixels on machines that happen to have the package).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from gmi_desktop.core.errors import (
    CorruptCheckpoint, NotACheckpoint, UnsupportedCheckpoint, UserInputError,
)
from gmi_desktop.engine.quiet import quiet_loading
from gmi_desktop.engine.sd_configs import FAMILIES, VARIANTS, config_dir as shipped_config_dir, tokenizer_dir
from gmi_desktop.store.classify import (
    FAMILY_NAMES, FIRST_CONV, TE_SD, TE_SDXL, UNET, Shapes, classify_tensors, context_widths,
)
from gmi_desktop.store.probe import probe_header

OLD_SD1_TEXT = TE_SD + "transformer.embeddings.token_embedding.weight"  # pre-"text_model." layout
TEXT_KEYS = {  # one tensor every checkpoint of the family has, per text tower
    "sd1": (TE_SD + "transformer.text_model.embeddings.token_embedding.weight",),
    "sd2": (TE_SD + "model.token_embedding.weight",),
    "sdxl": (TE_SDXL + "0.transformer.text_model.embeddings.token_embedding.weight",
             TE_SDXL + "1.model.token_embedding.weight"),
    "sdxl_refiner": (TE_SDXL + "0.model.token_embedding.weight",),
}
PIPELINE_CLASSES = {
    "StableDiffusionPipeline", "StableDiffusionInpaintPipeline", "StableDiffusionXLPipeline",
    "StableDiffusionXLInpaintPipeline", "StableDiffusionXLImg2ImgPipeline",
}


def read_safetensors_header(path: Path) -> Shapes:
    """The tensor table (``name -> (dtype, shape)``) of a safetensors file, validated by the store's
    header probe as strictly as the safetensors library would; a typed error when it is not usable.

    :class:`IncompleteFile` (a :class:`CorruptCheckpoint`) for a file shorter than its header
    declares, :class:`CorruptCheckpoint` for a damaged or foreign file, :class:`UnsupportedCheckpoint`
    for a pickle or GGUF file wearing a ``.safetensors`` name.
    """
    result, header = probe_header(path)
    if header is None:
        raise result.error() or CorruptCheckpoint(path, "not a safetensors file")
    if header.problems:
        raise CorruptCheckpoint(path, "; ".join(header.problems))
    return header.tensors


def check_family(path: Path, tensors: Shapes, family: str, unet_config: dict[str, Any]) -> None:
    """Raise a typed error unless ``tensors`` (``name -> (dtype, shape)``) is a ``family`` checkpoint
    whose UNet matches ``unet_config``: the config actually loaded, full-size or tiny, so the widths
    are compared with it rather than with the full-size families :mod:`~gmi_desktop.store.classify`
    knows."""
    if not any(key.startswith(UNET) for key in tensors):
        verdict = classify_tensors(tensors)
        what = f": {verdict.reason}" if verdict.kind not in (None, "unknown") else ""
        raise NotACheckpoint(path, f"no Stable Diffusion UNet in this file{what}",
                             "pick a full Stable Diffusion checkpoint")
    name = FAMILY_NAMES[family]
    missing = [key for key in TEXT_KEYS[family] if key not in tensors
               and not (family == "sd1" and OLD_SD1_TEXT in tensors)]
    if missing:
        others = [FAMILY_NAMES[f] for f, keys in TEXT_KEYS.items() if all(k in tensors for k in keys)]
        looks = f"looks like {others[0]}, " if others else ""
        raise UnsupportedCheckpoint(path, f"not an {name} checkpoint ({looks}text encoder tensor {missing[0]} is missing)")
    conv_in = tensors.get(FIRST_CONV, (None, ()))[1]
    want_in = unet_config["in_channels"]
    if len(conv_in) != 4 or conv_in[1] != want_in:
        raise UnsupportedCheckpoint(path, f"UNet takes {conv_in[1] if len(conv_in) > 1 else '?'} input channels, "
                                          f"the {name} config expects {want_in}")
    widths = context_widths(tensors)
    if set(widths) != {unet_config["cross_attention_dim"]}:
        raise UnsupportedCheckpoint(path, f"cross-attention width {sorted(widths)} does not match {name} "
                                          f"({unet_config['cross_attention_dim']})")


def clip_tokenizer(pad_token: str = "<|endoftext|>") -> Any:
    """The shipped CLIP BPE tokenizer; OpenCLIP towers (SD 2.x, SDXL's second) pad with ``!``."""
    return _clip_tokenizer(str(tokenizer_dir()), pad_token)


@functools.lru_cache(maxsize=4)
def _clip_tokenizer(folder: str, pad_token: str) -> Any:
    """Cached per folder: ``GMI_RESOURCES_DIR`` may point elsewhere later (the model zoo's own)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(folder, pad_token=pad_token, local_files_only=True)


def _tokenizers_for(index: dict[str, Any], family: str) -> dict[str, Any]:
    out = {}
    if (index.get("tokenizer") or [None])[0] is not None:
        out["tokenizer"] = clip_tokenizer("!" if family == "sd2" else "<|endoftext|>")
    if (index.get("tokenizer_2") or [None])[0] is not None:
        out["tokenizer_2"] = clip_tokenizer("!")
    return out


def _pipeline_class(name: str, where: Path) -> Any:
    if name not in PIPELINE_CLASSES:
        raise UnsupportedCheckpoint(where, f"pipeline type {name!r} is not supported",
                                    "use an SD 1.x, SD 2.x or SDXL text-to-image or inpainting model")
    import diffusers

    return getattr(diffusers, name)


def _no_extras(cls: Any) -> dict[str, Any]:
    """No safety checker (SD) and no invisible watermark (SDXL) whatever is installed."""
    if "XL" in cls.__name__:
        return {"add_watermarker": False}
    return {"safety_checker": None, "requires_safety_checker": False}


_LOAD_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError, KeyError, IndexError, TypeError,
                                                 AttributeError)


def _load_errors() -> tuple[type[BaseException], ...]:
    from diffusers.loaders.single_file_utils import SingleFileComponentError
    from safetensors import SafetensorError

    return (*_LOAD_ERRORS, SafetensorError, SingleFileComponentError)


def _load_failure(exc: BaseException, path: Path, what: str) -> Exception:
    """The typed error for a failed load: a GPU/driver failure says so; anything else is the file."""
    from gmi_desktop.engine.device import device_error, is_device_error

    if is_device_error(exc):
        return device_error(exc, f"loading {path.name}")
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return CorruptCheckpoint(path, f"{what}: {text}")


def _read_json(path: Path, what: str, error: type[UserInputError] = UserInputError) -> dict[str, Any]:
    """A JSON config as a dict, or a typed error naming it (never a raw OSError/JSONDecodeError)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(path, f"{what} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(path, f"{what} is unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise error(path, f"{what} is not a JSON object")
    return data


_SHIPPED_HINT = "reinstall GMI Desktop, or set GMI_RESOURCES_DIR to a complete copy of its resources/ folder"


def _shipped_config(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``model_index.json`` and the UNet config of a config folder, typed errors when broken."""
    try:
        index = _read_json(folder / "model_index.json", "the pipeline config (model_index.json)")
        unet = _read_json(folder / "unet" / "config.json", "the UNet config")
    except UserInputError as exc:
        raise UserInputError(exc.path, exc.reason, _SHIPPED_HINT) from None
    return index, unet


def _dtype_arg(dtype: Any) -> Any:
    """fp32 is what the weights are loaded as anyway; passing it only makes diffusers cast and warn."""
    return None if dtype is None or str(dtype) == "torch.float32" else dtype


def _check_loaded(pipe: Any, path: Path, dtype: Any) -> None:
    """Every weight was in the file; fp16 files become fp32 where fp32 was asked for (CPU)."""
    for slot in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, slot, None)
        if module is None:
            continue
        meta = [name for name, p in module.named_parameters() if p.is_meta]
        if meta:
            raise CorruptCheckpoint(path, f"{slot} weights are missing from the file (e.g. {meta[0]})")
        if dtype is not None and module.dtype != dtype:
            module.to(dtype)


def header_markers(tensors: Shapes) -> tuple[str | None, bool]:
    """``(prediction_type, zero_terminal_snr)`` as the file's marker keys say: ComfyUI-style
    ``v_pred`` (v-prediction) and ``ztsnr`` (zero terminal SNR) empty tensors."""
    return ("v_prediction" if "v_pred" in tensors else None), "ztsnr" in tensors


def _old_layout_text_encoder(path: Path, folder: Path, dtype: Any) -> Any:
    """The SD 1.x CLIP text encoder of a file in the old key layout, as AUTOMATIC1111 remaps it."""
    from safetensors import safe_open
    from transformers import CLIPTextConfig, CLIPTextModel

    prefix = TE_SD + "transformer."
    state = {}
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():
            if key.startswith(prefix):
                state[key[len(prefix):].removeprefix("text_model.")] = handle.get_tensor(key)
    config = CLIPTextConfig.from_pretrained(str(folder / "text_encoder"), local_files_only=True)
    model = CLIPTextModel(config)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing:
        raise CorruptCheckpoint(path, f"text_encoder weights are missing from the file (e.g. {missing[0]})")
    return model.to(dtype=dtype or model.dtype).eval()


def _zero_terminal_snr(scheduler: Any, path: Path) -> Any:
    cls = type(scheduler)
    if not _accepts(cls, "rescale_betas_zero_snr"):
        raise UnsupportedCheckpoint(path, f"zero-terminal-SNR checkpoint: scheduler {cls.__name__} cannot rescale "
                                          "to zero terminal SNR", "use the euler, dpmpp_2m, ddim or unipc scheduler")
    return cls.from_config(scheduler.config, rescale_betas_zero_snr=True, timestep_spacing="trailing")


def load_single_file(path: Path, family: str, variant: str = "normal", *, dtype: Any = None,
                     config_dir: Path | None = None, prediction_type: str | None = None) -> Any:
    """A diffusers pipeline from one original-layout ``.safetensors`` checkpoint, on the CPU.

    ``prediction_type`` is what the caller knows (the probe's finding, a remembered verdict); the
    file's own ``v_pred`` marker wins for SDXL.
    """
    if family not in FAMILIES or variant not in VARIANTS:
        raise UnsupportedCheckpoint(path, f"unknown checkpoint kind {family}/{variant}")
    path = Path(path)
    if not path.is_file():
        raise NotACheckpoint(path, "no such file")
    if path.suffix.lower() != ".safetensors":
        raise UnsupportedCheckpoint(path, f"{path.suffix or 'extension-less'} checkpoints are not loaded",
                                    "pickle checkpoints (.ckpt/.pt) can run code; convert the file to .safetensors")
    tensors = read_safetensors_header(path)
    marked, ztsnr = header_markers(tensors)
    prediction_type = marked or prediction_type
    folder = Path(config_dir) if config_dir is not None else shipped_config_dir(family, variant, prediction_type)
    index, unet_config = _shipped_config(folder)
    check_family(path, tensors, family, unet_config)
    cls = _pipeline_class(str(index.get("_class_name")), folder)
    parts: dict[str, Any] = {**_tokenizers_for(index, family), **_no_extras(cls)}
    try:
        with quiet_loading():
            if family == "sd1" and OLD_SD1_TEXT in tensors:
                parts["text_encoder"] = _old_layout_text_encoder(path, folder, _dtype_arg(dtype))
            pipe = cls.from_single_file(str(path), config=str(folder), local_files_only=True,
                                        torch_dtype=_dtype_arg(dtype), **parts)
    except _load_errors() as exc:
        raise _load_failure(exc, path, f"cannot be loaded as {FAMILY_NAMES[family]} {variant}") from exc
    _check_loaded(pipe, path, dtype)
    if prediction_type and pipe.scheduler.config.get("prediction_type") != prediction_type:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type=prediction_type)
    if ztsnr:
        pipe.scheduler = _zero_terminal_snr(pipe.scheduler, path)
    return pipe


_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def folder_variant(folder: Path, index: dict[str, Any]) -> str | None:
    """``"fp16"`` when some component of a diffusers folder has only ``*.fp16.*`` weights (diffusers
    then needs ``variant="fp16"``; components with plain weights still load those), else None."""
    for slot in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if (index.get(slot) or [None])[0] is None or not (folder / slot).is_dir():
            continue
        names = [p.name for p in (folder / slot).iterdir() if p.name.endswith(_WEIGHT_SUFFIXES) or ".index" in p.name]
        plain = [n for n in names if ".fp16" not in n]
        if not plain and any(".fp16" in n for n in names):
            return "fp16"
    return None


def load_diffusers_folder(folder: Path, family: str | None = None, *, dtype: Any = None) -> Any:
    """A diffusers pipeline from a local diffusers folder (``model_index.json`` + component folders).

    A folder without tokenizer subfolders gets the shipped tokenizer (padded as ``family`` pads).
    """
    folder = Path(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise NotACheckpoint(folder, "not a diffusers model folder (no model_index.json)")
    index = _read_json(index_path, "model_index.json", CorruptCheckpoint)
    cls = _pipeline_class(str(index.get("_class_name")), folder)
    family = family or ("sdxl" if "XL" in cls.__name__ else "sd1")
    extra = {slot: tok for slot, tok in _tokenizers_for(index, family).items() if not (folder / slot).is_dir()}
    variant = folder_variant(folder, index)
    if variant:
        extra["variant"] = variant
    try:
        with quiet_loading():
            pipe = cls.from_pretrained(str(folder), local_files_only=True, torch_dtype=_dtype_arg(dtype), **extra,
                                       **_no_extras(cls))
    except _load_errors() as exc:
        raise _load_failure(exc, folder, "diffusers folder cannot be loaded") from exc
    _check_loaded(pipe, folder, dtype)
    return pipe


_SCHEDULERS = {  # UI name -> (diffusers class, config overrides)
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                                        "use_karras_sigmas": True}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "heun": ("HeunDiscreteScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}
SCHEDULER_NAMES = tuple(_SCHEDULERS)


def make_scheduler(name: str, base_config: Any) -> Any:
    """A scheduler by its common UI name, built from the checkpoint's own scheduler config (which keeps
    its beta schedule and ``prediction_type``, e.g. SD 2.x 768's v-prediction)."""
    import diffusers

    from gmi_desktop.core.errors import SettingsError

    if name not in _SCHEDULERS:
        raise SettingsError(None, f"unknown scheduler {name!r}", f"use one of {', '.join(SCHEDULER_NAMES)}")
    cls_name, extra = _SCHEDULERS[name]
    cls = getattr(diffusers, cls_name)
    if base_config.get("rescale_betas_zero_snr") and not _accepts(cls, "rescale_betas_zero_snr"):
        raise SettingsError(None, f"the {name} scheduler cannot run a zero terminal SNR checkpoint",
                            "use the euler, euler_a, dpmpp_2m, ddim or unipc scheduler")
    return cls.from_config(base_config, **extra)


def _accepts(cls: Any, argument: str) -> bool:
    import inspect

    return argument in inspect.signature(cls.__init__).parameters
