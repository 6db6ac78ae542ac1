"""The interrogator's ~112 000 label embeddings: fetched pre-computed when allowed, else computed.

clip-interrogator 0.6.0 publishes its label tables, embedded with the official CLIP weights, at
``https://huggingface.co/pharma/ci-preprocess/resolve/main/<model>_<tag>_<table>.safetensors``
(``CACHE_URL_BASE``; ``<model>_<tag>`` is its ``clip_model_name`` with ``/`` and ``@`` replaced
by ``_``, e.g. ``ViT-L-14_openai_flavors.safetensors``): ``embeds`` (labels x dim, float16,
unit rows) and ``hash`` (the SHA-256 hex digest of ``",".join(labels)``, one int8 per
character). Computing them costs hours on a CPU; the download is ~170 MB for ViT-L/14.

:class:`PublishedLabels` is the ``fetch`` hook of
:meth:`gmi_desktop.engine.interrogator.Interrogator.prepare_labels`: for a table not cached yet
it downloads the published file (short timeouts, size limited by the table's known shape, the
hub endpoint from ``HF_ENDPOINT``), and accepts it only when

- it is a safetensors file with exactly ``embeds`` (len(labels) x dim, finite, unit rows) and
  ``hash``, and ``hash`` matches our label list (same labels, same order);
- a sample of labels encoded by *our* CLIP agrees with the published rows (cosine >= 0.99):
  embeddings of other weights (a fine-tune under the same name) are refused.

Then it moves into the interrogator's cache under our name (atomically); anything else falls
back to computing locally. :func:`iter_prepare_labels` runs the preparation as a generator of
:class:`~gmi_desktop.core.progress.Progress` events (a helper thread does the work; closing the
generator or ``cancel`` stops it between batches or download chunks).
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from gmi_desktop.core.errors import Cancelled
from gmi_desktop.core.progress import CancelFn, Progress, ProgressSink

PUBLISHED_REPO = "pharma/ci-preprocess"
DEFAULT_ENDPOINT = "https://huggingface.co"
TIMEOUT_S = 10.0
SAMPLE = 8  # labels re-encoded locally to check the published rows
MIN_COSINE = 0.99
CHUNK = 1 << 20


def published_name(model_name: str, pretrained: str) -> str:
    """clip-interrogator's file stem for a CLIP: ``ViT-L-14/openai`` -> ``ViT-L-14_openai``."""
    return f"{model_name}/{pretrained}".replace("/", "_").replace("@", "_")


def _labels_hash(labels: list[str]) -> np.ndarray:
    import hashlib

    digest = hashlib.sha256(",".join(labels).encode()).hexdigest()
    return np.array([ord(c) for c in digest], dtype=np.int8)


class PublishedLabels:
    """``fetch(table, labels, dest) -> bool``: put clip-interrogator's published embeddings of
    ``table`` at ``dest`` when they verify (see the module docstring); False otherwise, with the
    reason in :attr:`reasons`."""

    def __init__(self, clip: Any, *, endpoint: str | None = None, sink: ProgressSink | None = None,
                 cancel: CancelFn | None = None):
        self.clip = clip
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        self.sink = sink
        self.cancel = cancel
        self.reasons: dict[str, str] = {}
        self.fetched: list[str] = []

    def url(self, table: str) -> str:
        name = published_name(self.clip.model_name, self.clip.pretrained)
        return f"{self.endpoint}/{PUBLISHED_REPO}/resolve/main/{name}_{table}.safetensors"

    def __call__(self, table: str, labels: list[str], dest: Path) -> bool:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        limit = len(labels) * self.clip.feature_dim * 2 + 64 + 4096  # embeds + hash + header
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                reason = self._download(table, out, limit)
            if reason is None:
                reason = self._verify(tmp, labels)
            if reason is not None:
                self.reasons[table] = reason
                return False
            os.replace(tmp, dest)
            self.fetched.append(table)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def _download(self, table: str, out: Any, limit: int) -> str | None:
        url = self.url(table)
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310 (https or HF_ENDPOINT)
                total = int(response.headers.get("Content-Length") or 0)
                if total > limit:
                    return f"the published file is {total} bytes, more than the {limit} its table needs"
                done = 0
                while True:
                    if self.cancel is not None and self.cancel():
                        raise Cancelled("label download cancelled")
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    done += len(chunk)
                    if done > limit:
                        return f"the published file is larger than the {limit} bytes its table needs"
                    out.write(chunk)
                    if self.sink is not None:
                        self.sink(Progress("downloading", item=f"labels: {table}", bytes_done=done,
                                           bytes_total=total, message=f"pre-computed {table} labels"))
        except urllib.error.HTTPError as exc:
            return f"{url} answered HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return f"cannot download {url} ({getattr(exc, 'reason', exc)})"
        return None

    def _verify(self, path: Path, labels: list[str]) -> str | None:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            return f"not a safetensors file ({exc})"
        if set(tensors) != {"embeds", "hash"}:
            return f"unexpected tensors {sorted(tensors)}"
        embeds = tensors["embeds"]
        if embeds.dtype != np.float16 or embeds.shape != (len(labels), self.clip.feature_dim):
            return f"embeds are {embeds.dtype} {embeds.shape}, expected float16 {(len(labels), self.clip.feature_dim)}"
        if not np.array_equal(tensors["hash"], _labels_hash(labels)):
            return "made for another label list"
        rows = embeds.astype(np.float32)
        if not np.isfinite(rows).all() or np.abs(np.linalg.norm(rows, axis=1) - 1.0).max() > 0.01:
            return "embeds are not finite unit vectors"
        picks = sorted({int(i) for i in np.linspace(0, len(labels) - 1, min(SAMPLE, len(labels)))})
        ours = self.clip.encode_texts([labels[i] for i in picks])
        cosines = (ours * rows[picks]).sum(axis=1) / np.linalg.norm(rows[picks], axis=1)
        if cosines.min() < MIN_COSINE:
            return f"made with other CLIP weights (cosine {cosines.min():.3f} with ours on sample labels)"
        return None


def iter_prepare_labels(interrogator: Any, *, allow_downloads: bool, cancel: CancelFn | None = None,
                        endpoint: str | None = None) -> Generator[Progress, None, PublishedLabels | None]:
    """Prepare ``interrogator``'s label caches, yielding progress; returns the fetcher used (its
    ``fetched`` tables and ``reasons``) or None when downloads were not allowed."""
    events: queue.Queue[Progress] = queue.Queue()
    stop = threading.Event()

    def stopped() -> bool:
        return stop.is_set() or (cancel is not None and cancel())

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    fetcher = None
    if allow_downloads and not offline:
        fetcher = PublishedLabels(interrogator.clip, endpoint=endpoint, sink=events.put, cancel=stopped)


    failure: list[BaseException] = []

    def work() -> None:
        try:
            interrogator.prepare_labels(progress=events.put, cancel=stopped, fetch=fetcher)
        except BaseException as exc:  # handed to the generator's thread below
            failure.append(exc)

    thread = threading.Thread(target=work, name="gmi-labels", daemon=True)
    thread.start()
    try:
        while thread.is_alive() or not events.empty():
            try:
                yield events.get(timeout=0.05)
            except queue.Empty:
                continue
    finally:
        stop.set()
        thread.join()
    if failure:
        raise failure[0]
    return fetcher
