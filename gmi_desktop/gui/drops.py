"""What to do with things dropped, pasted or opened as query images (no Qt, no widgets).

Each item is checked cheaply, from its name, its stat and the image header (never decoded here),
so a drop of anything — a folder, a PDF, an empty PNG, a huge image, a web address, hundreds of
files — answers at once with one clear message per problem, and only usable images go on to
identification (which decodes them on the GPU lane, through ``store.images.load_image``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from gmi_desktop.core.errors import NotAnImage

MAX_QUERY_IMAGES = 16  # a query is a few images of one kind; more is almost surely a mistake
_MESSAGES_SHOWN = 5


@dataclass
class DropCheck:
    images: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def message(self) -> str:
        """One short paragraph for the status line ('' when all is well)."""
        if not self.problems:
            return ""
        shown = self.problems[:_MESSAGES_SHOWN]
        more = len(self.problems) - len(shown)
        return "\n".join(shown + ([f"... and {more} more"] if more > 0 else []))


def _as_path(item: str) -> tuple[Path | None, str | None]:
    """A local path for ``item`` (a path or a ``file://`` URL), or a message for anything else."""
    text = item.strip()
    parsed = urlparse(text)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)), None
    if parsed.scheme and len(parsed.scheme) > 1 and (parsed.netloc or parsed.scheme in {"data", "mailto"}):
        shown = text if len(text) <= 80 else text[:77] + "..."
        return None, (f"{shown}: a web address, not a file; save the image to your disk first "
                      "(right-click it in the browser), then drop the saved file")
    return Path(text), None


def check_image(path: Path, max_pixels: int | None = None) -> None:
    """Raise :class:`NotAnImage` unless ``path`` is an image file we can decode (header only);
    ``max_pixels`` defaults to what ``store.images.load_image`` accepts."""
    from PIL import Image, UnidentifiedImageError

    from gmi_desktop.store.images import MAX_PIXELS  # numpy: imported on the first drop, not at start

    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotAnImage(path, "no such file") from None
    except OSError as exc:
        raise NotAnImage(path, f"cannot read it ({exc.strerror or exc})") from None
    if os.path.isdir(path):
        raise NotAnImage(path, "a folder, not an image", "drop the image files inside it instead")
    if not os.path.isfile(path):
        raise NotAnImage(path, "not a regular file")
    if st.st_size == 0:
        raise NotAnImage(path, "an empty file (0 bytes)", "the copy or download did not finish; get the image again")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                width, height = image.size
    except UnidentifiedImageError:
        kind = "a PDF document" if path.suffix.lower() == ".pdf" else "not an image file"
        raise NotAnImage(path, f"{kind}, not an image" if kind.startswith("a ") else kind) from None
    except Image.DecompressionBombError:
        raise NotAnImage(path, "image is too large to decode safely", "scale it down") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise NotAnImage(path, f"image data is broken ({exc})", "re-save or re-download the image") from None
    if width * height > max_pixels:
        raise NotAnImage(path, f"image is too large ({width} x {height} pixels)",
                         "scale it down below about 100 megapixels")


def check_drop(items: list[str], max_images: int = MAX_QUERY_IMAGES) -> DropCheck:
    """Split dropped ``items`` (paths or URLs) into usable images and one message per problem."""
    result = DropCheck()
    if not items:
        result.problems.append("nothing to use in what was dropped")
        return result
    if len(items) > max_images:
        result.problems.append(
            f"{len(items)} files at once: a query is up to {max_images} images of one kind "
            "(several images of the same style rank better than one); drop fewer")
        return result
    for item in items:
        path, problem = _as_path(item)
        if problem:
            result.problems.append(problem)
            continue
        try:
            check_image(path)
        except NotAnImage as exc:
            result.problems.append(exc.message)
            continue
        if path not in result.images:
            result.images.append(path)
    return result
