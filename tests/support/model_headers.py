"""Key layouts (name -> (dtype, shape)) of the model files people keep next to checkpoints.

Realistic names as the common tools write them: kohya-ss LoRA and LyCORIS (LoHa, LoKr),
the original-layout VAE (``vae-ft-mse-840000``), A1111 / SDXL textual-inversion embeddings,
ControlNet 1.1 (original and diffusers layouts), a diffusers UNet. ``small_checkpoint`` gives a
compact checkpoint with the distinguishing keys of each family for quick tests; full-size
layouts come from ``tests.support.sd_layout``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

Layout = dict[str, tuple[str, tuple[int, ...]]]

# family -> (model channels, context width, adm/label_emb input or None, text-encoder keys)
_FAMILY = {
    "sd1": (320, 768, None, {
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": ("F16", (49408, 768)),
        "cond_stage_model.transformer.text_model.final_layer_norm.weight": ("F16", (768,)),
    }),
    "sd2": (320, 1024, None, {
        "cond_stage_model.model.token_embedding.weight": ("F16", (49408, 1024)),
        "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": ("F16", (3072, 1024)),
        "cond_stage_model.model.ln_final.weight": ("F16", (1024,)),
    }),
    "sdxl": (320, 2048, 2816, {
        "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": ("F16", (49408, 768)),
        "conditioner.embedders.1.model.token_embedding.weight": ("F16", (49408, 1280)),
        "conditioner.embedders.1.model.text_projection": ("F16", (1280, 1280)),
    }),
    "sdxl_refiner": (384, 1280, 2560, {
        "conditioner.embedders.0.model.token_embedding.weight": ("F16", (49408, 1280)),
        "conditioner.embedders.0.model.text_projection": ("F16", (1280, 1280)),
    }),
}
IN_CHANNELS = {"normal": 4, "inpaint": 9, "depth": 5, "instruct_pix2pix": 8}


def small_unet(family: str, variant: str = "normal") -> Layout:
    ch, context, adm, _ = _FAMILY[family]
    u = "model.diffusion_model."
    out: Layout = {
        u + "input_blocks.0.0.weight": ("F16", (ch, IN_CHANNELS[variant], 3, 3)),
        u + "input_blocks.0.0.bias": ("F16", (ch,)),
        u + "time_embed.0.weight": ("F16", (ch * 4, ch)),
        u + "out.2.weight": ("F16", (4, ch, 3, 3)),
    }
    for block, mult in ((1, 1), (4, 2), (7, 4)):
        width = ch * mult
        prefix = f"{u}input_blocks.{block}.1.transformer_blocks.0."
        out[prefix + "attn1.to_k.weight"] = ("F16", (width, width))
        out[prefix + "attn2.to_k.weight"] = ("F16", (width, context))
        out[prefix + "attn2.to_v.weight"] = ("F16", (width, context))
    if adm is not None:
        out[u + "label_emb.0.0.weight"] = ("F16", (ch * 4, adm))
    return out


def small_vae(prefix: str = "first_stage_model.") -> Layout:
    return {
        prefix + "encoder.conv_in.weight": ("F16", (128, 3, 3, 3)),
        prefix + "encoder.down.0.block.0.conv1.weight": ("F16", (128, 128, 3, 3)),
        prefix + "decoder.up.3.block.0.conv1.weight": ("F16", (128, 128, 3, 3)),
        prefix + "decoder.conv_out.weight": ("F16", (3, 128, 3, 3)),
        prefix + "quant_conv.weight": ("F16", (8, 8, 1, 1)),
        prefix + "post_quant_conv.weight": ("F16", (4, 4, 1, 1)),
    }


def small_checkpoint(family: str, variant: str = "normal") -> Layout:
    """UNet + VAE + text encoder(s): the keys that make a checkpoint and tell its family."""
    return {**small_unet(family, variant), **small_vae(), **_FAMILY[family][3]}


def vae_layout() -> Layout:
    """A standalone VAE in the original layout, like ``vae-ft-mse-840000-ema-pruned``."""
    out: Layout = {"encoder.conv_in.weight": ("F32", (128, 3, 3, 3)), "encoder.conv_in.bias": ("F32", (128,))}
    widths = (128, 256, 512, 512)
    for level, width in enumerate(widths):
        for block in range(2):
            base = f"encoder.down.{level}.block.{block}."
            out[base + "norm1.weight"] = ("F32", (width,))
            out[base + "conv1.weight"] = ("F32", (width, width, 3, 3))
        for block in range(3):
            base = f"decoder.up.{level}.block.{block}."
            out[base + "norm1.weight"] = ("F32", (width,))
            out[base + "conv1.weight"] = ("F32", (width, width, 3, 3))
    out["encoder.mid.attn_1.q.weight"] = ("F32", (512, 512, 1, 1))
    out["quant_conv.weight"] = ("F32", (8, 8, 1, 1))
    out["post_quant_conv.weight"] = ("F32", (4, 4, 1, 1))
    out["decoder.conv_out.weight"] = ("F32", (3, 128, 3, 3))
    return out


def lora_layout(rank: int = 8, sdxl: bool = False) -> Layout:
    """kohya-ss LoRA: ``lora_unet_*`` / ``lora_te_*`` with ``lora_down``/``lora_up``/``alpha``."""
    out: Layout = {}
    modules = [
        ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", 320, 320),
        ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", 2048 if sdxl else 768, 320),
        ("lora_unet_mid_block_attentions_0_proj_out", 1280, 1280),
    ]
    tes = ("lora_te1_", "lora_te2_") if sdxl else ("lora_te_",)
    for te in tes:
        modules.append((f"{te}text_model_encoder_layers_0_self_attn_q_proj", 768, 768))
    for name, fan_in, fan_out in modules:
        out[f"{name}.lora_down.weight"] = ("F16", (rank, fan_in))
        out[f"{name}.lora_up.weight"] = ("F16", (fan_out, rank))
        out[f"{name}.alpha"] = ("F16", ())
    return out


def lycoris_layout(algo: str = "loha") -> Layout:
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    if algo == "loha":
        return {
            f"{name}.hada_w1_a": ("F16", (320, 8)), f"{name}.hada_w1_b": ("F16", (8, 320)),
            f"{name}.hada_w2_a": ("F16", (320, 8)), f"{name}.hada_w2_b": ("F16", (8, 320)),
            f"{name}.alpha": ("F16", ()),
        }
    return {f"{name}.lokr_w1": ("F16", (8, 8)), f"{name}.lokr_w2": ("F16", (40, 40)), f"{name}.alpha": ("F16", ())}


def embedding_layout(family: str = "sd1", vectors: int = 4) -> Layout:
    """A1111 textual inversion saved as safetensors (``emb_params``); SDXL: ``clip_l`` + ``clip_g``."""
    if family == "sdxl":
        return {"clip_g": ("F32", (vectors, 1280)), "clip_l": ("F32", (vectors, 768))}
    return {"emb_params": ("F32", (vectors, 1024 if family == "sd2" else 768))}


def controlnet_layout(diffusers: bool = False) -> Layout:
    if diffusers:
        return {
            "conv_in.weight": ("F16", (320, 4, 3, 3)),
            "time_embedding.linear_1.weight": ("F16", (1280, 320)),
            "controlnet_cond_embedding.conv_in.weight": ("F16", (16, 3, 3, 3)),
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": ("F16", (320, 768)),
            "controlnet_down_blocks.0.weight": ("F16", (320, 320, 1, 1)),
            "controlnet_mid_block.weight": ("F16", (1280, 1280, 1, 1)),
        }
    c = "control_model."
    return {
        c + "input_blocks.0.0.weight": ("F16", (320, 4, 3, 3)),
        c + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": ("F16", (320, 768)),
        c + "input_hint_block.0.weight": ("F16", (16, 3, 3, 3)),
        c + "zero_convs.0.0.weight": ("F16", (320, 320, 1, 1)),
        c + "middle_block_out.0.weight": ("F16", (1280, 1280, 1, 1)),
    }


def diffusers_unet_layout(context: int = 768, in_channels: int = 4) -> Layout:
    return {
        "conv_in.weight": ("F16", (320, in_channels, 3, 3)),
        "time_embedding.linear_1.weight": ("F16", (1280, 320)),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": ("F16", (320, context)),
        "up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": ("F16", (1280, context)),
        "conv_out.weight": ("F16", (4, 320, 3, 3)),
    }


def diffusers_vae_layout() -> Layout:
    return {
        "encoder.conv_in.weight": ("F16", (128, 3, 3, 3)),
        "encoder.down_blocks.0.resnets.0.conv1.weight": ("F16", (128, 128, 3, 3)),
        "decoder.up_blocks.0.resnets.0.conv1.weight": ("F16", (512, 512, 3, 3)),
        "quant_conv.weight": ("F16", (8, 8, 1, 1)),
    }


def diffusers_text_encoder_layout(width: int = 768) -> Layout:
    return {
        "text_model.embeddings.token_embedding.weight": ("F16", (49408, width)),
        "text_model.encoder.layers.0.self_attn.q_proj.weight": ("F16", (width, width)),
        "text_model.final_layer_norm.weight": ("F16", (width,)),
    }


DIFFUSERS_CONFIGS = Path(__file__).resolve().parents[2] / "resources" / "diffusers"
DIFFUSERS_WEIGHTS = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model",
                     "text_encoder": "model", "text_encoder_2": "model"}


def write_diffusers_folder(dest: Path, config_name: str = "sd1", weights: bool = True) -> Path:
    """A diffusers pipeline folder: a shipped weight-free config folder plus sparse component weights."""
    from tests.support.checkpoint_files import write_safetensors_header

    shutil.copytree(DIFFUSERS_CONFIGS / config_name, dest)
    if not weights:
        return dest
    index = json.loads((dest / "model_index.json").read_text())
    for part, stem in DIFFUSERS_WEIGHTS.items():
        if not (isinstance(index.get(part), list) and index[part][0]):
            continue
        config = json.loads((dest / part / "config.json").read_text())
        if part == "unet":
            layout = diffusers_unet_layout(config["cross_attention_dim"], config["in_channels"])
        elif part == "vae":
            layout = diffusers_vae_layout()
        else:
            layout = diffusers_text_encoder_layout(config["hidden_size"])
        write_safetensors_header(dest / part / f"{stem}.safetensors", layout)
    return dest
