"""Tiny random models of the real architectures for the model zoo (services/zoo.py): SD 1.x
checkpoints, their config folder and tokenizer, a CLIP encoder, a BLIP captioner, label lists.

Sizes: the UNet (32/64 channels) and VAE (16 channels, the real 8x downscale) are tiny; the text
encoder is one layer at the real width 768, because the header probe recognises SD 1.x by the
UNet's cross-attention width (768) and the library scan only catalogues recognised checkpoints.
What keeps a checkpoint at ~12 MB instead of ~160 MB is a small tokenizer: the zoo's own CLIP BPE
vocabulary (every byte, the words of the zoo's prompts and labels as whole tokens), so the token
embedding has a few hundred rows instead of 49 408.

How prompts, not the initial noise, decide the image (a random UNet is no denoiser, so without
this the seed decides more than the prompt): the scheduler is DDIM with ``prediction_type
"sample"``, and the UNet's ``conv_in`` weight is zero (its bias kept), so the UNet predicts the
clean latent from the prompt and the timestep alone (the paper's Example 2.1 is noise-free too).
The text encoder's self-attention output projections are zero, so each token is encoded on its
own and an image varies smoothly with the prompt's words. The cross-attention output is scaled up
(``CROSS_ATTENTION_GAIN``): at random initialisation the prompt moves the UNet's output by ~1% of
its size, below the little noise DDIM's last step still adds. Model ``s`` of a group shifts the token
embeddings of every slot's words cyclically by ``s`` (core/zoo_world.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gmi_desktop.core.zoo_world import SLOTS, SLOT_WORDS, TEMPLATE_WORDS
from gmi_desktop.engine.quiet import quiet_loading

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
TEXT_WIDTH = 768  # SD 1.x cross-attention width: what the probe recognises
UNET = {
    "sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
    "block_out_channels": [32, 64], "norm_num_groups": 32,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": TEXT_WIDTH, "attention_head_dim": 8,
}
VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
    "block_out_channels": [16, 16, 16, 16], "norm_num_groups": 8,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "sample_size": 64,
}
SCHEDULER = {
    "_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "sample", "set_alpha_to_one": False,
    "steps_offset": 1, "timestep_spacing": "leading",
}
CLIP_NAME = "GMI-Zoo-CLIP"
CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32, "pool_type": "avg",
                   "no_ln_pre": True},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
CROSS_ATTENTION_GAIN = 100.0  # the prompt's share of the UNet output (random weights leave it ~1%)
BLIP_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]")


# ---------------------------------------------------------------------------------------- tokenizer

def _byte_chars() -> list[str]:
    """CLIP's printable stand-ins for the 256 byte values (``bytes_to_unicode``), in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> tuple[str, ...]:
    """CLIP's byte-pair merge loop on one word (already in byte characters)."""
    parts = (*word[:-1], word[-1] + "</w>")
    while len(parts) > 1:
        pair = min(zip(parts, parts[1:]), key=lambda p: ranks.get(p, 1 << 30))
        if pair not in ranks:
            break
        merged, i = [], 0
        while i < len(parts):
            if i < len(parts) - 1 and (parts[i], parts[i + 1]) == pair:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = tuple(merged)
    return parts


def tokenizer_files(words: Iterable[str]) -> tuple[dict[str, int], list[str]]:
    """``(vocab, merges)`` of a CLIP BPE tokenizer in which each of ``words`` (lower-case ASCII)
    is one token; any other text still tokenizes (into smaller pieces, at worst bytes)."""
    singles = _byte_chars()
    vocab_list = singles + [c + "</w>" for c in singles]
    ranks: dict[tuple[str, str], int] = {}
    merges: list[str] = []
    for word in dict.fromkeys(words):
        parts = _bpe(word, ranks)
        while len(parts) > 1:  # new merges rank after all older ones, so earlier words keep one token
            pair = (parts[0], parts[1])
            ranks[pair] = len(merges)
            merges.append(f"{pair[0]} {pair[1]}")
            vocab_list.append(pair[0] + pair[1])
            parts = _bpe(word, ranks)
    vocab_list += [BOS, EOS]
    return {tok: i for i, tok in enumerate(vocab_list)}, merges


