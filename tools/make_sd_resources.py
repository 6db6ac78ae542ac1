"""Write the offline diffusers configs shipped in ``resources/diffusers/`` (no weights).

Run from the repository root: ``python tools/make_sd_resources.py``. It writes, per family folder,
``model_index.json`` and the ``unet``/``vae``/``text_encoder[_2]``/``scheduler`` configs of the
published Stable Diffusion architectures, plus one shared CLIP BPE tokenizer folder
(``clip_tokenizer/``: ``vocab.json`` + ``merges.txt``) built from open_clip's bundled
``bpe_simple_vocab_16e6.txt.gz``. The tokenizer is shared by every family (SD 2.x and SDXL's
second tokenizer only differ in the pad token, which the loader sets).

The hyper-parameters below are the documented ones of SD 1.5 (runwayml), SD 2.1 (768-v) and
2.1-base (512), SD 1.5/2 inpainting, SDXL base 1.0 (and its v-prediction form, ``sdxl_v``), SDXL
inpainting 0.1 and the SDXL refiner 1.0. Each model config is passed through the real class (on the meta device) so the written file
is complete, with every default spelled out.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "resources" / "diffusers"

_SD_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
_SD2_UNET = {
    **_SD_UNET,
    "cross_attention_dim": 1024,
    "attention_head_dim": [5, 10, 20, 20],
    "use_linear_projection": True,
}
_SDXL_UNET = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
_REFINER_UNET = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": [384, 768, 1536, 1536],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": 4,
    "attention_head_dim": [6, 12, 24, 24],
    "cross_attention_dim": 1280,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2560,
}


def _vae(sample_size: int, scaling_factor: float, force_upcast: bool = True) -> dict:
    return {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "sample_size": sample_size,
        "scaling_factor": scaling_factor,
        "force_upcast": force_upcast,
    }


_CLIP_L = {  # OpenAI CLIP ViT-L/14 text tower (SD 1.x, SDXL text_encoder)
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}
_OPENCLIP_H = {  # OpenCLIP ViT-H/14 text tower, last block dropped (SD 2.x uses the penultimate layer)
    **_CLIP_L,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "hidden_act": "gelu",
    "projection_dim": 512,
}
_OPENCLIP_BIGG = {  # OpenCLIP ViT-bigG/14 text tower with projection (SDXL text_encoder_2)
    **_CLIP_L,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}

_SCHED_COMMON = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
}

_SD_PIPE = {"safety_checker": [None, None], "feature_extractor": [None, None], "image_encoder": [None, None],
            "requires_safety_checker": False}
_XL_PIPE = {"feature_extractor": [None, None], "image_encoder": [None, None], "force_zeros_for_empty_prompt": True}

FAMILIES: dict[str, dict] = {
    "sd1": {"pipeline": "StableDiffusionPipeline", "pipe": _SD_PIPE, "unet": _SD_UNET,
            "vae": _vae(512, 0.18215, False), "text_encoder": ("CLIPTextModel", _CLIP_L),
            "scheduler": ("PNDMScheduler", {**_SCHED_COMMON, "skip_prk_steps": True, "prediction_type": "epsilon"})},
    "sd1_inpaint": {"pipeline": "StableDiffusionInpaintPipeline", "pipe": _SD_PIPE,
                    "unet": {**_SD_UNET, "in_channels": 9}, "vae": _vae(512, 0.18215, False),
                    "text_encoder": ("CLIPTextModel", _CLIP_L),
                    "scheduler": ("DDIMScheduler", {**_SCHED_COMMON, "prediction_type": "epsilon"})},
    "sd2": {"pipeline": "StableDiffusionPipeline", "pipe": _SD_PIPE,
            "unet": {**_SD2_UNET, "sample_size": 96, "upcast_attention": True}, "vae": _vae(768, 0.18215, False),
            "text_encoder": ("CLIPTextModel", _OPENCLIP_H),
            "scheduler": ("DDIMScheduler", {**_SCHED_COMMON, "prediction_type": "v_prediction"})},
    "sd2_base": {"pipeline": "StableDiffusionPipeline", "pipe": _SD_PIPE, "unet": _SD2_UNET,
                 "vae": _vae(512, 0.18215, False), "text_encoder": ("CLIPTextModel", _OPENCLIP_H),
                 "scheduler": ("DDIMScheduler", {**_SCHED_COMMON, "prediction_type": "epsilon"})},
    "sd2_inpaint": {"pipeline": "StableDiffusionInpaintPipeline", "pipe": _SD_PIPE,
                    "unet": {**_SD2_UNET, "in_channels": 9}, "vae": _vae(512, 0.18215, False),
                    "text_encoder": ("CLIPTextModel", _OPENCLIP_H),
                    "scheduler": ("DDIMScheduler", {**_SCHED_COMMON, "prediction_type": "epsilon"})},
    "sdxl": {"pipeline": "StableDiffusionXLPipeline", "pipe": _XL_PIPE, "unet": _SDXL_UNET,
             "vae": _vae(1024, 0.13025), "text_encoder": ("CLIPTextModel", _CLIP_L),
             "text_encoder_2": ("CLIPTextModelWithProjection", _OPENCLIP_BIGG),
             "scheduler": ("EulerDiscreteScheduler", {**_SCHED_COMMON, "prediction_type": "epsilon",
                                                      "timestep_spacing": "leading", "interpolation_type": "linear"})},
    # SDXL fine-tunes trained for v-prediction (NoobAI-XL V-pred & co.; ``v_pred`` key in the file)
    "sdxl_v": {"pipeline": "StableDiffusionXLPipeline", "pipe": _XL_PIPE, "unet": _SDXL_UNET,
               "vae": _vae(1024, 0.13025), "text_encoder": ("CLIPTextModel", _CLIP_L),
               "text_encoder_2": ("CLIPTextModelWithProjection", _OPENCLIP_BIGG),
               "scheduler": ("EulerDiscreteScheduler", {**_SCHED_COMMON, "prediction_type": "v_prediction",
                                                        "timestep_spacing": "leading",
                                                        "interpolation_type": "linear"})},
    "sdxl_inpaint": {"pipeline": "StableDiffusionXLInpaintPipeline",
                     "pipe": {**_XL_PIPE, "requires_aesthetics_score": False},
                     "unet": {**_SDXL_UNET, "in_channels": 9}, "vae": _vae(1024, 0.13025),
                     "text_encoder": ("CLIPTextModel", _CLIP_L),
                     "text_encoder_2": ("CLIPTextModelWithProjection", _OPENCLIP_BIGG),
                     "scheduler": ("EulerDiscreteScheduler", {**_SCHED_COMMON, "prediction_type": "epsilon",
                                                              "timestep_spacing": "leading"})},
    "sdxl_refiner": {"pipeline": "StableDiffusionXLImg2ImgPipeline",
                     "pipe": {**_XL_PIPE, "requires_aesthetics_score": True, "force_zeros_for_empty_prompt": False},
                     "unet": _REFINER_UNET, "vae": _vae(1024, 0.13025), "text_encoder": None,
                     "text_encoder_2": ("CLIPTextModelWithProjection", _OPENCLIP_BIGG),
                     "scheduler": ("EulerDiscreteScheduler", {**_SCHED_COMMON, "prediction_type": "epsilon",
                                                              "timestep_spacing": "leading"})},
}


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def full_model_config(cls_name: str, partial: dict) -> dict:
    """Complete ``partial`` with the class defaults by building the model on the meta device."""
    import diffusers
    import transformers
    from accelerate import init_empty_weights

    if hasattr(diffusers, cls_name) and cls_name.endswith(("Model", "KL")):
        cls = getattr(diffusers, cls_name)
        with init_empty_weights():
            model = cls.from_config(partial)
        data = dict(model.config)
        data["_class_name"] = cls_name
        data["_diffusers_version"] = diffusers.__version__
        return {k: v for k, v in data.items() if not k.startswith("_") or k in ("_class_name", "_diffusers_version")}
    cls = getattr(transformers, cls_name)
    config = cls.config_class(**partial)
    data = config.to_dict()
    data["architectures"] = [cls_name]
    for key in ("transformers_version", "_name_or_path", "dtype", "torch_dtype"):
        data.pop(key, None)
    return data


def write_family(name: str, spec: dict) -> None:
    import diffusers

    folder = OUT / name
    if folder.exists():
        shutil.rmtree(folder)
    index: dict = {"_class_name": spec["pipeline"], "_diffusers_version": diffusers.__version__, **spec["pipe"]}
    index["unet"] = ["diffusers", "UNet2DConditionModel"]
    index["vae"] = ["diffusers", "AutoencoderKL"]
    sched_cls, sched_cfg = spec["scheduler"]
    index["scheduler"] = ["diffusers", sched_cls]
    _write_json(folder / "unet" / "config.json", full_model_config("UNet2DConditionModel", spec["unet"]))
    _write_json(folder / "vae" / "config.json", full_model_config("AutoencoderKL", spec["vae"]))
    scheduler = getattr(diffusers, sched_cls).from_config(sched_cfg)
    _write_json(folder / "scheduler" / "scheduler_config.json",
                {**{k: v for k, v in scheduler.config.items() if not k.startswith("_")}, "_class_name": sched_cls,
                 "_diffusers_version": diffusers.__version__})
    for slot, tok_slot in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
        if slot not in spec:
            continue
        if spec[slot] is None:
            index[slot] = [None, None]
            index[tok_slot] = [None, None]
            continue
        cls_name, partial = spec[slot]
        index[slot] = ["transformers", cls_name]
        index[tok_slot] = ["transformers", "CLIPTokenizer"]
        _write_json(folder / slot / "config.json", full_model_config(cls_name, partial))
    _write_json(folder / "model_index.json", index)


def write_tokenizer() -> None:
    """vocab.json + merges.txt of OpenAI CLIP's BPE (identical to open_clip's bundled vocabulary)."""
    import open_clip
    from open_clip.tokenizer import bytes_to_unicode

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    base = list(bytes_to_unicode().values())
    vocab = base + [b + "</w>" for b in base] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder = OUT / "clip_tokenizer"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(
        json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False, separators=(",", ":")),
        encoding="utf-8",
    )
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8"
    )
    _write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    })


def main() -> int:
    for name, spec in FAMILIES.items():
        write_family(name, spec)
    write_tokenizer()
    sys.stderr.write(f"wrote {len(FAMILIES)} families and clip_tokenizer/ under {OUT}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
