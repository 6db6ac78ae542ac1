"""The interrogator adapter on tiny random CLIP + BLIP models and a tiny label set."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from gmi_desktop.core.errors import Cancelled, CorruptWeights, SettingsError
from gmi_desktop.engine.clip import load_clip
from gmi_desktop.engine.interrogator import MODES, Interrogator, build_interrogator, load_caption_model
from gmi_desktop.store import paths
from gmi_desktop.store.settings import Settings
from tests.support.tiny_clip import TINY_CLIP, random_images, register_tiny_clip, tiny_assets

TINY_BLIP = "tiny/blip-test"


@pytest.fixture(scope="module")
def clip():
    register_tiny_clip()
    return load_clip(TINY_CLIP, "random-seed0", weights=str(tiny_assets().clip_weights), device="cpu")


@pytest.fixture(scope="module")
def captioner():
    return load_caption_model(TINY_BLIP, weights=str(tiny_assets().blip_folder), device="cpu")


@pytest.fixture
def interrogator(clip, captioner):
    return Interrogator(clip, captioner, label_data_path=tiny_assets().labels, caption_max_length=12)


@pytest.fixture(scope="module")
def image():
    return random_images(1, seed=11)[0]


def _labels(*names):
    out = []
    for name in names:
        out += [line for line in (tiny_assets().labels / name).read_text().splitlines() if line]
    return out


def test_caption_is_non_empty_and_deterministic(interrogator, image):
    first = interrogator.caption(image)
    assert first and first == interrogator.caption(image)
    assert all(word in (tiny_assets().blip_folder / "tokenizer.json").read_text() for word in first.split())


@pytest.mark.parametrize("mode", ["fast", "classic", "best"])
def test_modes_start_with_the_caption_and_are_deterministic(interrogator, clip, captioner, image, mode):
    caption = interrogator.caption(image)
    prompt = interrogator.interrogate(image, mode=mode)
    assert prompt.startswith(caption) and len(prompt) > len(caption)
    fresh = Interrogator(clip, captioner, mode=mode, label_data_path=tiny_assets().labels, caption_max_length=12)
    assert fresh.interrogate(image) == prompt  # repeated, through a new adapter: the same prompt


def test_fast_mode_appends_only_known_labels(interrogator, image):
    caption = interrogator.caption(image)
    added = interrogator.interrogate(image, mode="fast")[len(caption):].lstrip(", ").split(", ")
    sites = {"Artstation", "behance", "cg society", "cgsociety", "deviantart", "dribble", "flickr", "instagram",
             "pexels", "pinterest", "pixabay", "pixiv", "polycount", "reddit", "shutterstock", "tumblr",
             "unsplash", "zbrush central"}
    artists = _labels("artists.txt")
    known = set(_labels("flavors.txt", "mediums.txt", "movements.txt")) | sites
    known |= {f"trending on {s}" for s in sites} | {f"featured on {s}" for s in sites}
    known |= {f"{s} contest winner" for s in sites} | {f"by {a}" for a in artists} | {f"inspired by {a}" for a in artists}
    assert added and set(added) <= known and len(set(added)) == len(added)


def test_negative_mode_chains_dissimilar_labels(interrogator, image):
    negative = interrogator.interrogate(image, mode="negative")
    parts = negative.split(", ")
    assert parts and set(parts) <= set(_labels("flavors.txt", "negative.txt"))
    assert interrogator.interrogate(image, mode="negative") == negative


def test_the_interrogator_reuses_the_shared_models(interrogator, clip, captioner, image):
    interrogator.interrogate(image)
    ci = interrogator._interrogator()
    assert ci.clip_model is clip.module and ci.caption_model is captioner.model
    assert ci.caption_processor is captioner.processor
    assert ci.config.caption_model_name == "blip-large" and ci.config.download_cache is False


def test_label_caches_live_in_the_cache_dir_and_are_not_recomputed(clip, captioner, image, tmp_path, monkeypatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    seen = []
    first = Interrogator(clip, captioner, label_data_path=tiny_assets().labels)
    first.prepare_labels(lambda p: seen.append((p.item, p.done, p.total)))
    files = first.label_cache_paths()
    assert sorted(files) == ["artists", "flavors", "mediums", "movements", "negative", "trendings"]
    assert all(p.parent == paths.cache_dir() / "interrogator" and p.is_file() for p in files.values())
    assert ("artists", 8, 8) in seen and ("trendings", 72, 72) in seen
    stamps = {t: (p.stat().st_ino, p.stat().st_mtime_ns) for t, p in files.items()}
    first.interrogate(image, mode="best")  # clip-interrogator loads our caches: it must not rewrite them
    second = Interrogator(clip, captioner, label_data_path=tiny_assets().labels)
    second.interrogate(image, mode="classic")
    assert {t: (p.stat().st_ino, p.stat().st_mtime_ns) for t, p in files.items()} == stamps
    assert list(work.iterdir()) == []  # nothing written in the working directory
    assert not [p for p in files["flavors"].parent.iterdir() if p.name.endswith(".tmp")]


def test_cached_embeddings_are_the_shared_encoders_text_features(interrogator, clip):
    from safetensors.numpy import load_file

    interrogator.prepare_labels()
    cached = load_file(str(interrogator.label_cache_paths()["mediums"]))
    assert cached["embeds"].dtype == np.float16
    np.testing.assert_allclose(cached["embeds"], clip.encode_texts(_labels("mediums.txt")), atol=1e-3)


def test_a_corrupt_cache_file_is_rebuilt(interrogator, image):
    interrogator.prepare_labels()
    path = interrogator.label_cache_paths()["flavors"]
    good = path.read_bytes()
    path.write_bytes(good[:40])
    interrogator.prepare_labels()
    assert path.read_bytes() == good


def test_cancelling_label_preparation_leaves_no_partial_file(clip, captioner):
    it = Interrogator(clip, captioner, label_data_path=tiny_assets().labels)

    seen = []  # one batch per tiny table: cancel once the first table ("artists") is done

    with pytest.raises(Cancelled):
        it.prepare_labels(seen.append, cancel=lambda: bool(seen))
    assert [p.stage for p in seen] == ["labels"] and seen[0].item == "artists"
    files = it.label_cache_paths()
    assert files["artists"].is_file() and not files["flavors"].exists()
    assert sorted(p.name for p in files["artists"].parent.iterdir()) == [files["artists"].name]


def test_other_clip_weights_get_their_own_caches(clip, captioner):
    other = load_clip(TINY_CLIP, "random-seed0", weights=str(tiny_assets().clip_weights_other), device="cpu")
    a = Interrogator(clip, captioner, label_data_path=tiny_assets().labels).label_cache_paths()
    b = Interrogator(other, captioner, label_data_path=tiny_assets().labels).label_cache_paths()
    assert set(a.values()).isdisjoint(b.values())


def test_low_vram_mode_gives_the_same_prompts_and_keeps_the_encoders_working(clip, captioner, interrogator, image):
    low = Interrogator(clip, captioner, label_data_path=tiny_assets().labels, low_vram=True, caption_max_length=12)
    assert low.interrogate(image, mode="fast") == interrogator.interrogate(image, mode="fast")
    ci = low._interrogator()
    assert ci.config.caption_offload and ci.config.clip_offload and ci.config.chunk_size == 1024
    assert ci.config.caption_model_name == "blip-large"
    feats = clip.encode_images([image])
    np.testing.assert_allclose(np.linalg.norm(feats), 1.0, atol=1e-5)


def test_library_warnings_do_not_leak(interrogator, image, recwarn):
    import warnings

    warnings.simplefilter("always")
    interrogator.interrogate(image, mode="fast")
    assert not [w for w in recwarn if "autocast" in str(w.message)]


def test_unknown_mode_and_bad_label_folder_are_typed(clip, captioner, interrogator, image, tmp_path):
    with pytest.raises(SettingsError, match="unknown interrogator mode"):
        Interrogator(clip, captioner, mode="fastest")
    with pytest.raises(SettingsError, match="unknown interrogator mode"):
        interrogator.interrogate(image, mode="slow")
    with pytest.raises(SettingsError, match="lacks artists.txt"):
        Interrogator(clip, captioner, label_data_path=tmp_path)
    assert set(MODES) == {"fast", "classic", "best", "negative"}


def test_corrupt_blip_weights_are_a_typed_error(tmp_path):
    broken = tmp_path / "blip"
    shutil.copytree(tiny_assets().blip_folder, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CorruptWeights) as err:
        load_caption_model(TINY_BLIP, weights=str(broken), device="cpu")
    assert err.value.path == broken and "BLIP" in str(err.value)


def test_build_interrogator_from_settings(clip, captioner):
    settings = Settings(blip_model=TINY_BLIP, blip_weights=str(tiny_assets().blip_folder), device="cpu",
                        interrogator_mode="classic", interrogator_labels=str(tiny_assets().labels))
    built = build_interrogator(settings, clip, captioner)
    assert built.caption_model is captioner and built.clip is clip and built.mode == "classic"
    assert built.label_data_path == tiny_assets().labels
    assert os.fspath(built.cache_folder).startswith(os.fspath(paths.cache_dir()))


def test_image_paths_are_accepted_and_checked(interrogator, image, tmp_path):
    from gmi_desktop.core.errors import NotAnImage

    path = tmp_path / "ref.png"
    image.save(path)
    assert interrogator.interrogate(path) == interrogator.interrogate(image)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(NotAnImage):
        interrogator.caption(tmp_path / "bad.png")


def test_loading_blip_prints_no_progress_bars(capfd):
    from transformers.utils import logging as transformers_logging

    from gmi_desktop.engine.device import DeviceChoice
    from gmi_desktop.engine.interrogator import _build_caption
    from gmi_desktop.engine.weights import ResolvedWeights

    folder = tiny_assets().blip_folder
    capfd.readouterr()
    _build_caption(TINY_BLIP, ResolvedWeights("tiny BLIP", folder, "setting"), DeviceChoice("cpu", "float32"))
    out, err = capfd.readouterr()
    assert out == "" and "Loading weights" not in err and "it/s" not in err
    assert transformers_logging.is_progress_bar_enabled()  # the global setting is restored


def test_the_host_owns_the_caption_model_and_frees_it_on_unload(clip):
    import gc
    import weakref

    from gmi_desktop.engine.host import ModelHost

    settings = Settings(clip_model=TINY_CLIP, clip_pretrained="random-seed0", clip_weights=str(tiny_assets().clip_weights),
                        blip_model=TINY_BLIP, blip_weights=str(tiny_assets().blip_folder), device="cpu",
                        interrogator_labels=str(tiny_assets().labels))
    host = ModelHost(settings)
    assert host.loaded() == []  # nothing is loaded before it is asked for
    interrogator = host.interrogator()
    assert host.interrogator() is interrogator and interrogator.clip is host.clip()  # one CLIP, shared
    assert host.loaded() == ["clip", "interrogator"]
    alive = weakref.ref(interrogator.caption_model.model)
    host.unload("interrogator")
    assert host.loaded() == ["clip"]
    del interrogator
    gc.collect()
    assert alive() is None  # nothing else kept the BLIP weights alive
    again = host.interrogator()  # loaded afresh, over the same CLIP
    assert again.caption_model.model is not None and again.clip is host.clip()
    host.close()
    assert host.loaded() == []
