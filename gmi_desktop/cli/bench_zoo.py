"""``gmi-desktop bench --zoo DIR`` (make the model zoo if needed, run the whole path on it) and
``bench --images DIR`` (the same on your own models' images): tables on stdout and in
``zoo-benchmark.md`` / ``images-benchmark.md`` (docs/zoo-benchmark.md); progress on stderr."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


class _Lines:
    """Progress events as plain lines: a new stage at once, otherwise at most one every 5 s."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self.stage = ""
        self.last = 0.0

    def __call__(self, event) -> None:
        now = time.monotonic()
        if event.stage != self.stage or now - self.last >= 5.0:
            self.stage, self.last = event.stage, now
            self.say(f"{event.stage}: {event.message or event.item}")


def run_zoo(folder: Path, random_models: int, groups: int, seeds: list[int], gamma: float | None, out: Path | None,
            output_folder: Callable[[Path], Path], say: Callable[[str], None]) -> int:
    from gmi_desktop.core.progress import run
    from gmi_desktop.engine.host import ModelHost
    from gmi_desktop.services.zoo import activated, make_zoo
    from gmi_desktop.evaluation.zoo_bench import run_zoo_bench
    from gmi_desktop.store.catalog import Catalog
    from gmi_desktop.store.settings import Settings

    lines = _Lines(say)
    zoo = run(make_zoo(output_folder(folder), random_models=random_models, groups=groups), lines)
    out = output_folder(out or zoo.folder / "results")
    with activated(zoo):  # its profile: afterwards the zoo's own catalog and specifications are built
        settings = Settings(**zoo.settings_values(), **({"gamma": gamma} if gamma else {}))
        host = ModelHost(settings)
        catalog = Catalog(output_folder(zoo.data_dir) / "catalog.sqlite3")
        try:
            result = run(run_zoo_bench(zoo, settings, host, catalog, zoo.data_dir / "specs", seeds=seeds), lines)
        finally:
            host.close()
            catalog.close()
    return _write(result, out, "zoo-benchmark", say)


def _write(result, out: Path, stem: str, say: Callable[[str], None]) -> int:
    from gmi_desktop.store.atomic import atomic_write_bytes

    text = result.markdown()
    atomic_write_bytes(out / f"{stem}.md", text.encode("utf-8"))
    atomic_write_bytes(out / f"{stem}.json", result.to_json().encode("utf-8"))
    say(f"wrote {stem}.md and {stem}.json to {out}")
    print(text, end="")
    return 0


def run_images(folder: Path, gamma: float | None, out: Path | None, output_folder: Callable[[Path], Path],
               say: Callable[[str], None]) -> int:
    import tempfile

    from gmi_desktop.core.progress import run
    from gmi_desktop.engine.host import ModelHost
    from gmi_desktop.evaluation.images_bench import run_images_bench
    from gmi_desktop.store.catalog import Catalog
    from gmi_desktop.store.settings import load_settings

    settings = load_settings(gamma=gamma)
    out = output_folder(out or folder.parent / f"{folder.name}-results")
    lines = _Lines(say)
    with Catalog() as catalog, ModelHost(settings) as host, tempfile.TemporaryDirectory(prefix="gmi-bench-") as work:
        result = run(run_images_bench(folder, settings, host, catalog, Path(work)), lines)
    return _write(result, out, "images-benchmark", say)
