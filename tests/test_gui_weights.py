"""Missing CLIP/BLIP weights: the download job (services/weights.py) and its dialog, against the
local stand-in hub (tests/support/local_hub.py; the network is never touched): progress advances
in bytes, Cancel stops it within one read and leaves nothing half-written, a second try completes."""

from __future__ import annotations

import contextlib
import time

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from gmi_desktop.core.errors import Cancelled, WeightsUnavailable  # noqa: E402
from gmi_desktop.core.progress import run  # noqa: E402
from gmi_desktop.engine import download  # noqa: E402
from gmi_desktop.engine.weights import hub_cache_dir, resolve_clip  # noqa: E402
from gmi_desktop.gui.backend import Backend  # noqa: E402
from gmi_desktop.gui.main_window import MainWindow  # noqa: E402
from gmi_desktop.services.weights import download_weights, missing_weights  # noqa: E402
from gmi_desktop.store.settings import Settings  # noqa: E402
from tests.support.local_hub import local_hub  # noqa: E402

REPO = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"  # what open_clip names for ViT-H-14/laion2b_s32b_b79k
DATA = bytes(range(256)) * (8 * 1024)  # 2 MiB: 32 reads of 64 KiB
CHUNK = 64 * 1024


@pytest.fixture
def settings(tmp_path):
    blip = tmp_path / "blip"  # a BLIP folder in place (resolution checks the files are there)
    blip.mkdir()
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"):
        (blip / name).write_bytes(b"{}")
    return Settings(clip_model="ViT-H-14", clip_pretrained="laion2b_s32b_b79k", blip_weights=str(blip))


@pytest.fixture
def hub(monkeypatch):
    """Downloads allowed from a local 'hub' that sends 64 KiB reads 10 ms apart (a slow network)."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", CHUNK)
    real = download.download_progress

    def slow(*args, **kwargs):
        time.sleep(0.01)
        return real(*args, **kwargs)

    monkeypatch.setattr(download, "download_progress", slow)

    @contextlib.contextmanager
    def serve():
        with local_hub({(REPO, "open_clip_model.safetensors"): DATA}) as (url, log):
            monkeypatch.setenv("HF_ENDPOINT", url)
            yield log

    return serve


def leftovers() -> list[str]:
    """Weights data in the cache (blobs, snapshot links); refs/ and .locks/ hold no weights."""
    root = hub_cache_dir() / f"models--{REPO.replace('/', '--')}"
    return sorted(p.name for sub in ("blobs", "snapshots") for p in (root / sub).rglob("*") if not p.is_dir())


def test_download_job_reports_bytes_cancels_cleanly_then_completes(settings, hub):
    needs = missing_weights(settings)
    assert [(n.kind, n.repo_id, n.downloadable, n.setting) for n in needs] == [("clip", REPO, True, "clip_weights")]
    assert needs[0].size_text == "3.9 GB" and "ViT-H-14" in needs[0].reason
    with hub():
        seen = []
        job = download_weights(settings, cancel=lambda: any(e.bytes_done >= 4 * CHUNK for e in seen))
        with pytest.raises(Cancelled):
            run(job, seen.append)
        assert 0 < seen[-1].bytes_done < len(DATA)
        assert leftovers() == []  # the partial blob is gone
        with pytest.raises(WeightsUnavailable):
            resolve_clip("ViT-H-14", "laion2b_s32b_b79k", allow_downloads=False)
        seen = []
        got = run(download_weights(settings), seen.append)
    done = [e.bytes_done for e in seen if e.bytes_total]
    assert done == sorted(done) and len(done) > 4 and done[-1] == len(DATA)
    assert all(e.bytes_total == len(DATA) for e in seen if e.bytes_total)
    assert got[0].path.read_bytes() == DATA and missing_weights(settings) == []


def test_dialog_from_the_identify_path_cancel_then_download(qtbot, settings, hub, tmp_path):
    window = MainWindow(Backend(settings), state_path=tmp_path / "window.ini")
    qtbot.addWidget(window)
    window.show()
    went_on = []
    try:
        with hub():
            window.ensure_weights(lambda: went_on.append(True))
            qtbot.waitUntil(lambda: getattr(window, "weights_dialog", None) is not None
                            and window.weights_dialog.isVisible(), timeout=60000)
            dialog = window.weights_dialog
            assert "CLIP ViT-H-14/laion2b_s32b_b79k" in dialog.text.text() and "3.9 GB" in dialog.text.text()
            assert "Clip weights" in dialog.findChildren(type(dialog.text))[1].text()
            qtbot.mouseClick(dialog.download_button, Qt.LeftButton)
            qtbot.waitUntil(lambda: dialog.bar.value() > 0, timeout=30000)
            qtbot.mouseClick(dialog.cancel_button, Qt.LeftButton)
            qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=30000)
            assert dialog.outcome == "cancelled" and went_on == [] and leftovers() == []
            assert "not downloaded" in window.status_line.text()
            assert 0 < dialog.bar.value() < 1000
            window.ensure_weights(lambda: went_on.append(True))
            qtbot.waitUntil(lambda: window.weights_dialog is not dialog and window.weights_dialog.isVisible(),
                            timeout=60000)
            second = window.weights_dialog
            qtbot.mouseClick(second.download_button, Qt.LeftButton)
            qtbot.waitUntil(lambda: went_on == [True], timeout=60000)
        values = [e.bytes_done for e in second.events if e.bytes_total]
        assert second.outcome == "downloaded" and second.bar.value() == 1000 and values[-1] == len(DATA)
        assert len(set(values)) > 4  # the bar moved through the download, not in one jump
    finally:
        window.shutdown(30)
