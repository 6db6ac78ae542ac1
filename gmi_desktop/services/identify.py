"""Identification (paper §3.2, A_r + A_e): which of the user's checkpoints make images like these?

:meth:`Identifier.identify` is a generator of :class:`~gmi_desktop.core.progress.Progress`
events returning an :class:`Identification`:

1. **Metadata first** (no weights, no torch): each query image's generation metadata
   (:mod:`gmi_desktop.store.metadata`) is matched against the library
   (:mod:`.identify_match`): a hash equal to a local file's is an exact match, an equal name a
   weaker same-name match. An embedded prompt becomes the image's prompt (paper A.5).
2. **Content ranking** of every library model with a specification (for the current CLIP):
   query images (:func:`~gmi_desktop.store.images.load_image`) encoded by the host's CLIP, the
   prompt from the user, else the metadata, else the interrogator (BLIP caption + label search;
   its label embeddings are fetched pre-computed when allowed), scored by ``method`` through
   :class:`~gmi_desktop.core.index.SpecIndex`. Each result carries its specification's
   completeness, the evidence of a metadata match, and the spec thumbnails closest to the query.

Missing weights never lose the metadata part: the result says in ``missing`` what is missing
and how to get it. :meth:`Identifier.rerank` re-scores after a prompt edit from the prepared image
step (``SpecIndex.prepare_image`` / ``score_prompt``): no image encoding, no interrogator, only
the new prompt's text encoding — fast enough for every keystroke.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from gmi_desktop.core.errors import UserInputError, WeightsUnavailable
from gmi_desktop.core.index import METHODS, PreparedQuery, SpecIndex
from gmi_desktop.core.kernels import DEFAULT_GAMMA
from gmi_desktop.core.progress import CancelFn, Job, Progress, check_cancel
from gmi_desktop.core.ranking import order_from_scores, ranks_from_scores
from gmi_desktop.core.scores import downsample_pixels
from gmi_desktop.core.spec import Requirement, Specification, spec_completeness
from gmi_desktop.engine.prompt_features import encode_prompts
from gmi_desktop.services.identify_explain import closest_thumbnails
from gmi_desktop.services.identify_match import evidence_by_sha, match_metadata
from gmi_desktop.services.identify_types import Evidence, Identification, QueryImage, RankedModel
from gmi_desktop.store import paths
from gmi_desktop.store.catalog import Catalog, FileRecord
from gmi_desktop.store.images import load_image
from gmi_desktop.store.metadata import read_metadata
from gmi_desktop.store.specfile import SPEC_SUFFIX, SpecStore, load_spec

__all__ = ["Evidence", "Identification", "Identifier", "QueryImage", "RankedModel", "METHODS"]

NEEDS_PROMPT = ("proposal", "rkme_concat")
NO_SPECS = "no specifications yet: run `gmi-desktop build-specs` (or import a spec pack) to rank by content"


@dataclass
class _Library:
    """The specifications usable now: one per library checkpoint, for one encoder."""

    specs: list[Specification]
    spec_paths: list[Path]
    records: dict[str, FileRecord]  # checkpoint sha256 -> first present file
    encoders: set[str]


@dataclass
class _State:
    """What :meth:`Identifier.rerank` reuses: the index, the prepared image step, the prompts."""

    index: SpecIndex
    prepared: PreparedQuery
    requirement: Requirement  # image (and pixel) features of the queries
    models: list[RankedModel]  # index order; rank/score filled per ranking
    base_prompts: tuple[str, ...]
    base_sources: tuple[str, ...]
    base_features: np.ndarray | None  # (T, Dt), None when no prompt could be made
    text_cache: dict[str, np.ndarray]


class Identifier:
    """Identification over the user's library: ``Identifier(settings, host).identify(images)``."""

    def __init__(self, settings: Any, host: Any, catalog: Catalog | None = None,
                 store_dir: str | os.PathLike[str] | None = None):
        self.settings = settings
        self.host = host
        self.catalog = catalog
        self.store_dir = Path(store_dir) if store_dir is not None else None
        self._index_cache: tuple[Any, SpecIndex] | None = None
        self._store_cache: tuple[Any, SpecStore] | None = None

    # -- helpers -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _open_catalog(self) -> Iterator[Catalog]:
        if self.catalog is not None:
            yield self.catalog
            return
        with Catalog() as catalog:
            yield catalog

    def _method(self, method: str | None) -> str:
        method = method or getattr(self.settings, "method", "") or "proposal"
        if method not in METHODS:
            raise UserInputError(None, f"unknown method {method!r}", f"use one of {', '.join(METHODS)}")
        return method

    def _folder(self) -> Path:
        return self.store_dir if self.store_dir is not None else paths.specs_dir()

    def _library(self, catalog: Catalog, encoder_id: str | None = None) -> _Library:
        records: dict[str, FileRecord] = {}
        for record in catalog.files():
            if record.sha256 and record.status not in ("missing", "skipped"):
                records.setdefault(record.sha256, record)
        folder = self._folder()
        if not folder.is_dir():
            return _Library([], [], records, set())
        store = self._store(folder)
        best: dict[str, tuple[Specification, Path]] = {}
        encoders = set()
        for spec, path in zip(store.specs, store.paths):
            sha = spec.recipe.checkpoint_sha256
            if sha not in records:
                continue
            encoders.add(spec.recipe.encoder_id)
            if encoder_id is not None and spec.recipe.encoder_id != encoder_id:
                continue
            if sha not in best or spec.n_images > best[sha][0].n_images:
                best[sha] = (spec, path)
        chosen = [best[sha] for sha in sorted(best)]
        return _Library([s for s, _ in chosen], [p for _, p in chosen], records, encoders)

    def _store(self, folder: Path) -> SpecStore:
        """The folder's specifications, re-read only when its files changed (name, size, mtime)."""
        signature = tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(folder)
                                 if e.name.endswith(SPEC_SUFFIX) and not e.name.startswith(".")))
        if self._store_cache is None or self._store_cache[0] != (folder, signature):
            self._store_cache = ((folder, signature), SpecStore(folder))
        return self._store_cache[1]

    def _index(self, library: _Library) -> SpecIndex:
        gamma = float(getattr(self.settings, "gamma", 0.0) or DEFAULT_GAMMA)
        key = (gamma, tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in library.spec_paths))
        if self._index_cache is None or self._index_cache[0] != key:
            self._index_cache = (key, SpecIndex(library.specs, gamma=gamma))
        return self._index_cache[1]

    @staticmethod
    def _spec_completeness(catalog: Catalog):
        """``sha256 -> completeness`` of the specification the catalog references (0 without one)."""

        def lookup(sha: str | None) -> float:
            ref = catalog.spec_ref(sha) if sha else None
            if not ref:
                return 0.0
            try:
                return spec_completeness(load_spec(ref))
            except UserInputError:
                return 0.0

        return lookup

    # -- metadata only -------------------------------------------------------------------------
    def metadata_only(self, images: Sequence[str | os.PathLike[str]]) -> Identification:
        """The metadata part alone: no weights, no torch (the GUI shows it while models load)."""
        paths_ = [Path(p) for p in images]
        if not paths_:
            raise UserInputError(None, "no query image given")
        metas = [read_metadata(p) for p in paths_]
        with self._open_catalog() as catalog:
            matches = match_metadata(metas, catalog, self._spec_completeness(catalog))
        queries = tuple(QueryImage(p, m, m.prompt if m and m.prompt else "", "metadata" if m and m.prompt else "")
                        for p, m in zip(paths_, metas))
        prompt = next((q.prompt for q in queries if q.prompt), "")
        return Identification(queries, prompt, "metadata" if prompt else "", self._method(None), (), matches)

    # -- identify ------------------------------------------------------------------------------
    def identify(self, images: Sequence[str | os.PathLike[str]], prompt: str | None = None,
                 method: str | None = None, cancel: CancelFn | None = None) -> Job[Identification]:
        method = self._method(method)
        paths_ = [Path(p) for p in images]
        if not paths_:
            raise UserInputError(None, "no query image given")
        user_prompt = prompt.strip() if prompt and prompt.strip() else None
        metas, pictures = [], []
        for i, path in enumerate(paths_):
            check_cancel(cancel)
            yield Progress("reading", i, len(paths_), item=path.name)
            metas.append(read_metadata(path))
            pictures.append(load_image(path))
        encoder = getattr(self.host, "encoder_id", None)  # known without loading CLIP
        with self._open_catalog() as catalog:
            matches = match_metadata(metas, catalog, self._spec_completeness(catalog))
            library = self._library(catalog, encoder)
        prompts = [user_prompt or (m.prompt if m and m.prompt else "") for m in metas]
        sources = ["user" if user_prompt else ("metadata" if p else "") for p in prompts]

        def result(ranking=(), missing=None, notes=(), state=None, used_method=method) -> Identification:
            queries = tuple(QueryImage(p, m, t, s) for p, m, t, s in zip(paths_, metas, prompts, sources))
            shown = queries[0].prompt
            source = "user" if user_prompt else ("interrogator" if "interrogator" in sources
                                                  else ("metadata" if shown else ""))
            return Identification(queries, shown, source, used_method, tuple(ranking), matches, missing,
                                  tuple(notes), state)

        if not library.specs:
            return result(notes=(_no_specs(encoder, library.encoders),))
        check_cancel(cancel)
        yield Progress("loading", item="CLIP", message="loading the CLIP image encoder")
        try:
            clip = self.host.clip()
        except WeightsUnavailable as exc:
            return result(missing=f"CLIP weights: {exc}")
        if clip.encoder_id != encoder:
            with self._open_catalog() as catalog:
                library = self._library(catalog, clip.encoder_id)
            if not library.specs:
                return result(notes=(_no_specs(clip.encoder_id, library.encoders),))
        check_cancel(cancel)
        yield Progress("encoding", 0, len(pictures), message="encoding the query images")
        features = clip.encode_images(pictures)
        yield Progress("encoding", len(pictures), len(pictures))

        missing, notes = None, []
        need = [i for i, p in enumerate(prompts) if not p]
        if need and method in NEEDS_PROMPT:
            try:
                yield Progress("loading", item="interrogator", message="loading the caption model (BLIP)")
                interrogator = self.host.interrogator()
            except WeightsUnavailable as exc:
                missing = f"caption model (BLIP) weights: {exc}"
                notes.append("no prompt for the image and no caption model: ranked by image only (RKME-CLIP); "
                             "type a prompt to rank with the proposal")
            else:
                from gmi_desktop.engine.label_cache import iter_prepare_labels

                yield from iter_prepare_labels(interrogator, allow_downloads=bool(self.settings.allow_downloads),
                                               cancel=cancel)
                for k, i in enumerate(need):
                    check_cancel(cancel)
                    yield Progress("interrogating", k, len(need), item=paths_[i].name,
                                   message="making a pseudo-prompt")
                    prompts[i] = interrogator.interrogate(pictures[i])
                    sources[i] = "interrogator"
        method_used = "rkme_clip" if missing else method

        index = self._index(library)
        pixels = _pixel_features(library.specs, pictures)
        requirement = Requirement(image_features=features, pixel_features=pixels)
        prepared = index.prepare_image(features, pixels)
        base = clip.encode_texts(prompts) if all(prompts) else None
        evidence = evidence_by_sha(matches)
        models = [
            RankedModel(0, spec.recipe.checkpoint_sha256, library.records[spec.recipe.checkpoint_sha256].name,
                        library.records[spec.recipe.checkpoint_sha256].path,
                        library.records[spec.recipe.checkpoint_sha256].family, None, spec_completeness(spec),
                        evidence.get(spec.recipe.checkpoint_sha256, ()),
                        closest_thumbnails(spec, path, features))
            for spec, path in zip(library.specs, library.spec_paths)
        ]
        state = _State(index, prepared, requirement, models, tuple(prompts), tuple(sources), base, {})
        yield Progress("ranking", message=f"ranking {len(models)} models")
        ranking = _rank(state, method_used, base)
        return result(ranking, missing, notes, state, method_used)

    # -- rerank --------------------------------------------------------------------------------
    def rerank(self, identification: Identification, prompt: str, method: str | None = None) -> Identification:
        """Re-score ``identification`` with ``prompt`` for every query image (an empty prompt goes
        back to the generated or embedded ones). Reuses the prepared image step: no image
        encoding, no interrogator."""
        method = self._method(method or identification.method)
        text = (prompt or "").strip()
        state: _State | None = identification.state
        if state is None:
            return replace(identification, pseudo_prompt=text or identification.pseudo_prompt,
                           prompt_source="user" if text else identification.prompt_source, method=method)
        if text:
            feature = state.text_cache.get(text)
            if feature is None:
                feature = state.text_cache[text] = encode_prompts(self.host.clip(), [text])
            prompt_features = np.repeat(feature, len(state.base_prompts), axis=0)
            shown, source = text, "user"
        else:
            prompt_features = state.base_features
            shown = state.base_prompts[0]
            source = "interrogator" if "interrogator" in state.base_sources else state.base_sources[0]
        if prompt_features is None and method in NEEDS_PROMPT:
            method = "rkme_clip"
        ranking = _rank(state, method, prompt_features)
        return replace(identification, pseudo_prompt=shown, prompt_source=source, method=method,
                       ranking=tuple(ranking))


