"""What real GPUs and real checkpoints do that plain tiny runs do not show (issue 12), on CPU:

* broken images (NaN injected through forward hooks on a tiny fp16 pipeline) are redone with an
  fp32 VAE, then fully in fp32; what worked is remembered and recorded in the recipe; a batch that
  stays broken fails the model and nothing of it is handed out;
* SD 2.x prediction type decided as AUTOMATIC1111 does, cached by content hash; SDXL v-prediction
  and zero-terminal-SNR files;
* the memory plan (VAE slicing/tiling from the start, no attention slicing, batch from free memory,
  step-time collapse);
* the probe and the loader agree (old SD 1.x text-encoder layout, fp16-variant diffusers folders),
  typed errors for diffusers' own and for device failures;
* the refiner is refused with its reason; SDXL's invisible watermark is never added.
"""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest

from gmi_desktop.core.errors import CorruptCheckpoint, SettingsError, UnsupportedCheckpoint, UserInputError
from gmi_desktop.engine import generation as generation_module
from gmi_desktop.engine.generation import GenerationBackend, GenerationOptions
from gmi_desktop.engine.memory_plan import broken_reason, plan_batch
from gmi_desktop.engine.verdicts import Verdicts
from tests.support.tiny_sd import build_tiny_components, make_tiny_checkpoint, save_diffusers_folder, save_single_file

FAST = GenerationOptions(steps=2, resolution=64, batch_size=2, device="cpu")
HALF = GenerationOptions(steps=2, resolution=64, batch_size=2, device="cpu", precision="fp16")
PROMPTS = ["a red house", "a portrait of a cat"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("sd1"), "sd1", seed=3)


def _load(ck, options=FAST, verdicts=None, **kwargs):
    return GenerationBackend(verdicts or Verdicts(None)).load(ck.path, ck.family, ck.variant, options=options,
                                                              config_dir=ck.config_dir, **kwargs)


def _nan_when_half(module, args, output):
    """Forward hook: the overflow an fp16 module on a GTX 16xx produces, only while in fp16."""
    import torch

    if next(module.parameters()).dtype != torch.float16:
        return None
    first = output[0] if isinstance(output, tuple) else output
    first = first.sample if hasattr(first, "sample") else first
    broken = first * float("nan")
    return (broken, *output[1:]) if isinstance(output, tuple) else broken


def _usable(images):
    return all(np.isfinite(np.asarray(i, dtype=np.float32)).all() and np.asarray(i).std() > 5 for i in images)


# ------------------------------------------------------------------------------- broken images


def test_nan_from_an_fp16_vae_is_redone_with_an_fp32_vae_and_remembered(sd1):
    verdicts = Verdicts(None)
    loaded = _load(sd1, HALF, verdicts)
    assert loaded.precision == "fp16" and loaded.recipe["precision"] == "fp16"
    loaded.pipe.vae.decoder.register_forward_hook(_nan_when_half)
    batches = list(loaded.iter_generate(PROMPTS, [1, 2]))
    assert len(batches) == 1 and _usable(batches[0].data)
    assert loaded.precision == "fp16, fp32 VAE" and loaded.recipe["precision"] == "fp16, fp32 VAE"
    assert "NaN or infinite pixels at fp16: redoing the batch with fp16, fp32 VAE" in batches[0].message
    # remembered for this device and checkpoint: the next load starts with the fp32 VAE
    again = _load(sd1, HALF, verdicts)
    assert again.precision == "fp16, fp32 VAE"
    assert str(next(again.pipe.vae.parameters()).dtype) == "torch.float32"
    assert str(next(again.pipe.unet.parameters()).dtype) == "torch.float16"
    assert _usable(again.generate(PROMPTS[:1], [3]))


