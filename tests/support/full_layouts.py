"""Full-size original-layout checkpoints (every key, real shapes) as sparse safetensors files.

The key lists come from ``tests.support.sd_layout`` (diffusers configs built on the meta device,
mapped to the original layout); built once per process, since importing torch/diffusers is slow.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from tests.support.checkpoint_files import write_safetensors_header
from tests.support.model_headers import Layout


@lru_cache(maxsize=None)
def _cached(family: str, variant: str) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    from tests.support.sd_layout import original_layout_shapes

    shapes = original_layout_shapes(family, variant, size="full")
    return tuple((name, dtype, tuple(shape)) for name, (shape, dtype) in shapes.items())


FIRST_CONV = "model.diffusion_model.input_blocks.0.0.weight"
IN_CHANNELS = {"normal": 4, "inpaint": 9, "depth": 5, "instruct_pix2pix": 8}


def full_layout(family: str, variant: str = "normal", *, derived: bool = True) -> Layout:
    """``{name: (dtype, shape)}`` of a real single-file checkpoint of that family and variant.

    Variants differ from the normal layout only in the in-channels of the first UNet convolution
    (``test_variant_layouts_differ_only_in_the_first_conv`` checks this against ``sd_layout``), so
    by default they are derived from the normal layout instead of building more meta models.
    """
    base = "normal" if derived else variant
    layout = {name: (dtype, shape) for name, dtype, shape in _cached(family, base)}
    if base != variant:
        dtype, (out_ch, _, kh, kw) = layout[FIRST_CONV]
        layout[FIRST_CONV] = (dtype, (out_ch, IN_CHANNELS[variant], kh, kw))
    return layout


def write_full_checkpoint(path: Path, family: str, variant: str = "normal", **kw) -> Path:
    """A sparse full-size checkpoint file: real header, data region as a hole of the right size."""
    return write_safetensors_header(path, full_layout(family, variant), **kw)
