"""Write SD 1.x diffusers components as one single-file checkpoint in the original (A1111) layout.

diffusers only reads this layout (``loaders/single_file_utils.py``); the model zoo needs to write
it, so that its checkpoints go through the same header probe, library scan and single-file loader
as a user's downloads. Layout: UNet under ``model.diffusion_model.`` (``input_blocks`` /
``middle_block`` / ``output_blocks``), VAE under ``first_stage_model.`` (mid-block attention
projections as 1x1 convolutions), the CLIP text model under
``cond_stage_model.transformer.text_model.``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

UNET = "model.diffusion_model."
VAE = "first_stage_model."
TEXT = "cond_stage_model.transformer.text_model."

_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
           "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet(rest: str) -> str:
    module, _, param = rest.rpartition(".")
    return f"{_RESNET[module]}.{param}"


def unet_keys(unet_sd: Mapping[str, Any]) -> dict[str, Any]:
    per_block = 1 + max(int(k.split(".")[3]) for k in unet_sd if k.startswith("down_blocks.0.resnets."))
    up_attn = {int(k.split(".")[1]) for k in unet_sd if re.match(r"up_blocks\.\d+\.attentions\.", k)}
    out: dict[str, Any] = {}
    for key, value in unet_sd.items():
        module, _, param = key.rpartition(".")
        parts = key.split(".")
        if module in _UNET_TOP:
            new = f"{_UNET_TOP[module]}.{param}"
        elif parts[0] in ("down_blocks", "up_blocks"):
            block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            down = parts[0] == "down_blocks"
            base = 1 + block * (per_block + 1) if down else block * (per_block + 1)
            side = "input_blocks" if down else "output_blocks"
            if kind == "resnets":
                new = f"{side}.{base + index}.0.{_resnet(rest)}"
            elif kind == "attentions":
                new = f"{side}.{base + index}.1.{rest}"
            elif down:
                new = f"input_blocks.{base + per_block}.0.op.{param}"
            else:
                new = f"output_blocks.{base + per_block}.{2 if block in up_attn else 1}.conv.{param}"
        elif parts[0] == "mid_block":
            kind, index, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            new = f"middle_block.{2 * index}.{_resnet(rest)}" if kind == "resnets" else f"middle_block.1.{rest}"
        else:
            raise KeyError(f"no original-layout name for UNet key {key!r}")
        out[UNET + new] = value
    return out


def vae_keys(vae_sd: Mapping[str, Any]) -> dict[str, Any]:
    n_up = 1 + max(int(k.split(".")[2]) for k in vae_sd if k.startswith("decoder.up_blocks."))
    out: dict[str, Any] = {}
    for key, value in vae_sd.items():
        parts = key.split(".")
        head = parts[0]
        if head in ("quant_conv", "post_quant_conv") or parts[1] in ("conv_in", "conv_out"):
            new = key
        elif parts[1] == "conv_norm_out":
            new = f"{head}.norm_out.{parts[2]}"
        elif parts[1] in ("down_blocks", "up_blocks"):
            down = parts[1] == "down_blocks"
            block = int(parts[2]) if down else n_up - 1 - int(parts[2])
            side = "encoder.down" if down else "decoder.up"
            rest = ".".join(parts[5:]).replace("conv_shortcut", "nin_shortcut")
            if parts[3] == "resnets":
                new = f"{side}.{block}.block.{parts[4]}.{rest}"
            else:
                new = f"{side}.{block}.{'downsample' if down else 'upsample'}.{rest}"
        elif parts[1] == "mid_block" and parts[2] == "resnets":
            rest = ".".join(parts[4:]).replace("conv_shortcut", "nin_shortcut")
            new = f"{head}.mid.block_{int(parts[3]) + 1}.{rest}"
        elif parts[1] == "mid_block" and parts[2] == "attentions":
            module, _, param = ".".join(parts[4:]).rpartition(".")
            new = f"{head}.mid.attn_1.{_VAE_ATTN[module]}.{param}"
            if param == "weight" and module != "group_norm" and value.ndim == 2:
                value = value.reshape(*value.shape, 1, 1)
        else:
            raise KeyError(f"no original-layout name for VAE key {key!r}")
        out[VAE + new] = value
    return out


def text_keys(text_sd: Mapping[str, Any]) -> dict[str, Any]:
    return {TEXT + k.removeprefix("text_model."): v for k, v in text_sd.items() if k != "text_projection.weight"}


def original_state_dict(unet: Any, vae: Any, text_encoder: Any) -> dict[str, Any]:
    """The three modules as one original-layout state dict (contiguous tensors it owns), with the
    ``position_ids`` buffer real files carry."""
    import torch

    mapped = {**unet_keys(unet.state_dict()), **vae_keys(vae.state_dict()), **text_keys(text_encoder.state_dict())}
    out = {k: v.detach().clone().contiguous() for k, v in mapped.items()}
    positions = text_encoder.config.max_position_embeddings
    out[TEXT + "embeddings.position_ids"] = torch.arange(positions, dtype=torch.int64)[None]
    return out
