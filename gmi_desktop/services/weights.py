"""Which CLIP/BLIP weights are missing, and downloading them as a cancellable job.

:func:`missing_weights` says what identification still needs (without touching the network):
each :class:`WeightsNeed` names the weights, their approximate size, whether they can be
downloaded now, and the setting that points at a local copy instead. :func:`download_weights` is
the job the faces drive (``core/progress.py``): it yields ``Progress`` events with bytes while
``engine/download.py`` fetches the files into the Hugging Face cache, and honours ``cancel``
within one network read. A cancelled or failed download leaves nothing half-written: the
partial ``*.incomplete`` blobs huggingface_hub keeps for resuming are removed (whole files
already fetched stay; the next download skips them).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gmi_desktop.core.errors import Cancelled, WeightsUnavailable
from gmi_desktop.core.progress import CancelFn, Progress, check_cancel
from gmi_desktop.store.settings import Settings

_POLL_S = 0.1


@dataclass(frozen=True)
class WeightsNeed:
    """One set of weights identification needs and this computer lacks."""

    kind: str  # "clip" | "blip"
    what: str  # e.g. "CLIP ViT-L-14/openai"
    repo_id: str | None  # where a download comes from (None: not downloadable)
    approx_bytes: int | None
    reason: str  # why it is missing (the WeightsUnavailable message)
    downloadable: bool
    setting: str  # the settings field that points at a local copy: clip_weights / blip_weights

    @property
    def size_text(self) -> str:
        from gmi_desktop.engine.weights import human_size

        return human_size(self.approx_bytes)


def _clip_need(settings: Settings) -> WeightsNeed | None:
    from gmi_desktop.engine import weights

    try:
        weights.resolve_clip(settings.clip_model, settings.clip_pretrained, settings.clip_weights, allow_downloads=False)
        return None
    except WeightsUnavailable as exc:
        reason = str(exc)
    what = f"CLIP {settings.clip_model}/{settings.clip_pretrained}"
    repo = None if settings.clip_weights else weights.clip_source(settings.clip_model, settings.clip_pretrained).repo_id
    return WeightsNeed("clip", what, repo, weights.APPROX_BYTES.get((settings.clip_model, settings.clip_pretrained)),
                       reason, bool(repo) and weights.offline_reason(settings.allow_downloads) is None, "clip_weights")


def _blip_need(settings: Settings) -> WeightsNeed | None:
    from gmi_desktop.engine import weights

    repo = weights.blip_repo(settings)
    try:
        weights.resolve_blip(repo, settings.blip_weights, allow_downloads=False)
        return None
    except WeightsUnavailable as exc:
        reason = str(exc)
    downloadable = not settings.blip_weights and weights.offline_reason(settings.allow_downloads) is None
    return WeightsNeed("blip", f"BLIP {repo}", None if settings.blip_weights else repo,
                       weights.APPROX_BYTES.get(repo), reason, downloadable, "blip_weights")


def missing_weights(settings: Settings) -> list[WeightsNeed]:
    """The weights identification needs that are neither configured, dropped in place nor cached."""
    return [need for need in (_clip_need(settings), _blip_need(settings)) if need is not None]


def _partial_files(repo_id: str) -> list[Path]:
    from gmi_desktop.engine.download import hub_cache_dir

    blobs = hub_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "blobs"
    return sorted(blobs.glob("*.incomplete")) if blobs.is_dir() else []


def _fetch(need: WeightsNeed, settings: Settings, sink: Callable[[Progress], None]) -> Any:
    from gmi_desktop.engine import weights

    if need.kind == "clip":
        return weights.resolve_clip(settings.clip_model, settings.clip_pretrained, settings.clip_weights,
                                    allow_downloads=settings.allow_downloads, progress=sink)
    return weights.resolve_blip(need.repo_id or weights.blip_repo(settings), settings.blip_weights,
                                allow_downloads=settings.allow_downloads, progress=sink)


def _download_one(need: WeightsNeed, settings: Settings, index: int, count: int,
                  cancel: CancelFn | None) -> Generator[Progress, None, Any]:
    """Run the blocking download on a helper thread; hand its byte counts out as events."""
    events: queue.Queue = queue.Queue()
    stop = threading.Event()

    def sink(event: Progress) -> None:
        if stop.is_set():
            raise Cancelled("download cancelled")  # unwinds huggingface_hub between two reads
        events.put(("event", event))

    def work() -> None:
        try:
            events.put(("done", _fetch(need, settings, sink)))
        except Exception as exc:  # noqa: BLE001 - handed to the generator, re-raised there
            events.put(("error", exc))

    thread = threading.Thread(target=work, name=f"gmi-download-{need.kind}", daemon=True)
    thread.start()
    finished = False
    try:
        while True:
            if cancel is not None and cancel():
                stop.set()
                check_cancel(cancel, "download cancelled")
            try:
                kind, value = events.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if kind == "event":
                yield Progress("downloading", index, count, item=need.what, bytes_done=value.bytes_done,
                               bytes_total=value.bytes_total,
                               message=f"downloading {need.what} ({index + 1} of {count}): {value.item}")
            elif kind == "error":
                if stop.is_set():
                    raise Cancelled("download cancelled") from value
                raise value
            else:
                finished = True
                return value
    finally:
        if not finished:
            stop.set()
        thread.join()
        if not finished and need.repo_id:
            for partial in _partial_files(need.repo_id):
                partial.unlink(missing_ok=True)


def download_weights(settings: Settings, cancel: CancelFn | None = None,
                     needs: list[WeightsNeed] | None = None) -> Generator[Progress, None, list[Any]]:
    """Download every downloadable missing weight (``needs``, default :func:`missing_weights`);
    return the resolved weights (``engine.weights.ResolvedWeights``)."""
    needs = [n for n in (missing_weights(settings) if needs is None else needs) if n.downloadable]
    got = []
    for index, need in enumerate(needs):
        check_cancel(cancel, "download cancelled")
        yield Progress("downloading", index, len(needs), item=need.what, message=f"asking for {need.what}")
        got.append((yield from _download_one(need, settings, index, len(needs), cancel)))
    yield Progress("downloading", len(needs), len(needs), message="weights downloaded")
    return got

