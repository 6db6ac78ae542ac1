"""The diffusers -> original key mapping and the shipped offline configs, checked against diffusers' own
original -> diffusers converters at full size (meta tensors: no memory) and against published facts."""

from __future__ import annotations

import json
import math

import pytest

from gmi_desktop.engine.sd_configs import config_dir, resources_dir, tokenizer_dir
from tests.support.sd_layout import (
    TEXT_PREFIXES,
    component_configs,
    diffusers_shapes,
    diffusers_to_original,
    original_layout_shapes,
    write_sparse_checkpoint,
)

KINDS = [("sd1", "normal"), ("sd1", "inpaint"), ("sd2", "normal"), ("sd2", "inpaint"), ("sd2", "depth"),
         ("sdxl", "normal"), ("sdxl", "inpaint"), ("sdxl_refiner", "normal")]


def _meta_checkpoint(shapes):
    import torch

    dtypes = {"F16": torch.float16, "F32": torch.float32, "I64": torch.int64}
    return {k: torch.empty(shape, dtype=dtypes[dt], device="meta") for k, (shape, dt) in shapes.items()}


def _shape_map(sd):
    return {k: tuple(v.shape) for k, v in sd.items()}


@pytest.mark.parametrize("family,variant", KINDS)
def test_full_size_layout_is_exactly_what_diffusers_converts_back(family, variant):
    """Feeding our full-size original layout to diffusers' converters yields every diffusers tensor, same shape."""
    import transformers
    from accelerate import init_empty_weights
    from diffusers.loaders import single_file_utils as sfu

    configs = component_configs(family, variant)
    expected = diffusers_shapes(configs)
    checkpoint = _meta_checkpoint(original_layout_shapes(family, variant))

    unet = sfu.convert_ldm_unet_checkpoint(checkpoint, configs["unet"])
    assert _shape_map(unet) == expected["unet"]
    vae = sfu.convert_ldm_vae_checkpoint(checkpoint, configs["vae"])
    assert _shape_map(vae) == expected["vae"]

    slots = [s for s in ("text_encoder", "text_encoder_2") if s in configs]
    for slot, (prefix, kind) in zip(slots, TEXT_PREFIXES[family]):
        cls_name, cfg = configs[slot]
        if kind == "clip":
            converted = sfu.convert_ldm_clip_checkpoint(checkpoint)
            converted = {k: v for k, v in converted.items() if k.startswith("text_model.")}
        else:
            cls = getattr(transformers, cls_name)
            with init_empty_weights():
                model = cls(cls.config_class(**{k: v for k, v in cfg.items() if k != "architectures"}))
            converted = sfu.convert_open_clip_checkpoint(model, checkpoint, prefix=prefix)
        got = {k.removeprefix("text_model."): v for k, v in _shape_map(converted).items()}
        want = {k.removeprefix("text_model."): v for k, v in expected[slot].items()}
        want.pop("embeddings.position_ids", None)
        got.pop("embeddings.position_ids", None)
        assert got == want, slot


@pytest.mark.parametrize(
    "family,variant,model_type",
    [("sd1", "normal", "v1"), ("sd1", "inpaint", "inpainting"), ("sd2", "normal", "v2"),
     ("sd2", "inpaint", "inpainting_v2"), ("sdxl", "normal", "xl_base"), ("sdxl", "inpaint", "xl_inpaint"),
     ("sdxl_refiner", "normal", "xl_refiner")],
)
def test_diffusers_recognises_each_full_size_layout(family, variant, model_type):
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    checkpoint = _meta_checkpoint(original_layout_shapes(family, variant))
    assert infer_diffusers_model_type(checkpoint) == model_type


def _params(shapes, prefix):
    return sum(math.prod(shape) for key, (shape, dtype) in shapes.items() if key.startswith(prefix) and dtype != "I64")


