"""CLIP encoders on a tiny random open_clip model loaded from a real local weights file."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from gmi_desktop.core.errors import CorruptWeights, WeightsUnavailable
from gmi_desktop.engine.clip import ClipModel, load_clip, load_clip_for
from gmi_desktop.engine.host import ModelHost
from gmi_desktop.store.settings import Settings
from tests.support.tiny_clip import TINY_CLIP, random_images, register_tiny_clip, tiny_assets

TEXTS = ["a photo of a cat", "an oil painting of a dog", "a red house by a river at sunset", "", "x" * 500]


@pytest.fixture(scope="module")
def clip() -> ClipModel:
    register_tiny_clip()
    return load_clip(TINY_CLIP, "random-seed0", weights=str(tiny_assets().clip_weights), device="cpu")


@pytest.fixture(scope="module")
def images():
    return random_images(7, seed=3)


def test_image_features_are_unit_norm_float32(clip, images):
    feats = clip.encode_images(images)
    assert feats.shape == (7, clip.feature_dim) == (7, 24)
    assert feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    # different images give different features (not a constant output)
    assert np.min(np.linalg.norm(feats[:, None] - feats[None], axis=-1) + np.eye(7)) > 1e-3


def test_text_features_are_unit_norm_float32(clip):
    feats = clip.encode_texts(TEXTS)
    assert feats.shape == (len(TEXTS), 24) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(feats[0], feats[1])
    assert clip.encode_texts([]).shape == (0, 24)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 64])
def test_batch_size_does_not_change_features(clip, images, batch_size):
    one_by_one = np.concatenate([clip.encode_images([im]) for im in images])
    np.testing.assert_allclose(clip.encode_images(images, batch_size=batch_size), one_by_one, atol=1e-6, rtol=0)
    texts_single = np.concatenate([clip.encode_texts([t]) for t in TEXTS])
    np.testing.assert_allclose(clip.encode_texts(TEXTS, batch_size=batch_size), texts_single, atol=1e-6, rtol=0)


def test_encoding_is_bit_identical_when_repeated(clip, images):
    assert np.array_equal(clip.encode_images(images), clip.encode_images(images))
    assert np.array_equal(clip.encode_texts(TEXTS), clip.encode_texts(TEXTS))


def test_features_match_a_direct_open_clip_computation(clip, images):
    import open_clip
    import torch

    model = open_clip.create_model(TINY_CLIP, pretrained=str(tiny_assets().clip_weights)).eval()
    _, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP)
    with torch.no_grad():
        direct = model.encode_image(torch.stack([preprocess(im) for im in images[:2]]))
        direct = (direct / direct.norm(dim=-1, keepdim=True)).numpy()
    np.testing.assert_allclose(clip.encode_images(images[:2]), direct, atol=1e-6)


def test_encoder_id_and_device(clip):
    assert clip.encoder_id == f"open_clip:{TINY_CLIP}/random-seed0"
    assert clip.device.device == "cpu" and clip.device.dtype_name == "float32"
    assert next(clip.module.parameters()).dtype.is_floating_point and not clip.module.training
    assert clip.weights.source == "setting"


def test_the_host_loads_clip_once_lazily_and_other_weights_differ(clip, images):
    import gc
    import weakref

    settings = Settings(clip_model=TINY_CLIP, clip_pretrained="random-seed0",
                        clip_weights=str(tiny_assets().clip_weights), device="cpu")
    host = ModelHost(settings)
    assert host.loaded() == [] and host.encoder_id == clip.encoder_id  # known without loading
    first = host.clip()
    assert host.clip() is first and host.loaded() == ["clip"]
    assert np.array_equal(first.encode_images(images[:2]), clip.encode_images(images[:2]))
    assert np.array_equal(load_clip_for(settings).encode_texts(TEXTS), clip.encode_texts(TEXTS))
    alive = weakref.ref(first.module)
    host.unload("clip")
    del first
    gc.collect()
    assert host.loaded() == [] and alive() is None  # the weights are gone
    other = load_clip(TINY_CLIP, "random-seed0", weights=str(tiny_assets().clip_weights_other), device="cpu")
    assert other.weights_fingerprint != clip.weights_fingerprint
    assert not np.allclose(other.encode_images(images[:1]), clip.encode_images(images[:1]))


def test_explicit_folder_resolves_to_the_file_inside(clip, tmp_path):
    folder = tmp_path / "my-clip"
    folder.mkdir()
    shutil.copy(tiny_assets().clip_weights, folder / "open_clip_model.safetensors")
    from_folder = load_clip(TINY_CLIP, "random-seed0", weights=str(folder), device="cpu")
    assert from_folder.weights.path == folder / "open_clip_model.safetensors"
    assert from_folder.weights_fingerprint == clip.weights_fingerprint
    assert np.array_equal(from_folder.encode_texts(TEXTS), clip.encode_texts(TEXTS))


def test_truncated_weights_file_is_a_typed_error(tmp_path):
    data = tiny_assets().clip_weights.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptWeights) as err:
        load_clip(TINY_CLIP, "random-seed0", weights=str(bad), device="cpu")
    assert err.value.path == bad and isinstance(err.value, WeightsUnavailable)


def test_garbage_pickle_weights_is_a_typed_error(tmp_path):
    bad = tmp_path / "open_clip_pytorch_model.bin"
    bad.write_bytes(b"this is not a pickle at all" * 10)
    with pytest.raises(CorruptWeights, match="cannot load CLIP"):
        load_clip(TINY_CLIP, "random-seed0", weights=str(bad), device="cpu")


def test_weights_of_another_architecture_are_a_typed_error(tmp_path):
    import torch
    from safetensors.torch import save_file

    wrong = tmp_path / "wrong.safetensors"
    save_file({"visual.conv1.weight": torch.zeros(8, 3, 4, 4), "logit_scale": torch.zeros(())}, str(wrong))
    with pytest.raises(CorruptWeights) as err:
        load_clip(TINY_CLIP, "random-seed0", weights=str(wrong), device="cpu")
    assert "CLIP GMI-Tiny-CLIP/random-seed0" in str(err.value)


def test_missing_explicit_file_names_the_path(tmp_path):
    with pytest.raises(WeightsUnavailable) as err:
        load_clip(TINY_CLIP, "random-seed0", weights=str(tmp_path / "nope.safetensors"), device="cpu")
    assert err.value.path == tmp_path / "nope.safetensors" and "clip_weights" in str(err.value)


def test_engine_import_stays_light():
    code = ("import sys, gmi_desktop.engine, gmi_desktop.engine.clip, gmi_desktop.engine.weights, "
            "gmi_desktop.engine.interrogator, gmi_desktop.store.images; "
            "print(sorted(m for m in ('torch', 'open_clip', 'transformers', 'clip_interrogator', 'huggingface_hub') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (fp16 path)")
def test_cuda_uses_fp16_and_agrees_with_cpu(clip, images):
    gpu = load_clip(TINY_CLIP, "random-seed0", weights=str(tiny_assets().clip_weights), device="cuda")
    assert gpu is not clip and gpu.device.dtype_name == "float16"
    assert next(gpu.module.parameters()).dtype == __import__("torch").float16
    feats = gpu.encode_images(images, batch_size=3)
    assert feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(feats, clip.encode_images(images), atol=2e-2)
    assert np.array_equal(feats, gpu.encode_images(images, batch_size=3))
    np.testing.assert_allclose(gpu.encode_texts(TEXTS), clip.encode_texts(TEXTS), atol=2e-2)
    gpu.close()


# ------------------------------------------------------------------------------ load_image


def _save(image, path, **kw):
    image.save(path, **kw)
    return path


def test_load_image_returns_detached_rgb(tmp_path, clip):
    from PIL import Image

    from gmi_desktop.store.images import load_image

    src = random_images(1, seed=5)[0]
    path = _save(src, tmp_path / "a.png")
    out = load_image(path)
    assert out.mode == "RGB" and out.size == src.size
    assert np.array_equal(np.asarray(out), np.asarray(src))
    path.unlink()  # detached: still usable after the file is gone
    assert clip.encode_images([out]).shape == (1, 24)
    assert isinstance(out, Image.Image)


def test_load_image_converts_cmyk_palette_alpha_and_16_bit(tmp_path):
    from PIL import Image

    from gmi_desktop.store.images import load_image

    cmyk = _save(Image.new("CMYK", (8, 6), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", quality=100)
    red = np.asarray(load_image(cmyk)).astype(int)
    assert red.shape == (6, 8, 3) and red[..., 0].min() > 200 and red[..., 1:].max() < 60

    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    out = np.asarray(load_image(_save(rgba, tmp_path / "alpha.png")))
    assert tuple(out[0, 0]) == (0, 0, 255) and tuple(out[3, 3]) == (255, 255, 255)  # flattened onto white

    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.info["transparency"] = 0
    assert tuple(np.asarray(load_image(_save(pal, tmp_path / "pal.png", transparency=0)))[0, 0]) == (10, 200, 30)

    grey16 = Image.fromarray(np.array([[0, 32896, 65535, 1000]], dtype=np.uint16))
    out16 = np.asarray(load_image(_save(grey16, tmp_path / "g16.png")))
    assert out16[0, :, 0].tolist() == [0, 128, 255, 4] and out16.dtype == np.uint8


def test_not_an_image_truncated_missing_and_huge(tmp_path):
    from PIL import Image

    from gmi_desktop.core.errors import NotAnImage
    from gmi_desktop.store.images import load_image

    text = tmp_path / "notes.png"
    text.write_text("hello, I am not a picture")
    with pytest.raises(NotAnImage, match="not an image") as err:
        load_image(text)
    assert err.value.path == text

    whole = _save(random_images(1, seed=1, size=(64, 64))[0], tmp_path / "whole.jpg", quality=90).read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(NotAnImage, match="truncated"):
        load_image(cut)

    with pytest.raises(NotAnImage, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(NotAnImage, match="not a file"):
        load_image(tmp_path)

    big = _save(Image.new("RGB", (300, 200)), tmp_path / "big.png")
    with pytest.raises(NotAnImage, match="too large"):
        load_image(big, max_pixels=50_000)


def test_progress_is_reported_and_can_cancel(clip, images):
    from gmi_desktop.core.errors import Cancelled

    seen = []
    clip.encode_images(images, batch_size=3, progress=seen.append)
    assert [(p.stage, p.done, p.total) for p in seen] == [("encoding", 3, 7), ("encoding", 6, 7), ("encoding", 7, 7)]

    seen.clear()
    with pytest.raises(Cancelled):
        clip.encode_texts(TEXTS, batch_size=2, progress=seen.append, cancel=lambda: len(seen) >= 1)
    assert len(seen) == 1  # stopped before the second batch


def test_out_of_memory_halves_the_batch_then_gives_a_typed_error(clip, images, monkeypatch):
    import torch

    from gmi_desktop.core.errors import OutOfMemory

    real = clip.module.encode_image
    sizes = []

    def limited(pixels, limit):
        sizes.append(len(pixels))
        if len(pixels) > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(pixels)

    monkeypatch.setattr(clip.module, "encode_image", lambda p: limited(p, 2))
    got = clip.encode_images(images, batch_size=8)
    monkeypatch.setattr(clip.module, "encode_image", real)
    np.testing.assert_allclose(got, clip.encode_images(images), atol=1e-6)
    assert sizes[:3] == [7, 4, 2] and max(sizes[3:]) <= 2

    monkeypatch.setattr(clip.module, "encode_image", lambda p: limited(p, 0))
    with pytest.raises(OutOfMemory, match="batch size 1"):
        clip.encode_images(images[:2], batch_size=4)


def test_device_setting_is_checked_before_any_model_loads():
    import torch

    from gmi_desktop.core.errors import SettingsError
    from gmi_desktop.engine.device import choose_device

    assert choose_device("cpu").device == "cpu" and choose_device(" CPU ").dtype_name == "float32"
    bad = ["gpu", "cuda1", "cpu:0x", "tpu", "cuda:", "mps:0"]
    if not torch.cuda.is_available():
        bad += ["cuda", "cuda:0"]
    else:
        bad.append(f"cuda:{torch.cuda.device_count()}")  # one past the last GPU
    if not torch.backends.mps.is_available():
        bad.append("mps")
    for name in bad:
        with pytest.raises(SettingsError, match="device") as info:
            choose_device(name)
        assert "auto" in info.value.hint, name
    with pytest.raises(SettingsError, match="device"):
        load_clip(TINY_CLIP, "random-seed0", weights=str(tiny_assets().clip_weights), device="gpu")