def _no_specs(encoder: str | None, encoders: set[str]) -> str:
    if not encoders:
        return NO_SPECS
    return (f"no specification was made with {encoder} (the library's use {', '.join(sorted(encoders))}); "
            "rebuild them with `gmi-desktop build-specs` or switch clip_model back")


def _pixel_features(specs: Sequence[Specification], pictures: Sequence[Any]) -> np.ndarray | None:
    """Query pixels for RKME-Basic, at the specifications' pixel size (when they all have one)."""
    sizes = {s.pixel_features.shape[1] if s.pixel_features is not None else None for s in specs}
    if len(sizes) != 1 or None in sizes:
        return None
    side = math.isqrt(sizes.pop() // 3)
    if 3 * side * side == 0:
        return None
    try:
        return np.stack([downsample_pixels(np.asarray(p), side) for p in pictures])
    except ValueError:
        return None


def _rank(state: _State, method: str, prompt_features: np.ndarray | None) -> list[RankedModel]:
    index = state.index
    req = state.requirement
    if method in NEEDS_PROMPT:
        req = Requirement(image_features=req.image_features, prompt_features=prompt_features,
                          pixel_features=req.pixel_features)
    if method == "proposal":
        scores = index.score_prompt(state.prepared, prompt_features)
    else:
        scores = index.score(req, method)
    ranks = ranks_from_scores(scores)
    order = order_from_scores(scores, index.model_ids)
    return [replace(state.models[i], rank=int(ranks[i]), score=float(scores[i])) for i in order]
