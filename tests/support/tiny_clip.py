"""Tiny, randomly initialised CLIP and BLIP models of the real architectures, built offline.

- :func:`register_tiny_clip` registers an open_clip JSON config (``GMI-Tiny-CLIP``: 32 px images,
  16 px patches, width 32, one layer per tower; the real 49408-token BPE vocabulary and 77-token
  context, since the tokenizer is open_clip's real one).
- :func:`write_tiny_clip_weights` saves its seeded random state dict as a ``.safetensors`` file,
  so tests load it through the same "explicit local file" path a user's weights take.
- :func:`write_tiny_blip` saves a tiny ``BlipForConditionalGeneration`` with a BERT WordPiece
  tokenizer built from a small vocab file and a 32 px ``BlipImageProcessor`` in the transformers
  folder layout (``save_pretrained``), as a user's local BLIP folder would be.
- :func:`write_tiny_labels` writes a small clip-interrogator label data folder.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

TINY_CLIP = "GMI-Tiny-CLIP"
TINY_CLIP_CONFIG = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
WORDS = ("a photo of the cat dog red blue green painting drawing sketch art house tree river sky "
         "sunset portrait old young man woman city night light dark small large bright and with in on").split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
_registered: list[Path] = []


def register_tiny_clip() -> str:
    """Register the tiny open_clip config (once per process) and return its model name."""
    import open_clip

    if not _registered:
        folder = Path(tempfile.mkdtemp(prefix="gmi-tiny-clip-"))
        path = folder / f"{TINY_CLIP}.json"
        path.write_text(json.dumps(TINY_CLIP_CONFIG), encoding="utf-8")
        open_clip.add_model_config(path)
        _registered.append(path)
    return TINY_CLIP


def write_tiny_clip_weights(path: Path, seed: int = 0) -> Path:
    """Save a seeded random tiny CLIP state dict to ``path`` (.safetensors)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    register_tiny_clip()
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_CLIP, pretrained=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def write_tiny_blip(folder: Path, seed: int = 0) -> Path:
    """Save a tiny random BLIP captioner + processor into ``folder`` (transformers layout)."""
    import torch
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor)

    folder.mkdir(parents=True, exist_ok=True)
    vocab = SPECIALS + list(WORDS)
    vocab_dir = folder / "_vocab"
    vocab_dir.mkdir(exist_ok=True)
    (vocab_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer.from_pretrained(str(vocab_dir), bos_token="[DEC]")
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    ids = {tok: vocab.index(tok) for tok in SPECIALS}
    config = BlipConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 64, "bos_token_id": ids["[DEC]"],
                     "pad_token_id": ids["[PAD]"], "sep_token_id": ids["[SEP]"], "eos_token_id": ids["[SEP]"]},
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    with torch.no_grad():  # a random decoder would often stop at once; keep its captions made of words
        bias = model.text_decoder.cls.predictions.bias
        bias[[ids[t] for t in SPECIALS]] = -30.0
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    for leftover in vocab_dir.iterdir():
        leftover.unlink()
    vocab_dir.rmdir()
    return folder


def write_tiny_labels(folder: Path) -> Path:
    """A clip-interrogator data folder with a few labels per table (fast to embed)."""
    folder.mkdir(parents=True, exist_ok=True)
    tables = {
        "artists.txt": ["Claude Monet", "Hokusai", "Frida Kahlo", "Ansel Adams"],
        "flavors.txt": ["highly detailed", "soft light", "bokeh", "matte painting", "4k", "sharp focus",
                        "vibrant colors", "muted tones", "dramatic lighting", "film grain"],
        "mediums.txt": ["an oil painting", "a photograph", "a watercolor painting", "a pencil sketch"],
        "movements.txt": ["impressionism", "surrealism", "minimalism"],
        "negative.txt": ["blurry", "low quality", "watermark", "jpeg artifacts"],
    }
    for name, labels in tables.items():
        (folder / name).write_text("\n".join(labels) + "\n", encoding="utf-8")
    return folder


def random_images(count: int, seed: int = 0, size: tuple[int, int] = (48, 40)) -> list[Image.Image]:
    """Seeded random RGB images of varying content (and one of another size)."""
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(count)]
    if count > 1:
        images[-1] = Image.fromarray(rng.integers(0, 256, (70, 33, 3), dtype=np.uint8))
    return images


@dataclass(frozen=True)
class TinyAssets:
    root: Path
    clip_weights: Path  # seed 0, a .safetensors file
    clip_weights_other: Path  # seed 1: same architecture, other weights
    blip_folder: Path
    labels: Path


@functools.lru_cache(maxsize=1)
def tiny_assets() -> TinyAssets:
    """Build the tiny model files once per test process (removed at exit)."""
    root = Path(tempfile.mkdtemp(prefix="gmi-tiny-models-"))
    atexit.register(shutil.rmtree, root, True)
    return TinyAssets(
        root=root,
        clip_weights=write_tiny_clip_weights(root / "clip" / "tiny-seed0.safetensors", seed=0),
        clip_weights_other=write_tiny_clip_weights(root / "clip-other" / "tiny-seed1.safetensors", seed=1),
        blip_folder=write_tiny_blip(root / "blip", seed=0),
        labels=write_tiny_labels(root / "labels"),
    )
