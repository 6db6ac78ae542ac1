"""Tell what a safetensors file holds from its tensor names and shapes alone.

Input is the tensor table of the header (``name -> (dtype, shape)``); nothing here reads a file.
Checkpoints are recognised the way the original (CompVis / Stability) single-file layout names
them:

* UNet under ``model.diffusion_model.``; the width of the cross-attention key projection
  (``...attn2.to_k.weight``, shape ``[out, context]``) gives the family: 768 SD 1.x, 1024 SD 2.x,
  2048 SDXL base, 1280 SDXL refiner.
* in-channels of ``model.diffusion_model.input_blocks.0.0.weight`` give the variant: 4 normal,
  9 inpaint, 5 depth, 8 instruct-pix2pix.
* a usable checkpoint also carries its VAE (``first_stage_model.``) and text encoder(s)
  (``cond_stage_model.`` for SD 1/2, ``conditioner.embedders.`` for SDXL).

Everything else gets a ``kind`` and a reason. "Not a match" (a LoRA, a VAE, ...) is kept apart
from "recognised but broken" (a checkpoint whose shapes contradict each other): the former is
``skipped``, the latter ``invalid`` (:class:`~gmi_desktop.core.checkpoint_kinds.Status`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gmi_desktop.core.checkpoint_kinds import FAMILY_NAMES, SUPPORTED, VARIANT_NAMES, Status

Shapes = Mapping[str, tuple[str, tuple[int, ...]]]

UNET = "model.diffusion_model."
VAE = "first_stage_model."
TE_SD = "cond_stage_model."
TE_SDXL = "conditioner.embedders."
FIRST_CONV = UNET + "input_blocks.0.0.weight"

CONTEXT_FAMILY = {768: "sd1", 1024: "sd2", 2048: "sdxl", 1280: "sdxl_refiner"}
IN_CHANNELS_VARIANT = {4: "normal", 9: "inpaint", 5: "depth", 8: "instruct_pix2pix"}


@dataclass(frozen=True)
class Classification:
    status: Status  # ok, skipped, unsupported or invalid
    family: str | None = None
    variant: str | None = None
    kind: str | None = None
    reason: str = ""
    prediction: str | None = None  # "v_prediction" / "epsilon" when the file says so


def _not(kind: str, reason: str) -> Classification:
    return Classification(Status.SKIPPED, kind=kind, reason=reason)


class _Names(list):
    """Tensor names plus ``blob``, all of them joined: one C-level search answers "does any key
    start with / contain X" without a Python loop over thousands of names."""

    def __init__(self, names):
        super().__init__(names)
        self.blob = "\n" + "\n".join(self) + "\n"


def _any(names: _Names, *needles: str) -> bool:
    return any(n in names.blob for n in needles)


def _starts(names: _Names, *prefixes: str) -> bool:
    return any("\n" + p in names.blob for p in prefixes)


# every adapter needle below contains one of these; a checkpoint contains none of them
_ADAPTER_SENTINELS = ("lora", "hada_", "lokr_", "oft_", "control", "input_hint")


def _adapter_kind(names: _Names) -> Classification | None:
    """LoRA, LyCORIS, ControlNet: files that modify or steer a checkpoint."""
    if not _any(names, *_ADAPTER_SENTINELS):
        return None
    if _any(names, ".hada_w1", ".hada_w2", ".lokr_w1", ".lokr_w2", ".oft_blocks", ".oft_diag"):
        return _not("lycoris", "LyCORIS network (LoHa/LoKr/OFT weights), not a checkpoint")
    if _starts(names, "lora_unet_", "lora_te_", "lora_te1_", "lora_te2_") or _any(
        names, ".lora_down.", ".lora_up.", ".lora_A.", ".lora_B.", ".lora.down.", ".lora.up.",
        "lora_linear_layer.",
    ):
        return _not("lora", "LoRA (network weights), not a checkpoint")
    if _starts(names, "control_model.") or _any(
        names, "input_hint_block.", "controlnet_cond_embedding.", "controlnet_down_blocks.",
        "controlnet_mid_block.",
    ):
        return _not("controlnet", "ControlNet, not a checkpoint")
    return None


def _embedding_kind(table: Shapes, names: _Names) -> Classification | None:
    """Textual-inversion embeddings: a handful of small ``[vectors, width]`` tensors."""
    small = len(names) <= 4 and all(len(shape) <= 2 for _, shape in table.values())
    if not small:
        return None
    if set(names) & {"emb_params", "string_to_param", "clip_l", "clip_g"} or _starts(
        names, "string_to_param."
    ):
        widths = sorted({shape[-1] for _, shape in table.values() if shape})
        return _not(
            "embedding",
            f"textual-inversion embedding (width {', '.join(map(str, widths))}), not a checkpoint",
        )
    return None


def _part_kind(names: _Names) -> Classification:
    """No original-layout UNet: a VAE, a text encoder, a bare UNet, or something else."""
    diffusers_unet = _starts(names, "conv_in.", "time_embedding.") and _any(
        names, "down_blocks.", "up_blocks."
    )
    if diffusers_unet and not _starts(names, "encoder.", "decoder."):
        return _not("unet_only", "UNet alone (diffusers layout), not a full checkpoint")
    vae_orig = _starts(names, "encoder.down.", "decoder.up.", "encoder.conv_in.", "decoder.conv_in.")
    vae_diffusers = _starts(names, "encoder.down_blocks.", "decoder.up_blocks.")
    if vae_orig or vae_diffusers or _starts(names, VAE):
        return _not("vae", "VAE (autoencoder) alone, not a checkpoint")
    if _starts(names, TE_SD, TE_SDXL, "text_model.", "transformer.text_model.", "text_encoders."):
        return _not("text_encoder", "text encoder alone, not a checkpoint")
    if _starts(names, "double_blocks.", "single_blocks.") or _any(names, "joint_blocks."):
        return Classification(
            Status.UNSUPPORTED, kind="unknown",
            reason="Flux/SD3-style transformer model; only SD 1.x, SD 2.x and SDXL are supported",
        )
    return _not("unknown", "unknown: no Stable Diffusion UNet keys")


