"""Preview generations: a few images per chosen model from the current prompt, to judge by eye.

``generate_previews(host, settings, models, prompt, seed)`` is a generator of
:class:`~gmi_desktop.core.progress.Progress` events; each finished image comes out as the event's
``data`` (a :class:`Preview`) so a face can show it at once, and the list of previews is returned.
It runs on the one GPU lane, through the model host (the pipeline loaded for the spec build is
reused when it is the same checkpoint). A model whose file cannot be generated from is skipped
with its reason in the event's message; the others go on.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gmi_desktop.core.errors import Cancelled, GMIError
from gmi_desktop.core.progress import CancelFn, Progress, check_cancel
from gmi_desktop.store.catalog import Catalog


@dataclass(frozen=True)
class Preview:
    sha256: str | None
    name: str
    path: Path
    prompt: str
    seed: int
    image: Any  # PIL image


@dataclass(frozen=True)
class PreviewFailure:
    name: str
    reason: str


def generate_previews(host: Any, settings: Any, models: Sequence[Any], prompt: str, seed: int, *,
                      cancel: CancelFn | None = None) -> Generator[Progress, None, list[Preview]]:
    """One image per model (``models``: anything with ``sha256``, ``name``, ``path``, ``family``,
    e.g. identification's ``RankedModel``) for ``prompt`` and ``seed``."""
    from gmi_desktop.engine.generation import GenerationOptions

    out: list[Preview] = []
    targets = [m for m in models if getattr(m, "path", None)]
    with Catalog() as catalog:
        variants = {m.path: (catalog.get(m.path).variant if catalog.get(m.path) else None) or "normal" for m in targets}
    options = GenerationOptions.from_settings(settings)
    for index, model in enumerate(targets):
        check_cancel(cancel, "previews cancelled")
        yield Progress("generating", index, len(targets), item=model.name, message=f"preview of {model.name}")
        try:
            pipe = host.pipeline(model.path, model.family or "sd1", variants[model.path], options=options)
            image = pipe.generate([prompt], [int(seed)], cancel=cancel)[0]
        except Cancelled:
            raise
        except GMIError as exc:
            yield Progress("generating", index + 1, len(targets), item=model.name,
                           message=f"no preview of {model.name}: {exc}", data=PreviewFailure(model.name, str(exc)))
            continue
        preview = Preview(model.sha256, model.name, Path(model.path), prompt, int(seed), image)
        out.append(preview)
        yield Progress("generating", index + 1, len(targets), item=model.name, data=preview,
                       message=f"preview of {model.name} (seed {seed})")
    return out
