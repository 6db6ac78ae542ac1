"""Weights resolution: explicit paths, the drop folder, the user's hub cache, and the offline errors."""

from __future__ import annotations

import contextlib
import shutil
import socket
import time
from pathlib import Path

import pytest

from gmi_desktop.core.errors import SettingsError, WeightsUnavailable
from gmi_desktop.engine import download, weights
from gmi_desktop.engine.weights import (DEFAULT_BLIP, LOW_VRAM_BLIP, drop_folder, hub_cache_dir,
                                        resolve_blip, resolve_clip)
from gmi_desktop.store import paths
from gmi_desktop.store.settings import Settings
from tests.support.local_hub import local_hub
from tests.support.tiny_clip import TINY_CLIP, register_tiny_clip, tiny_assets

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _fake_hub_snapshot(repo_id: str, files: dict[str, Path]) -> Path:
    """Lay files out exactly as huggingface_hub caches them (refs/main -> snapshots/<commit>/)."""
    repo_dir = hub_cache_dir() / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(COMMIT)
    for name, src in files.items():
        shutil.copy(src, snapshot / name)
    return snapshot


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_offline_clip_message_names_model_files_size_and_folder():
    with pytest.raises(WeightsUnavailable) as err:
        resolve_clip("ViT-L-14", "openai")
    folder = paths.data_dir() / "weights" / "clip" / "ViT-L-14-openai"
    message = str(err.value)
    assert err.value.path == folder
    for part in ("ViT-L-14/openai", "open_clip_model.safetensors", "timm/vit_large_patch14_clip_224.openai",
                 "1.7 GB", "HF_HUB_OFFLINE", str(folder), "clip_weights", str(paths.settings_path())):
        assert part in message, part


def test_offline_blip_message_names_repo_files_and_folder():
    with pytest.raises(WeightsUnavailable) as err:
        resolve_blip(DEFAULT_BLIP)
    folder = drop_folder("blip", DEFAULT_BLIP)
    assert err.value.path == folder and folder.is_relative_to(paths.data_dir())
    for part in (DEFAULT_BLIP, "config.json", "model.safetensors", "preprocessor_config.json", "1.9 GB",
                 str(folder), "blip_weights"):
        assert part in str(err.value), part


def test_downloads_turned_off_is_said_so(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    with pytest.raises(WeightsUnavailable, match="allow_downloads = false"):
        resolve_clip("ViT-H-14", "laion2b_s32b_b79k", allow_downloads=False)


def test_unreachable_hub_fails_fast_with_the_same_message(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable) as err:
        resolve_blip(LOW_VRAM_BLIP)
    assert time.monotonic() - start < 5
    assert "cannot be reached" in str(err.value) and LOW_VRAM_BLIP in str(err.value)
    assert err.value.path == drop_folder("blip", LOW_VRAM_BLIP)


def test_unknown_tag_without_a_file_is_a_settings_error():
    with pytest.raises(SettingsError, match="no pretrained weights 'not-a-tag'"):
        resolve_clip("ViT-L-14", "not-a-tag")


def test_explicit_file_wins_and_missing_explicit_paths_are_named(tmp_path):
    got = resolve_clip("ViT-L-14", "openai", str(tiny_assets().clip_weights))
    assert got.path == tiny_assets().clip_weights and got.source == "setting"
    with pytest.raises(WeightsUnavailable) as err:
        resolve_clip("ViT-L-14", "openai", str(tmp_path / "gone.bin"))
    assert err.value.path == tmp_path / "gone.bin"
    with pytest.raises(WeightsUnavailable, match="open_clip_model.safetensors") as err:
        resolve_clip("ViT-L-14", "openai", str(tmp_path))
    assert err.value.path == tmp_path


def test_drop_folder_is_found_before_caches():
    register_tiny_clip()
    folder = drop_folder("clip", f"{TINY_CLIP}-mine")
    folder.mkdir(parents=True)
    shutil.copy(tiny_assets().clip_weights, folder / "weights.safetensors")
    got = resolve_clip(TINY_CLIP, "mine")
    assert got.source == "folder" and got.path == folder / "weights.safetensors"


def test_clip_found_in_the_users_hub_cache():
    snapshot = _fake_hub_snapshot("timm/vit_large_patch14_clip_224.openai",
                                  {"open_clip_model.safetensors": tiny_assets().clip_weights})
    got = resolve_clip("ViT-L-14", "openai")
    assert got.source == "cache" and got.path == snapshot / "open_clip_model.safetensors"
    assert got.path.is_relative_to(hub_cache_dir())


def test_blip_found_in_the_users_hub_cache_and_incomplete_caches_are_not_used():
    blip = tiny_assets().blip_folder
    files = {p.name: p for p in blip.iterdir()}
    incomplete = {k: v for k, v in files.items() if k != "model.safetensors"}
    _fake_hub_snapshot(LOW_VRAM_BLIP, incomplete)
    with pytest.raises(WeightsUnavailable):
        resolve_blip(LOW_VRAM_BLIP)
    snapshot = _fake_hub_snapshot(DEFAULT_BLIP, files)
    got = resolve_blip(DEFAULT_BLIP)
    assert got.source == "cache" and got.path == snapshot


def test_explicit_blip_folder_and_its_missing_files(tmp_path):
    got = resolve_blip(DEFAULT_BLIP, str(tiny_assets().blip_folder))
    assert got.source == "setting" and got.path == tiny_assets().blip_folder
    partial = tmp_path / "blip"
    partial.mkdir()
    shutil.copy(tiny_assets().blip_folder / "config.json", partial / "config.json")
    with pytest.raises(WeightsUnavailable) as err:
        resolve_blip(DEFAULT_BLIP, str(partial))
    assert err.value.path == partial
    assert err.value.reason == ("the BLIP folder lacks model.safetensors or pytorch_model.bin, "
                                "preprocessor_config.json or processor_config.json, tokenizer.json or vocab.txt")
    with pytest.raises(WeightsUnavailable, match="blip_weights"):
        resolve_blip(DEFAULT_BLIP, str(tmp_path / "nothing-here"))


def test_low_vram_picks_the_base_blip():
    assert weights.blip_repo(Settings()) == DEFAULT_BLIP
    assert weights.blip_repo(Settings(low_vram=True)) == LOW_VRAM_BLIP
    assert weights.blip_repo(Settings(low_vram=True, blip_model="me/my-blip")) == "me/my-blip"


def test_hub_cache_dir_follows_the_environment_now(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "explicit"))
    assert hub_cache_dir() == tmp_path / "explicit"