def _names_ending(names: _Names, suffix: str) -> list[str]:
    """Every name ending in ``suffix``, found by searching the joined names (no per-name loop)."""
    found, blob, needle = [], names.blob, suffix + "\n"
    end = blob.find(needle)
    while end != -1:
        found.append(blob[blob.rfind("\n", 0, end) + 1:end + len(suffix)])
        end = blob.find(needle, end + 1)
    return found


def context_widths(table: Shapes) -> dict[int, int]:
    """UNet cross-attention widths (``attn2.to_k`` in-features) -> how many layers have each."""
    return _context_widths(table, _Names(table))


def _context_widths(table: Shapes, names: _Names) -> dict[int, int]:
    widths: dict[int, int] = {}
    for name in _names_ending(names, "attn2.to_k.weight"):
        shape = table[name][1] if name.startswith(UNET) and name in table else ()
        if len(shape) == 2:
            widths[shape[1]] = widths.get(shape[1], 0) + 1
    return widths


def _prediction(names: _Names, metadata: Mapping[str, str]) -> str | None:
    declared = metadata.get("modelspec.prediction_type", "").strip().lower()
    if declared in {"v", "v_prediction", "v-prediction"}:
        return "v_prediction"
    if declared in {"epsilon", "eps"}:
        return "epsilon"
    if "\nv_pred\n" in names.blob:  # ComfyUI marks v-prediction checkpoints with this (empty) tensor
        return "v_prediction"
    return None


def _unet_checkpoint(table: Shapes, names: _Names, metadata: Mapping[str, str]) -> Classification:
    """Original-layout UNet present: work out family and variant, then check completeness."""
    if _any(names, ".joint_blocks.", ".double_blocks."):
        return Classification(
            Status.UNSUPPORTED, kind="unknown",
            reason="SD3/Flux-style checkpoint; only SD 1.x, SD 2.x and SDXL are supported",
        )
    widths = _context_widths(table, names)
    if not widths:
        return Classification(
            Status.UNSUPPORTED, kind="unknown",
            reason="UNet without cross-attention layers (attn2.to_k); not an SD 1.x/2.x/SDXL model",
        )
    if len(widths) > 1:
        found = ", ".join(f"{w} ({n} layers)" for w, n in sorted(widths.items()))
        return Classification(
            Status.INVALID, reason=f"cross-attention widths disagree: {found}; the checkpoint is damaged"
        )
    context = next(iter(widths))
    family = CONTEXT_FAMILY.get(context)
    if family is None:
        return Classification(
            Status.UNSUPPORTED, kind="unknown",
            reason=f"cross-attention width {context} matches no SD 1.x/2.x/SDXL family",
        )
    first = table.get(FIRST_CONV)
    if first is None or len(first[1]) != 4:
        got = "missing" if first is None else f"shape {list(first[1])}"
        return Classification(
            Status.INVALID, family=family,
            reason=f"{FAMILY_NAMES[family]} UNet but {FIRST_CONV} is {got}; the checkpoint is damaged",
        )
    in_channels = first[1][1]
    variant = IN_CHANNELS_VARIANT.get(in_channels)
    if variant is None:
        return Classification(
            Status.UNSUPPORTED, family=family, kind="unknown",
            reason=f"{FAMILY_NAMES[family]} UNet with {in_channels} input channels (unknown variant)",
        )
    prediction = _prediction(names, metadata)
    has_vae = _starts(names, VAE)
    has_te = _starts(names, TE_SDXL if family in {"sdxl", "sdxl_refiner"} else TE_SD)
    if not (has_vae and has_te):
        missing = " and ".join(
            part for part, present in (("VAE", has_vae), ("text encoder", has_te)) if not present
        )
        return Classification(
            Status.SKIPPED, family=family, variant=variant, kind="unet_only", prediction=prediction,
            reason=f"{FAMILY_NAMES[family]} UNet without {missing}, not a full checkpoint",
        )
    if variant not in SUPPORTED[family]:
        return Classification(
            Status.UNSUPPORTED, family=family, variant=variant, prediction=prediction,
            reason=f"{FAMILY_NAMES[family]} {VARIANT_NAMES[variant]} checkpoint: not supported for generation",
        )
    return Classification(Status.OK, family=family, variant=variant, prediction=prediction)


def classify_tensors(table: Shapes, metadata: Mapping[str, str] | None = None) -> Classification:
    """Classify a safetensors tensor table (``name -> (dtype, shape)``) from names and shapes."""
    metadata = metadata or {}
    names = _Names([n for n in table if n != "__metadata__"] if "__metadata__" in table else list(table))
    if not names:
        return _not("unknown", "no tensors in the file")
    adapter = _adapter_kind(names)
    if adapter is not None:
        return adapter
    embedding = _embedding_kind(table, names)
    if embedding is not None:
        return embedding
    if _starts(names, UNET):
        return _unet_checkpoint(table, names, metadata)
    return _part_kind(names)
