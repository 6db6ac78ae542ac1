"""Generation metadata embedded in an image: which checkpoint made it, and from which prompt.

The *formats* of the generators (AUTOMATIC1111/Forge ``parameters``, ComfyUI ``prompt`` +
``workflow``, InvokeAI, Fooocus, NovelAI) are parsed by the ``sd-parsers`` library. Getting the raw
fields out of the file is done here, because its extractors are unsafe on untrusted images or
wrong on real ones (sd-parsers 0.6):

- its JPEG/WebP and "stealth" extractors cache the last result under ``id(image)``: a new image
  that reuses a freed image's id gets the *previous* image's metadata (seen here: a plain JPEG
  read after an A1111 JPEG reported the A1111 parameters);
- its stealth reader inflates the gzip payload with no limit (a few MB hidden in the alpha
  channel can inflate to gigabytes) and builds a Python list of every pixel;
- it decodes EXIF ``UserComment`` as UTF-16 big-endian only (``ASCII`` and little-endian
  comments come out as garbage).

We read PNG text chunks, the EXIF ``UserComment`` (by its charset prefix), ComfyUI's WebP EXIF
fields and the alpha channel's stealth data (``stealth_pnginfo`` / ``stealth_pngcomp``,
size-limited) ourselves, then hand the fields to sd-parsers' parsers in their own order. Where
its parsers miss a model we fill in from the same fields (:func:`_extra_models`): a ComfyUI
checkpoint behind a LoRA node (sd-parsers returns the link, a list, as the "name"), ComfyUI
images saved without the ``workflow`` field, InvokeAI 4's ``model.name``/``model.hash``, and
A1111's ``Hashes: {"model": ...}``.

Pure: PIL and the standard library only (no torch), so the GUI and a machine without any
weights can read it.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gmi_desktop.store.images import MAX_PIXELS, open_image

MAX_TEXT_BYTES = 1 << 20  # a stealth payload larger than this (inflated) is refused
STEALTH_MAGICS = {b"stealth_pnginfo": False, b"stealth_pngcomp": True}  # magic -> gzip-compressed
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class ModelRef:
    """A checkpoint an image names: ``name`` and/or ``hash`` as written, and where it was found.

    ``hash_kind`` is ``"sha256"`` (64 hex), ``"autov2"`` (10 hex), ``"autov1"`` (8 hex), another
    algorithm's name (``"blake3"``: cannot be compared with our hashes) or None.
    """

    name: str | None
    hash: str | None
    hash_kind: str | None
    field: str  # e.g. 'A1111 "Model hash"', "ComfyUI ckpt_name"

    @property
    def comparable_hash(self) -> str | None:
        return self.hash if self.hash_kind in {"sha256", "autov2", "autov1"} else None


@dataclass(frozen=True)
class ImageMetadata:
    """What an image says about how it was made (``generator`` as sd-parsers names it)."""

    path: Path
    generator: str
    source: str  # where in the file: "PNG text", "EXIF UserComment", "stealth alpha", ...
    prompt: str
    negative_prompt: str
    models: tuple[ModelRef, ...]

    @property
    def summary(self) -> str:
        return f"{self.generator} metadata ({self.source})"


def normalise_hash(text: Any) -> tuple[str | None, str | None]:
    """``(hash, kind)`` of a hash as images write it: lower-case hex, an ``algo:`` prefix split off."""
    if not isinstance(text, str) or not text.strip():
        return None, None
    value = text.strip().lower()
    algo = None
    if ":" in value:
        algo, value = (part.strip() for part in value.split(":", 1))
    if not _HEX.fullmatch(value):
        return text.strip(), algo or "unknown"
    kind = {64: "sha256", 10: "autov2", 8: "autov1"}.get(len(value))
    if algo not in (None, "sha256") or kind is None:
        return value, algo or f"{len(value)}-hex"
    if algo == "sha256" and kind != "sha256":
        return value, "sha256-prefix"
    return value, kind


def model_name_key(name: str) -> str:
    """A model name as compared with file names: ``/`` separators, no checkpoint suffix, no
    A1111 ``[hash]`` tail, lower case."""
    text = name.strip().replace("\\", "/")
    text = re.sub(r"\s*\[[0-9a-fA-F]{8,64}\]$", "", text)
    for suffix in CHECKPOINT_SUFFIXES:
        if text.lower().endswith(suffix):
            text = text[: -len(suffix)]
            break
    return text.strip("/").lower()


# -- raw fields ------------------------------------------------------------------------------
def _decode_user_comment(raw: Any) -> str | None:
    """EXIF UserComment: an 8-byte charset prefix, then the text."""
    if isinstance(raw, str):
        return raw.strip("\x00") or None
    if not isinstance(raw, (bytes, bytearray)) or len(raw) <= 8:
        return None
    prefix, body = bytes(raw[:8]), bytes(raw[8:])
    if prefix.startswith(b"UNICODE"):
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return body.decode("utf-16", "replace").strip("\x00") or None
        # A1111 (piexif) writes big-endian; tools on Windows little-endian: pick by the zero bytes
        zeros_even = body[0::2].count(0)
        zeros_odd = body[1::2].count(0)
        return body.decode("utf-16-be" if zeros_even >= zeros_odd else "utf-16-le", "replace").strip("\x00") or None
    if prefix.startswith(b"ASCII") or prefix == b"\x00" * 8:
        return body.decode("utf-8", "replace").strip("\x00") or None
    return None


def _exif_fields(image: Image.Image) -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        exif = image.getexif()
        comment = _decode_user_comment(exif.get_ifd(0x8769).get(0x9286))
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):
        return fields
    if comment:
        fields["parameters"] = comment
    # ComfyUI's WebP/animated saves: "workflow:{...}" in Make, "prompt:{...}" in Model
    for tag in (0x010F, 0x0110):
        value = exif.get(tag)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str) and ":" in value:
            key, _, rest = value.partition(":")
            if key in ("workflow", "prompt"):
                fields[key] = rest
    return fields


def _stealth_text(image: Image.Image) -> str | None:
    """The A1111 "stealth pnginfo" payload in the alpha channel's lowest bits (column by column),
    with the inflated size limited to :data:`MAX_TEXT_BYTES`."""
    if "A" not in image.getbands():
        return None
    alpha = np.asarray(image.getchannel("A"), dtype=np.uint8)
    bits = (alpha.T & 1).ravel()
    head = 8 * len(next(iter(STEALTH_MAGICS)))
    if bits.size < head + 32:
        return None
    magic = np.packbits(bits[:head]).tobytes()
    if magic not in STEALTH_MAGICS:
        return None
    length = int.from_bytes(np.packbits(bits[head:head + 32]).tobytes(), "big")
    if length <= 0 or length % 8 or head + 32 + length > bits.size or length // 8 > 64 * MAX_TEXT_BYTES:
        return None
    data = np.packbits(bits[head + 32:head + 32 + length]).tobytes()
    if STEALTH_MAGICS[magic]:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(data, MAX_TEXT_BYTES + 1)
        except zlib.error:
            return None
        if len(data) > MAX_TEXT_BYTES or inflater.unconsumed_tail:
            return None
    elif len(data) > MAX_TEXT_BYTES:
        return None
    return data.decode("utf-8", "replace")


def _raw_fields(image: Image.Image) -> tuple[dict[str, Any], str]:
    if image.format == "PNG":
        fields = {k: v for k, v in image.info.items() if isinstance(v, str)}
        text = getattr(image, "text", None)  # iTXt/tEXt/zTXt chunks after the image data too
        if isinstance(text, dict):
            fields.update({k: v for k, v in text.items() if isinstance(v, str)})
        if fields:
            return fields, "PNG text"
    elif image.format in ("JPEG", "WEBP", "MPO"):
        fields = _exif_fields(image)
        if fields:
            return fields, "EXIF UserComment" if "parameters" in fields else "EXIF"
    stealth = _stealth_text(image)
    if stealth:
        try:
            decoded = json.loads(stealth)
        except json.JSONDecodeError:
            decoded = None
        if isinstance(decoded, dict):  # NovelAI keeps its PNG text fields as JSON here
            return {k: v for k, v in decoded.items() if isinstance(v, str)}, "stealth alpha"
        return {"parameters": stealth}, "stealth alpha"
    return {}, ""


# -- parsing ---------------------------------------------------------------------------------
def _comfy_links(prompt: dict) -> list[list]:
    """A ComfyUI ``workflow["links"]`` list rebuilt from the API ``prompt`` graph (for images saved
    without the workflow): ``[id, origin, slot, target, slot, type]``."""
    links = []
    for target, node in prompt.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        for value in inputs.values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int)):
                links.append([len(links) + 1, str(value[0]), value[1], str(target), 0, "*"])
    return links


def _json_object(text: Any) -> dict | None:
    if isinstance(text, dict):
        return text
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _parse(fields: dict[str, Any]):
    from sd_parsers.exceptions import ParserError
    from sd_parsers.parsers import MANAGED_PARSERS

    if "prompt" in fields and "workflow" not in fields:
        prompt = _json_object(fields["prompt"])
        if prompt is not None:
            fields = {**fields, "workflow": json.dumps({"links": _comfy_links(prompt)})}
    for parser_class in MANAGED_PARSERS:
        try:
            return parser_class().parse(dict(fields))
        except ParserError:
            continue
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError):
            continue  # a malformed field its parser did not expect: not this generator
    return None


def _models_from_info(info) -> list[ModelRef]:
    generator = str(getattr(info.generator, "value", info.generator))
    out = []
    for sampler in info.samplers:
        model = sampler.model
        if model is None:
            continue
        name = model.name if isinstance(model.name, str) and model.name.strip() else None
        digest, kind = normalise_hash(model.hash)
        if generator == "NovelAI" and digest:
            kind = "novelai"  # NovelAI's own model id, not a hash of a file anyone has
        if name or digest:
            out.append(ModelRef(name, digest, kind, f"{generator} metadata"))
    return out


def _extra_models(fields: dict[str, Any], generator: str, metadata: dict) -> list[ModelRef]:
    out = []
    if generator == "AUTOMATIC1111":
        hashes = metadata.get("Hashes")
        if isinstance(hashes, dict) and isinstance(hashes.get("model"), str):
            digest, kind = normalise_hash(hashes["model"])
            out.append(ModelRef(None, digest, kind, 'A1111 "Hashes" model'))
    prompt = _json_object(fields.get("prompt")) if generator == "ComfyUI" else None
    if prompt is not None:
        for node in prompt.values():
            inputs = node.get("inputs") if isinstance(node, dict) else None
            if isinstance(inputs, dict) and isinstance(inputs.get("ckpt_name"), str):
                out.append(ModelRef(inputs["ckpt_name"], None, None, "ComfyUI ckpt_name"))
    invoke = _json_object(fields.get("invokeai_metadata")) if generator == "InvokeAI" else None
    model = invoke.get("model") if invoke else None
    if isinstance(model, dict):
        name = model.get("model_name") or model.get("name")
        digest, kind = normalise_hash(model.get("hash"))
        if isinstance(name, str) or digest:
            out.append(ModelRef(name if isinstance(name, str) else None, digest, kind, "InvokeAI model"))
    return out


def _covers(a: ModelRef, b: ModelRef) -> bool:
    """``a`` says everything ``b`` says (same name or none, same hash or none)."""
    same_name = b.name is None or (a.name is not None and model_name_key(a.name) == model_name_key(b.name))
    return same_name and (b.hash is None or b.hash == a.hash)


def _dedupe(models: list[ModelRef]) -> tuple[ModelRef, ...]:
    kept: list[ModelRef] = []
    for ref in models:
        if any(_covers(k, ref) for k in kept):
            continue
        kept = [k for k in kept if not _covers(ref, k)] + [ref]
    return tuple(kept)


def read_metadata(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS) -> ImageMetadata | None:
    """The generation metadata of the image at ``path``, or None when it carries none we know.

    Raises :class:`~gmi_desktop.core.errors.NotAnImage` for files that are not images (as :func:`load_image` does).
    """
    path = Path(path)
    with open_image(path, max_pixels) as image:
        fields, source = _raw_fields(image)
    if not fields:
        return None
    info = _parse(fields)
    if info is None:
        return None
    generator = str(getattr(info.generator, "value", info.generator))
    metadata = info.metadata if isinstance(info.metadata, dict) else {}
    models = _dedupe(_models_from_info(info) + _extra_models(fields, generator, metadata))
    prompt = ", ".join(p.value.strip() for p in info.prompts if isinstance(p.value, str) and p.value.strip())
    negative = ", ".join(p.value.strip() for p in info.negative_prompts
                         if isinstance(p.value, str) and p.value.strip())
    return ImageMetadata(path, generator, source, prompt, negative, models)
