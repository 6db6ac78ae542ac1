"""The kinds of Stable Diffusion checkpoint GMI Desktop knows, and which of them it can generate with.

One table, shared by the header probe (``store``: what counts as an ``ok`` checkpoint) and the
generation engine (``engine``: which shipped config folder loads it), so the two cannot drift apart.
"""

from __future__ import annotations

FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "sdxl_refiner": "SDXL refiner"}
VARIANT_NAMES = {
    "normal": "text-to-image",
    "inpaint": "inpainting",
    "depth": "depth-to-image",
    "instruct_pix2pix": "InstructPix2Pix",
}

# (family, variant) -> the config folder under resources/diffusers/ the engine loads it with.
# Depth checkpoints are absent on purpose: they need a MiDaS depth model and a depth map per image.
GENERATION_CONFIGS = {
    ("sd1", "normal"): "sd1",
    ("sd1", "inpaint"): "sd1_inpaint",
    ("sd2", "normal"): "sd2",
    ("sd2", "inpaint"): "sd2_inpaint",
    ("sdxl", "normal"): "sdxl",
    ("sdxl", "inpaint"): "sdxl_inpaint",
    ("sdxl_refiner", "normal"): "sdxl_refiner",
}

SUPPORTED: dict[str, frozenset[str]] = {
    family: frozenset(v for (f, v) in GENERATION_CONFIGS if f == family) for family in FAMILY_NAMES
}
