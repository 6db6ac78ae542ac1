"""Which prediction a Stable Diffusion UNet was trained for, when its file does not say.

SD 2.x 768-v (v-prediction) and 512-base (epsilon) checkpoints have identical tensors, and
``.safetensors`` files carry neither ``global_step`` nor a declaration most of the time; diffusers'
guess then loads every such file as v-prediction, and an epsilon model run as v-prediction makes
washed-out noise with no error anywhere.

:func:`sd2_prediction_type` decides as AUTOMATIC1111 does (``is_using_v_parameterization_for_sd2``):
one UNet evaluation at the last timestep (t = 999, where the noisy input is almost pure noise) on a
constant input ``x = 0.5`` with a constant text context. An epsilon model predicts the noise, which
at t = 999 is nearly the input itself, so ``mean(out - x)`` stays near 0; a v-prediction model
predicts ``v = sqrt(a) * eps - sqrt(1 - a) * x0``, which at t = 999 is about ``-x0`` and pulls the
mean far below: A1111 calls it v-prediction when ``mean(out - x) < -1``. The verdict is kept by the
checkpoint's SHA-256 (:mod:`gmi_desktop.engine.verdicts`), so it costs one evaluation per file, ever.
"""

from __future__ import annotations

from typing import Any

V_THRESHOLD = -1.0  # A1111's threshold on mean(unet(x, 999, c) - x)


def sd2_v_score(unet: Any) -> float:
    """``mean(unet(x, t=999, c) - x)`` for A1111's fixed input (x = c = 0.5): below
    :data:`V_THRESHOLD` means v-prediction."""
    import torch

    param = next(unet.parameters())
    x = torch.full((1, unet.config.in_channels, 8, 8), 0.5, dtype=param.dtype, device=param.device)
    context = torch.full((1, 2, unet.config.cross_attention_dim), 0.5, dtype=param.dtype, device=param.device)
    with torch.inference_mode():
        out = unet(x, torch.tensor([999], device=param.device), encoder_hidden_states=context).sample
    return float((out.float() - x.float()).mean().cpu())


def sd2_prediction_type(unet: Any) -> str:
    """``"v_prediction"`` or ``"epsilon"`` for an SD 2.x UNet (see the module docstring)."""
    return "v_prediction" if sd2_v_score(unet) < V_THRESHOLD else "epsilon"
