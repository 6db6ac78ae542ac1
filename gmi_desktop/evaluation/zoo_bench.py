"""``bench --zoo``: the whole product path on the model zoo (services/zoo.py), both parts apart.

Stages, each timed:

1. *scan*: :class:`~gmi_desktop.services.library.Library` catalogues and hashes the zoo's checkpoints;
2. *specifications*: :class:`~gmi_desktop.services.specs.SpecBuilder` builds one per checkpoint from
   the zoo's prompt set (``resources/prompts/default.txt`` of the zoo's resources folder);
3. *test images*: every evaluation prompt (disjoint from the specification prompts) with every seed
   (0-9: the paper's protocol) from every model, saved as PNG files without metadata;
4. *identify*: :class:`~gmi_desktop.services.identify.Identifier` on each file: CLIP image features,
   the interrogator's pseudo-prompt, a ranking; then ``rerank`` with each method, once with the
   pseudo-prompt and once with the true prompt (no image re-encoding, no second interrogation);
5. the score of every model under every method gives top-k accuracy and average rank per part
   (:func:`~gmi_desktop.evaluation.metrics.evaluate_scores`), each part over its own models.

It proves the pipeline carries the signal end to end (real checkpoints, scan, loader, generation,
CLIP, interrogator, specification files, index). It says nothing about accuracy on real models.
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gmi_desktop.core.progress import CancelFn, Progress, check_cancel
from gmi_desktop.core.scores import DEFAULT_WEIGHTING
from gmi_desktop.evaluation.benchmark import BenchmarkReport, markdown_table
from gmi_desktop.evaluation.metrics import evaluate_scores
from gmi_desktop.services.zoo import Zoo, ZooError

# identification service method -> benchmark method name (the proposal runs its default weighting)
METHODS = {"download": "download", "rkme_basic": "rkme-basic", "rkme_clip": "rkme-clip",
           "rkme_concat": "rkme-concat", "proposal": f"proposal:{DEFAULT_WEIGHTING}"}
PROMPTS = ("true prompts", "pseudo-prompts")


@dataclass(frozen=True)
class TestImage:
    path: Path
    model: str  # the checkpoint's SHA-256
    part: str  # the report it counts in, e.g. "Part 2"
    prompt: str  # the true prompt ("" when unknown)


@dataclass
class ZooBenchResult:
    reports: dict[str, BenchmarkReport]  # "Part 1, true prompts", ...
    seconds: dict[str, float]  # time per stage
    examples: list[tuple[str, str]] = field(default_factory=list)  # (true prompt, pseudo-prompt)

    def to_json(self) -> str:
        return json.dumps({"reports": {k: r.to_dict() for k, r in self.reports.items()}, "seconds": self.seconds,
                           "examples": self.examples}, indent=2) + "\n"

    def markdown(self) -> str:
        out = [markdown_table(report, title=title) for title, report in self.reports.items()]
        out.append("### Time per stage\n\n| Stage | Seconds |\n|---|---:|")
        out += [f"| {stage} | {secs:.1f} |" for stage, secs in self.seconds.items()]
        if self.examples:
            out.append("\n### Pseudo-prompts of some test images\n")
            out += [f"- `{true}` -> `{pseudo}`" for true, pseudo in self.examples]
        return "\n".join(out) + "\n"


def scan_zoo(zoo: Zoo, catalog: Any, cancel: CancelFn | None = None) -> Generator[Progress, None, dict[str, Any]]:
    """Catalogue the zoo's models with the library scan; returns ``{zoo model name: FileRecord}``."""
    from gmi_desktop.services.library import Library

    library = Library(catalog, workers=0)
    library.add_folder(zoo.models_dir)
    for event in _events(library.scan(cancel=cancel)):
        yield event
    by_path = {Path(r.path).resolve(): r for r in catalog.files("ok")}
    found = {m.name: by_path.get(zoo.path(m).resolve()) for m in zoo.models}
    missing = [name for name, rec in found.items() if rec is None or not rec.sha256]
    if missing:
        raise ZooError(zoo.models_dir, f"the library scan did not catalogue {', '.join(missing)} as usable checkpoints")
    return found


def _events(job: Generator[Any, None, Any]) -> Generator[Progress, None, Any]:
    """The scan's events as Progress (already Progress events pass through)."""
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        if isinstance(event, Progress):
            yield event
        else:
            path = getattr(event, "path", None)
            yield Progress("scan", event.done, event.total, item=path.name if path else "",
                           message=f"{event.phase} {event.done}/{event.total}")


def make_test_images(host: Any, zoo: Zoo, records: dict[str, Any], seeds: Sequence[int], folder: Path,
                     cancel: CancelFn | None = None) -> Generator[Progress, None, list[TestImage]]:
    """Every evaluation prompt with every seed from every model, as PNG files (no metadata, so
    identification has to interrogate them) with their prompt beside them (``<image>.txt``): the
    layout ``bench --images`` reads."""
    images = []
    pairs = [(i, p, s) for i, p in enumerate(zoo.evaluation_prompts) for s in seeds]
    for done, model in enumerate(zoo.models):
        check_cancel(cancel)
        yield Progress("generating", done, len(zoo.models), item=model.name, message=f"test images of {model.name}")
        record = records[model.name]
        pipe = host.pipeline(record.path, record.family, record.variant)
        drawn = pipe.generate([p for _, p, _ in pairs], [s for _, _, s in pairs])
        (folder / model.name).mkdir(parents=True, exist_ok=True)
        for (i, prompt, seed), image in zip(pairs, drawn):
            path = folder / model.name / f"prompt{i:02d}-seed{seed}.png"
            image.save(path)
            path.with_suffix(".txt").write_text(prompt + "\n", encoding="utf-8")  # as bench --images reads it
            images.append(TestImage(path, record.sha256, f"Part {model.part}", prompt))
    host.unload("pipeline")
    return images


