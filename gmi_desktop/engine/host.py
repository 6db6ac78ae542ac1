"""The one owner of loaded models: CLIP, the BLIP caption model + interrogator, the current pipeline.

A :class:`ModelHost` is created for one :class:`~gmi_desktop.store.settings.Settings` and used from
one worker thread (the GPU lane). Nothing else keeps models: :func:`~gmi_desktop.engine.clip.load_clip`
and :func:`~gmi_desktop.engine.interrogator.load_caption_model` only build them. The host loads each
part lazily on first use, keeps it, and unloads on demand so that a scarce GPU holds only what the
next job needs. With ``low_vram`` on, asking for the interrogator unloads the diffusion pipeline and
asking for a pipeline unloads the caption model (on an 8 GB card an SDXL pipeline and BLIP do not
fit together); CLIP is small and stays.

Services take a host instead of loading models themselves, so the GUI's worker thread, the CLI and
tests all share one code path.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from gmi_desktop.core.progress import ProgressSink

if TYPE_CHECKING:
    from gmi_desktop.engine.clip import ClipModel
    from gmi_desktop.engine.generation import GenerationOptions, LoadedPipeline
    from gmi_desktop.engine.interrogator import CaptionModel, Interrogator

PARTS = ("clip", "interrogator", "pipeline")


class ModelHost:
    """Lazily loaded models of one settings object; ``config_dir`` (optional) replaces the shipped
    diffusers config folder for every pipeline (e.g. a folder of custom architectures)."""

    def __init__(self, settings: Any, *, config_dir: Path | None = None):
        self.settings = settings
        self.config_dir = Path(config_dir) if config_dir is not None else None
        self._clip: ClipModel | None = None
        self._caption: CaptionModel | None = None
        self._interrogator: Interrogator | None = None
        self._backend: Any = None  # GenerationBackend, created on first pipeline
        self._prediction_type: str | None = None

    # --- CLIP -------------------------------------------------------------------------------
    def clip(self, progress: ProgressSink | None = None) -> ClipModel:
        """The CLIP encoder of the settings (loaded on first use; ``progress`` sees a download)."""
        if self._clip is None:
            from gmi_desktop.engine.clip import load_clip_for

            self._clip = load_clip_for(self.settings, progress)
        return self._clip

    @property
    def encoder_id(self) -> str:
        """The feature space the settings' CLIP encodes into, without loading it."""
        return f"open_clip:{self.settings.clip_model}/{self.settings.clip_pretrained}"

    # --- interrogator -----------------------------------------------------------------------
    def interrogator(self, progress: ProgressSink | None = None) -> Interrogator:
        """The interrogator (BLIP caption + CLIP label search) over the shared CLIP."""
        if self._interrogator is None:
            from gmi_desktop.engine.interrogator import build_interrogator, load_caption_model_for

            if self.settings.low_vram:
                self.unload("pipeline")
            clip = self.clip(progress)
            if self._caption is None:
                self._caption = load_caption_model_for(self.settings, progress)
            self._interrogator = build_interrogator(self.settings, clip, self._caption)
        return self._interrogator

    # --- generation -------------------------------------------------------------------------
    def pipeline(self, path: str | Path, family: str, variant: str = "normal", *,
                 options: GenerationOptions | None = None, prediction_type: str | None = None,
                 config_dir: Path | None = None) -> LoadedPipeline:
        """The loaded pipeline for ``path`` (reused when it is the current one with the same
        options; any other is unloaded first)."""
        from gmi_desktop.engine.generation import GenerationBackend, GenerationOptions

        if options is None:
            options = GenerationOptions.from_settings(self.settings)
        if self._backend is None:
            self._backend = GenerationBackend()
        current = self._backend.current
        if (current is not None and current.source == Path(path) and current.family == family
                and current.variant == variant and current.options == options
                and self._prediction_type == prediction_type):
            return current
        if self.settings.low_vram:
            self.unload("interrogator")
        loaded = self._backend.load(path, family, variant, self.settings, options=options,
                                    prediction_type=prediction_type, config_dir=config_dir or self.config_dir)
        self._prediction_type = prediction_type
        return loaded

    # --- memory -----------------------------------------------------------------------------
    def loaded(self) -> list[str]:
        """Which parts are loaded now (a subset of :data:`PARTS`)."""
        parts = []
        if self._clip is not None:
            parts.append("clip")
        if self._caption is not None:
            parts.append("interrogator")
        if self._backend is not None and self._backend.current is not None:
            parts.append("pipeline")
        return parts

    def unload(self, *parts: str) -> None:
        """Give back the memory of ``parts`` (all when none are named). Unloading CLIP drops the
        interrogator built on it too (the caption model stays)."""
        parts = parts or PARTS
        unknown = set(parts) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown model parts: {sorted(unknown)}")
        if "pipeline" in parts and self._backend is not None:
            self._backend.unload()
        if "interrogator" in parts:
            self._interrogator = None
            if self._caption is not None:
                self._caption.close()
                self._caption = None
        if "clip" in parts and self._clip is not None:
            self._interrogator = None  # it holds the CLIP
            self._clip.close()
            self._clip = None

    def close(self) -> None:
        self.unload()

    def __enter__(self) -> ModelHost:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
