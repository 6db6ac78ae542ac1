"""engine/label_cache: clip-interrogator's published label embeddings fetched from a local stand-in
of the hub, verified against our own CLIP, and the local fallback. Never the network."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file, save

from gmi_desktop.core.errors import Cancelled
from gmi_desktop.core.progress import run
from gmi_desktop.engine.clip import load_clip
from gmi_desktop.engine.interrogator import Interrogator, _cache_is_current, _label_tables, load_caption_model
from gmi_desktop.engine.label_cache import PUBLISHED_REPO, iter_prepare_labels, published_name
from tests.support.local_hub import local_hub
from tests.support.tiny_clip import TINY_CLIP, random_images, register_tiny_clip, tiny_assets


@pytest.fixture(scope="module")
def clip():
    register_tiny_clip()
    return load_clip(TINY_CLIP, "random-seed0", weights=str(tiny_assets().clip_weights), device="cpu")


@pytest.fixture
def interrogator(clip):
    caption = load_caption_model("tiny/blip-test", weights=str(tiny_assets().blip_folder), device="cpu")
    return Interrogator(clip, caption, label_data_path=tiny_assets().labels, caption_max_length=8)


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def published(encoder, labels_of=None) -> dict:
    """The files clip-interrogator publishes, made with ``encoder`` (optionally for other labels)."""
    import hashlib

    files = {}
    for table, labels in _label_tables(tiny_assets().labels).items():
        hashed = labels_of(labels) if labels_of else labels
        digest = hashlib.sha256(",".join(hashed).encode()).hexdigest()
        data = save({"embeds": encoder.encode_texts(labels).astype(np.float16),
                     "hash": np.array([ord(c) for c in digest], dtype=np.int8)})
        name = f"{published_name(encoder.model_name, encoder.pretrained)}_{table}.safetensors"
        files[(PUBLISHED_REPO, name)] = data
    return files


def count_texts(monkeypatch, clip) -> list[int]:
    counted = [0]
    real = clip.encode_texts

    def wrapper(texts, *args, **kwargs):
        counted[0] += len(texts)
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(clip, "encode_texts", wrapper)
    return counted


def test_published_name_is_clip_interrogators():
    assert published_name("ViT-L-14", "openai") == "ViT-L-14_openai"
    assert published_name("ViT-H-14", "laion2b_s32b_b79k") == "ViT-H-14_laion2b_s32b_b79k"


def test_verified_download_replaces_the_local_computation(interrogator, clip, online, monkeypatch):
    files = published(clip)
    counted = count_texts(monkeypatch, clip)
    tables = _label_tables(tiny_assets().labels)
    with local_hub(files) as (endpoint, log):
        events = []
        fetcher = run(iter_prepare_labels(interrogator, allow_downloads=True, endpoint=endpoint), events.append)
    assert sorted(fetcher.fetched) == sorted(tables) and fetcher.reasons == {}
    assert len([line for line in log if line.startswith("GET")]) == len(tables)
    assert counted[0] <= 8 * len(tables) < sum(len(v) for v in tables.values())  # only the samples
    assert "downloading" in {e.stage for e in events}
    for table, path in interrogator.label_cache_paths().items():
        assert _cache_is_current(path, tables[table])
        assert load_file(str(path))["embeds"].tobytes() == load_file_bytes(files, clip, table)
    before = counted[0]
    assert interrogator.interrogate(random_images(1)[0], mode="fast").strip()
    assert counted[0] == before  # clip-interrogator found the caches: no label was embedded again


def load_file_bytes(files, clip, table) -> bytes:
    from safetensors.numpy import load

    name = f"{published_name(clip.model_name, clip.pretrained)}_{table}.safetensors"
    return load(files[(PUBLISHED_REPO, name)])["embeds"].tobytes()


def test_embeddings_of_other_weights_are_refused_and_computed_here(interrogator, clip, online):
    other = load_clip(TINY_CLIP, "random-seed0", weights=str(tiny_assets().clip_weights_other), device="cpu")
    with local_hub(published(other)) as (endpoint, _log):
        fetcher = run(iter_prepare_labels(interrogator, allow_downloads=True, endpoint=endpoint))
    assert fetcher.fetched == [] and all("other CLIP weights" in r for r in fetcher.reasons.values())
    tables = _label_tables(tiny_assets().labels)
    for table, path in interrogator.label_cache_paths().items():
        mine = clip.encode_texts(tables[table]).astype(np.float16)
        np.testing.assert_allclose(load_file(str(path))["embeds"].astype(np.float32), mine.astype(np.float32), atol=2e-3)


def test_wrong_label_list_missing_files_and_oversized_files_fall_back(interrogator, clip, online):
    files = published(clip, labels_of=lambda labels: labels[::-1])
    tables = sorted(_label_tables(tiny_assets().labels))
    del files[(PUBLISHED_REPO, f"{published_name(clip.model_name, clip.pretrained)}_{tables[0]}.safetensors")]
    big_name = f"{published_name(clip.model_name, clip.pretrained)}_{tables[1]}.safetensors"
    files[(PUBLISHED_REPO, big_name)] = b"\0" * (4 << 20)
    with local_hub(files) as (endpoint, _log):
        fetcher = run(iter_prepare_labels(interrogator, allow_downloads=True, endpoint=endpoint))
    assert fetcher.fetched == []
    assert "HTTP 404" in fetcher.reasons[tables[0]]
    assert "more than" in fetcher.reasons[tables[1]]
    assert all("another label list" in fetcher.reasons[t] for t in tables[2:])
    all_tables = _label_tables(tiny_assets().labels)
    assert all(_cache_is_current(p, all_tables[t]) for t, p in interrogator.label_cache_paths().items())


def test_offline_or_not_allowed_asks_nothing(interrogator, clip, monkeypatch):
    with local_hub(published(clip)) as (endpoint, log):
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert run(iter_prepare_labels(interrogator, allow_downloads=True, endpoint=endpoint)) is None
        monkeypatch.delenv("HF_HUB_OFFLINE")
        for path in interrogator.label_cache_paths().values():
            path.unlink()
        assert run(iter_prepare_labels(interrogator, allow_downloads=False, endpoint=endpoint)) is None
    assert log == []


def test_cancel_stops_the_preparation(interrogator, online):
    with pytest.raises(Cancelled):
        run(iter_prepare_labels(interrogator, allow_downloads=False, cancel=lambda: True))
    tables = _label_tables(tiny_assets().labels)
    assert not all(_cache_is_current(p, tables[t]) for t, p in interrogator.label_cache_paths().items())
