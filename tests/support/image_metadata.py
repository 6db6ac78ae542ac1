"""Images carrying generation metadata exactly as the popular UIs write it (for metadata and
identify tests): A1111/Forge ``parameters`` (PNG text, JPEG/WebP EXIF UserComment, stealth alpha),
ComfyUI ``prompt`` + ``workflow``, InvokeAI 3/4 ``invokeai_metadata``, Fooocus, NovelAI."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin


def a1111_parameters(prompt: str, *, model: str | None = None, model_hash: str | None = None,
                     negative: str = "blurry", hashes: dict | None = None) -> str:
    tail = ["Steps: 20", "Sampler: DPM++ 2M", "Schedule type: Karras", "CFG scale: 7", "Seed: 1234",
            "Size: 64x64"]
    if model_hash:
        tail.append(f"Model hash: {model_hash}")
    if model:
        tail.append(f"Model: {model}")
    if hashes:
        tail.append(f"Hashes: {json.dumps(hashes)}")
    tail.append("Version: v1.10.1")
    return f"{prompt}\nNegative prompt: {negative}\n{', '.join(tail)}"


def base_image(seed: int = 0, size: tuple[int, int] = (64, 64), mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8)
    return Image.fromarray(pixels, mode)


def write_png_text(path: Path, fields: dict[str, str], image: Image.Image | None = None) -> Path:
    info = PngImagePlugin.PngInfo()
    for key, value in fields.items():
        info.add_itxt(key, value) if not value.isascii() else info.add_text(key, value)
    (image or base_image()).save(path, format="PNG", pnginfo=info)
    return path


def user_comment(text: str, encoding: str = "unicode-be") -> bytes:
    """EXIF UserComment bytes: the 8-byte charset prefix A1111 (piexif) and others write."""
    if encoding == "unicode-be":
        return b"UNICODE\0" + text.encode("utf-16-be")
    if encoding == "unicode-le":
        return b"UNICODE\0" + text.encode("utf-16-le")
    return b"ASCII\0\0\0" + text.encode("ascii")


def write_exif_comment(path: Path, text: str, *, encoding: str = "unicode-be", image: Image.Image | None = None) -> Path:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = user_comment(text, encoding)
    (image or base_image()).save(path, exif=exif, quality=90)
    return path


def write_stealth(path: Path, text: str, *, compressed: bool = True, image: Image.Image | None = None) -> Path:
    """A1111's stealth-pnginfo: magic, 32-bit bit length and the payload in the alpha LSBs,
    column by column."""
    image = (image or base_image(size=(96, 96))).convert("RGBA")
    payload = gzip.compress(text.encode("utf-8")) if compressed else text.encode("utf-8")
    magic = b"stealth_pngcomp" if compressed else b"stealth_pnginfo"
    data = magic + (len(payload) * 8).to_bytes(4, "big") + payload
    bits = np.unpackbits(np.frombuffer(data, np.uint8))
    rgba = np.array(image)
    alpha_t = rgba[:, :, 3].T.copy()  # column-major order
    flat = alpha_t.ravel()
    if bits.size > flat.size:
        raise ValueError("image too small for the payload")
    flat[: bits.size] = (flat[: bits.size] & 0xFE) | bits
    rgba[:, :, 3] = flat.reshape(alpha_t.shape).T
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def comfy_graph(ckpt_name: str, prompt: str, *, lora: bool = True) -> tuple[dict, dict]:
    """A ComfyUI API ``prompt`` and a ``workflow`` (its ``links``), checkpoint -> LoRA -> KSampler."""
    model_src = "10" if lora else "4"
    nodes = {
        "3": {"class_type": "KSampler", "inputs": {
            "seed": 7, "steps": 20, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": [model_src, 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": [model_src, 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "lowres, blurry", "clip": [model_src, 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }
    links = [[3, int(model_src), 0, 3, 0, "MODEL"], [4, int(model_src), 1, 6, 0, "CLIP"],
             [5, int(model_src), 1, 7, 0, "CLIP"], [6, 6, 0, 3, 1, "CONDITIONING"], [7, 7, 0, 3, 2, "CONDITIONING"],
             [8, 5, 0, 3, 3, "LATENT"], [9, 3, 0, 8, 0, "LATENT"], [10, 4, 2, 8, 1, "VAE"], [11, 8, 0, 9, 0, "IMAGE"]]
    if lora:
        nodes["10"] = {"class_type": "LoraLoader", "inputs": {
            "lora_name": "add_detail.safetensors", "strength_model": 0.8, "strength_clip": 0.8,
            "model": ["4", 0], "clip": ["4", 1]}}
        links += [[1, 4, 0, 10, 0, "MODEL"], [2, 4, 1, 10, 1, "CLIP"]]
    workflow = {"last_node_id": 10, "last_link_id": 11, "nodes": [{"id": int(k), "type": v["class_type"]}
                                                                  for k, v in nodes.items()], "links": links}
    return nodes, workflow


def write_comfyui(path: Path, ckpt_name: str, prompt: str, *, lora: bool = True, workflow: bool = True) -> Path:
    nodes, flow = comfy_graph(ckpt_name, prompt, lora=lora)
    fields = {"prompt": json.dumps(nodes)}
    if workflow:
        fields["workflow"] = json.dumps(flow)
    return write_png_text(path, fields)


def invokeai_metadata(prompt: str, model_name: str, *, version: int = 3, model_hash: str | None = None) -> str:
    if version >= 4:
        model = {"key": "6d2f4e3a-0c1b-4c55-9b0e-2f7f6b0d1e11", "hash": model_hash or "blake3:" + "ab" * 32,
                 "name": model_name, "base": "sd-1", "type": "main"}
    else:
        model = {"model_name": model_name, "base_model": "sd-1", "model_type": "main"}
    return json.dumps({
        "generation_mode": "txt2img", "positive_prompt": prompt, "negative_prompt": "ugly",
        "width": 512, "height": 512, "seed": 42, "rand_device": "cpu", "cfg_scale": 7.5, "steps": 30,
        "scheduler": "euler", "model": model, "app_version": "4.2.9" if version >= 4 else "3.6.0",
    })


def fooocus_parameters(prompt: str, base_model: str, base_model_hash: str) -> str:
    return json.dumps({
        "prompt": prompt, "negative_prompt": "", "styles": "['Fooocus V2']", "performance": "Speed",
        "resolution": "(1024, 1024)", "guidance_scale": 4, "sharpness": 2, "adm_guidance": "(1.5, 0.8, 0.3)",
        "base_model": base_model, "base_model_hash": base_model_hash, "refiner_model": "None",
        "sampler": "dpmpp_2m_sde_gpu", "scheduler": "karras", "seed": 12, "steps": 30, "version": "Fooocus v2.3.1",
    })


def novelai_fields(prompt: str) -> dict[str, str]:
    comment = {"steps": 28, "sampler": "k_euler_ancestral", "seed": 5, "strength": 0.7, "noise": 0.2,
               "scale": 5.0, "uc": "lowres"}
    return {"Title": "AI generated image", "Description": prompt, "Software": "NovelAI",
            "Source": "Stable Diffusion XL C1E1DE52", "Comment": json.dumps(comment)}