def test_nan_latents_from_an_fp16_unet_escalate_to_full_fp32(sd1):
    loaded = _load(sd1, HALF)
    loaded.pipe.unet.register_forward_hook(_nan_when_half)
    images = loaded.generate(PROMPTS, [1, 2])
    assert _usable(images) and loaded.precision == "fp32" and loaded.recipe["precision"] == "fp32"
    assert [n.split(":")[0] for n in loaded.notes] == ["NaN or infinite latents at fp16", "NaN or infinite latents at fp16, fp32 VAE"]


def test_a_batch_broken_even_in_fp32_fails_the_model_and_nothing_is_handed_out(sd1):
    loaded = _load(sd1, FAST)  # CPU: already fp32, nothing higher to try
    loaded.pipe.vae.decoder.register_forward_hook(lambda m, a, out: out * 0 - 1)  # all black
    handed_out = []
    with pytest.raises(CorruptCheckpoint, match=r"makes broken images \(image 1 of the batch is all black\) even in"):
        for event in loaded.iter_generate(PROMPTS, [1, 2]):
            handed_out.append(event)
    assert handed_out == []


def test_broken_reason_spots_nan_black_and_flat_images():
    import torch

    good = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    assert broken_reason(torch.zeros(1, 4, 1, 1), good) is None
    assert broken_reason(torch.tensor([float("inf")]), good) == "NaN or infinite latents"
    nan = good.copy()
    nan[1, 0, 0, 0] = np.nan
    assert broken_reason(None, nan) == "NaN or infinite pixels"
    black = good.copy()
    black[1] = 0.0
    assert broken_reason(None, black) == "image 2 of the batch is all black"
    flat = good.copy()
    flat[0] = 0.6
    assert broken_reason(None, flat) == "image 1 of the batch is one flat colour"


# ---------------------------------------------------------------------------- prediction types


def _planted_sd2(folder, name: str, bias: float, seed: int):
    """A tiny SD 2.x checkpoint whose UNet answers the A1111 test like a trained model of one kind:
    at t = 999 an epsilon model returns about its (almost pure noise) input, a v model about -x0;
    a zero output convolution with bias ``bias`` gives ``mean(out - x) = bias - 0.5``."""
    import torch

    parts = build_tiny_components("sd2", seed=seed)
    with torch.no_grad():
        parts["unet"].conv_out.weight.zero_()
        parts["unet"].conv_out.bias.fill_(bias)
    return save_single_file(parts, "sd2", folder / f"{name}.safetensors")


def test_sd2_prediction_type_is_decided_like_a1111_and_cached_by_content_hash(tmp_path, monkeypatch):
    import torch

    from gmi_desktop.engine import prediction
    from tests.support.tiny_sd import write_tiny_config_dir

    config = write_tiny_config_dir(tmp_path / "config-sd2", "sd2")
    eps_file = _planted_sd2(tmp_path, "sd21-base-like", 0.5, seed=1)
    v_file = _planted_sd2(tmp_path, "sd21-768-like", -1.5, seed=2)
    calls = []
    real = prediction.sd2_prediction_type
    monkeypatch.setattr(prediction, "sd2_prediction_type", lambda unet: calls.append(1) or real(unet))
    verdicts = Verdicts(tmp_path / "verdicts.json")
    options = GenerationOptions(steps=1, batch_size=1, device="cpu")
    backend = GenerationBackend(verdicts)

    eps = backend.load(eps_file, "sd2", options=options, config_dir=config, sha256="aa" * 32)
    assert eps.recipe["prediction_type"] == "epsilon" and eps.resolution == 512
    v = backend.load(v_file, "sd2", options=options, config_dir=config, sha256="bb" * 32)
    assert v.recipe["prediction_type"] == "v_prediction" and v.resolution == 768
    assert len(calls) == 2
    # the verdict is kept by content hash, on disk: a new process does not evaluate again
    again = GenerationBackend(Verdicts(tmp_path / "verdicts.json")).load(
        eps_file, "sd2", options=options, config_dir=config, sha256="aa" * 32)
    assert again.recipe["prediction_type"] == "epsilon" and len(calls) == 2
    assert json.loads((tmp_path / "verdicts.json").read_text())["prediction"] == {
        "aa" * 32: "epsilon", "bb" * 32: "v_prediction"}
    # what the probe found is passed through and wins: no evaluation
    told = backend.load(v_file, "sd2", options=options, config_dir=config, prediction_type="epsilon")
    assert told.recipe["prediction_type"] == "epsilon" and len(calls) == 2
    # so does the file's own v_pred marker
    from safetensors.torch import load_file, save_file

    marked = tmp_path / "marked-v.safetensors"
    save_file({**load_file(str(eps_file)), "v_pred": torch.zeros(0)}, str(marked))
    assert backend.load(marked, "sd2", options=options, config_dir=config).recipe["prediction_type"] == "v_prediction"
    assert len(calls) == 2


