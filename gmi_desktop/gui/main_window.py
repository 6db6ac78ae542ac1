"""The main window: library panel, builder bar, query area, prompt bar, ranked results, previews.

The window wires widgets to jobs (``gui/backend.py``) run by the generic worker (cheap work) or
the GPU lane (models); every answer comes back as a signal on the GUI thread. It decides nothing
about models or images: the services do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog, QLabel, QMainWindow, QMessageBox, QSplitter, QVBoxLayout, QWidget,
)

from gmi_desktop.core.errors import GMIError
from gmi_desktop.core.progress import Progress
from gmi_desktop.gui.backend import Backend
from gmi_desktop.gui.builder_bar import BuilderBar
from gmi_desktop.gui.drops import check_drop
from gmi_desktop.gui.lane import GpuLane
from gmi_desktop.gui.library_panel import LibraryPanel
from gmi_desktop.gui.query import PromptBar, QueryPanel
from gmi_desktop.gui.results import PreviewStrip, ResultsView
from gmi_desktop.gui.rows import make_rows
from gmi_desktop.gui.worker import Worker, describe
from gmi_desktop.store import paths

METHODS = ("proposal", "rkme_clip", "rkme_concat", "rkme_basic", "download")  # core.index.METHODS
PREVIEW_MODELS = 3


def error_text(exc: BaseException) -> str:
    """A readable line for an error from a service (no traceback for the user's mistakes)."""
    if isinstance(exc, GMIError):
        return str(exc)
    return f"unexpected error: {type(exc).__name__}: {exc}"


class MainWindow(QMainWindow):
    """See the module docstring. ``ask(title, text) -> bool`` asks the user a yes/no question."""

    library_loaded = Signal()
    identified = Signal(object)
    reranked = Signal(object)

    def __init__(self, backend: Backend, *, state_path: Path | None = None, demo: bool = False):
        super().__init__()
        self.backend = backend
        self.demo = demo
        self.state = QSettings(str(state_path or paths.config_dir() / "window.ini"), QSettings.IniFormat)
        self.lane = GpuLane(backend.open_host)
        self.workers: set[Worker] = set()
        self.identification: Any = None
        self.query_images: list[Path] = []
        self.identify_job: Any = None
        self.rerank_job: Any = None
        self.preview_job: Any = None
        self.previews: dict[tuple[str, str, int], Any] = {}
        self.rerank_count = 0
        self._library_requests = 0
        self.ask = self._ask
        self.setWindowTitle("GMI Desktop — which of my models made this?" + ("  [DEMO: tiny random models]" if demo else ""))
        self._build_widgets()
        self._build_menus()
        self._connect_lane()
        self._restore_state()

    # -- construction ---------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        self.library = LibraryPanel()
        self.builder = BuilderBar()
        self.builder.set_device(f"device: {self.backend.settings.device}")
        self.query = QueryPanel()
        self.prompt = PromptBar(METHODS)
        self.prompt.set_method(self.backend.settings.method)
        self.results = ResultsView()
        self.preview = PreviewStrip()
        self.status_line = QLabel("")
        self.status_line.setWordWrap(True)
        self.statusBar().addWidget(self.status_line, 1)
        right = QSplitter(Qt.Vertical)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.query)
        top_layout.addWidget(self.prompt)
        right.addWidget(top)
        right.addWidget(self.results)
        right.addWidget(self.preview)
        right.setStretchFactor(1, 1)
        self.splitter = QSplitter(Qt.Horizontal)
        self.splitter.addWidget(self.library)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(1, 2)
        self.right_splitter = right
        central = QWidget()
        layout = QVBoxLayout(central)
        if self.demo:
            banner = QLabel("<b>Demo library</b>: tiny random models made on this computer, no downloads. "
                            "They show the whole flow; their rankings say nothing about real models.")
            banner.setWordWrap(True)
            banner.setObjectName("demoBanner")
            layout.addWidget(banner)
        layout.addWidget(self.builder)
        layout.addWidget(self.splitter, 1)
        self.setCentralWidget(central)
        self.query.items_given.connect(self.take_items)
        self.prompt.prompt_edited.connect(self.edit_prompt)
        self.prompt.reset_requested.connect(lambda: self.edit_prompt(""))
        self.prompt.method_changed.connect(self.change_method)
        self.builder.start_requested.connect(self.start_build)
        self.builder.pause_requested.connect(lambda: self.lane.pause_build())  # self.lane is replaced
        self.builder.resume_requested.connect(lambda: self.lane.resume_build())  # when settings change
        self.builder.cancel_requested.connect(lambda: self.lane.cancel_build())
        self.preview.generate_requested.connect(self.generate_previews)
        self.preview.cancel_requested.connect(self.cancel_previews)
        self.preview.seed.valueChanged.connect(lambda _v: self._previews_outdated())
        self.results.preview_requested.connect(lambda model: self.generate_previews([model]))
        QWidget.setTabOrder(self.query, self.prompt.edit)
        QWidget.setTabOrder(self.prompt.edit, self.results.table)

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.open_action = QAction("&Open images…", self, shortcut=QKeySequence.Open, triggered=self.query.open_dialog)
        self.add_folder_action = QAction("&Add library folder…", self, triggered=self.add_library_folder)
        self.rescan_action = QAction("&Rescan library", self, shortcut=QKeySequence("F5"), triggered=self.rescan)
        self.settings_action = QAction("&Settings…", self, shortcut=QKeySequence.Preferences, triggered=self.open_settings)
        quit_action = QAction("&Quit", self, shortcut=QKeySequence.Quit, triggered=self.close)
        for action in (self.open_action, self.add_folder_action, self.rescan_action, self.settings_action, quit_action):
            file_menu.addAction(action)
        edit_menu = self.menuBar().addMenu("&Edit")
        # Ctrl+V anywhere but in a text field (which keeps its own paste) pastes a query image.
        self.paste_action = QAction("&Paste image", self, shortcut=QKeySequence.Paste, triggered=self.query.paste)
        edit_menu.addAction(self.paste_action)

    def _connect_lane(self) -> None:
        self.lane.build_progress.connect(self._build_progress)
        self.lane.build_state.connect(self._build_state)
        self.lane.build_returned.connect(self._build_returned)
        self.lane.build_errored.connect(lambda exc: self.builder.set_state("failed", error_text(exc)))

    def _restore_state(self) -> None:
        geometry = self.state.value("geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 820)
        defaults = {"splitter": [440, 840], "right_splitter": [230, 360, 200]}
        for name, sizes in defaults.items():
            value = self.state.value(name)
            if isinstance(value, QByteArray) and getattr(self, name).restoreState(value):
                continue
            getattr(self, name).setSizes(sizes)

    def _save_state(self) -> None:
        self.state.setValue("geometry", self.saveGeometry())
        self.state.setValue("splitter", self.splitter.saveState())
        self.state.setValue("right_splitter", self.right_splitter.saveState())
        self.state.sync()

    # -- helpers --------------------------------------------------------------------------------
    def _ask(self, title: str, text: str) -> bool:
        return QMessageBox.question(self, title, text) == QMessageBox.Yes

    def say(self, text: str) -> None:
        self.status_line.setText(text)

    def run_worker(self, job, *args, name: str = "", on_returned=None, on_progress=None, on_error=None, **kwargs) -> Worker:
        """Run a cheap job (no models) on a worker thread; errors show in the status line."""
        worker = Worker(job, *args, name=name, **kwargs)
        self.workers.add(worker)
        if on_progress is not None:
            worker.progress.connect(on_progress)
        if on_returned is not None:
            worker.returned.connect(on_returned)
        worker.errored.connect(on_error or (lambda exc: self.say(error_text(exc))))
        worker.finished.connect(lambda: self.workers.discard(worker))
        return worker.start()

    # -- library --------------------------------------------------------------------------------
    def start(self) -> None:
        """Called once the window shows: read the catalog, resume an interrupted build."""
        self.reload_library()
        if self.state.value("build_interrupted", False, type=bool):
            self.state.setValue("build_interrupted", False)
            self.say("Resuming the specification build that was running when the app closed.")
            self.start_build()

    def reload_library(self) -> None:
        self._library_requests += 1
        request = self._library_requests
        self.run_worker(self.backend.load_library, name="library",
                        on_returned=lambda snapshot: self._library_loaded(snapshot, request))

    def _library_loaded(self, snapshot: Any, request: int = 0) -> None:
        if request != self._library_requests:
            return  # a newer read is on its way
        self.library.set_rows(make_rows(snapshot), snapshot.spec_error)
        self.library_loaded.emit()
        first = not snapshot.folders and not self.backend.settings.library_folders
        if first and not self.demo and not self.state.value("first_run_done", False, type=bool):
            self.show_first_run()

    # -- model weights --------------------------------------------------------------------------
    def ensure_weights(self, then) -> None:
        """Call ``then`` once the CLIP/BLIP weights are here. Missing weights that can be downloaded
        open the download dialog first; cancelling it skips ``then`` (metadata matches stay shown).
        Weights that cannot be downloaded go straight on: identification says what is missing."""
        def checked(needs: list[Any]) -> None:
            if any(n.downloadable for n in needs):
                self.show_weights_dialog(needs, then)
            else:
                then()

        self.run_worker(self.backend.missing_weights, name="weights-check", on_returned=checked,
                        on_error=lambda exc: (self.say(error_text(exc)), then()))

    def show_weights_dialog(self, needs: list[Any], then=None) -> None:
        from gmi_desktop.gui.weights_dialog import WeightsDialog

        dialog = WeightsDialog(self.backend, needs, self)

        def closed(_result: int) -> None:
            if dialog.outcome == "downloaded":
                self.say("Model weights downloaded.")
                if then is not None:
                    then()
            else:
                self.say("Model weights not downloaded: only metadata matches can be shown. Drop the image "
                         "again to download them, or point Settings → Clip weights / Blip weights at local copies.")

        dialog.finished.connect(closed)
        self.weights_dialog = dialog
        dialog.open()

    # -- first run and the demo -----------------------------------------------------------------
    def show_first_run(self) -> None:
        from gmi_desktop.gui.first_run import FirstRunDialog

        self.first_run = FirstRunDialog(self.backend.settings, self)
        self.first_run.finished.connect(self._first_run_done)
        self.first_run.open()

    def _first_run_done(self, _result: int) -> None:
        choice = self.first_run.choice
        self.state.setValue("first_run_done", choice != "later")
        if choice == "folders" and self.first_run.folders():
            self.add_folders(self.first_run.folders())
            self.ensure_weights(lambda: None)
        elif choice == "demo":
            self.start_demo()

    def start_demo(self, folder: Path | None = None) -> None:
        """Make the demo library (the zoo), then point the whole app at it: scan, then build."""
        folder = folder or paths.cache_dir() / "demo-library"
        self.say("Making the demo library of tiny random models…")
        self.run_worker(self.backend.make_demo, folder, name="demo",
                        on_progress=lambda e: self.say(f"Demo library: {describe(e)}"), on_returned=self._demo_ready)

    def _demo_ready(self, zoo: Any) -> None:
        import os

        from gmi_desktop.store.settings import load_settings

        os.environ.update(zoo.environment())  # the demo's own catalog, specs, settings and configs
        self.demo = True
        self.setWindowTitle(self.windowTitle().split("  [")[0] + "  [DEMO: tiny random models]")
        self.builder.line.setText("Demo library: tiny random models (no downloads)")
        self.apply_settings(load_settings())
        self.run_worker(self.backend.scan, name="scan", on_returned=self._demo_scanned)

    def _demo_scanned(self, summary: Any) -> None:
        self._scanned(summary)
        self.start_build()

    def rescan(self) -> None:
        self.say("Scanning the library…")
        self.run_worker(self.backend.scan, name="scan", on_progress=lambda e: self.say(f"Scanning: {describe(e)}"),
                        on_returned=self._scanned)

    def _scanned(self, summary: Any) -> None:
        problems = len(getattr(summary, "problems", []) or [])
        self.say(f"Scan done: {getattr(summary, 'seen', 0)} model files" + (f", {problems} problems" if problems else ""))
        self.reload_library()

    def add_library_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a library folder")
        if folder:
            self.add_folders([folder])

    def add_folders(self, folders: list[str]) -> None:
        self.run_worker(self.backend.add_folders, folders, name="folders", on_returned=lambda _added: self.rescan())

    # -- spec building --------------------------------------------------------------------------
    def start_build(self) -> None:
        self.lane.start_build(self.backend.build)

    def _build_progress(self, event: Progress) -> None:
        self.builder.show_progress(event)
        if event.data is not None and hasattr(event.data, "state"):
            self.library.model.update_spec(event.data)

    def _build_state(self, state: str) -> None:
        self.builder.set_state(state)

    def _build_returned(self, summary: Any) -> None:
        rate = getattr(summary, "images_per_second", 0.0)
        self.builder.set_state("done", f"{getattr(summary, 'images', 0)} images at {rate:.2f} images/s")
        self.reload_library()

    # -- query ----------------------------------------------------------------------------------
    def take_items(self, items: list[str]) -> None:
        """Dropped, pasted or opened items: check them, then identify the usable images."""
        checked = check_drop(items)
        self.query.show_message(checked.message())
        if not checked.images:
            return
        self.identify(checked.images)

    def identify(self, images: list[Path], prompt: str | None = None) -> None:
        self.query_images = list(images)
        self.query.show_images(self.query_images)
        self.preview.clear(self.query_images[0])
        self.previews.clear()
        self.identification = None
        if self.identify_job is not None:
            self.identify_job.cancel()
        self.run_worker(self.backend.metadata, self.query_images, name="metadata", on_returned=self._metadata_read,
                        on_error=lambda exc: self.query.show_message(error_text(exc)))
        self.say("Identifying…")
        self.ensure_weights(lambda: self._submit_identify(prompt))

    def _submit_identify(self, prompt: str | None) -> None:
        self.identify_job = self.lane.submit(
            lambda host, cancel: self.backend.identify(host, cancel, self.query_images, prompt, self.prompt.method.currentData()),
            "identify", progress=lambda e: self.say(describe(e)), returned=self._identified,
            errored=lambda exc: self.query.show_message(error_text(exc)),
            cancelled=lambda: None)

    def _metadata_read(self, identification: Any) -> None:
        self.query.show_metadata(identification)
        if self.identification is None:  # the full answer may already be there
            self.results.show_identification(identification, self.backend.settings.top_k)
            if identification.pseudo_prompt:
                self.prompt.show_prompt(identification.pseudo_prompt, identification.prompt_source)

    def _identified(self, identification: Any) -> None:
        self.identification = identification
        self.query.show_metadata(identification)
        self.results.show_identification(identification, self.backend.settings.top_k)
        self.prompt.show_prompt(identification.pseudo_prompt, identification.prompt_source)
        self.prompt.set_method(identification.method)
        self.say(f"Ranked {len(identification.ranking)} models with {identification.method}.")
        self.identified.emit(identification)

    def edit_prompt(self, text: str) -> None:
        """Re-rank with ``text`` ('' = back to the generated or embedded prompt); only the latest
        edit runs, earlier ones still queued are dropped."""
        if self.identification is None:
            return
        if self.rerank_job is not None:
            self.rerank_job.cancel()
        base = self.identification
        method = self.prompt.method.currentData()
        self.rerank_job = self.lane.submit(
            lambda host, cancel: self.backend.rerank(host, cancel, base, text, method), "rerank",
            returned=self._reranked, errored=lambda exc: self.say(error_text(exc)))
        self._previews_outdated()

    def change_method(self, _method: str) -> None:
        if self.identification is not None:
            self.edit_prompt(self.prompt.edit.text() if self.identification.prompt_source == "user" else "")

    def _reranked(self, identification: Any) -> None:
        self.rerank_count += 1
        self.identification = identification
        self.results.show_identification(identification, self.backend.settings.top_k)
        self.prompt.show_prompt(identification.pseudo_prompt, identification.prompt_source)
        self.reranked.emit(identification)

    # -- previews -------------------------------------------------------------------------------
    def _previews_outdated(self) -> None:
        if self.preview_job is not None:
            self.preview_job.cancel()
        if self.query_images:
            self.preview.clear(self.query_images[0])
        self.preview.set_busy(False)

    def generate_previews(self, models: list[Any] | None = None) -> None:
        if self.identification is None:
            self.say("Drop an image first: previews use its prompt.")
            return
        models = [m for m in (models or self.results.models[:PREVIEW_MODELS]) if m.path]
        prompt = self.identification.pseudo_prompt or self.prompt.edit.text()
        seed = self.preview.seed.value()
        if self.preview_job is not None:
            self.preview_job.cancel()
        self.preview.set_busy(True, f"generating {len(models)} previews (seed {seed})…")
        self.preview_job = self.lane.submit(
            lambda host, cancel: self.backend.previews(host, cancel, models, prompt, seed), "previews",
            progress=self._preview_progress, returned=lambda _r: self.preview.set_busy(False, f"seed {seed}"),
            errored=lambda exc: self.preview.set_busy(False, error_text(exc)),
            cancelled=lambda: self.preview.set_busy(False, "cancelled"))

    def _preview_progress(self, event: Progress) -> None:
        item = event.data
        if item is None or not hasattr(item, "image"):
            return
        key = (item.sha256 or item.name, item.prompt, item.seed)
        if key not in self.previews:
            self.previews[key] = item
            self.preview.add_preview(key[0], item.image, f"{item.name}\nseed {item.seed}")

    def cancel_previews(self) -> None:
        if self.preview_job is not None:
            self.preview_job.cancel()

    # -- settings -------------------------------------------------------------------------------
    def open_settings(self) -> None:
        from gmi_desktop.gui.settings_dialog import SettingsDialog

        built = sum(row.state in {"coarse", "ready"} for row in self.library.model.rows)
        dialog = SettingsDialog(self.backend.settings, self, built_specs=built)
        dialog.settings_saved.connect(self.apply_settings)
        dialog.open()
        self.settings_dialog = dialog

    def apply_settings(self, settings: Any) -> None:
        """New settings: a new model host on next use (the build is stopped; it resumes on start)."""
        self.lane.stop()
        self.backend.replace_settings(settings)
        self.lane = GpuLane(self.backend.open_host)
        self._connect_lane()
        self.builder.set_state("idle")
        self.builder.set_device(f"device: {settings.device}")
        self.reload_library()

    # -- closing --------------------------------------------------------------------------------
    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        building = self.lane.build_active and self.lane.state in {"running", "waiting", "paused"}
        if building and not self.ask(
                "Quit while building?",
                "Specifications are being built. Quit anyway? What is built so far is kept, and the "
                "build resumes the next time you start GMI Desktop."):
            event.ignore()
            return
        self.state.setValue("build_interrupted", bool(building))
        self._save_state()
        self.shutdown()
        event.accept()

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop every job and join every thread (the window is closing, or a test ends)."""
        self.lane.stop(timeout)
        dialog = getattr(self, "weights_dialog", None)
        if dialog is not None:
            dialog.stop(timeout)
        for worker in list(self.workers):
            worker.stop(timeout)
