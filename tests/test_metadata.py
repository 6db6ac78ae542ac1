"""Generation metadata read from images as the UIs write them (store/metadata.py over sd-parsers)."""

from __future__ import annotations

import gzip
import subprocess
import sys
import time

import pytest
from PIL import Image

from gmi_desktop.core.errors import NotAnImage
from gmi_desktop.store.metadata import ModelRef, model_name_key, normalise_hash, read_metadata
from tests.support.image_metadata import (a1111_parameters, base_image, comfy_graph, fooocus_parameters,
                                          invokeai_metadata, novelai_fields, write_comfyui, write_exif_comment,
                                          write_png_text, write_stealth)

PARAMS = a1111_parameters("a red house on a hill, masterpiece", model="dreamy", model_hash="0123456789")
A1111 = ModelRef("dreamy", "0123456789", "autov2", "AUTOMATIC1111 metadata")


def test_a1111_png_parameters(tmp_path):
    meta = read_metadata(write_png_text(tmp_path / "a.png", {"parameters": PARAMS}))
    assert (meta.generator, meta.source) == ("AUTOMATIC1111", "PNG text")
    assert meta.prompt == "a red house on a hill, masterpiece" and meta.negative_prompt == "blurry"
    assert meta.models == (A1111,)


@pytest.mark.parametrize("suffix", ["jpg", "webp"])
@pytest.mark.parametrize("encoding", ["unicode-be", "unicode-le", "ascii"])
def test_a1111_exif_user_comment(tmp_path, suffix, encoding):
    meta = read_metadata(write_exif_comment(tmp_path / f"a.{suffix}", PARAMS, encoding=encoding))
    assert (meta.generator, meta.source) == ("AUTOMATIC1111", "EXIF UserComment")
    assert meta.prompt == "a red house on a hill, masterpiece" and meta.models == (A1111,)


def test_a1111_hashes_field_and_old_autov1(tmp_path):
    params = a1111_parameters("p", model="SD15_dreamy", model_hash="89abcdef", hashes={"model": "0123456789"})
    meta = read_metadata(write_png_text(tmp_path / "a.png", {"parameters": params}))
    assert meta.models == (ModelRef("SD15_dreamy", "89abcdef", "autov1", "AUTOMATIC1111 metadata"),
                           ModelRef(None, "0123456789", "autov2", 'A1111 "Hashes" model'))


@pytest.mark.parametrize("compressed", [True, False])
def test_stealth_alpha(tmp_path, compressed):
    meta = read_metadata(write_stealth(tmp_path / "s.png", PARAMS, compressed=compressed))
    assert (meta.generator, meta.source) == ("AUTOMATIC1111", "stealth alpha")
    assert meta.models == (A1111,)


def test_stealth_compression_bomb_is_not_inflated(tmp_path):
    bomb = gzip.compress(b"a" * (64 << 20))  # 64 MB of text in ~64 KB
    image = base_image(size=(800, 800)).convert("RGBA")
    path = tmp_path / "bomb.png"
    write_stealth(path, "", image=image)  # right magic; now replace the payload with the bomb
    import numpy as np

    data = b"stealth_pngcomp" + (len(bomb) * 8).to_bytes(4, "big") + bomb
    bits = np.unpackbits(np.frombuffer(data, np.uint8))
    rgba = np.array(Image.open(path))
    flat = rgba[:, :, 3].T.copy().ravel()
    flat[: bits.size] = (flat[: bits.size] & 0xFE) | bits
    rgba[:, :, 3] = flat.reshape(800, 800).T
    Image.fromarray(rgba, "RGBA").save(path)
    start = time.perf_counter()
    assert read_metadata(path) is None
    assert time.perf_counter() - start < 5.0


def test_comfyui_checkpoint_behind_a_lora(tmp_path):
    path = write_comfyui(tmp_path / "c.png", "SD15/dreamy.safetensors", "a cat in a hat")
    meta = read_metadata(path)
    assert meta.generator == "ComfyUI" and meta.prompt == "a cat in a hat"
    assert meta.negative_prompt == "lowres, blurry"
    assert meta.models == (ModelRef("SD15/dreamy.safetensors", None, None, "ComfyUI ckpt_name"),)
    # why we look at ckpt_name ourselves: sd-parsers 0.6 returns the LoRA node's link as the name
    # (and its PromptInfo.models then raises TypeError: unhashable list)
    from sd_parsers import ParserManager

    assert [s.model.name for s in ParserManager().parse(str(path)).samplers] == [["4", 0]]


