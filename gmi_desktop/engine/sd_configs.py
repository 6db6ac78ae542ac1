"""Where the shipped, weight-free diffusers configs of each Stable Diffusion family live.

``resources/diffusers/<name>/`` holds ``model_index.json`` and the unet/vae/text encoder/scheduler
configs of one published architecture (written by ``tools/make_sd_resources.py``);
``resources/diffusers/clip_tokenizer/`` is the one CLIP BPE tokenizer every family shares.
Passing such a folder as ``config=`` to ``from_single_file`` is what keeps loading offline.

``resources/`` sits at the top of the repository; the wheel ships it inside the package as
``gmi_desktop/resources/`` (see ``setup.py``). :func:`resources_dir` finds it in that order:
``GMI_RESOURCES_DIR``, the package's own copy (installed wheel, or a frozen app that bundles it
there), then the source checkout's top-level folder (a clone, an editable install).

A checkpoint is named by ``family`` (what the header probe reports: ``sd1``, ``sd2``, ``sdxl``,
``sdxl_refiner``) and ``variant`` (``normal``, ``inpaint``, ``depth``). SD 2.x 768 (v-prediction)
and 512-base (epsilon) checkpoints have identical tensor shapes; the header cannot tell them
apart, so ``prediction_type`` picks one (the generation backend decides it when the file does
not say; see :mod:`gmi_desktop.engine.prediction`). SDXL v-prediction fine-tunes have their own
config (``sdxl_v``).
"""

from __future__ import annotations

from pathlib import Path

from gmi_desktop.core.checkpoint_kinds import FAMILY_NAMES, GENERATION_CONFIGS
from gmi_desktop.core.errors import UnsupportedCheckpoint
from gmi_desktop.store import resources as store_resources

FAMILIES = tuple(FAMILY_NAMES)
VARIANTS = ("normal", "inpaint", "depth")

NATIVE_RESOLUTION = {"sd1": 512, "sd2": 768, "sd2_base": 512, "sdxl": 1024, "sdxl_refiner": 1024}
_NATIVE_BY_CONFIG = {"sd2_inpaint": 512}  # SD 2.x inpainting was trained at 512 (epsilon)

# Families a specification cannot be built for, and why (the spec builder lists them so).
NOT_IDENTIFIABLE = {
    "sdxl_refiner": ("refiner: not identifiable on its own",
                     "an SDXL refiner is trained on the last ~20% of the noise schedule to finish an SDXL base "
                     "model's images; pictures it makes from pure noise say nothing about it"),
}

def resources_dir() -> Path:
    """The application's ``resources/`` folder (``GMI_RESOURCES_DIR`` overrides it); the one search
    is :func:`gmi_desktop.store.resources.resources_dir`."""
    return store_resources.resources_dir()


def tokenizer_dir() -> Path:
    return resources_dir() / "diffusers" / "clip_tokenizer"


def config_name(family: str, variant: str = "normal", prediction_type: str | None = None) -> str:
    """Name of the shipped config folder for a checkpoint kind, or UnsupportedCheckpoint."""
    if family == "sd2" and variant == "normal" and prediction_type == "epsilon":
        return "sd2_base"
    if family == "sdxl" and variant == "normal" and prediction_type == "v_prediction":
        return "sdxl_v"
    name = GENERATION_CONFIGS.get((family, variant))
    if name is None:
        raise UnsupportedCheckpoint(
            None,
            f"{family} {variant} checkpoints are not supported for generation",
            "use a text-to-image or inpainting checkpoint of SD 1.x, SD 2.x or SDXL",
        )
    return name


def config_dir(family: str, variant: str = "normal", prediction_type: str | None = None) -> Path:
    return resources_dir() / "diffusers" / config_name(family, variant, prediction_type)


def not_identifiable(family: str) -> tuple[str, str] | None:
    """``(status, reason)`` when no specification can be built for ``family``, else None."""
    return NOT_IDENTIFIABLE.get(family)


def native_resolution(family: str, prediction_type: str | None = None, variant: str = "normal") -> int:
    """The image size the checkpoint kind was trained at (what generation uses by default)."""
    if family == "sd2" and prediction_type == "epsilon":
        return NATIVE_RESOLUTION["sd2_base"]
    return _NATIVE_BY_CONFIG.get(GENERATION_CONFIGS.get((family, variant), ""), NATIVE_RESOLUTION[family])
