"""Sidecars and safetensors metadata: display name, base model, preview, download count."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from gmi_desktop.store.probe import probe
from gmi_desktop.store.sidecars import MAX_SIDECAR_BYTES, SidecarInfo, read_sidecars
from tests.support.checkpoint_files import write_safetensors_header
from tests.support.model_headers import small_checkpoint

# Shapes as the tools write them (values made up): the A1111 Civitai Helper stores the Civitai
# model-version object; Stability Matrix its ConnectedModelInfo in PascalCase.
CIVITAI_INFO = {
    "id": 128713,
    "modelId": 4384,
    "name": "8",
    "baseModel": "SD 1.5",
    "description": "<p>Version 8</p>",
    "trainedWords": ["dreamshaper", " "],
    "stats": {"downloadCount": 593387, "ratingCount": 3181, "rating": 4.82},
    "model": {"name": "DreamShaper", "type": "Checkpoint", "nsfw": False},
    "files": [{"name": "dreamshaper_8.safetensors", "hashes": {"AutoV2": "879DB523C3"}}],
    "images": [{"url": "https://example.invalid/1.jpeg", "nsfw": "None"}],
}
CM_INFO = {
    "ModelId": 4201,
    "ModelName": "Realistic Vision V6.0 B1",
    "ModelDescription": "photo model",
    "Nsfw": False,
    "Tags": ["photorealistic"],
    "ModelType": "Checkpoint",
    "VersionId": 245598,
    "VersionName": "V5.1 (VAE)",
    "BaseModel": "SD 1.5",
    "ImportedAt": "2024-01-02T03:04:05+00:00",
    "Hashes": {"SHA256": "15012C538F503CE2EBFC2C8547B268C75CCDAFF7A281DB55399940FF1D70E21D"},
    "TrainedWords": ["analog style", "rvdetail"],
    "Stats": {"downloadCount": 1234567, "ratingCount": 10, "rating": 5.0, "favoriteCount": 3},
}


@pytest.fixture
def model(tmp_path) -> Path:
    return write_safetensors_header(tmp_path / "dreamshaper_8.safetensors", small_checkpoint("sd1"))


def _write(path: Path, doc) -> None:
    path.write_text(json.dumps(doc), encoding="utf-8")


def test_nothing_but_the_file(model):
    info = read_sidecars(model)
    assert info == SidecarInfo(display_name="dreamshaper_8", source="file name")


def test_civitai_helper_info(model):
    _write(model.with_name("dreamshaper_8.civitai.info"), CIVITAI_INFO)
    info = read_sidecars(model)
    assert info.display_name == "DreamShaper (8)" and info.source == "civitai.info"
    assert info.base_model == "SD 1.5"
    assert info.download_count == 593387
    assert (info.civitai_model_id, info.civitai_version_id) == (4384, 128713)
    assert info.trigger_words == ("dreamshaper",)
    assert info.description == "<p>Version 8</p>"
    assert info.problems == ()


def test_stability_matrix_cm_info(model):
    _write(model.with_name("dreamshaper_8.cm-info.json"), CM_INFO)
    info = read_sidecars(model)
    assert info.display_name == "Realistic Vision V6.0 B1 (V5.1 (VAE))" and info.source == "cm-info.json"
    assert info.download_count == 1234567 and info.base_model == "SD 1.5"
    assert (info.civitai_model_id, info.civitai_version_id) == (4201, 245598)
    assert info.trigger_words == ("analog style", "rvdetail")
    assert info.description == "photo model"


def test_cm_info_keys_match_without_regard_to_case(model):
    doc = {"modelName": "Lower", "stats": {"DownloadCount": 7}, "baseModel": "SDXL 1.0"}
    _write(model.with_name("dreamshaper_8.cm-info.json"), doc)
    info = read_sidecars(model)
    assert (info.display_name, info.download_count, info.base_model) == ("Lower", 7, "SDXL 1.0")


def test_precedence_user_title_then_civitai_then_cm_info_then_metadata(model):
    _write(model.with_name("dreamshaper_8.civitai.info"), {"model": {"name": "From Civitai"}, "baseModel": None})
    _write(model.with_name("dreamshaper_8.cm-info.json"), {**CM_INFO, "UserTitle": "My favourite"})
    meta = {"modelspec.title": "From metadata", "modelspec.architecture": "stable-diffusion-v1"}
    info = read_sidecars(model, meta)
    assert (info.display_name, info.source) == ("My favourite", "cm-info.json")
    assert info.base_model == "SD 1.5"  # civitai.info has none, so cm-info's is used
    assert info.download_count == 1234567
    _write(model.with_name("dreamshaper_8.cm-info.json"), CM_INFO)  # no UserTitle
    assert read_sidecars(model, meta).display_name == "From Civitai"


def test_safetensors_metadata(tmp_path):
    meta = {
        "modelspec.title": "Juggernaut XL",
        "modelspec.architecture": "stable-diffusion-xl-v1-base",
        "modelspec.description": "merged",
        "modelspec.trigger_phrase": "cinematic, film grain",
        "sshs_model_hash": "a1b2c3",
        "ss_sd_model_name": "sd_xl_base_1.0.safetensors",
    }
    path = write_safetensors_header(tmp_path / "jugg.safetensors", small_checkpoint("sdxl"), metadata=meta)
    found = probe(path)
    info = read_sidecars(path, found.metadata)
    assert (info.display_name, info.source) == ("Juggernaut XL", "safetensors metadata")
    assert info.base_model == "SDXL 1.0" and info.model_hash == "a1b2c3"
    assert info.trigger_words == ("cinematic", "film grain") and info.description == "merged"
    assert info.download_count is None


def test_trained_from_name_when_no_architecture(model):
    info = read_sidecars(model, {"ss_sd_model_name": "v1-5-pruned-emaonly.safetensors"})
    assert info.base_model == "v1-5-pruned-emaonly.safetensors" and info.display_name == "dreamshaper_8"


@pytest.mark.parametrize(
    "names,expected",
    [
        (["dreamshaper_8.png", "dreamshaper_8.preview.png"], "dreamshaper_8.preview.png"),
        (["dreamshaper_8.preview.webp", "dreamshaper_8.jpg"], "dreamshaper_8.preview.webp"),
        (["dreamshaper_8.jpeg"], "dreamshaper_8.jpeg"),
        (["dreamshaper.png", "other.preview.png"], None),
    ],
)
def test_preview_image(model, names, expected):
    for name in names:
        model.with_name(name).write_bytes(b"\x89PNG\r\n\x1a\n")
    info = read_sidecars(model)
    assert info.preview_path == (model.with_name(expected) if expected else None)


def test_empty_or_special_preview_is_skipped(model):
    model.with_name("dreamshaper_8.preview.png").touch()
    os.mkfifo(model.with_name("dreamshaper_8.preview.jpg"))
    model.with_name("dreamshaper_8.png").write_bytes(b"\x89PNG")
    assert read_sidecars(model).preview_path == model.with_name("dreamshaper_8.png")


@pytest.mark.parametrize(
    "content,needle",
    [
        (b"{broken", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"[1, 2, 3]", "a JSON array instead of an object"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    ],
    ids=["json", "utf8", "array", "deep"],
)
def test_bad_sidecar_is_ignored_with_a_reason(model, content, needle):
    model.with_name("dreamshaper_8.civitai.info").write_bytes(content)
    _write(model.with_name("dreamshaper_8.cm-info.json"), CM_INFO)
    info = read_sidecars(model)
    assert info.download_count == 1234567  # the good sidecar still counts
    assert len(info.problems) == 1
    assert info.problems[0].startswith("dreamshaper_8.civitai.info: ") and needle in info.problems[0]


def test_oversized_sidecar_is_not_read(model):
    path = model.with_name("dreamshaper_8.civitai.info")
    with open(path, "wb") as f:
        f.write(b'{"stats": {"downloadCount": 5}}')
        f.truncate(MAX_SIDECAR_BYTES + 1)  # sparse: costs no disk
    info = read_sidecars(model)
    assert info.download_count is None and "larger than" in info.problems[0]


def test_fifo_sidecar_does_not_hang(model):
    os.mkfifo(model.with_name("dreamshaper_8.civitai.info"))
    out = []
    worker = threading.Thread(target=lambda: out.append(read_sidecars(model)), daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "read_sidecars hung on a FIFO"
    assert "not a regular file" in out[0].problems[0]


@pytest.mark.parametrize("count", [-5, "many", True, 1.5, None])
def test_implausible_download_counts_are_dropped(model, count):
    _write(model.with_name("dreamshaper_8.civitai.info"), {"stats": {"downloadCount": count}})
    assert read_sidecars(model).download_count is None


def test_diffusers_folder_sidecars(tmp_path):
    folder = tmp_path / "sd-v1.5-pruned"
    folder.mkdir()
    _write(tmp_path / "sd-v1.5-pruned.civitai.info", CIVITAI_INFO)
    (tmp_path / "sd-v1.5-pruned.preview.png").write_bytes(b"\x89PNG")
    info = read_sidecars(folder)
    assert info.display_name == "DreamShaper (8)"
    assert info.preview_path == tmp_path / "sd-v1.5-pruned.preview.png"


def test_metadata_is_read_from_the_header_when_not_given(tmp_path):
    meta = {"modelspec.title": "Read Myself", "sshs_model_hash": "ff00"}
    path = write_safetensors_header(tmp_path / "m.safetensors", small_checkpoint("sd2"), metadata=meta)
    info = read_sidecars(path)
    assert (info.display_name, info.source, info.model_hash) == ("Read Myself", "safetensors metadata", "ff00")
    assert read_sidecars(path, {}).display_name == "m"  # an empty mapping means "no metadata"
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x05")
    assert read_sidecars(broken).display_name == "broken"
