"""Classification from the header: families and variants on full-size sparse files, the files
that are not checkpoints (named like checkpoints), "recognised but broken", and header-only reads."""

from __future__ import annotations

import math
import mmap

import pytest

from gmi_desktop.store import probe as probe_module
from gmi_desktop.store.probe import probe
from tests.support.checkpoint_files import DTYPE_BYTES, write_safetensors_header
from tests.support.full_layouts import full_layout, write_full_checkpoint
from tests.support.model_headers import (
    controlnet_layout,
    diffusers_text_encoder_layout,
    diffusers_unet_layout,
    embedding_layout,
    lora_layout,
    lycoris_layout,
    small_checkpoint,
    vae_layout,
)

FIRST_CONV = "model.diffusion_model.input_blocks.0.0.weight"
SUPPORTED = [
    ("sd1", "normal"), ("sd1", "inpaint"), ("sd2", "normal"), ("sd2", "inpaint"),
    ("sdxl", "normal"), ("sdxl", "inpaint"), ("sdxl_refiner", "normal"),
]


def _data_bytes(layout) -> int:
    return sum(math.prod(shape) * DTYPE_BYTES[dtype] for dtype, shape in layout.values())


@pytest.mark.parametrize("family,variant", SUPPORTED, ids=lambda v: v)
def test_full_size_checkpoints(tmp_path, family, variant):
    layout = full_layout(family, variant)
    path = write_full_checkpoint(tmp_path / "merged_v3.safetensors", family, variant)
    result = probe(path)
    assert (result.status, result.family, result.variant) == ("ok", family, variant), result.reason
    assert result.kind is None and result.reason == ""
    assert result.tensor_count == len(layout)
    assert result.size == result.header_len + _data_bytes(layout) == path.stat().st_size


def test_variant_layouts_differ_only_in_the_first_conv():
    built, derived = full_layout("sd1", "inpaint", derived=False), full_layout("sd1", "inpaint")
    assert built == derived and built[FIRST_CONV][1] == (320, 9, 3, 3)


def test_full_size_key_counts_are_realistic():
    counts = {fam: len(full_layout(fam)) for fam in ("sd1", "sd2", "sdxl", "sdxl_refiner")}
    assert 1_000 <= counts["sd1"] <= 1_300 and 2_300 <= counts["sdxl"] <= 2_700
    assert counts["sd2"] > counts["sd1"] and counts["sdxl_refiner"] < counts["sdxl"]


def test_family_comes_from_shapes_not_from_the_file_name(tmp_path):
    path = write_full_checkpoint(tmp_path / "sd_xl_base_1.0.safetensors", "sd1")
    assert probe(path).family == "sd1"


@pytest.mark.parametrize(
    "family,variant", [("sd1", "instruct_pix2pix"), ("sd1", "depth"), ("sd2", "depth"), ("sdxl_refiner", "inpaint")],
)
def test_variants_the_engine_cannot_load_are_unsupported(tmp_path, family, variant):
    result = probe(write_full_checkpoint(tmp_path / "m.safetensors", family, variant))
    assert (result.status, result.family, result.variant) == ("unsupported", family, variant)
    assert "not supported for generation" in result.reason


def test_unknown_in_channels(tmp_path):
    layout = small_checkpoint("sd1")
    layout[FIRST_CONV] = ("F16", (320, 7, 3, 3))
    result = probe(write_safetensors_header(tmp_path / "m.safetensors", layout))
    assert result.status == "unsupported" and "7 input channels" in result.reason


@pytest.mark.parametrize("drop,missing", [("first_stage_model.", "VAE"), ("cond_stage_model.", "text encoder")])
def test_unet_without_vae_or_text_encoder(tmp_path, drop, missing):
    layout = {k: v for k, v in full_layout("sd1").items() if not k.startswith(drop)}
    result = probe(write_safetensors_header(tmp_path / "model.safetensors", layout))
    assert (result.status, result.kind, result.family) == ("skipped", "unet_only", "sd1")
    assert f"SD 1.x UNet without {missing}, not a full checkpoint" == result.reason


def test_sdxl_vae_extracted_with_prefix(tmp_path):
    layout = {k: v for k, v in full_layout("sdxl").items() if k.startswith("first_stage_model.")}
    result = probe(write_safetensors_header(tmp_path / "sdxl_vae.safetensors", layout))
    assert (result.status, result.kind) == ("skipped", "vae")


