"""diffusers -> original (CompVis / A1111 / sgm) key layout of Stable Diffusion single-file checkpoints.

diffusers ships only the other direction (``diffusers/loaders/single_file_utils.py``); this is our own
inverse, used to write tiny random checkpoints exactly as a user's ``.safetensors`` looks, and to
list the full-size key names and shapes of each family without allocating any memory.

Layout of the original files:

* UNet under ``model.diffusion_model.`` (``input_blocks`` / ``middle_block`` / ``output_blocks``,
  SDXL's ``label_emb.0.{0,2}`` for the text-time embedding).
* VAE under ``first_stage_model.``; its mid-block attention projections are 1x1 convolutions,
  so diffusers' (C, C) linear weights become (C, C, 1, 1).
* Text encoders: SD 1.x ``cond_stage_model.transformer.text_model.`` (OpenAI CLIP, HF layout);
  SD 2.x ``cond_stage_model.model.`` (OpenCLIP: ``transformer.resblocks.N`` with a fused
  ``attn.in_proj_weight``); SDXL base ``conditioner.embedders.0.transformer.text_model.`` (CLIP-L)
  and ``conditioner.embedders.1.model.`` (OpenCLIP bigG with ``text_projection``); the SDXL
  refiner only ``conditioner.embedders.0.model.`` (bigG).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

FAMILIES = ("sd1", "sd2", "sdxl", "sdxl_refiner")

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIXES: dict[str, tuple[tuple[str, str], ...]] = {
    # family -> ((prefix, "clip" | "openclip"), ...) in the order of text_encoder, text_encoder_2
    "sd1": (("cond_stage_model.transformer.text_model.", "clip"),),
    "sd2": (("cond_stage_model.model.", "openclip"),),
    "sdxl": (("conditioner.embedders.0.transformer.text_model.", "clip"), ("conditioner.embedders.1.model.", "openclip")),
    "sdxl_refiner": (("conditioner.embedders.0.model.", "openclip"),),
}

_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_OPENCLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def _split_module(key: str) -> tuple[str, str]:
    module, _, param = key.rpartition(".")
    return module, param


def _rename_resnet(rest: str) -> str:
    module, param = _split_module(rest)
    return f"{_UNET_RESNET[module]}.{param}"


def unet_to_original(unet_sd: Mapping[str, Any]) -> dict[str, Any]:
    """Map a diffusers ``UNet2DConditionModel`` state dict to ``model.diffusion_model.*`` keys."""
    down = [k for k in unet_sd if k.startswith("down_blocks.0.resnets.")]
    per_block = 1 + max(int(k.split(".")[3]) for k in down)  # layers_per_block
    up_with_attn = {int(k.split(".")[1]) for k in unet_sd if re.match(r"up_blocks\.\d+\.attentions\.", k)}
    out: dict[str, Any] = {}
    for key, value in unet_sd.items():
        module, param = _split_module(key)
        parts = key.split(".")
        if module in _UNET_TOP:
            new = f"{_UNET_TOP[module]}.{param}"
        elif parts[0] == "down_blocks":
            block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            base = 1 + block * (per_block + 1)
            if kind == "resnets":
                new = f"input_blocks.{base + index}.0.{_rename_resnet(rest)}"
            elif kind == "attentions":
                new = f"input_blocks.{base + index}.1.{rest}"
            else:  # downsamplers.0.conv.{weight,bias}
                new = f"input_blocks.{base + per_block}.0.op.{param}"
        elif parts[0] == "mid_block":
            kind, index, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            if kind == "resnets":
                new = f"middle_block.{2 * index}.{_rename_resnet(rest)}"
            else:
                new = f"middle_block.1.{rest}"
        elif parts[0] == "up_blocks":
            block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            base = block * (per_block + 1)
            if kind == "resnets":
                new = f"output_blocks.{base + index}.0.{_rename_resnet(rest)}"
            elif kind == "attentions":
                new = f"output_blocks.{base + index}.1.{rest}"
            else:  # upsamplers.0.conv.*: after the attention when the block has one
                slot = 2 if block in up_with_attn else 1
                new = f"output_blocks.{base + per_block}.{slot}.conv.{param}"
        else:
            raise KeyError(f"no original-layout name for UNet key {key!r}")
        out[UNET_PREFIX + new] = value
    return out


def _vae_resnet(rest: str) -> str:
    return rest.replace("conv_shortcut", "nin_shortcut")


def vae_to_original(vae_sd: Mapping[str, Any]) -> dict[str, Any]:
    """Map a diffusers ``AutoencoderKL`` state dict to ``first_stage_model.*`` keys."""
    n_up = 1 + max(int(k.split(".")[2]) for k in vae_sd if k.startswith("decoder.up_blocks."))
    out: dict[str, Any] = {}
    for key, value in vae_sd.items():
        parts = key.split(".")
        head = parts[0]
        if head in ("quant_conv", "post_quant_conv"):
            new = key
        elif parts[1] in ("conv_in", "conv_out"):
            new = key
        elif parts[1] == "conv_norm_out":
            new = f"{head}.norm_out.{parts[2]}"
        elif parts[1] == "down_blocks":
            block, kind, rest = int(parts[2]), parts[3], ".".join(parts[5:])
            if kind == "resnets":
                new = f"encoder.down.{block}.block.{parts[4]}.{_vae_resnet(rest)}"
            else:
                new = f"encoder.down.{block}.downsample.{rest}"
        elif parts[1] == "up_blocks":
            block, kind, rest = n_up - 1 - int(parts[2]), parts[3], ".".join(parts[5:])
            if kind == "resnets":
                new = f"decoder.up.{block}.block.{parts[4]}.{_vae_resnet(rest)}"
            else:
                new = f"decoder.up.{block}.upsample.{rest}"
        elif parts[1] == "mid_block" and parts[2] == "resnets":
            new = f"{head}.mid.block_{int(parts[3]) + 1}.{_vae_resnet('.'.join(parts[4:]))}"
        elif parts[1] == "mid_block" and parts[2] == "attentions":
            module, param = _split_module(".".join(parts[4:]))
            new = f"{head}.mid.attn_1.{_VAE_ATTN[module]}.{param}"
            if param == "weight" and module != "group_norm":
                value = _as_conv1x1(value)
        else:
            raise KeyError(f"no original-layout name for VAE key {key!r}")
        out[VAE_PREFIX + new] = value
    return out


def _as_conv1x1(value: Any) -> Any:
    if isinstance(value, tuple):  # a shape
        return (*value, 1, 1) if len(value) == 2 else value
    return value.reshape(*value.shape, 1, 1) if value.ndim == 2 else value


def _strip_text_model(sd: Mapping[str, Any]) -> dict[str, Any]:
    return {k.removeprefix("text_model."): v for k, v in sd.items()}


def clip_to_original(text_sd: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """HF ``CLIPTextModel`` keys (with or without ``text_model.``) under an HF-layout ``prefix``."""
    return {prefix + k: v for k, v in _strip_text_model(text_sd).items() if k != "text_projection.weight"}


def openclip_to_original(text_sd: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """HF CLIP text keys -> OpenCLIP layout: fused q/k/v ``in_proj``, ``resblocks``, transposed projection."""
    sd = _strip_text_model(text_sd)
    out: dict[str, Any] = {}
    fused: dict[str, dict[str, Any]] = {}
    for key, value in sd.items():
        if key == "embeddings.position_embedding.weight":
            out[prefix + "positional_embedding"] = value
        elif key == "embeddings.token_embedding.weight":
            out[prefix + "token_embedding.weight"] = value
        elif key.startswith("final_layer_norm."):
            out[prefix + "ln_final." + key.split(".")[-1]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = _transpose(value)
        elif key.startswith("encoder.layers."):
            parts = key.split(".")
            layer, module, param = parts[2], ".".join(parts[3:-1]), parts[-1]
            block = f"{prefix}transformer.resblocks.{layer}."
            if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                fused.setdefault(f"{block}attn.in_proj_{param}", {})[module[-6]] = value
            else:
                out[f"{block}{_OPENCLIP_LAYER[module]}.{param}"] = value
        elif key == "embeddings.position_ids":
            continue
        else:
            raise KeyError(f"no OpenCLIP name for text encoder key {key!r}")
    for key, qkv in fused.items():
        out[key] = _concat([qkv["q"], qkv["k"], qkv["v"]])
    return out


def _transpose(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(reversed(value))
    return value.T.contiguous()


def _concat(values: list[Any]) -> Any:
    if isinstance(values[0], tuple):
        return (sum(v[0] for v in values), *values[0][1:])
    import torch

    return torch.cat(values, dim=0).contiguous()


def diffusers_to_original(
    unet_sd: Mapping[str, Any],
    vae_sd: Mapping[str, Any],
    text_encoder_sds: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    family: str,
) -> dict[str, Any]:
    """One original-layout dict from the diffusers components of a pipeline.

    ``text_encoder_sds`` is one state dict (SD 1.x, SD 2.x, SDXL refiner: its ``text_encoder_2``)
    or a pair (SDXL base: ``text_encoder``, ``text_encoder_2``). Values may be tensors or shape
    tuples (for header-only work); tensors are reshaped/fused where the layouts differ.
    """
    if family not in TEXT_PREFIXES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    if isinstance(text_encoder_sds, Mapping):
        text_encoder_sds = [text_encoder_sds]
    slots = TEXT_PREFIXES[family]
    if len(text_encoder_sds) != len(slots):
        raise ValueError(f"{family} needs {len(slots)} text encoder state dict(s), got {len(text_encoder_sds)}")
    out = unet_to_original(unet_sd)
    out.update(vae_to_original(vae_sd))
    for sd, (prefix, kind) in zip(text_encoder_sds, slots):
        out.update(clip_to_original(sd, prefix) if kind == "clip" else openclip_to_original(sd, prefix))
    return out


# ---- full-size (and tiny) shapes without memory -------------------------------------------------

_LDM_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
)


def component_configs(family: str, variant: str = "normal", size: str = "full") -> dict[str, Any]:
    """``{"unet": cfg, "vae": cfg, "text_encoder": (cls_name, cfg) | None, "text_encoder_2": ...}``."""
    if size == "tiny":
        from tests.support.tiny_sd import tiny_component_configs

        return tiny_component_configs(family, variant)
    if size != "full":
        raise ValueError(f"size must be 'full' or 'tiny', not {size!r}")
    from gmi_desktop.engine.sd_configs import config_dir

    folder = config_dir(family, "normal" if variant == "depth" else variant,
                        "epsilon" if variant == "depth" else None)
    configs: dict[str, Any] = {}
    for name in ("unet", "vae"):
        configs[name] = json.loads((folder / name / "config.json").read_text(encoding="utf-8"))
    if variant == "depth":
        configs["unet"]["in_channels"] = 5
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    for slot in ("text_encoder", "text_encoder_2"):
        entry = index.get(slot)
        if entry and entry[0] is not None:
            configs[slot] = (entry[1], json.loads((folder / slot / "config.json").read_text(encoding="utf-8")))
    return configs


def _meta_shapes(module: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in module.state_dict().items()}


def diffusers_shapes(configs: Mapping[str, Any]) -> dict[str, dict[str, tuple[int, ...]]]:
    """Per-component diffusers state-dict shapes, built on the meta device (no memory)."""
    import diffusers
    import transformers
    from accelerate import init_empty_weights

    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    with init_empty_weights():
        unet = diffusers.UNet2DConditionModel.from_config(configs["unet"])
        vae = diffusers.AutoencoderKL.from_config(configs["vae"])
        shapes["unet"] = {k: s for k, (s, _) in _meta_shapes(unet).items()}
        shapes["vae"] = {k: s for k, (s, _) in _meta_shapes(vae).items()}
        for slot in ("text_encoder", "text_encoder_2"):
            if configs.get(slot):
                cls_name, cfg = configs[slot]
                cls = getattr(transformers, cls_name)
                cfg = {k: v for k, v in cfg.items() if k not in ("architectures", "model_type")}
                model = cls(cls.config_class(**cfg))
                shapes[slot] = {k: s for k, (s, _) in _meta_shapes(model).items()}
    return shapes


def original_layout_shapes(
    family: str, variant: str = "normal", size: str = "full", dtype: str = "F16"
) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every tensor name of a ``family``/``variant`` single file in the original layout, with its shape
    and safetensors dtype (``dtype`` for weights; the LDM schedule buffers are F32, ``position_ids`` I64).

    Built from the shipped ``resources/diffusers`` configs (``size="full"``) or the tiny test configs
    (``size="tiny"``) on the meta device. Keys diffusers drops on load are added back so the list
    matches real files: SD 2.x's unused last OpenCLIP block and its ``text_projection``, the CLIP-L
    ``position_ids`` buffer and, for SD 1.x/2.x, the DDPM schedule buffers. ``depth`` adds only the
    5-channel UNet input; the MiDaS ``depth_model.*`` weights of real depth checkpoints are not listed.
    """
    configs = component_configs(family, variant, size)
    shapes = diffusers_shapes(configs)
    texts = [shapes[s] for s in ("text_encoder", "text_encoder_2") if s in shapes]
    mapped = diffusers_to_original(shapes["unet"], shapes["vae"], texts, family)
    out = {k: (tuple(v), dtype) for k, v in mapped.items()}
    for prefix, kind in TEXT_PREFIXES[family]:
        if kind == "clip":
            out[prefix + "embeddings.position_ids"] = ((1, out[prefix + "embeddings.position_embedding.weight"][0][0]), "I64")
    if family == "sd2" and size == "full":
        prefix = TEXT_PREFIXES["sd2"][0][0] + "transformer.resblocks."
        last = max(int(k[len(prefix):].split(".")[0]) for k in out if k.startswith(prefix))
        for key in [k for k in out if k.startswith(f"{prefix}{last}.")]:
            out[key.replace(f"{prefix}{last}.", f"{prefix}{last + 1}.")] = out[key]
        width = out[TEXT_PREFIXES["sd2"][0][0] + "positional_embedding"][0][1]
        out[TEXT_PREFIXES["sd2"][0][0] + "text_projection"] = ((width, width), dtype)
    if family in ("sd1", "sd2"):
        for name in _LDM_BUFFERS:
            out[name] = ((1000,), "F32")
    return out
