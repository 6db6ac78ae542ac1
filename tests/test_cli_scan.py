"""``gmi-desktop scan``: table and JSON on stdout (compared line by line), progress on stderr, exit codes."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest

from gmi_desktop.cli.main import main
from gmi_desktop.cli.progress import CLEAR_TO_END, ProgressLine, bytes_of, human_bytes, human_duration
from gmi_desktop.core.progress import Progress
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
    assert "4 files: 4 new or changed, 0 unchanged, 2 hashed; 2 ok, 1 skipped, 1 unsupported; 0 gone, 0 moved; 1 problem" in err
    progress = [line for line in err.splitlines() if line.split(" ")[0] in {"listing", "probing", "hashing"}]
    assert [line.split("  ")[0] for line in progress] == ["listing 4 files found", "probing 4/4", "hashing 2/2"]
    assert "\r" not in err and CLEAR_TO_END not in err  # captured stderr is no terminal


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


def test_hard_links_and_file_links_are_not_counted_as_extra_copies(ui_root, capsys):
    """They take no extra disk space: deleting one to save space would save nothing (or break a
    link). Only separate files with the same content are duplicates."""
    import os

    models = ui_root / "models" / "Stable-diffusion"
    os.link(models / "dreamy.safetensors", models / "dreamy-hardlink.safetensors")
    (models / "dreamy-symlink.safetensors").symlink_to(models / "dreamy.safetensors")
    assert main(["scan", "--json", str(ui_root)]) == 0
    by_name = {f["name"]: f for f in json.loads(capsys.readouterr().out)["files"]}
    assert {n: by_name[n]["duplicates"] for n in ("dreamy", "dreamy-hardlink", "dreamy-symlink")} == {
        "dreamy": 0, "dreamy-hardlink": 0, "dreamy-symlink": 0}
    shutil.copyfile(models / "dreamy.safetensors", models / "dreamy-copy.safetensors")
    assert main(["scan", str(ui_root)]) == 0
    table = capsys.readouterr().out
    assert table.count("(duplicate, 2 copies)") == 4 and "3 copies" not in table


def test_no_hash_then_rescan_of_configured_roots(ui_root, capsys):
    assert main(["scan", "--no-hash", "--json", str(ui_root)]) == 0
    first = json.loads(capsys.readouterr().out)
    assert all(f["autov2"] is None for f in first["files"])
    assert main(["scan", "--json"]) == 0  # no folder: the known library folders, now hashing
    second = json.loads(capsys.readouterr().out)
    assert second["summary"]["unchanged"] == 4 and second["summary"]["hashed"] == 2
    assert {f["name"] for f in second["files"] if f["autov2"]} == {"dreamy", "big_inpaint"}


def test_the_same_folder_given_twice_is_scanned_once_without_a_problem(ui_root, capsys):
    assert main(["scan", "--no-hash", "--json", str(ui_root), str(ui_root) + "/"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["problems"] == [] and len(doc["summary"]["folders"]) == 1
    assert doc["summary"]["roots"] == [str(ui_root)] and doc["summary"]["seen"] == 4


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


def test_control_characters_in_names_cannot_break_the_table_or_the_terminal(tmp_path, capsys):
    folder = tmp_path / "models"
    write_lora(folder / "two\nlines.safetensors")
    write_checkpoint(folder / "tricky.safetensors", "sd1", seed=4)
    (folder / "tricky.civitai.info").write_text(json.dumps({"model": {"name": "Red\x1b[31mAlert\u202e"}}))
    assert main(["scan", str(folder)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[1].startswith("Red\\x1b[31mAlert\\u202e  SD 1.x")
    assert lines[2].startswith("two\\nlines              lora")
    assert "\x1b" not in out and "\u202e" not in out
    assert main(["scan", "--json", str(folder)]) == 0
    names = sorted(f["name"] for f in json.loads(capsys.readouterr().out)["files"])
    assert names == ["Red\x1b[31mAlert\u202e", "two\nlines"]  # JSON keeps the real names


def test_terminal_progress_escapes_control_characters_in_file_names():
    out = Terminal()
    progress = ProgressLine(out, clock=FakeClock(), width=80)
    progress(Progress("probing", 1, 2, "two\nlines\x1b[2J.safetensors"))
    assert "\n" not in out.getvalue() and "\x1b[2J" not in out.getvalue()
    assert "two\\nlines\\x1b[2J.safetensors" in out.getvalue()


def test_table_columns_line_up_with_wide_and_combining_characters(tmp_path, capsys):
    folder = tmp_path / "models"
    write_checkpoint(folder / "国风模型.safetensors", "sd1", seed=5)
    write_checkpoint(folder / "cafe\u0301.safetensors", "sd2", seed=6)  # "café" with a combining accent
    write_checkpoint(folder / "plain.safetensors", "sd1", seed=7)
    assert main(["scan", "--no-hash", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    import unicodedata

    def width(text):
        return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
                   for c in text)

    family_columns = {width(line.split("SD ")[0]) for line in lines[1:]}
    assert family_columns == {width(lines[0].split("FAMILY")[0])}


def test_json_stays_valid_utf8_with_a_file_name_that_is_not(tmp_path, capsys):
    import os

    folder = tmp_path / "models"
    write_checkpoint(folder / "fine.safetensors", "sd1", seed=8)
    write_lora(Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9.safetensors")))
    assert main(["scan", "--json", str(folder)]) == 0
    out = capsys.readouterr().out
    out.encode("utf-8")  # strict: a UTF-8 terminal or a JSON reader gets valid text
    problems = json.loads(out)["problems"]
    assert problems == [{"path": str(folder / "caf\\udce9.safetensors"),
                         "reason": "the name is not valid UTF-8 text; rename it"}]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


GB = 1_000_000_000


def _hashing_events(clock, files, rate, step):
    """Hash ``files`` [(name, size)] at ``rate`` bytes/s with an event every ``step`` bytes."""
    for index, (name, size) in enumerate(files):
        yield Progress("hashing", index, len(files), name, 0, size)
        for done in range(step, size + 1, step):
            clock.now += step / rate
            yield Progress("hashing", index, len(files), name, done, size)
        clock.now += (size % step) / rate
    yield Progress("hashing", len(files), len(files))


def test_plain_progress_is_throttled_per_phase_and_ends_with_each_phase_s_counts():
    clock, out = FakeClock(), io.StringIO()
    progress = ProgressLine(out, clock=clock, every_s=5.0)
    assert not progress.tty
    events = [Progress("listing", n, 0) for n in range(1, 301)] + [Progress("listing", 300, 300)]
    events += [Progress("probing", n, 300, f"m{n}.safetensors") for n in range(1, 301)]
    for event in events:
        clock.now += 0.05  # 15 s of listing and 15 s of probing
        progress(event)
    for event in _hashing_events(clock, [("a.safetensors", 2 * GB), ("b.safetensors", GB)], 100e6, 64 * 2**20):
        progress(event)  # 30 s, ~45 events
    progress.close()
    lines = out.getvalue().splitlines()
    by_phase = {phase: [line for line in lines if line.startswith(phase + " ")]
                for phase in ("listing", "probing", "hashing")}
    assert sum(map(len, by_phase.values())) == len(lines)  # every line names its phase
    assert len(by_phase["listing"]) <= 4 and by_phase["listing"][-1] == "listing 300 files found"
    assert len(by_phase["probing"]) <= 4 and by_phase["probing"][-1] == "probing 300/300"
    assert len(by_phase["hashing"]) <= 7  # 30 s / 5 s + the final counts, not one per event
    assert by_phase["hashing"][-1] == "hashing 2/2  3.0 GB in 30 s  100 MB/s"
    middle = by_phase["hashing"][0]
    assert middle.startswith("hashing 1/2  a.safetensors  0.5/2.0 GB  100 MB/s  ETA 15 s"), middle
    assert "\r" not in out.getvalue()


def test_terminal_progress_is_one_line_with_size_rate_and_eta():
    clock, out = FakeClock(), Terminal()
    progress = ProgressLine(out, clock=clock, width=100)
    size = int(6.9 * GB)
    progress(Progress("hashing", 0, 2, "realistic-sdxl.safetensors", 0, size))
    for done in range(64 * 10**6, int(3.1 * GB), 64 * 10**6):
        clock.now = done / 840e6
        progress(Progress("hashing", 0, 2, "realistic-sdxl.safetensors", done, size))
    clock.now = 3.1 * GB / 840e6
    progress(Progress("hashing", 0, 2, "realistic-sdxl.safetensors", int(3.1 * GB), size))
    text = out.getvalue()
    assert "\n" not in text  # rewritten in place until the end
    frames = text.split("\r")[1:]
    assert len(frames) <= 3.7 / 0.1 + 2  # redraws are throttled, not one per event (48 events)
    assert all(frame.endswith(CLEAR_TO_END) for frame in frames)
    assert frames[-1] == "hashing 1/2  realistic-sdxl.safetensors  3.1/6.9 GB  840 MB/s  ETA 5 s" + CLEAR_TO_END
    progress.close()
    assert out.getvalue() == text + "\n"
    progress.close()  # idempotent: one final newline
    assert out.getvalue().count("\n") == 1


def test_terminal_line_fits_a_narrow_terminal_by_shortening_the_name():
    clock, out = FakeClock(), Terminal()
    progress = ProgressLine(out, clock=clock, width=60)
    clock.now = 1.0
    name = "an-extremely-long-checkpoint-name-from-civitai-v3-final-pruned.safetensors"
    progress(Progress("hashing", 0, 1, name, 0, 2 * GB))
    line = out.getvalue().split("\r")[-1].removesuffix(CLEAR_TO_END)
    assert len(line) <= 59 and "…" in line and line.endswith("  0.0/2.0 GB")
    assert line.startswith("hashing 1/1  an-extremely") and ".safetensors  0.0/2.0 GB" in line


def test_human_units():
    assert [human_bytes(n) for n in (12, 999_999, 840e6, 6.9e9, 123e9)] == [
        "12 B", "1.0 MB", "840 MB", "6.9 GB", "123 GB"]
    assert bytes_of(3.1e9, 6.9e9) == "3.1/6.9 GB" and bytes_of(5, 12) == "5/12 B"
    assert [human_duration(s) for s in (0.4, 4.5, 59.6, 200, 3900)] == ["0 s", "4 s", "1 min 00 s", "3 min 20 s",
                                                                      "1 h 05 min"]


def test_prune_forgets_gone_files_and_deletes_only_our_orphaned_specifications(ui_root, tmp_path, capsys):
    from gmi_desktop.store import paths
    from gmi_desktop.store.catalog import Catalog

    models = ui_root / "models" / "Stable-diffusion"
    assert main(["scan", str(ui_root)]) == 0
    with Catalog() as catalog:
        shas = {r.path.name: r.sha256 for r in catalog.files() if r.sha256}
        ours = paths.specs_dir() / "dreamy.spec.safetensors"
        ours.write_bytes(b"spec")
        elsewhere = tmp_path / "not-ours.safetensors"
        elsewhere.write_bytes(b"user file")
        catalog.set_spec_ref(shas["dreamy.safetensors"], ours)
        catalog.set_spec_ref(shas["big_inpaint.safetensors"], elsewhere)
    (models / "dreamy.safetensors").unlink()
    (models / "xl" / "big_inpaint.safetensors").unlink()
    capsys.readouterr()

    assert main(["scan"]) == 0  # without --prune: tombstoned, specification kept
    out, _ = capsys.readouterr()
    assert "missing" in out and ours.exists()

    assert main(["scan", "--prune"]) == 0
    out, err = capsys.readouterr()
    assert "dreamy" not in out and "big_inpaint" not in out
    assert "pruned: 2 missing files forgotten, 1 specifications deleted" in err
    assert not ours.exists() and elsewhere.read_bytes() == b"user file"