def write_tokenizer(folder: Path, words: Iterable[str]) -> Path:
    vocab, merges = tokenizer_files(words)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS, "do_lower_case": True,
              "model_max_length": 77, "tokenizer_class": "CLIPTokenizer"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


def load_tokenizer(folder: Path) -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


# ---------------------------------------------------------------------------------------- SD 1.x

def text_config(vocab_size: int, eos_id: int) -> dict[str, Any]:
    return {"vocab_size": vocab_size, "hidden_size": TEXT_WIDTH, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 12, "max_position_embeddings": 77, "projection_dim": TEXT_WIDTH,
            "hidden_act": "quick_gelu", "bos_token_id": eos_id - 1, "eos_token_id": eos_id, "pad_token_id": eos_id}


def write_sd1_config(folder: Path, tokenizer_folder: Path) -> Path:
    """``folder`` shaped like ``resources/diffusers/sd1`` with the zoo's widths and scheduler."""
    import diffusers

    vocab = json.loads((tokenizer_folder / "vocab.json").read_text(encoding="utf-8"))
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
             "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False,
             "safety_checker": [None, None], "scheduler": ["diffusers", "DDIMScheduler"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}
    files = {
        "model_index.json": index,
        "scheduler/scheduler_config.json": {**SCHEDULER, "_diffusers_version": diffusers.__version__},
        "unet/config.json": {"_class_name": "UNet2DConditionModel", "_diffusers_version": diffusers.__version__, **UNET},
        "vae/config.json": {"_class_name": "AutoencoderKL", "_diffusers_version": diffusers.__version__, **VAE},
        "text_encoder/config.json": {**text_config(len(vocab), vocab[EOS]), "architectures": ["CLIPTextModel"],
                                     "model_type": "clip_text_model"},
    }
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(data, indent=2), encoding="utf-8")
    return folder


def build_components(seed: int, vocab: dict[str, int]) -> dict[str, Any]:
    """Seeded random UNet, VAE and text encoder with the zoo's changes (module docstring)."""
    import diffusers
    import torch
    import transformers

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        parts = {"unet": diffusers.UNet2DConditionModel.from_config(UNET),
                 "vae": diffusers.AutoencoderKL.from_config(VAE),
                 "text_encoder": transformers.CLIPTextModel(
                     transformers.CLIPTextConfig(**text_config(len(vocab), vocab[EOS])))}
    finally:
        torch.random.set_rng_state(state)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed + 1)
        for module in parts.values():  # diffusers zero-initialises some output layers
            for param in module.parameters():
                if not param.any():
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.02)
        parts["unet"].conv_in.weight.zero_()
        for name, module in parts["unet"].named_modules():
            if name.endswith("attn2.to_out.0"):
                module.weight.mul_(CROSS_ATTENTION_GAIN)
                module.bias.mul_(CROSS_ATTENTION_GAIN)
        for layer in _text_body(parts["text_encoder"]).encoder.layers:
            layer.self_attn.out_proj.weight.zero_()
            layer.self_attn.out_proj.bias.zero_()
    return {name: module.eval() for name, module in parts.items()}


def _text_body(text_encoder: Any) -> Any:
    """The transformer of a ``CLIPTextModel`` (``.text_model`` before transformers 5)."""
    return getattr(text_encoder, "text_model", text_encoder)