def test_sdxl_v_prediction_and_zero_terminal_snr_files(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from gmi_desktop.engine.pipelines import make_scheduler
    from gmi_desktop.engine.sd_configs import config_dir, config_name

    assert config_name("sdxl", "normal", "v_prediction") == "sdxl_v"
    shipped = json.loads((config_dir("sdxl", "normal", "v_prediction") / "scheduler" / "scheduler_config.json")
                         .read_text())
    assert shipped["prediction_type"] == "v_prediction"
    ck = make_tiny_checkpoint(tmp_path, "sdxl", seed=4)
    tensors = load_file(str(ck.path))
    tensors.update(v_pred=torch.zeros(0), ztsnr=torch.zeros(0))  # NoobAI-XL V-pred style markers
    marked = tmp_path / "noob-vpred.safetensors"
    save_file(tensors, str(marked))
    loaded = GenerationBackend(Verdicts(None)).load(marked, "sdxl", options=FAST, config_dir=ck.config_dir)
    recipe = loaded.recipe
    assert recipe["prediction_type"] == "v_prediction" and recipe["zero_terminal_snr"] is True
    assert loaded.pipe.scheduler.config.timestep_spacing == "trailing"
    assert _usable(loaded.generate(PROMPTS[:1], [5]))
    plain = GenerationBackend(Verdicts(None)).load(ck.path, "sdxl", options=FAST, config_dir=ck.config_dir)
    assert plain.recipe["prediction_type"] == "epsilon" and plain.recipe["zero_terminal_snr"] is False
    with pytest.raises(SettingsError, match="zero terminal SNR"):
        make_scheduler("heun", loaded.pipe.scheduler.config)


# ---------------------------------------------------------------------------------- memory plan


def test_vae_slicing_and_tiling_from_the_start_and_no_attention_slicing(sd1):
    loaded = _load(sd1)
    assert loaded.pipe.vae.use_slicing and loaded.pipe.vae.use_tiling
    processors = {type(p).__name__ for p in loaded.pipe.unet.attn_processors.values()}
    assert processors == {"AttnProcessor2_0"}  # PyTorch SDPA, never the sliced processor


def test_batch_size_from_free_memory_per_family_and_remembered(sd1, monkeypatch):
    gib = 1 << 30
    assert plan_batch("sd1", 512, None, 4) == 4  # CPU: unknown free memory, the setting
    assert plan_batch("sd1", 512, 24 * gib, 4) == 4
    assert plan_batch("sdxl", 1024, 4 * gib, 4) == 1
    assert plan_batch("sd1", 512, 3 * gib, 4) == 2
    assert plan_batch("sd1", 1024, 3 * gib, 4) == 1  # four times the pixels
    assert plan_batch("sdxl", 1024, 8 * gib, 4, fp32=True) == 2
    # the free-memory query is the device boundary; the plan uses it once the weights are placed
    monkeypatch.setattr(generation_module, "free_memory_bytes", lambda device: 3 * gib)
    loaded = _load(sd1, GenerationOptions(steps=2, resolution=512, batch_size=4, device="cpu", precision="fp16"))
    assert loaded.batch_size == 2


def test_step_time_collapse_halves_the_batch_and_is_remembered(sd1):
    verdicts = Verdicts(None)
    options = GenerationOptions(steps=2, resolution=64, batch_size=2, device="cpu")
    loaded = _load(sd1, options, verdicts)
    ticks = iter([0.0, 1.0, 1.0, 11.0, 11.0, 11.5, 11.5, 12.0])  # batch 2: ten times slower per image
    loaded.clock = lambda: next(ticks)
    events = list(loaded.iter_generate(PROMPTS * 3, [1, 2, 3, 4, 5, 6]))
    assert [len(e.data) for e in events] == [2, 2, 1, 1] and loaded.batch_size == 1
    assert "steps slowed down sharply at 2 images per batch" in events[1].message
    assert _load(sd1, options, verdicts).batch_size == 1


# -------------------------------------------------------------------------- probe and loader agree


def _old_layout(key: str) -> str:
    return key.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer.")


def test_sd1_file_with_the_old_text_encoder_layout_is_ok_to_the_probe_and_loads(sd1, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from gmi_desktop.store.probe import probe
    from tests.support.checkpoint_files import write_safetensors_header
    from tests.support.model_headers import small_checkpoint

    header = write_safetensors_header(tmp_path / "full-old.safetensors",
                                      {_old_layout(k): v for k, v in small_checkpoint("sd1").items()})
    assert probe(header).status == "ok" and probe(header).family == "sd1"
    old = tmp_path / "tiny-old.safetensors"
    save_file({_old_layout(k): v for k, v in load_file(str(sd1.path)).items()}, str(old))
    loaded = GenerationBackend(Verdicts(None)).load(old, "sd1", options=FAST, config_dir=sd1.config_dir)
    want = sd1.components["text_encoder"].state_dict()
    got = loaded.pipe.text_encoder.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    new_layout = _load(sd1)
    a = [np.asarray(i) for i in loaded.generate(PROMPTS, [7, 8])]
    b = [np.asarray(i) for i in new_layout.generate(PROMPTS, [7, 8])]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_diffusers_folder_with_only_fp16_weights_is_ok_to_the_probe_and_loads(sd1, tmp_path):
    import torch

    from gmi_desktop.store.probe import probe
    from tests.support.model_headers import write_diffusers_folder

    headers = write_diffusers_folder(tmp_path / "full-fp16", "sd1")
    for weights in list(headers.glob("*/*.safetensors")):
        weights.rename(weights.with_name(weights.name.replace(".safetensors", ".fp16.safetensors")))
    assert probe(headers).status == "ok"

    half = {slot: copy.deepcopy(module).half() for slot, module in sd1.components.items()}
    folder = save_diffusers_folder(half, "sd1", "normal", tmp_path / "tiny-fp16")
    for slot in half:
        shutil.rmtree(folder / slot)
        half[slot].save_pretrained(folder / slot, variant="fp16")
    assert not list(folder.glob("unet/diffusion_pytorch_model.safetensors"))
    loaded = GenerationBackend(Verdicts(None)).load(folder, "sd1", options=FAST)
    assert loaded.pipe.unet.dtype == torch.float32
    assert _usable(loaded.generate(PROMPTS[:1], [2]))


def test_diffusers_component_error_and_broken_configs_are_typed(sd1, tmp_path):
    from diffusers.loaders.single_file_utils import SingleFileComponentError
    from safetensors.torch import load_file, save_file

    from gmi_desktop.engine.pipelines import load_diffusers_folder, load_single_file

    tensors = load_file(str(sd1.path))
    token = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
    only_token = {k: v for k, v in tensors.items() if not k.startswith("cond_stage_model.") or k == token}
    path = tmp_path / "no-text-encoder.safetensors"
    save_file(only_token, str(path))
    with pytest.raises(CorruptCheckpoint) as info:
        load_single_file(path, "sd1", config_dir=sd1.config_dir)
    assert isinstance(info.value.__cause__, (SingleFileComponentError, type(None)))
    assert "text_encoder" in str(info.value) or "Failed to load" in str(info.value)

    empty = tmp_path / "no-config"
    empty.mkdir()
    with pytest.raises(UserInputError, match="model_index.json.*is missing.*GMI_RESOURCES_DIR"):
        load_single_file(sd1.path, "sd1", config_dir=empty)
    broken = tmp_path / "broken-folder"
    broken.mkdir()
    (broken / "model_index.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CorruptCheckpoint, match="model_index.json is unreadable"):
        load_diffusers_folder(broken, "sd1")


def test_a_gpu_failure_is_never_reported_as_a_damaged_file(sd1):
    loaded = _load(sd1)

    def forward(*args, **kwargs):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    loaded.pipe.unet.forward = forward
    with pytest.raises(SettingsError, match="the GPU failed.*no kernel image") as info:
        loaded.generate(PROMPTS[:1], [1])
    assert not isinstance(info.value, CorruptCheckpoint) and "not the model file" in str(info.value)

    from gmi_desktop.engine.pipelines import _load_failure

    error = _load_failure(RuntimeError("CUDA error: an illegal memory access was encountered"), sd1.path, "load")
    assert isinstance(error, SettingsError) and not isinstance(error, CorruptCheckpoint)
    assert isinstance(_load_failure(KeyError("model.diffusion_model.x"), sd1.path, "load"), CorruptCheckpoint)


def test_an_unusable_gpu_is_explained_in_the_first_progress_message(sd1, monkeypatch):
    from gmi_desktop.engine import device
    from gmi_desktop.engine.device import CudaFacts

    pascal = CudaFacts(True, "12.8", ("sm_75", "sm_80", "sm_90"), 12080, (("NVIDIA GeForce GTX 1070", (6, 1)),))
    monkeypatch.setattr(device, "cuda_facts", lambda: pascal)  # the CUDA boundary; the rest is real
    monkeypatch.setattr(device, "_mps_available", lambda: False)
    options = GenerationOptions(steps=1, resolution=64, batch_size=1, device="auto")
    loaded = _load(sd1, options)
    assert loaded.device.device == "cpu"
    first, second = loaded.iter_generate(PROMPTS, [1, 2])
    assert first.message.startswith("running on the CPU (much slower): NVIDIA GeForce GTX 1070 (compute capability 6.1)")
    assert second.message == "2/2 images"


# ------------------------------------------------------------------------- refiner, watermark


def test_refiner_is_listed_as_not_identifiable_on_its_own(tmp_path):
    from gmi_desktop.engine.sd_configs import not_identifiable

    status, reason = not_identifiable("sdxl_refiner")
    assert status == "refiner: not identifiable on its own" and "last ~20%" in reason
    assert not_identifiable("sdxl") is None and not_identifiable("sd1") is None
    ck = make_tiny_checkpoint(tmp_path, "sdxl_refiner", seed=1)
    with pytest.raises(UnsupportedCheckpoint, match="refiner: not identifiable on its own"):
        GenerationBackend(Verdicts(None)).load(ck.path, "sdxl_refiner", options=FAST, config_dir=ck.config_dir)


def test_sdxl_never_adds_the_invisible_watermark_even_when_the_package_is_installed(tmp_path, monkeypatch):
    from diffusers.pipelines.stable_diffusion_xl import pipeline_stable_diffusion_xl as xl

    class Watermarker:  # stands in for the optional invisible-watermark package
        def apply_watermark(self, images):
            return images * 0

    monkeypatch.setattr(xl, "is_invisible_watermark_available", lambda: True)
    monkeypatch.setattr(xl, "StableDiffusionXLWatermarker", Watermarker, raising=False)
    ck = make_tiny_checkpoint(tmp_path, "sdxl", seed=2)
    loaded = GenerationBackend(Verdicts(None)).load(ck.path, "sdxl", options=FAST, config_dir=ck.config_dir)
    assert loaded.pipe.watermark is None
    assert _usable(loaded.generate(PROMPTS[:1], [1]))
