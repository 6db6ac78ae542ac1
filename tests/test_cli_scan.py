"""``gmi-desktop scan``: table and JSON on stdout (compared line by line), progress on stderr, exit codes."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from gmi_desktop.cli.main import main
from tests.support.library_files import write_checkpoint, write_lora


@pytest.fixture
def ui_root(tmp_path):
    root = tmp_path / "stable-diffusion-webui"
    models = root / "models" / "Stable-diffusion"
    write_checkpoint(models / "dreamy.safetensors", "sd1", seed=1)
    write_checkpoint(models / "xl" / "big_inpaint.safetensors", "sdxl", seed=2, variant="inpaint")
    write_lora(models / "detail.safetensors")
    (models / "old.ckpt").write_bytes(b"\x80\x02}q\x00.")
    write_lora(root / "models" / "Lora" / "not_scanned.safetensors")
    return root


def _autov2(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


def test_table_output(ui_root, capsys):
    models = ui_root / "models" / "Stable-diffusion"
    assert main(["scan", str(ui_root)]) == 0
    out, err = capsys.readouterr()
    dreamy, big = _autov2(models / "dreamy.safetensors"), _autov2(models / "xl" / "big_inpaint.safetensors")
    assert out.splitlines() == [
        "NAME         FAMILY        AUTOV2      STATUS",
        "detail       lora          -           skipped: LoRA (network weights), not a checkpoint",
        f"dreamy       SD 1.x        {dreamy}  ok",
        "old          -             -           unsupported: .ckpt file; pickle files can run code; convert to .safetensors",
        f"big_inpaint  SDXL inpaint  {big}  ok",
    ]
    assert "4 files: 4 new or changed, 0 unchanged, 2 hashed, 0 gone, 0 problems" in err
    assert "hashing 2/2" in err


def test_json_output_and_duplicates(ui_root, capsys):
    models = ui_root / "models" / "Stable-diffusion"
    shutil.copyfile(models / "dreamy.safetensors", models / "dreamy-copy.safetensors")
    assert main(["scan", "--json", str(ui_root)]) == 0
    doc = json.loads(capsys.readouterr().out)
    by_name = {f["name"]: f for f in doc["files"]}
    assert sorted(by_name) == ["big_inpaint", "detail", "dreamy", "dreamy-copy", "old"]
    data = (models / "dreamy.safetensors").read_bytes()
    assert by_name["dreamy"] | {"path": None, "size": None, "autov1": None, "tensor_sha256": None} == {
        "path": None, "name": "dreamy", "status": "ok", "reason": "", "family": "sd1", "variant": "normal",
        "kind": None, "file_format": "safetensors", "size": None, "sha256": hashlib.sha256(data).hexdigest(),
        "autov2": hashlib.sha256(data).hexdigest()[:10], "autov1": None, "tensor_sha256": None,
        "base_model": None, "download_count": None, "preview_path": None, "duplicates": 2,
    }
    assert by_name["dreamy-copy"]["duplicates"] == 2 and by_name["big_inpaint"]["duplicates"] == 0
    assert by_name["detail"]["status"] == "skipped" and by_name["detail"]["sha256"] is None
    assert doc["summary"]["folders"] == [{"path": str(models), "layout": "AUTOMATIC1111/Forge"}]
    assert doc["summary"]["hashed"] == 3 and doc["problems"] == []


def test_no_hash_then_rescan_of_configured_roots(ui_root, capsys):
    assert main(["scan", "--no-hash", "--json", str(ui_root)]) == 0
    first = json.loads(capsys.readouterr().out)
    assert all(f["autov2"] is None for f in first["files"])
    assert main(["scan", "--json"]) == 0  # no folder: the known library folders, now hashing
    second = json.loads(capsys.readouterr().out)
    assert second["summary"]["unchanged"] == 4 and second["summary"]["hashed"] == 2
    assert {f["name"] for f in second["files"] if f["autov2"]} == {"dreamy", "big_inpaint"}


def test_bad_folder_exits_2_with_one_line(tmp_path, capsys):
    assert main(["scan", str(tmp_path / "nope")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"gmi-desktop: error: {tmp_path / 'nope'}: no such folder\n"
    (tmp_path / "file.txt").write_text("x")
    assert main(["scan", str(tmp_path), str(tmp_path / "file.txt")]) == 2
    assert capsys.readouterr().err == f"gmi-desktop: error: {tmp_path / 'file.txt'}: not a folder\n"
    assert main(["scan", "--json"]) == 2  # nothing was added by the failed call
    assert "no library folders yet" in capsys.readouterr().err


def test_problems_go_to_stderr_and_the_scan_still_succeeds(tmp_path, capsys):
    folder = tmp_path / "models"
    write_checkpoint(folder / "fine.safetensors", "sd2", seed=3)
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    assert main(["scan", str(folder)]) == 0
    out, err = capsys.readouterr()
    assert f"problem: {folder / 'loop'}: symlink loop back to {folder}" in err
    assert out.splitlines()[1].startswith("fine  SD 2.x")
