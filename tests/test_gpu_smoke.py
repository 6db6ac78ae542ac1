"""benchmarks/gpu_smoke.py imports, refuses cleanly without a CUDA GPU, and its measuring path runs
(on the CPU, with tiny-width configs standing in for the shipped full-size ones)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _smoke():
    spec = importlib.util.spec_from_file_location("gpu_smoke", ROOT / "benchmarks" / "gpu_smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_says_why_in_one_line_and_exits_2(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: run the script itself")
    smoke = _smoke()
    assert smoke.main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("gpu_smoke: needs a usable CUDA GPU") and err.count("\n") == 1
    with pytest.raises(SystemExit):
        smoke.main(["--families", "sd9"])


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_the_measuring_path_runs_with_tiny_configs_on_the_cpu(family, tmp_path):
    import torch

    from gmi_desktop.engine.device import DeviceChoice
    from tests.support.tiny_sd import write_tiny_config_dir

    torch.set_num_threads(1)
    smoke = _smoke()
    folder = write_tiny_config_dir(tmp_path / family, family)
    result = smoke.smoke_family(family, folder, DeviceChoice("cpu", "float32", "", "cpu"), 64, 1, [1, 2])
    assert result["planned_batch"] == 2  # no free-memory figure on the CPU: the largest asked for
    assert [(r["batch"], r["finite"], r["precision"]) for r in result["runs"]] == [(1, True, "fp32"), (2, True, "fp32")]
    assert all(r["seconds_per_image"] > 0 for r in result["runs"])
