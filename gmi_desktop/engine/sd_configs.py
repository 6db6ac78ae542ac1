"""Where the shipped, weight-free diffusers configs of each Stable Diffusion family live.

``resources/diffusers/<name>/`` holds ``model_index.json`` and the unet/vae/text encoder/scheduler
configs of one published architecture (written by ``tools/make_sd_resources.py``);
``resources/diffusers/clip_tokenizer/`` is the one CLIP BPE tokenizer every family shares.
Passing such a folder as ``config=`` to ``from_single_file`` is what keeps loading offline.

A checkpoint is named by ``family`` (what the header probe reports: ``sd1``, ``sd2``, ``sdxl``,
``sdxl_refiner``) and ``variant`` (``normal``, ``inpaint``, ``depth``). SD 2.x 768 (v-prediction)
and 512-base (epsilon) checkpoints have identical tensor shapes; the header cannot tell them
apart, so ``prediction_type`` picks one, defaulting to the 768 v-prediction model as diffusers
does.
"""

from __future__ import annotations

import os
from pathlib import Path

from gmi_desktop.core.checkpoint_kinds import FAMILY_NAMES, GENERATION_CONFIGS
from gmi_desktop.core.errors import UnsupportedCheckpoint

FAMILIES = tuple(FAMILY_NAMES)
VARIANTS = ("normal", "inpaint", "depth")

NATIVE_RESOLUTION = {"sd1": 512, "sd2": 768, "sd2_base": 512, "sdxl": 1024, "sdxl_refiner": 1024}
_NATIVE_BY_CONFIG = {"sd2_inpaint": 512}  # SD 2.x inpainting was trained at 512 (epsilon)


def resources_dir() -> Path:
    """The application's ``resources/`` folder (``GMI_RESOURCES_DIR`` overrides it)."""
    override = os.environ.get("GMI_RESOURCES_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "resources"


def tokenizer_dir() -> Path:
    return resources_dir() / "diffusers" / "clip_tokenizer"


def config_name(family: str, variant: str = "normal", prediction_type: str | None = None) -> str:
    """Name of the shipped config folder for a checkpoint kind, or UnsupportedCheckpoint."""
    if family == "sd2" and variant == "normal" and prediction_type == "epsilon":
        return "sd2_base"
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


def native_resolution(family: str, prediction_type: str | None = None, variant: str = "normal") -> int:
    """The image size the checkpoint kind was trained at (what generation uses by default)."""
    if family == "sd2" and prediction_type == "epsilon":
        return NATIVE_RESOLUTION["sd2_base"]
    return _NATIVE_BY_CONFIG.get(GENERATION_CONFIGS.get((family, variant), ""), NATIVE_RESOLUTION[family])
