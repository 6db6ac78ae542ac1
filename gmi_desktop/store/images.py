"""Reading a user's image file into a clean 8-bit RGB PIL image, or a typed :class:`NotAnImage`.

Handles what real folders contain: EXIF rotation, CMYK, palettes, alpha (flattened onto white),
16-bit and float greyscale (scaled, not clipped), animations (first frame). Refuses what is not an
image, truncated files, and images so large that decoding them would exhaust memory.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gmi_desktop.core.errors import NotAnImage

MAX_PIXELS = 120_000_000  # ~11000 x 11000; a decoded RGB copy is then ~360 MB


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        values = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and values.max(initial=0) > 255):
            values = values / 257.0
        elif mode == "F" and values.max(initial=0) <= 1.0:
            values = values * 255.0
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


@contextlib.contextmanager
def open_image(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS) -> Iterator[Image.Image]:
    """The opened (not yet decoded) image at ``path``, its size checked against ``max_pixels``;
    anything wrong with the file inside the block becomes :class:`NotAnImage`."""
    path = Path(path)
    if not path.is_file():
        raise NotAnImage(path, "no such file" if not path.exists() else "not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise NotAnImage(path, f"image is too large ({width} x {height} pixels)",
                                     "scale it down below about 100 megapixels")
                yield image
    except NotAnImage:
        raise
    except UnidentifiedImageError:
        raise NotAnImage(path, "not an image file (unknown or unsupported format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise NotAnImage(path, "image is too large to decode safely", "scale it down") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise NotAnImage(path, f"image data is broken or truncated ({exc})",
                         "re-save or re-download the image") from None


def load_image(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode ``path`` fully and return an RGB image detached from the file."""
    with open_image(path, max_pixels) as image:
        image.seek(0)
        image.load()
        image = ImageOps.exif_transpose(image)
        return _to_rgb(image).copy()
