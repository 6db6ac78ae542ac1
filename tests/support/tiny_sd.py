"""Tiny random Stable Diffusion checkpoints of every family, built from the real architecture classes.

Widths are tiny (UNet 32/64 channels, text width 32, VAE 16 channels with the real 8x downscale) but
the structure is the real one: SD 1.x conv projections, SD 2.x linear projections with OpenCLIP,
SDXL's two text encoders and text-time embedding, the refiner's single bigG encoder and aesthetic
score. The text towers keep the real 49 408-token vocabulary so the shipped tokenizer works.

``write_tiny_config_dir`` writes a folder shaped like ``resources/diffusers/<name>`` with these tiny
widths (model_index and scheduler copied from the shipped folder); the production loader is given it
as ``config_dir`` instead of the shipped default, nothing else differs.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.sd_layout import TEXT_PREFIXES, diffusers_to_original

TEXT_WIDTH = 32
BIGG_WIDTH = 48  # must differ from CLIP-L's width: diffusers tells SDXL's two towers apart by it
TIME_EMBED = 8

_TEXT = {
    "vocab_size": 49408, "hidden_size": TEXT_WIDTH, "intermediate_size": 37, "num_hidden_layers": 2,
    "num_attention_heads": 4, "max_position_embeddings": 77, "projection_dim": TEXT_WIDTH,
    "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
}
_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
    "block_out_channels": [16, 16, 16, 16], "norm_num_groups": 8,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "sample_size": 64,
}
_SD_UNET = {
    "sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [32, 64, 64], "norm_num_groups": 32,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": TEXT_WIDTH, "attention_head_dim": 4,
}
_XL_UNET = {
    "sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [32, 64], "norm_num_groups": 32,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": [1, 2], "attention_head_dim": [2, 4],
    "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": TIME_EMBED,
}


def tiny_component_configs(family: str, variant: str = "normal") -> dict[str, Any]:
    """Tiny unet/vae/text encoder configs of ``family`` (same keys as :func:`sd_layout.component_configs`)."""
    in_channels = {"normal": 4, "inpaint": 9, "depth": 5}[variant]
    clip_l = ("CLIPTextModel", {**_TEXT, "hidden_act": "quick_gelu"})
    openclip = {**_TEXT, "hidden_act": "gelu"}
    bigg = {**openclip, "hidden_size": BIGG_WIDTH, "projection_dim": BIGG_WIDTH}
    if family == "sd1":
        return {"unet": {**_SD_UNET, "in_channels": in_channels}, "vae": dict(_VAE), "text_encoder": clip_l}
    if family == "sd2":
        unet = {**_SD_UNET, "in_channels": in_channels, "use_linear_projection": True, "attention_head_dim": [2, 4, 4]}
        return {"unet": unet, "vae": dict(_VAE), "text_encoder": ("CLIPTextModel", openclip)}
    if family == "sdxl":
        unet = {**_XL_UNET, "in_channels": in_channels, "cross_attention_dim": TEXT_WIDTH + BIGG_WIDTH,
                "projection_class_embeddings_input_dim": BIGG_WIDTH + 6 * TIME_EMBED}
        return {"unet": unet, "vae": dict(_VAE), "text_encoder": clip_l,
                "text_encoder_2": ("CLIPTextModelWithProjection", bigg)}
    if family == "sdxl_refiner":
        unet = {**_XL_UNET, "cross_attention_dim": BIGG_WIDTH,
                "projection_class_embeddings_input_dim": BIGG_WIDTH + 5 * TIME_EMBED}
        return {"unet": unet, "vae": dict(_VAE), "text_encoder_2": ("CLIPTextModelWithProjection", bigg)}
    raise ValueError(f"unknown family {family!r}")


def write_tiny_config_dir(folder: Path, family: str, variant: str = "normal", prediction_type: str | None = None) -> Path:
    """A config folder like the shipped one for ``family``/``variant``, with tiny model widths."""
    from gmi_desktop.engine.sd_configs import config_dir

    shipped = config_dir(family, variant, prediction_type)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(shipped / "model_index.json", folder / "model_index.json")
    (folder / "scheduler").mkdir(exist_ok=True)
    shutil.copy2(shipped / "scheduler" / "scheduler_config.json", folder / "scheduler" / "scheduler_config.json")
    configs = tiny_component_configs(family, variant)
    for slot in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if slot not in configs:
            continue
        (folder / slot).mkdir(exist_ok=True)
        if slot in ("unet", "vae"):
            data = {"_class_name": "UNet2DConditionModel" if slot == "unet" else "AutoencoderKL", **configs[slot]}
        else:
            cls_name, cfg = configs[slot]
            data = {**cfg, "architectures": [cls_name], "model_type": "clip_text_model"}
        (folder / slot / "config.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
    return folder


def build_tiny_components(family: str, variant: str = "normal", seed: int = 0) -> dict[str, Any]:
    """Seeded random ``unet``, ``vae``, ``text_encoder`` (and/or ``text_encoder_2``) modules, fp32, eval mode."""
    import diffusers
    import torch
    import transformers

    configs = tiny_component_configs(family, variant)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        parts: dict[str, Any] = {
            "unet": diffusers.UNet2DConditionModel.from_config(configs["unet"]),
            "vae": diffusers.AutoencoderKL.from_config(configs["vae"]),
        }
        for slot in ("text_encoder", "text_encoder_2"):
            if slot in configs:
                cls_name, cfg = configs[slot]
                cls = getattr(transformers, cls_name)
                parts[slot] = cls(cls.config_class(**cfg))
    finally:
        torch.random.set_rng_state(generator_state)
    with torch.no_grad():  # diffusers zero-initialises some output layers; make every tensor informative
        gen = torch.Generator().manual_seed(seed + 1)
        for module in parts.values():
            for name, param in module.named_parameters():
                if not param.any():
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.02)
    return {name: module.eval() for name, module in parts.items()}


def text_encoder_state_dicts(components: dict[str, Any]) -> list[dict[str, Any]]:
    return [components[s].state_dict() for s in ("text_encoder", "text_encoder_2") if s in components]


def original_state_dict(components: dict[str, Any], family: str) -> dict[str, Any]:
    """The components as one original-layout (A1111) state dict, tensors contiguous and owned."""
    mapped = diffusers_to_original(
        components["unet"].state_dict(), components["vae"].state_dict(), text_encoder_state_dicts(components), family
    )
    out = {k: v.detach().clone().contiguous() for k, v in mapped.items()}
    import torch

    for prefix, kind in TEXT_PREFIXES[family]:
        if kind == "clip":  # real files carry the position_ids buffer
            out[prefix + "embeddings.position_ids"] = torch.arange(77, dtype=torch.int64)[None]
    return out


def save_single_file(components: dict[str, Any], family: str, path: Path) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    save_file(original_state_dict(components, family), str(path), metadata={"format": "pt"})
    return path


def save_diffusers_folder(components: dict[str, Any], family: str, variant: str, folder: Path) -> Path:
    """A complete diffusers folder (configs, weights, tokenizers) of the tiny components."""
    from gmi_desktop.engine.sd_configs import tokenizer_dir

    folder = write_tiny_config_dir(Path(folder), family, variant)
    for slot, module in components.items():
        module.save_pretrained(folder / slot)
    for tok_slot, pad in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")):
        if tok_slot not in json.loads((folder / "model_index.json").read_text(encoding="utf-8")):
            continue
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        if index[tok_slot][0] is None:
            continue
        if family == "sd2":
            pad = "!"
        shutil.copytree(tokenizer_dir(), folder / tok_slot, dirs_exist_ok=True)
        cfg_path = folder / tok_slot / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        cfg["pad_token"] = pad
        cfg_path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return folder


@dataclass(frozen=True)
class TinyCheckpoint:
    family: str
    variant: str
    path: Path  # the single .safetensors file in the original layout
    config_dir: Path  # tiny-width config folder for the loader
    components: dict[str, Any]


def make_tiny_checkpoint(folder: Path, family: str, variant: str = "normal", seed: int = 0) -> TinyCheckpoint:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    components = build_tiny_components(family, variant, seed)
    path = save_single_file(components, family, folder / f"tiny-{family}-{variant}-{seed}.safetensors")
    config = write_tiny_config_dir(folder / f"config-{family}-{variant}", family, variant)
    return TinyCheckpoint(family, variant, path, config, components)
