"""Fetching files from the Hugging Face hub into its cache, with progress and without hanging.

huggingface_hub retries a refused connection for about 30 s; one quick TCP probe of the hub (or
of the proxy) first turns a dead network into an error in at most a few seconds. A dry run then
asks the size of every file, so progress reports carry the size of the whole download.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gmi_desktop.core.errors import WeightsUnavailable
from gmi_desktop.core.progress import Progress, ProgressSink

NETWORK_TIMEOUT_S = 10.0


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (not at huggingface_hub import)."""
    env = os.environ
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(key):
            return Path(env[key]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    xdg = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def download_progress(what: str, filename: str, done: int, total: int | None) -> Progress:
    """The event of a weights download: stage "downloading", ``item`` the file, sizes in bytes
    (``bytes_total`` 0 when unknown)."""
    return Progress("downloading", item=filename, bytes_done=done, bytes_total=total or 0,
                    message=f"downloading {what} ({filename})")

def _reporting_bar(report: Callable[[int, int | None], None]) -> type:
    """A tqdm class that forwards byte counts to ``report`` instead of drawing a bar."""
    from tqdm import tqdm

    class _Reporting(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            kwargs.pop("name", None)
            super().__init__(*args, **kwargs)
            self._done = int(kwargs.get("initial") or 0)
            self._total = kwargs.get("total")

        def update(self, n: float | None = 1) -> bool | None:
            self._done += int(n or 0)
            report(self._done, self._total)
            return super().update(n)

    return _Reporting


def _unreachable(endpoint: str) -> str | None:
    """One quick TCP connect to the hub; huggingface_hub itself retries for ~30 s before failing."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint)
    proxy = next((os.environ[k] for k in (f"{parts.scheme}_proxy".upper(), f"{parts.scheme}_proxy", "ALL_PROXY", "all_proxy")
                  if os.environ.get(k)), None)
    if proxy:  # behind a proxy the hub is reached through it; probe the proxy instead
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    host = parts.hostname or "huggingface.co"
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=NETWORK_TIMEOUT_S / 2):
            return None
    except OSError as exc:
        return f"{host} cannot be reached ({exc.strerror or exc})"


def download_files(repo_id: str, groups, optional: tuple[str, ...], what: str, progress: ProgressSink | None,
              missing: Callable[[str], WeightsUnavailable]) -> Path:
    """Fetch one file of each group (plus optional files) into the hub cache; return the snapshot folder.

    A dry run first asks the hub for each file's size (short timeout), so a dead network fails fast
    and the progress reports carry the total size of the whole download.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    cache = hub_cache_dir()
    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now: huggingface_hub reads it at import
    unreachable = _unreachable(endpoint or "https://huggingface.co")
    if unreachable:
        raise missing(unreachable)
    plan: list[tuple[str, int | None]] = []
    wanted = [(g, True) for g in groups] + [((n,), False) for n in optional if not any(n in g for g in groups)]
    try:
        for names, required in wanted:
            for name in names:
                try:
                    info = hf_hub_download(repo_id, name, cache_dir=cache, etag_timeout=NETWORK_TIMEOUT_S,
                                          endpoint=endpoint, dry_run=True)
                except RemoteEntryNotFoundError:
                    continue
                plan.append((name, info.file_size))
                break
            else:
                if required:
                    raise missing(f"the hub has none of {', '.join(names)} for it")
        total = sum(size or 0 for _n, size in plan) or None
        done_before = 0
        snapshot: Path | None = None
        for name, size in plan:
            def report(done: int, _file_total: int | None, _base: int = done_before, _name: str = name) -> None:
                if progress is not None:
                    progress(download_progress(what, _name, _base + done, total))

            local = hf_hub_download(repo_id, name, cache_dir=cache, etag_timeout=NETWORK_TIMEOUT_S,
                                    endpoint=endpoint, tqdm_class=_reporting_bar(report))
            snapshot = Path(local).parent
            done_before += size or 0
            if progress is not None:
                progress(download_progress(what, name, done_before, total))
    except WeightsUnavailable:
        raise
    except Exception as exc:  # network boundary: any failure (DNS, refused, TLS, HTTP, timeout) is "cannot download"
        raise missing(f"downloading it failed ({type(exc).__name__}: {exc})") from exc
    if snapshot is None:
        raise missing("the hub listed no files for it")
    return snapshot
