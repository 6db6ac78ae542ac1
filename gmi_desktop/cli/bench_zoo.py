"""``gmi-desktop bench --zoo DIR``: make the model zoo if needed, run the whole path on it, print
the tables of both parts (docs/zoo-benchmark.md); progress on stderr."""

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


def run_zoo(args, seeds: list[int], output_folder: Callable[[Path], Path], say: Callable[[str], None]) -> int:
    from gmi_desktop.core.progress import run
    from gmi_desktop.engine.host import ModelHost
    from gmi_desktop.services.zoo import activated, make_zoo
    from gmi_desktop.services.zoo_bench import run_zoo_bench
    from gmi_desktop.store.atomic import atomic_write_bytes
    from gmi_desktop.store.catalog import Catalog
    from gmi_desktop.store.settings import Settings

    lines = _Lines(say)
    zoo = run(make_zoo(output_folder(args.zoo), random_models=args.random_models, groups=args.groups), lines)
    out = output_folder(args.out or zoo.folder / "results")
    work = output_folder(zoo.folder / "bench")
    specs = output_folder(work / "specs")
    with activated(zoo):
        host = ModelHost(Settings(**zoo.settings_values()))
        catalog = Catalog(work / "catalog.sqlite")
        try:
            result = run(run_zoo_bench(zoo, host, catalog, specs, seeds=seeds, gamma=args.gamma), lines)
        finally:
            host.close()
            catalog.close()
    text = result.markdown()
    atomic_write_bytes(out / "zoo-benchmark.md", text.encode("utf-8"))
    atomic_write_bytes(out / "zoo-benchmark.json", result.to_json().encode("utf-8"))
    say(f"wrote zoo-benchmark.md and zoo-benchmark.json to {out}")
    print(text, end="")
    return 0
