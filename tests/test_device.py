"""What the GPU can and cannot do, said in one line: compute capability against the torch build's
architecture list, the driver's CUDA version against torch's. The CUDA queries are replaced at their
one boundary (:func:`gmi_desktop.engine.device.cuda_facts`); everything above it runs for real."""

from __future__ import annotations

import pytest

from gmi_desktop.core.errors import OutOfMemory, SettingsError
from gmi_desktop.engine import device
from gmi_desktop.engine.device import CudaFacts, choose_device, cuda_problem, device_error, is_device_error

ARCH_2_14 = ("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120")  # cu128 wheels: Turing and newer


def _facts(*gpus, available=True, driver=12080, torch_cuda="12.8", arch=ARCH_2_14):
    return CudaFacts(available, torch_cuda, arch if available else (), driver, tuple(gpus))


@pytest.fixture
def stub_cuda(monkeypatch):
    def use(facts):
        monkeypatch.setattr(device, "cuda_facts", lambda: facts)
        monkeypatch.setattr(device, "_mps_available", lambda: False)

    return use


def test_a_supported_gpu_is_used_in_half_precision(stub_cuda):
    stub_cuda(_facts(("NVIDIA GeForce RTX 3060", (8, 6))))
    choice = choose_device("auto")
    assert (choice.device, choice.dtype_name, choice.note, choice.name) == ("cuda", "float16", "", "NVIDIA GeForce RTX 3060")
    assert choice.key == "cuda:NVIDIA GeForce RTX 3060"
    assert choose_device("cuda", half=False).dtype_name == "float32"


def test_a_pascal_gpu_falls_back_to_the_cpu_with_one_line_saying_why(stub_cuda):
    stub_cuda(_facts(("NVIDIA GeForce GTX 1080", (6, 1))))
    choice = choose_device("auto")
    assert choice.device == "cpu" and choice.dtype_name == "float32"
    assert choice.note.startswith("running on the CPU (much slower): NVIDIA GeForce GTX 1080 (compute capability 6.1)")
    assert "oldest sm_75" in choice.note and "cu118" in choice.note and "\n" not in choice.note
    with pytest.raises(SettingsError, match="cannot use the GPU: NVIDIA GeForce GTX 1080"):
        choose_device("cuda")


def test_v100_is_refused_but_newer_gpus_run_binary_or_ptx_kernels():
    assert cuda_problem(_facts(("Tesla V100-SXM2-16GB", (7, 0))))  # sm_70 < sm_75
    assert cuda_problem(_facts(("NVIDIA GeForce GTX 1660", (7, 5)))) is None
    assert cuda_problem(_facts(("NVIDIA RTX A6000", (8, 6)))) is None  # sm_86 binary
    assert cuda_problem(_facts(("NVIDIA L4", (8, 9)))) is None  # sm_86 binary runs on 8.9
    assert cuda_problem(_facts(("future GPU", (13, 0)))) is None  # compute_120 PTX is compiled for it
    assert cuda_problem(_facts(("future GPU", (13, 0)), arch=("sm_75", "sm_120")))  # no PTX: no kernels


def test_a_driver_too_old_for_this_torch_is_explained_instead_of_silently_using_the_cpu(stub_cuda):
    stub_cuda(_facts(available=False, driver=11040))
    choice = choose_device("auto")
    assert choice.device == "cpu"
    assert "NVIDIA driver supports CUDA 11.4 but this torch needs CUDA 12.8" in choice.note
    with pytest.raises(SettingsError, match="update the NVIDIA driver"):
        choose_device("cuda")


def test_no_nvidia_driver_means_nothing_to_explain(stub_cuda):
    stub_cuda(_facts(available=False, driver=None))
    assert choose_device("auto") == device.DeviceChoice("cpu", "float32", "", "cpu")
    with pytest.raises(SettingsError, match="no CUDA GPU is available"):
        choose_device("cuda")
    stub_cuda(_facts(available=False, driver=12020, torch_cuda=None))
    assert "built without CUDA" in choose_device("auto").note


def test_the_real_boundary_answers_on_this_machine():
    facts = device.cuda_facts()
    assert isinstance(facts.available, bool) and (facts.driver_cuda is None or facts.driver_cuda > 0)
    choice = choose_device("cpu")
    assert (choice.device, choice.dtype_name) == ("cpu", "float32")


def test_device_errors_are_told_apart_from_data_errors():
    import torch

    assert is_device_error(RuntimeError("CUDA error: no kernel image is available for execution on the device"))
    assert is_device_error(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_device_error(RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)"))
    assert not is_device_error(RuntimeError("Error(s) in loading state_dict for CLIPTextModel: size mismatch"))
    assert not is_device_error(KeyError("cond_stage_model"))
    assert isinstance(device_error(RuntimeError("MPS backend out of memory"), "encoding"), OutOfMemory)
    failure = device_error(RuntimeError("CUDA error: no kernel image is available"), "loading CLIP")
    assert isinstance(failure, SettingsError) and "not the model file" in str(failure)


def test_mps_out_of_memory_while_encoding_halves_the_clip_batch_like_cuda(monkeypatch):
    import numpy as np
    from PIL import Image

    from gmi_desktop.engine.clip import load_clip
    from tests.support.tiny_clip import TINY_CLIP, register_tiny_clip, tiny_assets

    register_tiny_clip()
    clip = load_clip(TINY_CLIP, "random-seed0", weights=str(tiny_assets().clip_weights), device="cpu")
    real = clip.module.encode_image
    sizes = []

    def encode_image(pixels):
        sizes.append(len(pixels))
        if len(pixels) > 1:
            raise RuntimeError("MPS backend out of memory (MPS allocated: 17.2 GB, other allocations: 1.1 GB)")
        return real(pixels)

    monkeypatch.setattr(clip.module, "encode_image", encode_image)
    images = [Image.new("RGB", (32, 32), (40 * k, 0, 0)) for k in range(4)]
    features = clip.encode_images(images, batch_size=4)
    assert features.shape[0] == 4 and np.isfinite(features).all() and sizes[:3] == [4, 2, 1]


def test_a_cuda_error_while_loading_clip_or_blip_is_not_a_damaged_weights_file(monkeypatch):
    import open_clip
    import transformers

    from gmi_desktop.core.errors import CorruptWeights
    from gmi_desktop.engine.clip import load_clip
    from gmi_desktop.engine.interrogator import load_caption_model
    from tests.support.tiny_clip import TINY_CLIP, register_tiny_clip, tiny_assets

    register_tiny_clip()

    def no_kernel(*args, **kwargs):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", no_kernel)
    with pytest.raises(SettingsError, match="GPU failed while loading CLIP") as info:
        load_clip(TINY_CLIP, "random-seed0", weights=str(tiny_assets().clip_weights), device="cpu")
    assert not isinstance(info.value, CorruptWeights)
    monkeypatch.setattr(transformers.BlipForConditionalGeneration, "from_pretrained", no_kernel)
    with pytest.raises(SettingsError, match="GPU failed while loading BLIP") as info:
        load_caption_model("tiny/blip-test", weights=str(tiny_assets().blip_folder), device="cpu")
    assert not isinstance(info.value, CorruptWeights)