def test_full_size_parameter_counts_match_the_published_models():
    sd1, sd2, xl, refiner = (original_layout_shapes(f) for f in ("sd1", "sd2", "sdxl", "sdxl_refiner"))
    unet, vae = "model.diffusion_model.", "first_stage_model."
    assert _params(sd1, unet) == 859_520_964  # SD 1.5 UNet
    assert _params(sd2, unet) == 865_910_724  # SD 2.x UNet
    assert _params(xl, unet) == 2_567_463_684  # SDXL base UNet
    for shapes in (sd1, sd2, xl, refiner):
        assert _params(shapes, vae) == 83_653_863  # the KL-f8 VAE
    assert _params(sd1, "cond_stage_model.") == 123_060_480  # OpenAI CLIP ViT-L/14 text tower
    assert _params(sd2, "cond_stage_model.") == 354_032_640  # OpenCLIP ViT-H/14 text tower (24 blocks)
    assert _params(xl, "conditioner.embedders.1.") == _params(refiner, "conditioner.embedders.0.") == 694_659_840
    assert len([k for k in sd1 if k.startswith(unet)]) == 686


def test_cross_attention_widths_and_input_channels_tell_the_families_apart():
    key = "model.diffusion_model.input_blocks.{}.1.transformer_blocks.0.attn2.to_k.weight"
    assert original_layout_shapes("sd1")[key.format(1)][0] == (320, 768)
    assert original_layout_shapes("sd2")[key.format(1)][0] == (320, 1024)
    assert original_layout_shapes("sdxl")[key.format(4)][0] == (640, 2048)
    assert original_layout_shapes("sdxl_refiner")[key.format(4)][0] == (768, 1280)
    conv_in = "model.diffusion_model.input_blocks.0.0.weight"
    assert original_layout_shapes("sd1", "inpaint")[conv_in][0] == (320, 9, 3, 3)
    assert original_layout_shapes("sd2", "depth")[conv_in][0] == (320, 5, 3, 3)
    assert original_layout_shapes("sdxl")["model.diffusion_model.label_emb.0.0.weight"][0] == (1280, 2816)
    assert original_layout_shapes("sd1")["first_stage_model.decoder.mid.attn_1.proj_out.weight"][0] == (512, 512, 1, 1)
    bigg = original_layout_shapes("sdxl")["conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"]
    assert bigg == ((3840, 1280), "F16")


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl", "sdxl_refiner"])
def test_tiny_mapping_is_one_to_one_and_keeps_values(family):
    import torch

    from tests.support.tiny_sd import build_tiny_components, text_encoder_state_dicts

    parts = build_tiny_components(family, seed=3)
    texts = text_encoder_state_dicts(parts)
    mapped = diffusers_to_original(parts["unet"].state_dict(), parts["vae"].state_dict(), texts, family)
    sources = [parts["unet"].state_dict(), parts["vae"].state_dict(), *texts]
    expected_count = len(sources[0]) + len(sources[1])
    for sd, (_, kind) in zip(texts, TEXT_PREFIXES[family]):
        qkv = sum(1 for k in sd if any(f"self_attn.{p}_proj." in k for p in "qkv"))
        expected_count += len(sd) - (qkv * 2 // 3 if kind == "openclip" else 0)
    assert len(mapped) == expected_count  # no two diffusers tensors land on the same original name
    assert sum(v.numel() for v in mapped.values()) == sum(v.numel() for sd in sources for v in sd.values())
    unet_sd = parts["unet"].state_dict()
    assert torch.equal(mapped["model.diffusion_model.out.2.weight"], unet_sd["conv_out.weight"])


def test_unknown_family_and_wrong_encoder_count_are_rejected():
    with pytest.raises(ValueError, match="unknown family"):
        diffusers_to_original({}, {}, {}, "sd3")
    shapes = diffusers_shapes(component_configs("sdxl", size="tiny"))
    with pytest.raises(ValueError, match="2 text encoder"):
        diffusers_to_original(shapes["unet"], shapes["vae"], [shapes["text_encoder"]], "sdxl")


@pytest.mark.parametrize("name", ["sd1", "sd1_inpaint", "sd2", "sd2_base", "sd2_inpaint", "sdxl", "sdxl_inpaint",
                                  "sdxl_refiner"])
def test_shipped_config_folders_load_offline_as_configs(name):
    import diffusers
    import transformers

    folder = resources_dir() / "diffusers" / name
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    pipeline_cls = getattr(diffusers, index["_class_name"])
    assert pipeline_cls.load_config(str(folder), local_files_only=True)["_class_name"] == index["_class_name"]
    unet = diffusers.UNet2DConditionModel.load_config(str(folder), subfolder="unet", local_files_only=True)
    assert unet["in_channels"] == (9 if "inpaint" in name else 4)
    diffusers.AutoencoderKL.load_config(str(folder), subfolder="vae", local_files_only=True)
    scheduler_cls = getattr(diffusers, index["scheduler"][1])
    scheduler = scheduler_cls.from_pretrained(str(folder), subfolder="scheduler", local_files_only=True)
    want = "v_prediction" if name == "sd2" else "epsilon"
    assert scheduler.config.prediction_type == want
    for slot in ("text_encoder", "text_encoder_2"):
        if index.get(slot, [None])[0] is not None:
            cls = getattr(transformers, index[slot][1])
            cls.config_class.from_pretrained(str(folder / slot), local_files_only=True)


def test_config_dir_resolves_family_variant_and_prediction():
    assert config_dir("sd2", "normal", "epsilon").name == "sd2_base"
    assert config_dir("sd2").name == "sd2"
    assert config_dir("sdxl", "inpaint").name == "sdxl_inpaint"
    from gmi_desktop.core.errors import UnsupportedCheckpoint

    with pytest.raises(UnsupportedCheckpoint):
        config_dir("sd2", "depth")
    with pytest.raises(UnsupportedCheckpoint):
        config_dir("sdxl_refiner", "inpaint")


def test_shipped_tokenizer_matches_open_clip_tokenization():
    import open_clip
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir()), local_files_only=True)
    reference = open_clip.get_tokenizer("ViT-L-14")
    assert len(tokenizer) == 49408
    for text in ["a photo of a cat", "Portrait of an old man, oil painting, highly detailed!!", "naïve café 123"]:
        ids = tokenizer(text).input_ids
        want = [int(t) for t in reference([text])[0] if int(t) != 0]
        assert ids == want


