"""The GUI's seam onto the services: every use case as a job the worker or the GPU lane can drive.

No Qt here and no decisions: each method opens what its thread needs (a catalog connection is
per thread) and hands back a service generator, or a short generator around a plain service call so
that one worker shape drives them all. Services are imported inside the methods, on the thread that
runs the job: importing this module costs nothing, and torch loads on the GPU lane only.

``probe_fn`` reaches the library scan (tests of tiny models of widths no published family has wrap
the real probe, as the spec-build tests do).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gmi_desktop.core.progress import CancelFn, Progress, check_cancel
from gmi_desktop.store import paths
from gmi_desktop.store.settings import Settings


@dataclass(frozen=True)
class LibrarySnapshot:
    """What the library panel shows: catalog rows, spec states and copies, read on a worker."""

    records: list[Any]  # store.catalog.FileRecord
    spec_states: dict[str, Any]  # sha256 (or path) -> services.specs.ModelSpecStatus
    copies: dict[str, list[Any]]  # sha256 -> the records holding that content (2 or more)
    folders: list[Path] = field(default_factory=list)
    spec_error: str = ""  # why spec states are unknown (the builder not available yet)


class Backend:
    """Jobs over the services for one set of settings and data locations."""

    def __init__(self, settings: Settings, *, store_dir: Path | None = None,
                 probe_fn: Callable[[Path], Any] | None = None, scan_workers: int | None = None,
                 demo_options: dict[str, Any] | None = None):
        self.settings = settings
        self.demo_options = dict(demo_options or {})  # make_zoo's keywords (tests: a smaller zoo)
        self.store_dir = store_dir
        self.probe_fn = probe_fn
        self.scan_workers = scan_workers

    def replace_settings(self, settings: Settings) -> None:
        self.settings = settings

    # -- cheap work (worker threads) ------------------------------------------------------------
    def _catalog(self):
        from gmi_desktop.store.catalog import Catalog

        return Catalog(paths.catalog_path())

    def _library(self, catalog):
        from gmi_desktop.services.library import Library

        kwargs: dict[str, Any] = {}
        if self.probe_fn is not None:
            kwargs["probe_fn"] = self.probe_fn
        if self.scan_workers is not None:
            kwargs["workers"] = self.scan_workers
        return Library(catalog, **kwargs)

    def add_folders(self, folders: Sequence[str | os.PathLike[str]], *, cancel: CancelFn | None = None) -> Generator[Progress, None, list[str]]:
        """Add library folders to the catalog; returns the folders added."""
        added = []
        with self._catalog() as catalog:
            library = self._library(catalog)
            for folder in folders:
                check_cancel(cancel)
                added.append(os.fspath(library.add_folder(folder).path))
                yield Progress("adding", len(added), len(folders), item=os.fspath(folder))
        return added

    def scan(self, *, cancel: CancelFn | None = None) -> Generator[Any, None, Any]:
        """Scan every library folder (the settings' folders are added first)."""
        with self._catalog() as catalog:
            library = self._library(catalog)
            for folder in self.settings.library_folders:
                if Path(folder).is_dir():
                    library.add_folder(folder)
            return (yield from library.scan(cancel=cancel))

    def load_library(self, *, cancel: CancelFn | None = None) -> Generator[Progress, None, LibrarySnapshot]:
        """Read the catalog and the specification states (no torch)."""
        yield Progress("reading", message="reading the library")
        with self._catalog() as catalog:
            records = [r for r in catalog.files() if r.status != "missing"]
            groups = catalog.duplicates()
            folders = [root.path for root in catalog.roots()]
        check_cancel(cancel)
        copies = {g[0].sha256: g for g in groups if len({r.key[:2] for r in g}) > 1}
        states: dict[str, Any] = {}
        error = ""
        try:
            builder = self._builder(self.open_host(warm=False))  # statuses read files only
        except ImportError as exc:
            error = f"specification builder not available ({exc})"
        else:
            yield Progress("reading", message="reading specification states")
            states = builder.statuses()
        return LibrarySnapshot(records, states, copies, folders, error)

    def metadata(self, images: Sequence[Path], *, cancel: CancelFn | None = None) -> Generator[Progress, None, Any]:
        """The metadata part of identification (no weights, no torch)."""
        yield Progress("reading", 0, len(images), message="reading image metadata")
        return self._identifier(self.open_host(warm=False)).metadata_only(images)

    def missing_weights(self, *, cancel: CancelFn | None = None) -> Generator[Progress, None, list[Any]]:
        """The CLIP/BLIP weights this computer lacks (``services.weights.WeightsNeed``; no network)."""
        from gmi_desktop.services.weights import missing_weights

        yield Progress("checking", message="looking for the CLIP and BLIP weights")
        check_cancel(cancel)
        return missing_weights(self.settings)

    def download_weights(self, needs: Sequence[Any] | None = None, *,
                         cancel: CancelFn | None = None) -> Generator[Progress, None, list[Any]]:
        """Download the missing weights (progress in bytes; cancel leaves nothing half-written)."""
        from gmi_desktop.services.weights import download_weights

        return (yield from download_weights(self.settings, cancel, None if needs is None else list(needs)))

    # -- the GPU lane ---------------------------------------------------------------------------
    def open_host(self, warm: bool = True) -> Any:
        """The model host (``warm``: with the model libraries imported; the lane's host)."""
        from gmi_desktop.services.host import open_host

        return open_host(self.settings, warm=warm)

    def _builder(self, host: Any):
        from gmi_desktop.services.specs import SpecBuilder

        return SpecBuilder(self.settings, host, store_dir=self.store_dir)

    def _identifier(self, host: Any):
        from gmi_desktop.services.identify import Identifier

        return Identifier(self.settings, host, store_dir=self.store_dir)

    def build(self, host: Any, cancel: CancelFn, first: Sequence[str] = ()) -> Generator[Progress, None, Any]:
        builder = self._builder(host)
        if first:
            return (yield from builder.build(first=first, cancel=cancel))
        return (yield from builder.build(cancel=cancel))

    def identify(self, host: Any, cancel: CancelFn, images: Sequence[Path], prompt: str | None,
                 method: str | None) -> Generator[Progress, None, Any]:
        return (yield from self._identifier(host).identify(images, prompt or None, method, cancel=cancel))

    def rerank(self, host: Any, cancel: CancelFn, identification: Any, prompt: str,
               method: str | None) -> Generator[Progress, None, Any]:
        yield Progress("ranking", message="re-ranking")
        check_cancel(cancel)
        return self._identifier(host).rerank(identification, prompt, method)

    def previews(self, host: Any, cancel: CancelFn, models: Sequence[Any], prompt: str,
                 seed: int) -> Generator[Progress, None, Any]:
        from gmi_desktop.services.previews import generate_previews

        return (yield from generate_previews(host, self.settings, models, prompt, seed, cancel=cancel))

    def make_demo(self, folder: Path, *, cancel: CancelFn | None = None) -> Generator[Progress, None, Any]:
        """Build the demo library (the zoo of tiny random checkpoints) in ``folder``."""
        from gmi_desktop.services.zoo import make_zoo

        return (yield from make_zoo(folder, cancel=cancel, **self.demo_options))