@pytest.mark.parametrize(
    "layout,kind,needle",
    [
        (lora_layout(), "lora", "LoRA (network weights), not a checkpoint"),
        (lora_layout(rank=32, sdxl=True), "lora", "LoRA"),
        (lycoris_layout("loha"), "lycoris", "LyCORIS"),
        (lycoris_layout("lokr"), "lycoris", "LyCORIS"),
        (vae_layout(), "vae", "VAE (autoencoder) alone"),
        (embedding_layout("sd1"), "embedding", "textual-inversion embedding (width 768)"),
        (embedding_layout("sd2", vectors=8), "embedding", "width 1024"),
        (embedding_layout("sdxl"), "embedding", "width 768, 1280"),
        ({"string_to_param.*": ("F32", (2, 768))}, "embedding", "textual-inversion"),
        (controlnet_layout(), "controlnet", "ControlNet, not a checkpoint"),
        (controlnet_layout(diffusers=True), "controlnet", "ControlNet"),
        (diffusers_unet_layout(), "unet_only", "UNet alone (diffusers layout)"),
        (diffusers_text_encoder_layout(), "text_encoder", "text encoder alone"),
        ({"model.0.weight": ("F32", (64, 3, 3, 3)), "model.1.sub.0.RDB1.conv1.weight": ("F32", (32, 64, 3, 3))},
         "unknown", "unknown: no Stable Diffusion UNet keys"),
    ],
    ids=["lora", "lora-sdxl", "loha", "lokr", "vae", "ti-sd1", "ti-sd2", "ti-sdxl", "ti-string-to-param",
         "controlnet", "controlnet-diffusers", "unet-diffusers", "text-encoder", "esrgan"],
)
def test_not_checkpoints_named_like_checkpoints(tmp_path, layout, kind, needle):
    result = probe(write_safetensors_header(tmp_path / "realisticVision_v51.safetensors", layout))
    assert (result.status, result.kind) == ("skipped", kind), result.reason
    assert needle in result.reason
    assert result.family is None and not result.ok


def test_flux_style_transformer_is_unsupported(tmp_path):
    layout = {"double_blocks.0.img_attn.qkv.weight": ("BF16", (9216, 3072)),
              "single_blocks.0.linear1.weight": ("BF16", (21504, 3072))}
    result = probe(write_safetensors_header(tmp_path / "flux1-dev.safetensors", layout))
    assert result.status == "unsupported" and "only SD 1.x, SD 2.x and SDXL" in result.reason


def test_unknown_context_width_is_unsupported(tmp_path):
    layout = {k: (d, (s[0], 4096) if k.endswith("attn2.to_k.weight") else s)
              for k, (d, s) in small_checkpoint("sd1").items()}
    result = probe(write_safetensors_header(tmp_path / "m.safetensors", layout))
    assert result.status == "unsupported" and "cross-attention width 4096" in result.reason


def test_disagreeing_context_widths_are_recognised_but_broken(tmp_path):
    layout = full_layout("sdxl")
    key = next(k for k in layout if k.endswith("attn2.to_k.weight"))
    layout[key] = ("F16", (layout[key][1][0], 768))
    result = probe(write_safetensors_header(tmp_path / "m.safetensors", layout))
    assert result.status == "invalid" and "cross-attention widths disagree: 768 (1 layers), 2048" in result.reason


def test_missing_first_conv_is_recognised_but_broken(tmp_path):
    layout = full_layout("sd2")
    del layout[FIRST_CONV]
    result = probe(write_safetensors_header(tmp_path / "m.safetensors", layout))
    assert (result.status, result.family) == ("invalid", "sd2")
    assert FIRST_CONV in result.reason and "missing" in result.reason


def test_broken_offsets_keep_what_was_recognised(tmp_path):
    """A damaged header still says what the file would have been."""
    layout = small_checkpoint("sdxl")
    last = list(layout)[-1]
    result = probe(write_safetensors_header(tmp_path / "m.safetensors", layout, offsets={last: [10**12, 10**12]}))
    assert result.status == "invalid" and result.family == "sdxl"


@pytest.mark.parametrize(
    "extra,metadata,expected",
    [
        ({}, None, None),
        ({"v_pred": ("F32", (0,))}, None, "v_prediction"),
        ({}, {"modelspec.prediction_type": "v"}, "v_prediction"),
        ({}, {"modelspec.prediction_type": "epsilon"}, "epsilon"),
    ],
    ids=["undeclared", "comfy-v_pred-key", "modelspec-v", "modelspec-eps"],
)
def test_prediction_type_when_the_file_declares_it(tmp_path, extra, metadata, expected):
    layout = {**small_checkpoint("sd2"), **extra}
    result = probe(write_safetensors_header(tmp_path / "m.safetensors", layout, metadata=metadata))
    assert result.ok and result.prediction == expected


def test_probe_reads_only_the_header_of_a_7_gb_file(tmp_path, monkeypatch):
    layout = full_layout("sdxl")  # ~6.9 GB in F16 plus a filler tensor, as a sparse file
    layout["filler"] = ("U8", (7 * 1024**3 - _data_bytes(layout),))
    path = write_safetensors_header(tmp_path / "sdxl_big.safetensors", layout)
    assert path.stat().st_size > 7 * 10**9

    read_bytes = []
    real_read = probe_module.os.read

    def counting_read(fd, n):
        chunk = real_read(fd, n)
        read_bytes.append(len(chunk))
        return chunk

    def no_mmap(*_a, **_k):
        raise AssertionError("the probe must not mmap")

    monkeypatch.setattr(probe_module.os, "read", counting_read)
    monkeypatch.setattr(mmap, "mmap", no_mmap)
    result = probe(path)
    assert result.ok and result.family == "sdxl"
    assert sum(read_bytes) == result.header_len < 400_000
