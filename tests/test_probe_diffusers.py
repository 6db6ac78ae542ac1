"""Diffusers-format folders: the shipped configs of each family plus sparse component weights."""

from __future__ import annotations

import json
import pickle

import pytest

from gmi_desktop.store.probe import probe
from tests.support.model_headers import write_diffusers_folder


@pytest.mark.parametrize(
    "config_name,family,variant,prediction",
    [
        ("sd1", "sd1", "normal", "epsilon"),
        ("sd1_inpaint", "sd1", "inpaint", "epsilon"),
        ("sd2", "sd2", "normal", "v_prediction"),
        ("sd2_base", "sd2", "normal", "epsilon"),
        ("sdxl", "sdxl", "normal", "epsilon"),
        ("sdxl_inpaint", "sdxl", "inpaint", "epsilon"),
        ("sdxl_refiner", "sdxl_refiner", "normal", "epsilon"),
    ],
)
def test_pipeline_folders(tmp_path, config_name, family, variant, prediction):
    folder = write_diffusers_folder(tmp_path / "my-model", config_name)
    result = probe(folder)
    assert (result.status, result.file_format, result.family, result.variant) == ("ok", "diffusers", family, variant), result.reason
    assert result.prediction == prediction
    weights = list(folder.rglob("*.safetensors"))
    assert result.size == sum(p.stat().st_size for p in weights) > 0
    assert result.tensor_count > 0


def test_folder_named_like_a_file_is_still_a_pipeline(tmp_path):
    result = probe(write_diffusers_folder(tmp_path / "model.safetensors", "sd1"))
    assert result.ok and result.family == "sd1"


def test_pickle_only_component_is_unsupported(tmp_path):
    folder = write_diffusers_folder(tmp_path / "m", "sd1")
    (folder / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    (folder / "vae" / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps({"w": 1}, protocol=4))
    result = probe(folder)
    assert result.status == "unsupported" and "'vae' holds only pickle weights" in result.reason
    assert "convert to .safetensors" in result.reason


def test_folder_without_weights_is_incomplete(tmp_path):
    result = probe(write_diffusers_folder(tmp_path / "m", "sdxl", weights=False))
    assert result.status == "incomplete" and "has no weights file" in result.reason


def test_truncated_component_makes_the_folder_incomplete(tmp_path):
    folder = write_diffusers_folder(tmp_path / "m", "sd2")
    unet = folder / "unet" / "diffusion_pytorch_model.safetensors"
    with open(unet, "r+b") as f:
        f.truncate(unet.stat().st_size - 100)
    result = probe(folder)
    assert result.status == "incomplete" and result.reason.startswith("unet/diffusion_pytorch_model.safetensors:")


def test_missing_shard(tmp_path):
    folder = write_diffusers_folder(tmp_path / "m", "sdxl")
    unet = folder / "unet"
    (unet / "diffusion_pytorch_model.safetensors").rename(unet / "diffusion_pytorch_model-00001-of-00002.safetensors")
    weight_map = {"conv_in.weight": "diffusion_pytorch_model-00001-of-00002.safetensors",
                  "conv_out.weight": "diffusion_pytorch_model-00002-of-00002.safetensors"}
    (unet / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    result = probe(folder)
    assert result.status == "incomplete" and "00002-of-00002.safetensors" in result.reason


@pytest.mark.parametrize(
    "edit,status,needle",
    [
        (lambda i, u: i.update(_class_name="FluxPipeline"), "unsupported", "'FluxPipeline' is not SD"),
        (lambda i, u: u.update(cross_attention_dim=4096), "unsupported", "cross_attention_dim 4096"),
        (lambda i, u: u.update(in_channels=8), "unsupported", "InstructPix2Pix pipeline"),
        (lambda i, u: u.update(cross_attention_dim=2048), "invalid", "StableDiffusionPipeline folder but its UNet is SDXL"),
        (lambda i, u: i.update(vae=[None, None]), "skipped", "without vae"),
    ],
    ids=["flux", "width", "ip2p", "mixed", "no-vae"],
)
def test_folder_configs_that_do_not_fit(tmp_path, edit, status, needle):
    folder = write_diffusers_folder(tmp_path / "m", "sd1")
    index = json.loads((folder / "model_index.json").read_text())
    unet = json.loads((folder / "unet" / "config.json").read_text())
    edit(index, unet)
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "unet" / "config.json").write_text(json.dumps(unet))
    result = probe(folder)
    assert result.status == status and needle in result.reason, result.reason


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe", b" " * (1024 * 1024 + 1)])
def test_bad_model_index(tmp_path, content):
    folder = write_diffusers_folder(tmp_path / "m", "sd1")
    (folder / "model_index.json").write_bytes(content)
    result = probe(folder)
    assert result.status == "invalid" and "model_index.json" in result.reason


@pytest.mark.parametrize("config", ["unet/config.json", "scheduler/scheduler_config.json"])
def test_a_fifo_in_place_of_a_config_does_not_block(tmp_path, config):
    import os
    import threading

    folder = write_diffusers_folder(tmp_path / "my-model", "sd1")
    (folder / config).unlink()
    os.mkfifo(folder / config)
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("result", probe(folder)))
    thread.start()
    thread.join(5)
    blocked = thread.is_alive()
    if blocked:  # free the blocked open so the test fails instead of hanging
        os.close(os.open(folder / config, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
    assert not blocked
    result = outcome["result"]
    if config.startswith("unet"):
        assert result.status == "invalid" and "unet/config.json is not a regular file" in result.reason
    else:  # the scheduler only tells the prediction type
        assert result.ok and result.prediction is None
