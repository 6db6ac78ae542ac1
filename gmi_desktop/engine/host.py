"""The one owner of loaded models: CLIP, the caption model + interrogator, the current pipeline.

A :class:`ModelHost` is created for one :class:`~gmi_desktop.store.settings.Settings` and used from
one worker thread (the GPU lane): it loads lazily on first use, keeps what it loaded, and unloads on
demand so that a scarce GPU holds only what the next job needs (on an 8 GB card an SDXL pipeline
and BLIP do not fit together).

Services take a host instead of loading models themselves, so the GUI's worker thread, the CLI and
tests all share one code path.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gmi_desktop.engine.clip import ClipModel
    from gmi_desktop.engine.generation import GenerationOptions, LoadedPipeline
    from gmi_desktop.engine.interrogator import Interrogator

PARTS = ("clip", "interrogator", "pipeline")


class ModelHost:
    def __init__(self, settings: Any):
        self.settings = settings
        self._clip: ClipModel | None = None
        self._interrogator: Interrogator | None = None
        self._backend: Any = None  # GenerationBackend, created on first pipeline

    # --- CLIP -------------------------------------------------------------------------------
    def clip(self, progress: Any = None) -> "ClipModel":
        """The CLIP encoder of the settings (loaded on first use)."""
        if self._clip is None:
            from gmi_desktop.engine.clip import load_clip_for

            self._clip = load_clip_for(self.settings, progress)
        return self._clip

    # --- interrogator -----------------------------------------------------------------------
    def interrogator(self, progress: Any = None) -> "Interrogator":
        """The interrogator (BLIP caption + CLIP label search) over the shared CLIP."""
        if self._interrogator is None:
            from gmi_desktop.engine.interrogator import build_interrogator

            self._interrogator = build_interrogator(self.settings, self.clip(progress), progress)
        return self._interrogator

    # --- generation -------------------------------------------------------------------------
    def pipeline(self, path: str | Path, family: str, variant: str = "normal", *,
                 options: "GenerationOptions | None" = None, prediction_type: str | None = None,
                 config_dir: Path | None = None) -> "LoadedPipeline":
        """The loaded pipeline for ``path`` (reused when it is the current one; any other is
        unloaded first)."""
        from gmi_desktop.engine.generation import GenerationBackend

        if self._backend is None:
            self._backend = GenerationBackend()
        current = self._backend.current
        if (current is not None and current.source == Path(path) and current.family == family
                and current.variant == variant and (options is None or current.options == options)):
            return current
        return self._backend.load(path, family, variant, self.settings, options=options,
                                  prediction_type=prediction_type, config_dir=config_dir)

    # --- memory -----------------------------------------------------------------------------
    def loaded(self) -> list[str]:
        """Which parts are loaded now (a subset of :data:`PARTS`)."""
        parts = []
        if self._clip is not None:
            parts.append("clip")
        if self._interrogator is not None:
            parts.append("interrogator")
        if self._backend is not None and self._backend.current is not None:
            parts.append("pipeline")
        return parts

    def unload(self, *parts: str) -> None:
        """Give back the memory of ``parts`` (all when none are named)."""
        parts = parts or PARTS
        unknown = set(parts) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown model parts: {sorted(unknown)}")
        if "pipeline" in parts and self._backend is not None:
            self._backend.unload()
        if "interrogator" in parts and self._interrogator is not None:
            from gmi_desktop.engine.interrogator import unload_caption_model

            unload_caption_model(self._interrogator.caption_model)
            self._interrogator = None
        if "clip" in parts and self._clip is not None:
            from gmi_desktop.engine.clip import unload_clip

            unload_clip(self._clip)
            self._clip = None
            self._interrogator = None  # it holds the CLIP

    def close(self) -> None:
        self.unload()