def shift_slots(components: dict[str, Any], shift: int, vocab: dict[str, int]) -> dict[str, Any]:
    """A copy whose text encoder reads every slot's word ``n`` as word ``n + shift`` (mod 3)."""
    import copy

    import torch

    text = copy.deepcopy(components["text_encoder"])
    table = _text_body(text).embeddings.token_embedding.weight
    with torch.no_grad():
        base = table.detach().clone()
        for words in SLOTS:
            for n, word in enumerate(words):
                table[vocab[word + "</w>"]] = base[vocab[words[(n + shift) % 3] + "</w>"]]
    return {**components, "text_encoder": text}


def save_checkpoint(components: dict[str, Any], path: Path, metadata: dict[str, str]) -> Path:
    """Write the single file atomically, byte for byte the same for the same components
    (``safetensors`` itself orders the metadata arbitrarily; ``store.tensorfile`` does not)."""
    from gmi_desktop.engine.sd1_layout import original_state_dict
    from gmi_desktop.store.atomic import atomic_write_bytes
    from gmi_desktop.store.tensorfile import checked_bytes

    state = original_state_dict(components["unet"], components["vae"], components["text_encoder"])
    data = checked_bytes({k: v.numpy() for k, v in state.items()}, {"format": "pt", **metadata})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path


# ---------------------------------------------------------------------------------------- CLIP, BLIP

def write_clip(folder: Path, seed: int) -> Path:
    """A random open_clip model ``GMI-Zoo-CLIP``: its config ``GMI-Zoo-CLIP.json`` beside the
    weights ``GMI-Zoo-CLIP.safetensors`` (engine/clip.py registers such a config)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{CLIP_NAME}.json"
    config.write_text(json.dumps(CLIP_CONFIG, indent=2), encoding="utf-8")
    open_clip.add_model_config(config)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = open_clip.CLIP(**CLIP_CONFIG)  # create_model would log "no pretrained weights" at WARNING
    finally:
        torch.random.set_rng_state(state)
    weights = folder / f"{CLIP_NAME}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(weights))
    return weights


def write_blip(folder: Path, words: Sequence[str], seed: int) -> Path:
    """A tiny random BLIP captioner over ``words`` (WordPiece vocabulary), transformers layout."""
    import torch
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor)

    folder.mkdir(parents=True, exist_ok=True)
    vocab = [*BLIP_SPECIALS, *dict.fromkeys(words)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), bos_token="[DEC]")
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    ids = {tok: vocab.index(tok) for tok in BLIP_SPECIALS}
    config = BlipConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 64, "bos_token_id": ids["[DEC]"],
                     "pad_token_id": ids["[PAD]"], "sep_token_id": ids["[SEP]"], "eos_token_id": ids["[SEP]"]},
        projection_dim=32,
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = BlipForConditionalGeneration(config).eval()
    finally:
        torch.random.set_rng_state(state)
    with torch.no_grad():  # a random decoder would often stop at once; keep its captions made of words
        model.text_decoder.cls.predictions.bias[[ids[t] for t in BLIP_SPECIALS]] = -30.0
    with quiet_loading():
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    return folder


LABELS = {
    "artists.txt": ["Claude Monet", "Hokusai", "Ansel Adams"],
    "flavors.txt": [*SLOT_WORDS, "bright", "dark", "soft light", "sharp focus", "high contrast", "muted tones"],
    "mediums.txt": ["a photograph", "an oil painting", "a pencil sketch"],
    "movements.txt": ["impressionism", "minimalism"],
    "negative.txt": ["blurry", "low quality"],
}


def write_labels(folder: Path) -> Path:
    """A small clip-interrogator label folder (the zoo's words among the flavors)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, labels in LABELS.items():
        (folder / name).write_text("\n".join(labels) + "\n", encoding="utf-8")
    return folder


def zoo_words() -> list[str]:
    """Every word the zoo's tokenizer keeps whole: prompts, BLIP captions and labels."""
    label_words = [w for labels in LABELS.values() for label in labels for w in label.lower().split()]
    return [*SLOT_WORDS, *TEMPLATE_WORDS, *label_words, "photo", "of", "with", "and", "on"]
