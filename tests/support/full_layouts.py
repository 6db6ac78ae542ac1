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


def full_layout(family: str, variant: str = "normal") -> Layout:
    """``{name: (dtype, shape)}`` of a real single-file checkpoint of that family and variant."""
    return {name: (dtype, shape) for name, dtype, shape in _cached(family, variant)}


def write_full_checkpoint(path: Path, family: str, variant: str = "normal", **kw) -> Path:
    """A sparse full-size checkpoint file: real header, data region as a hole of the right size."""
    return write_safetensors_header(path, full_layout(family, variant), **kw)