def test_sparse_full_size_file_is_a_valid_safetensors_of_the_real_size(tmp_path):
    from safetensors import safe_open

    from gmi_desktop.engine.pipelines import check_family, read_safetensors_header

    shapes = original_layout_shapes("sdxl")
    path = tmp_path / "sdxl-sparse.safetensors"
    size = write_sparse_checkpoint(path, shapes, {"modelspec.architecture": "stable-diffusion-xl-v1-base"})
    assert path.stat().st_size == size > 6_900_000_000  # 3.5 G parameters in fp16
    with safe_open(str(path), "pt") as fh:
        assert set(fh.keys()) == set(shapes)
        assert fh.metadata()["modelspec.architecture"] == "stable-diffusion-xl-v1-base"
        key = "conditioner.embedders.1.model.text_projection"
        assert tuple(fh.get_slice(key).get_shape()) == shapes[key][0] == (1280, 1280)
    header = read_safetensors_header(path)
    unet = json.loads((config_dir("sdxl") / "unet" / "config.json").read_text(encoding="utf-8"))
    check_family(path, header, "sdxl", unet)  # the production family check accepts the real layout


def _header(family, variant="normal"):
    return {k: (dt, tuple(shape)) for k, (shape, dt) in original_layout_shapes(family, variant).items()}


@pytest.mark.parametrize("family,variant", [k for k in KINDS if k[1] != "depth"])
def test_production_family_check_accepts_only_the_matching_full_size_layout(family, variant, tmp_path):
    from gmi_desktop.core.errors import UnsupportedCheckpoint
    from gmi_desktop.engine.pipelines import check_family

    for other_family, other_variant in [k for k in KINDS if k[1] != "depth"]:
        unet = json.loads((config_dir(other_family, other_variant) / "unet" / "config.json").read_text(encoding="utf-8"))
        if (other_family, other_variant) == (family, variant):
            check_family(tmp_path, _header(family, variant), other_family, unet)
        else:
            with pytest.raises(UnsupportedCheckpoint):
                check_family(tmp_path, _header(family, variant), other_family, unet)