def test_comfyui_without_workflow_and_windows_separators(tmp_path):
    meta = read_metadata(write_comfyui(tmp_path / "c.png", "SD15\\dreamy.safetensors", "a dog", workflow=False))
    assert meta.generator == "ComfyUI" and meta.prompt == "a dog"
    assert [m.name for m in meta.models] == ["SD15\\dreamy.safetensors"]
    assert model_name_key(meta.models[0].name) == "sd15/dreamy"


def test_comfyui_plain_graph(tmp_path):
    meta = read_metadata(write_comfyui(tmp_path / "c.png", "dreamy.safetensors", "a fox", lora=False))
    assert [m.name for m in meta.models] == ["dreamy.safetensors"]
    nodes, _ = comfy_graph("x", "y")
    assert nodes["10"]["inputs"]["model"] == ["4", 0]


def test_invokeai_3_and_4(tmp_path):
    v3 = read_metadata(write_png_text(tmp_path / "3.png", {"invokeai_metadata": invokeai_metadata("a dog", "dreamy")}))
    assert (v3.generator, v3.prompt, v3.negative_prompt) == ("InvokeAI", "a dog", "ugly")
    assert v3.models == (ModelRef("dreamy", None, None, "InvokeAI metadata"),)
    sha = "ab" * 32
    v4 = read_metadata(write_png_text(tmp_path / "4.png", {
        "invokeai_metadata": invokeai_metadata("a dog", "dreamy", version=4, model_hash=f"sha256:{sha}")}))
    assert v4.models == (ModelRef("dreamy", sha, "sha256", "InvokeAI model"),)
    blake = read_metadata(write_png_text(tmp_path / "b.png", {
        "invokeai_metadata": invokeai_metadata("a dog", "dreamy", version=4)}))
    assert blake.models[0].hash_kind == "blake3" and blake.models[0].comparable_hash is None


def test_fooocus_and_novelai(tmp_path):
    fooocus = read_metadata(write_png_text(tmp_path / "f.png", {
        "parameters": fooocus_parameters("a fox", "juggernautXL_v8.safetensors", "ABCDEF0123")}))
    assert (fooocus.generator, fooocus.prompt) == ("Fooocus", "a fox")
    assert fooocus.models == (ModelRef("juggernautXL_v8.safetensors", "abcdef0123", "autov2", "Fooocus metadata"),)
    novel = read_metadata(write_png_text(tmp_path / "n.png", novelai_fields("1girl, hat")))
    assert (novel.generator, novel.prompt) == ("NovelAI", "1girl, hat")
    assert novel.models[0].hash_kind == "novelai" and novel.models[0].comparable_hash is None


def test_no_metadata_and_not_an_image(tmp_path):
    plain = tmp_path / "plain.png"
    base_image().save(plain)
    assert read_metadata(plain) is None
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(NotAnImage):
        read_metadata(junk)
    with pytest.raises(NotAnImage):
        read_metadata(tmp_path / "absent.png")


def test_a_plain_jpeg_never_gets_the_previous_images_metadata(tmp_path):
    """sd-parsers caches JPEG comments under id(image); ids of freed images are reused."""
    tagged = write_exif_comment(tmp_path / "a.jpg", PARAMS)
    plain = tmp_path / "plain.jpg"
    base_image(1).save(plain)
    for _ in range(30):
        assert read_metadata(tagged) is not None
        assert read_metadata(plain) is None


def test_hash_and_name_normalisation():
    assert normalise_hash(" 0123456789 ") == ("0123456789", "autov2")
    assert normalise_hash("ABCDEF01") == ("abcdef01", "autov1")
    assert normalise_hash("sha256:" + "A" * 64) == ("a" * 64, "sha256")
    assert normalise_hash("blake3:" + "a" * 64) == ("a" * 64, "blake3")
    assert normalise_hash("xyz")[1] == "unknown" and normalise_hash(None) == (None, None)
    assert model_name_key("SDXL\\Juggernaut_v9.safetensors [0123456789]") == "sdxl/juggernaut_v9"
    assert model_name_key("dreamy.ckpt") == "dreamy"


def test_reading_metadata_imports_no_torch(tmp_path):
    path = write_png_text(tmp_path / "a.png", {"parameters": PARAMS})
    code = ("import sys; from gmi_desktop.store.metadata import read_metadata; "
            f"m = read_metadata({str(path)!r}); assert m.models; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_formats_are_sniffed_by_content_not_by_name(tmp_path):
    png_named_jpg = write_png_text(tmp_path / "renamed.jpg", {"parameters": PARAMS})
    meta = read_metadata(png_named_jpg)
    assert (meta.source, meta.models) == ("PNG text", (A1111,))