def test_fingerprint_ignores_names_but_not_content(tmp_path):
    a = tmp_path / "a.bin"
    a.write_bytes(b"x" * (3 << 20))
    b = tmp_path / "b.bin"
    b.write_bytes(b"x" * (3 << 20))
    assert weights.weights_fingerprint(a) == weights.weights_fingerprint(b)
    b.write_bytes(b"x" * ((3 << 20) - 1) + b"y")  # same size, last byte differs
    assert weights.weights_fingerprint(a) != weights.weights_fingerprint(b)


def test_progress_bar_forwards_byte_counts():
    seen: list[tuple[int, int | None]] = []
    bar_class = download._reporting_bar(lambda done, total: seen.append((done, total)))
    bar = bar_class(total=300, initial=0, desc="x", unit="B", name="huggingface_hub.http_get")
    for _ in range(3):
        bar.update(100)
    bar.close()
    assert seen == [(100, 300), (200, 300), (300, 300)]
    event = download.download_progress("w", "f", 1, None)
    assert (event.stage, event.item, event.bytes_done, event.bytes_total) == ("downloading", "f", 1, 0)


@pytest.fixture
def online(monkeypatch):
    """Downloads allowed; the 'hub' is a local server (sockets to anything else stay blocked)."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    @contextlib.contextmanager
    def serve(files):
        with local_hub(files) as (url, log):
            monkeypatch.setenv("HF_ENDPOINT", url)
            yield log

    return serve


def test_clip_download_reports_progress_with_total_size_then_is_cached(online):
    data = tiny_assets().clip_weights.read_bytes()
    seen: list = []
    with online({("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "open_clip_model.safetensors"): data}) as log:
        got = resolve_clip("ViT-H-14", "laion2b_s32b_b79k", progress=seen.append)
    assert got.source == "download" and got.path.read_bytes() == data
    assert got.path.is_relative_to(hub_cache_dir())
    assert seen and all(p.bytes_total == len(data) for p in seen) and seen[-1].bytes_done == len(data)
    assert [p.bytes_done for p in seen] == sorted(p.bytes_done for p in seen)
    assert any(line.startswith("GET /laion/") for line in log)
    again = resolve_clip("ViT-H-14", "laion2b_s32b_b79k")  # no server any more: from the cache
    assert again.source == "cache" and again.path == got.path


def test_blip_download_fetches_a_loadable_folder(online):
    from gmi_desktop.engine.interrogator import load_caption_model

    blip = tiny_assets().blip_folder
    files = {(LOW_VRAM_BLIP, p.name): p.read_bytes() for p in blip.iterdir()}
    seen: list = []
    with online(files):
        got = resolve_blip(LOW_VRAM_BLIP, progress=seen.append)
        caption = load_caption_model(LOW_VRAM_BLIP, device="cpu")
    assert got.source == "download" and sorted(p.name for p in got.path.iterdir()) == sorted(n for _r, n in files)
    assert seen[-1].bytes_done == seen[-1].bytes_total == sum(len(b) for b in files.values())
    assert caption.weights.path == got.path and caption.weights.source == "cache"


def test_download_of_a_repo_without_weights_names_what_is_missing(online):
    with online({(DEFAULT_BLIP, "config.json"): b"{}"}):
        with pytest.raises(WeightsUnavailable, match="the hub has none of model.safetensors, pytorch_model.bin"):
            resolve_blip(DEFAULT_BLIP)