def identify_all(identifier: Any, images: Sequence[TestImage], cancel: CancelFn | None = None
                 ) -> Generator[Progress, None, tuple[dict[tuple[str, str], list[dict[str, float]]], list[str]]]:
    """Scores of every model for every image, per (prompt source, method), and the pseudo-prompts.
    The images must carry no generation metadata (identification then interrogates them); images
    without a true prompt get no "true prompts" scores."""
    from gmi_desktop.core.progress import run

    scores: dict[tuple[str, str], list[dict[str, float]]] = {(s, m): [] for s in PROMPTS for m in METHODS}
    pseudo = []
    for i, image in enumerate(images):
        check_cancel(cancel)
        if i % 8 == 0:
            yield Progress("identifying", i, len(images), item=image.path.name, message=f"image {i + 1}/{len(images)}")
        found = run(identifier.identify([image.path], cancel=cancel))
        if found.prompt_source != "interrogator":
            raise ZooError(image.path, f"identification did not interrogate the image ({found.missing or found.notes})")
        pseudo.append(found.pseudo_prompt)
        for source, text in zip(PROMPTS, (image.prompt, "")):
            if source == PROMPTS[0] and not image.prompt:
                continue
            for method in METHODS:
                ranked = identifier.rerank(found, text, method)
                if ranked.method != method:
                    raise ZooError(image.path, f"{method} fell back to {ranked.method}: {ranked.notes}")
                scores[(source, method)].append({r.sha256: r.score for r in ranked.ranking})
    return scores, pseudo


def reports_for(parts: dict[str, list[str]], images: Sequence[TestImage], scores, gamma: float
                ) -> dict[str, BenchmarkReport]:
    """One report per part (``{title: model SHA-256s}``; ``TestImage.part`` names the part) and prompt
    source, each over the part's own models."""
    reports = {}
    for title, shas in parts.items():
        for source in PROMPTS:
            done = [i for i, im in enumerate(images) if source != PROMPTS[0] or im.prompt]
            position = {i: k for k, i in enumerate(done)}
            rows = [i for i in done if images[i].part == title]
            if not rows:
                continue
            true = np.array([shas.index(images[i].model) for i in rows], dtype=np.int64)
            results = []
            for method, name in METHODS.items():
                table = scores[(source, method)]
                matrix = np.array([[table[position[i]][sha] for sha in shas] for i in rows])
                results.append(evaluate_scores(matrix, true, method=name, model_ids=shas,
                                               gamma=None if method == "download" else gamma))
            reports[f"{title}, {source}"] = BenchmarkReport(tuple(shas), len(rows), 1, gamma, results)
    return reports


def run_zoo_bench(zoo: Zoo, settings: Any, host: Any, catalog: Any, store: Path, *, seeds: Sequence[int] = range(10),
                  cancel: CancelFn | None = None) -> Generator[Progress, None, ZooBenchResult]:
    """The whole path on ``zoo`` (module docstring). ``settings``/``host`` are the zoo's (run inside
    :func:`~gmi_desktop.services.zoo.activated`); specifications go to ``store``, test images to
    ``zoo.test_images_dir``."""
    from gmi_desktop.core.kernels import DEFAULT_GAMMA
    from gmi_desktop.services.identify import Identifier
    from gmi_desktop.services.specs import SpecBuilder

    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = now - clock
        clock = now

    records = yield from scan_zoo(zoo, catalog, cancel)
    lap("scan (probe + hash)")
    summary = yield from SpecBuilder(settings, host, catalog, store).build(cancel=cancel)
    failed = [s for s in SpecBuilder(settings, host, catalog, store).statuses().values() if s.state != "ready"]
    if failed:
        raise ZooError(store, f"specification of {failed[0].name} is {failed[0].state}: {failed[0].reason}")
    lap(f"specifications ({summary.images_per_second:.1f} images/s)" if summary.images_per_second else "specifications")
    images = yield from make_test_images(host, zoo, records, seeds, zoo.test_images_dir, cancel)
    lap("test images (generate)")
    identifier = Identifier(settings, host, catalog, store)
    scores, pseudo = yield from identify_all(identifier, images, cancel)
    lap("identify (encode + interrogate + rerank)")
    gamma = float(getattr(settings, "gamma", 0.0) or DEFAULT_GAMMA)
    parts: dict[str, list[str]] = {}
    for model in zoo.models:
        parts.setdefault(f"Part {model.part}", []).append(records[model.name].sha256)
    reports = reports_for(parts, images, scores, gamma)
    per_model = len(images) // len(zoo.models)
    examples = [(images[i].prompt, pseudo[i]) for i in (m * per_model + m * len(seeds) for m in range(len(zoo.models)))
                if i < len(images)][:6]
    return ZooBenchResult(reports, seconds, examples)
