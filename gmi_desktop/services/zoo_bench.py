"""``bench --zoo``: the whole path on the model zoo (services/zoo.py), both parts reported apart.

Stages (each timed): *scan* (``services.library.Library`` catalogues and hashes the zoo's
checkpoints), *specs* (one specification per catalogued checkpoint from the zoo's specification
prompts), *queries* (test images from the disjoint evaluation prompts, seeds 0-9: the paper's
protocol), *identify* (CLIP features of every test image and the interrogator's pseudo-prompt),
*score* (every method over the stored specifications, with the true prompts and with the
pseudo-prompts).

The specification and identification steps run here through the engine (``ModelHost``:
``pipeline`` / ``clip`` / ``interrogator``) in two small functions, :func:`build_specs` and
:func:`identify_queries`; they are where the spec building and identification services plug in.

What it proves: the pipeline carries the signal end to end (real checkpoints, loader, scan,
generation, CLIP, interrogator, spec files, index). It says nothing about accuracy on real models:
the models are random and tiny.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gmi_desktop.core.evaluation import TaskSet
from gmi_desktop.core.progress import CancelFn, Progress, check_cancel
from gmi_desktop.core.scores import downsample_pixels
from gmi_desktop.core.spec import Specification, SpecRecipe, prompt_set_digest
from gmi_desktop.services.benchmark import BenchmarkReport, markdown_table, run_benchmark
from gmi_desktop.services.zoo import Zoo

PIXEL_SIZE = 16  # RKME-Basic's downsampled pixels per side (the images are 64 px)


@dataclass
class Query:
    model: str  # catalogued checkpoint SHA-256 (the model id of its specification)
    part: int
    prompt: str
    seed: int
    image: Any  # PIL image
    features: np.ndarray | None = None
    pixels: np.ndarray | None = None
    pseudo_prompt: str = ""


@dataclass
class ZooBenchResult:
    reports: dict[str, BenchmarkReport]  # "part 1 / true prompts", "part 2 / pseudo-prompts", ...
    seconds: dict[str, float]  # time per stage
    examples: list[tuple[str, str]] = field(default_factory=list)  # (true prompt, pseudo-prompt)

    def to_json(self) -> str:
        import json

        return json.dumps({"reports": {k: r.to_dict() for k, r in self.reports.items()}, "seconds": self.seconds,
                           "examples": self.examples}, indent=2) + "\n"

    def markdown(self) -> str:
        out = []
        for title, report in self.reports.items():
            out.append(markdown_table(report, title=title))
        out.append("### Time per stage\n")
        out.append("| Stage | Seconds |\n|---|---:|")
        out += [f"| {stage} | {secs:.1f} |" for stage, secs in self.seconds.items()]
        if self.examples:
            out.append("\n### Pseudo-prompts (first test images)\n")
            out += [f"- `{true}` -> `{pseudo}`" for true, pseudo in self.examples]
        return "\n".join(out) + "\n"


def _pixels(image: Any) -> np.ndarray:
    return downsample_pixels(np.asarray(image), PIXEL_SIZE)


def scan_zoo(zoo: Zoo, catalog: Any, cancel: CancelFn | None = None) -> Generator[Progress, None, dict[str, Any]]:
    """Catalogue the zoo's models with the library scan; returns ``{zoo model name: FileRecord}``."""
    from gmi_desktop.services.library import Library

    library = Library(catalog, workers=0)
    library.add_folder(zoo.models_dir)
    scan = library.scan(cancel=cancel)
    while True:
        try:
            event = next(scan)
        except StopIteration:
            break
        yield Progress("scan", event.done, event.total, item=event.path.name if event.path else "",
                       message=f"{event.phase} {event.done}/{event.total}")
    by_path = {Path(r.path).resolve(): r for r in catalog.files("ok")}
    found = {m.name: by_path.get(zoo.path(m).resolve()) for m in zoo.models}
    missing = [name for name, rec in found.items() if rec is None or not rec.sha256]
    if missing:
        from gmi_desktop.services.zoo import ZooError

        raise ZooError(zoo.models_dir, f"the library scan did not catalogue {', '.join(missing)} as ready checkpoints")
    return found


