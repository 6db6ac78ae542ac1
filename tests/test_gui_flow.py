"""The real window over the real services on tiny real models: build progress, pause, cancel, quit
mid-build and resume; drop -> ranked results; a prompt edit re-orders without re-encoding the
image; previews beside the reference.

Tiny SD 1.x checkpoints (tests/support/spec_build.py) with a 6-prompt set, a tiny open_clip
model, 64 px, 2 steps: a whole build is a few seconds of CPU.
"""

from __future__ import annotations


import pytest

pytest.importorskip("pytestqt")
pytest.importorskip("gmi_desktop.services.specs", reason="the spec builder lands with the services issue")
pytest.importorskip("gmi_desktop.services.identify", reason="identification lands with the services issue")

from gmi_desktop.core.progress import run  # noqa: E402
from gmi_desktop.gui.backend import Backend  # noqa: E402
from gmi_desktop.gui.main_window import MainWindow  # noqa: E402
from tests.support.spec_build import tiny_checkpoints, tiny_probe, tiny_resources, tiny_settings  # noqa: E402
from tests.support.tiny_clip import register_tiny_clip  # noqa: E402

PROMPTS = [f"a photo of a {c} {a}" for c in ("red", "blue", "green") for a in ("cat", "dog")]
EVAL = ["a drawing of a house", "a painting of a tree", "a sketch of a river"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    register_tiny_clip()
    folder = tmp_path_factory.mktemp("gui-flow")
    prompts = folder / "prompts"
    prompts.mkdir()
    (prompts / "default.txt").write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    (prompts / "evaluation.txt").write_text("\n".join(EVAL) + "\n", encoding="utf-8")
    return tiny_checkpoints(folder, (1, 2, 3)), tiny_resources(folder / "resources", prompts)


@pytest.fixture
def library(files, tmp_path, monkeypatch):
    checkpoints, resources = files
    monkeypatch.setenv("GMI_RESOURCES_DIR", str(resources))
    lib = tmp_path / "library"
    lib.mkdir()
    for path in checkpoints:
        (lib / path.name).symlink_to(path)
    return lib


@pytest.fixture
def open_window(qtbot, tmp_path, library):
    made = []

    def make() -> MainWindow:
        settings = tiny_settings(library_folders=(str(library),), batch_size=2)
        window = MainWindow(Backend(settings, probe_fn=tiny_probe, scan_workers=1), state_path=tmp_path / "window.ini")
        window.ask = lambda title, text: True
        qtbot.addWidget(window)
        made.append(window)
        window.show()
        window.start()
        return window

    yield make
    for window in made:
        window.shutdown(60)


def states(window) -> dict[str, str]:
    return {row.name: row.state for row in window.library.model.rows}


def scanned(qtbot, window) -> None:
    window.rescan()
    qtbot.waitUntil(lambda: sorted(states(window).values()) == ["queued"] * 3, timeout=120000)


def test_build_progress_pause_cancel_quit_and_resume(qtbot, open_window):
    window = open_window()
    scanned(qtbot, window)
    events, bar_states = [], []
    window.lane.build_progress.connect(events.append)
    window.lane.build_state.connect(bar_states.append)
    window.builder.start.click()
    qtbot.waitUntil(lambda: any(e.stage == "generating" for e in events), timeout=120000)
    assert window.builder.progress.maximum() > 1 and window.builder.line.text()

    window.builder.pause.click()
    qtbot.waitUntil(lambda: window.builder.state == "paused", timeout=60000)
    assert window.builder.pause.text() == "Resume"
    frozen = len(events)
    qtbot.wait(300)
    assert len(events) == frozen  # nothing runs while paused

    window.builder.pause.click()  # resume
    qtbot.waitUntil(lambda: len(events) > frozen, timeout=60000)
    window.builder.cancel.click()
    qtbot.waitUntil(lambda: window.builder.state == "cancelled", timeout=60000)
    assert window.builder.start.isEnabled()

    closed = []

    def quit_at_first_saved_spec(event):
        if event.stage == "saved" and not closed:
            closed.append(window.lane.state)
            window.close()  # mid-build: asks (answered yes), keeps the partial specifications

    window.lane.build_progress.connect(quit_at_first_saved_spec)
    window.builder.start.click()  # starts again from what was kept
    qtbot.waitUntil(lambda: bool(closed), timeout=120000)
    assert closed == ["running"]
    assert window.state.value("build_interrupted", type=bool) is True
    assert not window.lane._thread.is_alive()
    done_before = [e for e in events if e.stage == "generating"][-1].done

    again = open_window()  # a restart resumes the build by itself
    resumed = []
    again.lane.build_progress.connect(resumed.append)
    qtbot.waitUntil(lambda: again.builder.state == "done", timeout=180000)
    assert set(states(again).values()) == {"ready"}
    generated = [e for e in resumed if e.stage == "generating"]
    assert generated and len(generated) < len(PROMPTS) * 3 // 2  # resumed, not rebuilt from scratch
    assert done_before > 0


def _build_all(settings) -> None:
    from gmi_desktop.services.host import open_host
    from gmi_desktop.services.specs import SpecBuilder

    host = open_host(settings)
    try:
        run(SpecBuilder(settings, host).build())
    finally:
        host.close()


def test_drop_rank_edit_prompt_and_preview(qtbot, open_window, tmp_path):
    from tests.support.image_metadata import a1111_parameters, write_png_text

    window = open_window()
    scanned(qtbot, window)
    _build_all(window.backend.settings)
    query = write_png_text(tmp_path / "query.png", {"parameters": a1111_parameters(PROMPTS[2])})

    ranked = []
    window.identified.connect(ranked.append)
    window.take_items([str(query)])
    qtbot.waitUntil(lambda: bool(ranked), timeout=120000)
    first = ranked[0]
    assert first.prompt_source == "metadata" and window.prompt.edit.text() == PROMPTS[2]
    assert len(window.results.models) == 3 and window.results.table.rowCount() == 3
    assert window.results.names() == [m.name for m in first.ranking]

    # find, on the lane itself, a prompt that orders the models differently
    host = window.lane._host
    candidates = []
    window.lane.submit(lambda h, cancel: _orders(window.backend, h, cancel, first), "orders", returned=candidates.append)
    qtbot.waitUntil(lambda: bool(candidates), timeout=60000)
    order = [m.name for m in first.ranking]
    different = [(p, names) for p, names in candidates[0] if names != order]
    assert different, "no prompt of the set changes the order of three random models"
    prompt, expected = different[0]

    clip = host.clip()
    encoded = []
    real_encode = clip.encode_images
    clip.encode_images = lambda *a, **k: (encoded.append(1), real_encode(*a, **k))[1]
    try:
        reranked = []
        window.reranked.connect(reranked.append)
        window.prompt.edit.setFocus()
        window.prompt.edit.selectAll()
        qtbot.keyClicks(window.prompt.edit, prompt)
        qtbot.waitUntil(lambda: bool(reranked) and reranked[-1].pseudo_prompt == prompt, timeout=60000)
    finally:
        clip.encode_images = real_encode
    assert window.results.names() == expected != order
    assert encoded == []  # the image was not encoded again
    assert window.prompt.reset.isEnabled()
    window.prompt.reset.click()  # back to the embedded prompt
    qtbot.waitUntil(lambda: reranked[-1].pseudo_prompt == PROMPTS[2], timeout=60000)
    assert window.results.names() == order

    window.preview.seed.setValue(7)
    window.results.table.selectRow(1)
    window.results.preview_one.click()  # one model (the button beside the list does the top 3)
    qtbot.waitUntil(lambda: not window.preview.cancel.isEnabled(), timeout=120000)  # the job ended
    assert len(window.previews) == 1, (window.preview.status.text(), window.status_line.text())
    assert {key[2] for key in window.previews} == {7}
    assert set(window.preview.tiles) == {"reference", window.results.models[1].sha256}
    assert "seed 7" in window.preview.status.text()
    window.preview.seed.setValue(8)  # a new seed: the old previews go
    assert set(window.preview.tiles) == {"reference"}


def _orders(backend, host, cancel, identification):
    out = []
    for prompt in PROMPTS + EVAL:
        result = yield from backend.rerank(host, cancel, identification, prompt, None)
        out.append((prompt, [m.name for m in result.ranking]))
    return out
