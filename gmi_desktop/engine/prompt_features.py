"""A prompt's CLIP text features for interactive re-ranking, without the padding positions.

open_clip's ``encode_text`` always runs the text transformer over all 77 context positions. With
CLIP's causal attention mask, position ``i`` only sees positions ``<= i``, and the feature is read
at the end-of-text token (``argmax`` pooling), so the positions after it cannot change the result:
running only the first ``max(EOT) + 1`` positions gives the same features (up to float rounding)
at a fraction of the cost for a short prompt. That is what a prompt edit costs on a CPU (ViT-L/14
text tower, one busy core here: 0.88 s for 77 positions), so :func:`encode_prompts` takes this
path for the standard open_clip ``CLIP`` class with a causal mask, ``argmax`` pooling and a
batch-first transformer, and falls back to :meth:`ClipModel.encode_texts` for anything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def trimmable(module: Any) -> bool:
    """True when ``module`` is a plain open_clip CLIP whose text features ignore padding."""
    import torch
    from open_clip.model import CLIP

    mask = getattr(module, "attn_mask", None)
    if type(module) is not CLIP or getattr(module, "text_pool_type", None) != "argmax" or mask is None:
        return False
    if not getattr(module.transformer, "batch_first", False):
        return False
    n = mask.shape[0]
    causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=mask.device), diagonal=1)
    return bool(torch.isinf(mask[causal]).all()) and bool((mask[~causal] == 0).all())


def encode_prompts(clip: Any, texts: Sequence[str]) -> np.ndarray:
    """Unit-norm float32 text features of ``texts`` (as ``clip.encode_texts``), trimmed to the
    longest prompt's tokens when that cannot change them."""
    import torch

    texts = [str(t) for t in texts]
    module = clip.module
    if not texts or not trimmable(module):
        return clip.encode_texts(texts)
    tokens = clip.tokenizer(texts)
    ends = tokens.argmax(dim=-1)
    length = int(ends.max()) + 1
    with clip.lock, torch.inference_mode():
        device = next(module.parameters()).device
        tokens = tokens[:, :length].to(device)
        cast = module.transformer.get_cast_dtype()
        x = module.token_embedding(tokens).to(cast) + module.positional_embedding[:length].to(cast)
        x = module.transformer(x, attn_mask=module.attn_mask[:length, :length])
        x = module.ln_final(x)
        x = x[torch.arange(x.shape[0], device=device), ends.to(device)]
        if module.text_projection is not None:
            x = module.text_projection(x) if isinstance(module.text_projection, torch.nn.Linear) else x @ module.text_projection
        x = x.float()
        x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return x.cpu().numpy().astype(np.float32)