def build_specs(host: Any, records: dict[str, Any], prompts: Sequence[str], images_per_prompt: int,
                store_dir: Path, cancel: CancelFn | None = None) -> Generator[Progress, None, list[Specification]]:
    """A_s: generate each model's specification images, encode them, store the specification."""
    from gmi_desktop.engine.generation import plan_images
    from gmi_desktop.store.specfile import save_spec, spec_filename

    clip = host.clip()
    jobs = plan_images(prompts, images_per_prompt, base_seed=host.settings.seed)
    prompt_features = clip.encode_texts([j.prompt for j in jobs])
    specs = []
    for done, (name, record) in enumerate(records.items()):
        check_cancel(cancel)
        yield Progress("generating", done, len(records), item=name, message=f"specification of {name}")
        pipe = host.pipeline(record.path, record.family, record.variant)
        images = pipe.generate([j.prompt for j in jobs], [j.seed for j in jobs])
        spec = Specification(
            model_id=record.sha256, image_features=clip.encode_images(images), prompt_features=prompt_features,
            prompts=tuple(j.prompt for j in jobs),
            recipe=SpecRecipe(record.sha256, clip.encoder_id, prompt_set_digest([j.prompt for j in jobs]),
                              {"scheduler": pipe.options.scheduler, "steps": pipe.options.steps,
                               "resolution": pipe.resolution, "seed": host.settings.seed}),
            display_name=name, pixel_features=np.stack([_pixels(im) for im in images]))
        save_spec(spec, store_dir / spec_filename(spec.model_id, spec.recipe.encoder_id))
        specs.append(spec)
    return specs


def make_queries(host: Any, zoo: Zoo, records: dict[str, Any], seeds: Sequence[int],
                 cancel: CancelFn | None = None) -> Generator[Progress, None, list[Query]]:
    """Test images: every evaluation prompt with every seed, from every model."""
    queries = []
    for done, model in enumerate(zoo.models):
        check_cancel(cancel)
        yield Progress("generating", done, len(zoo.models), item=model.name, message=f"test images of {model.name}")
        record = records[model.name]
        pipe = host.pipeline(record.path, record.family, record.variant)
        pairs = [(p, s) for p in zoo.evaluation_prompts for s in seeds]
        images = pipe.generate([p for p, _ in pairs], [s for _, s in pairs])
        queries += [Query(record.sha256, model.part, p, s, im) for (p, s), im in zip(pairs, images)]
    return queries


def identify_queries(host: Any, queries: list[Query], cancel: CancelFn | None = None) -> Generator[Progress, None, None]:
    """A_r: image features and the interrogator's pseudo-prompt of every test image."""
    clip = host.clip()
    feats = clip.encode_images([q.image for q in queries])
    host.unload("pipeline")
    interrogator = host.interrogator()
    for i, query in enumerate(queries):
        check_cancel(cancel)
        query.features, query.pixels = feats[i], _pixels(query.image)
        query.pseudo_prompt = interrogator.interrogate(query.image)
        if i % 16 == 0 or i == len(queries) - 1:
            yield Progress("interrogating", i + 1, len(queries), message=f"pseudo-prompt {i + 1}/{len(queries)}")


def _tasks(queries: list[Query], specs: list[Specification], prompt_features: np.ndarray) -> TaskSet:
    index = {s.model_id: i for i, s in enumerate(specs)}
    return TaskSet(image_features=np.stack([q.features for q in queries]), prompt_features=prompt_features,
                   true_model=np.array([index[q.model] for q in queries], dtype=np.int64),
                   pixel_features=np.stack([q.pixels for q in queries]))


def run_zoo_bench(zoo: Zoo, host: Any, catalog: Any, store_dir: Path, *, seeds: Sequence[int] = range(10),
                  images_per_prompt: int = 2, gamma: float | None = None,
                  cancel: CancelFn | None = None) -> Generator[Progress, None, ZooBenchResult]:
    """The whole path on ``zoo`` (module docstring); ``host`` is a ModelHost on the zoo's settings."""
    from gmi_desktop.core.kernels import DEFAULT_GAMMA

    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = now - clock
        clock = now

    records = yield from scan_zoo(zoo, catalog, cancel)
    lap("scan (probe + hash)")
    specs = yield from build_specs(host, records, zoo.spec_prompts, images_per_prompt, store_dir, cancel)
    lap("specifications (generate + encode + store)")
    queries = yield from make_queries(host, zoo, records, seeds, cancel)
    lap("test images (generate)")
    yield from identify_queries(host, queries, cancel)
    lap("identify (encode + interrogate)")
    clip = host.clip()
    true_q = clip.encode_texts([q.prompt for q in queries])
    pseudo_q = clip.encode_texts([q.pseudo_prompt for q in queries])
    reports = {}
    for part in (1, 2):
        rows = [i for i, q in enumerate(queries) if q.part == part]
        part_specs = [s for s in specs if any(queries[i].model == s.model_id for i in rows)]
        if not rows:
            continue
        for label, feats in (("true prompts", true_q), ("pseudo-prompts", pseudo_q)):
            yield Progress("scoring", 0, 0, item=f"part {part}", message=f"scoring part {part} with {label}")
            tasks = _tasks([queries[i] for i in rows], part_specs, feats[rows])
            reports[f"Part {part}, {label}"] = run_benchmark(
                part_specs, tasks, gamma=DEFAULT_GAMMA if gamma is None else gamma, sweep_methods=[])
    lap("score (all methods)")
    examples = [(q.prompt, q.pseudo_prompt) for q in queries[:: max(1, len(queries) // 4)]][:4]
    return ZooBenchResult(reports, seconds, examples)
