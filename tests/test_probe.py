"""Bad input for the header probe: every case ends in a status and a reason, never an exception."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
from safetensors import safe_open

from gmi_desktop.core.errors import CorruptCheckpoint, IncompleteFile, NotACheckpoint, UnsupportedCheckpoint
from gmi_desktop.store import probe as probe_module
from gmi_desktop.store.probe import ProbeResult, probe
from tests.support.checkpoint_files import data_length, header_bytes, layout, write_safetensors_header
from tests.support.model_headers import small_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = {"a": ("F32", (2, 2)), "b": ("F16", (3,)), "c": ("F32", (4,))}


def _library_accepts(path: Path) -> bool:
    """Whether the safetensors library itself opens the file (header + coverage checks)."""
    try:
        with safe_open(str(path), framework="numpy") as f:
            list(f.keys())
    except Exception:  # noqa: BLE001 - any refusal counts; we only compare verdicts
        return False
    return True


def _expect(result: ProbeResult, status: str, *needles: str) -> None:
    assert result.status == status, (result.status, result.reason)
    for needle in needles:
        assert needle in result.reason, (needle, result.reason)
    if status != "ok":
        assert result.reason and not result.ok


# -- files too short to hold a header -------------------------------------------------------

def test_empty_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.touch()
    _expect(probe(path), "invalid", "empty file (0 bytes)")


@pytest.mark.parametrize("n", [1, 7])
def test_shorter_than_the_length_field(tmp_path, n):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x10" * n)
    result = probe(path)
    _expect(result, "invalid", f"file is {n} bytes, too short")
    assert result.size == n


# -- the 8-byte header length -----------------------------------------------------------------

def test_header_length_of_2_to_the_40(tmp_path):
    path = write_safetensors_header(tmp_path / "model.safetensors", TINY, declared_len=2**40, data="zeros")
    _expect(probe(path), "invalid", f"header length {2**40} exceeds file size {path.stat().st_size}")
    assert not _library_accepts(path)


def test_header_length_zero(tmp_path):
    path = write_safetensors_header(tmp_path / "m.safetensors", TINY, declared_len=0, data="zeros")
    _expect(probe(path), "invalid", "header length is 0")


def test_preallocated_download_is_incomplete(tmp_path):
    """Download managers reserve the full size first: the file is all zeros until written."""
    path = tmp_path / "m.safetensors"
    with open(path, "wb") as f:
        f.truncate(2 * 1024**3)
    _expect(probe(path), "incomplete", "reserved the space")


def test_damaged_length_running_into_tensor_data(tmp_path):
    """Length larger than the file, with binary tensor data after the JSON: a damaged field."""
    raw = header_bytes(layout(TINY)[0])
    path = write_safetensors_header(
        tmp_path / "m.safetensors", TINY, data=b"\x00\x01" * 20, declared_len=len(raw) + 10_000
    )
    _expect(probe(path), "invalid", "exceeds file size", "length field is damaged")
    assert not _library_accepts(path)


def test_file_ending_inside_its_header_is_incomplete(tmp_path):
    raw = header_bytes(layout(TINY)[0])
    path = write_safetensors_header(tmp_path / "m.safetensors", TINY, truncate_to=8 + len(raw) // 2)
    _expect(probe(path), "incomplete", f"header length {len(raw)} exceeds file size", "ends inside its header")


# -- the JSON header ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "raw,needle",
    [
        (b'{"a\xff\xfe": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}', "not valid UTF-8"),
        (b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}', "not valid JSON"),
        (b'{"a": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 4]}}', "not valid JSON"),
        (b'[{"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}]', "header is a JSON array, not an object"),
        (b'"just a string"  ', "header is a JSON string, not an object"),
        (b'{"a": [1, 2]}', "entry is not an object"),
        (b'{"a": {"dtype": "F32", "shape": [1]}}', "data_offsets None are not two non-negative integers"),
        (b'{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}', "is not a list of non-negative"),
        (b'{"a": {"dtype": "F32", "shape": [true], "data_offsets": [0, 4]}}', "is not a list of non-negative"),
        (b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4.0]}}', "are not two non-negative"),
        (b'{"__metadata__": ["x"], "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
         "__metadata__ is a JSON array"),
    ],
    ids=["utf8", "json", "nan", "array", "string", "entry", "no-offsets", "neg-shape", "bool-shape",
         "float-offset", "metadata-list"],
)
def test_malformed_header(tmp_path, raw, needle):
    path = write_safetensors_header(tmp_path / "m.safetensors", {}, raw_header=raw, data=b"\0" * 4)
    _expect(probe(path), "invalid", needle)
    assert not _library_accepts(path)


def test_duplicate_tensor_keys(tmp_path):
    entry = '{"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}'
    raw = f'{{"w": {entry}, "w": {entry}}}'.encode()
    path = write_safetensors_header(tmp_path / "m.safetensors", {}, raw_header=raw, data=b"\0" * 4)
    # the safetensors library silently keeps the last one; two tensors under one name is damage
    _expect(probe(path), "invalid", "duplicate key 'w'")


def test_duplicate_keys_inside_metadata(tmp_path):
    raw = b'{"__metadata__": {"k": "1", "k": "2"}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    path = write_safetensors_header(tmp_path / "m.safetensors", {}, raw_header=raw, data=b"\0" * 4)
    _expect(probe(path), "invalid", "duplicate key 'k'")


# -- offsets, sizes, dtypes ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "offsets,needle",
    [
        ({"b": [20, 26]}, "gap of 4 bytes"),
        ({"b": [12, 18]}, "overlap of 4 bytes"),
        ({"c": [1000, 1016]}, "out of range: the tensor data is 38 bytes"),
        ({"b": [26, 16]}, "out of range (end before begin)"),
        ({"b": [16, 24]}, "needs 6 bytes but data_offsets [16, 24] span 8"),
    ],
    ids=["gap", "overlap", "beyond-data", "reversed", "size-mismatch"],
)
def test_bad_offsets(tmp_path, offsets, needle):
    path = write_safetensors_header(tmp_path / "m.safetensors", TINY, offsets=offsets, data="zeros")
    assert data_length(TINY) == 38
    result = probe(path)
    _expect(result, "invalid", needle)
    assert not _library_accepts(path)


def test_unknown_dtype(tmp_path):
    extra = {"q": {"dtype": "Q4_K", "shape": [2], "data_offsets": [38, 39]}}
    path = write_safetensors_header(tmp_path / "m.safetensors", TINY, extra_entries=extra, data=b"\0" * 39)
    _expect(probe(path), "invalid", "tensor 'q': unknown dtype 'Q4_K'")
    assert not _library_accepts(path)


def test_trailing_bytes_after_last_tensor(tmp_path):
    path = write_safetensors_header(tmp_path / "m.safetensors", TINY, data=b"\0" * 50)
    _expect(probe(path), "invalid", "12 unexpected bytes after the last tensor")
    assert not _library_accepts(path)


def test_valid_file_agrees_with_the_library(tmp_path):
    meta = {"format": "pt", "modelspec.title": "Tiny"}
    path = write_safetensors_header(tmp_path / "m.safetensors", TINY, metadata=meta, data="zeros")
    result = probe(path)
    assert _library_accepts(path)
    assert result.status == "skipped" and result.kind == "unknown"  # valid, just not a model
    assert result.tensor_count == 3 and dict(result.metadata) == meta
    assert result.header_len == path.stat().st_size - data_length(TINY)


def test_non_string_metadata_is_invalid_but_still_classified(tmp_path):
    meta = {"modelspec.title": "Merge", "ss_epoch": 3, "ss_tags": ["a"], "note": None}
    path = write_safetensors_header(tmp_path / "m.safetensors", small_checkpoint("sd1"), metadata=meta)
    result = probe(path)
    _expect(result, "invalid", "non-string values", "'note' (null)", "'ss_epoch' (number)", "'ss_tags' (array)")
    assert dict(result.metadata) == {"modelspec.title": "Merge"}  # only strings are kept
    assert result.family == "sd1"
    assert not _library_accepts(path)


@pytest.mark.parametrize("variant", ["depth", "instruct_pix2pix"])
def test_non_string_metadata_is_invalid_even_for_a_file_the_classifier_calls_unsupported(tmp_path, variant):
    path = tmp_path / "m.safetensors"
    write_safetensors_header(path, small_checkpoint("sd1", variant))
    assert probe(path).status == "unsupported"
    write_safetensors_header(path, small_checkpoint("sd1", variant), metadata={"ss_epoch": 3})
    result = probe(path)
    _expect(result, "invalid", "non-string values", "'ss_epoch' (number)")  # the format check comes first
    assert (result.family, result.variant) == ("sd1", variant)
    assert isinstance(result.error(), CorruptCheckpoint)


# -- other formats under a safetensors name ------------------------------------------------------

@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("the probe must never unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickle_renamed_to_safetensors(tmp_path, no_unpickling, protocol):
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps({"state_dict": {"w": [0.0] * 64}}, protocol=protocol))
    result = probe(path)
    _expect(result, "unsupported", "pickle files can run code; convert to .safetensors")
    assert result.file_format == "pickle"
    assert isinstance(result.error(), UnsupportedCheckpoint)


def test_torch_zip_renamed_to_safetensors(tmp_path, no_unpickling):
    path = tmp_path / "model.safetensors"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
        zf.writestr("archive/version", "3\n")
    result = probe(path)
    _expect(result, "unsupported", "zip archive (torch pickle)", "convert to .safetensors")
    assert result.file_format == "zip"


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin"])
def test_pickle_suffixes_are_listed_as_unsupported(tmp_path, no_unpickling, suffix):
    path = tmp_path / f"v1-5-pruned{suffix}"
    path.write_bytes(pickle.dumps({"w": 1}, protocol=4))
    result = probe(path)
    _expect(result, "unsupported", f"{suffix} file", "pickle files can run code; convert to .safetensors")
    assert result.file_format == "pickle"


# -- things that are not regular files, and files that change under us --------------------------

def _probe_with_timeout(path: Path, seconds: float = 5.0) -> ProbeResult:
    out: list[ProbeResult] = []
    worker = threading.Thread(target=lambda: out.append(probe(path)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "probe hung"
    return out[0]


def test_fifo_named_safetensors_does_not_hang(tmp_path):
    path = tmp_path / "model.safetensors"
    os.mkfifo(path)
    _expect(_probe_with_timeout(path), "skipped", "not a regular file: FIFO")


def test_fifo_swapped_in_after_stat_does_not_hang(tmp_path, monkeypatch):
    path = write_safetensors_header(tmp_path / "model.safetensors", small_checkpoint("sd1"))
    real_open = os.open

    def swap_then_open(p, flags, *args):
        if Path(p) == path:  # another process replaces the file between our stat and open
            path.unlink()
            os.mkfifo(path)
        return real_open(p, flags, *args)

    monkeypatch.setattr(probe_module.os, "open", swap_then_open)
    _expect(_probe_with_timeout(path), "skipped", "not a regular file: FIFO")


def test_directory_named_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    path.mkdir()
    result = probe(path)
    _expect(result, "skipped", "directory without model_index.json")


def test_file_deleted_between_listing_and_reading(tmp_path):
    write_safetensors_header(tmp_path / "model.safetensors", small_checkpoint("sd1"))
    listed = [Path(entry.path) for entry in os.scandir(tmp_path)]
    listed[0].unlink()
    _expect(probe(listed[0]), "skipped", "unreadable: file vanished")


def test_file_deleted_between_stat_and_open(tmp_path, monkeypatch):
    path = write_safetensors_header(tmp_path / "model.safetensors", small_checkpoint("sd1"))
    real_open = os.open

    def delete_then_open(p, flags, *args):
        Path(p).unlink(missing_ok=True)
        return real_open(p, flags, *args)

    monkeypatch.setattr(probe_module.os, "open", delete_then_open)
    result = probe(path)
    _expect(result, "skipped", "unreadable: file vanished")
    assert result.size > 0  # the stat before the race is kept


_PROBE_SCRIPT = "import json, sys; from gmi_desktop.store.probe import probe; r = probe(sys.argv[1]); " \
    "print(json.dumps([r.status, r.reason]))"


def test_permission_denied(tmp_path):
    """chmod 000 denies reads except to root; as root the probe runs in a child process whose
    capability bounding set lacks CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH, so the kernel really
    refuses the open."""
    path = write_safetensors_header(tmp_path / "model.safetensors", small_checkpoint("sd1"))
    path.chmod(0)
    if os.geteuid() != 0:
        _expect(probe(path), "skipped", "unreadable: permission denied")
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def drop_read_override():
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    done = subprocess.run(
        [sys.executable, "-c", _PROBE_SCRIPT, str(path)], cwd=ROOT, capture_output=True, text=True,
        preexec_fn=drop_read_override, timeout=60, check=True,
    )
    status, reason = json.loads(done.stdout)
    assert (status, reason) == ("skipped", "unreadable: permission denied")


def test_truncated_mid_copy_then_completed(tmp_path):
    """Copy a real checkpoint in chunks: incomplete at every cut point, ok once complete."""
    source = write_safetensors_header(tmp_path / "src.safetensors", small_checkpoint("sd2"), data="zeros")
    blob = source.read_bytes()
    target = tmp_path / "copy.safetensors"
    header_end = 8 + int.from_bytes(blob[:8], "little")
    cuts = sorted({8, 9, header_end // 2, header_end - 1, header_end, header_end + 1, len(blob) // 2, len(blob) - 1})
    with open(target, "wb") as f:
        for cut in cuts:
            f.write(blob[f.tell():cut])
            f.flush()
            result = probe(target)
            assert result.status == "incomplete", (cut, result.reason)
            assert "truncated" in result.reason or "still being copied" in result.reason
            assert isinstance(result.error(), IncompleteFile)
        f.write(blob[f.tell():])
    done = probe(target)
    assert done.ok and done.family == "sd2" and done.reason == ""
    assert done.error() is None


def test_errors_match_statuses(tmp_path):
    lora = write_safetensors_header(tmp_path / "l.safetensors", {"lora_unet_x.lora_down.weight": ("F16", (4, 8))})
    broken = write_safetensors_header(tmp_path / "b.safetensors", TINY, declared_len=2**40)
    assert isinstance(probe(lora).error(), NotACheckpoint)
    err = probe(broken).error()
    assert isinstance(err, CorruptCheckpoint) and str(err).startswith(str(broken))


def test_header_is_struct_little_endian(tmp_path):
    """The builder and the probe agree on the on-disk layout the safetensors library defines."""
    path = write_safetensors_header(tmp_path / "m.safetensors", TINY, data="zeros")
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert probe(path).header_len == 8 + n
    assert _library_accepts(path)


def test_symlinks(tmp_path):
    target = write_safetensors_header(tmp_path / "real.safetensors", small_checkpoint("sd1"))
    (tmp_path / "link.safetensors").symlink_to(target)
    (tmp_path / "dangling.safetensors").symlink_to(tmp_path / "gone.safetensors")
    (tmp_path / "loop_a.safetensors").symlink_to(tmp_path / "loop_b.safetensors")
    (tmp_path / "loop_b.safetensors").symlink_to(tmp_path / "loop_a.safetensors")
    assert probe(tmp_path / "link.safetensors").ok
    _expect(probe(tmp_path / "dangling.safetensors"), "skipped", "unreadable: broken symlink")
    _expect(probe(tmp_path / "loop_a.safetensors"), "skipped", "unreadable: symlink loop")


def test_result_carries_the_stat_of_what_was_read(tmp_path):
    path = write_safetensors_header(tmp_path / "m.safetensors", small_checkpoint("sdxl"))
    st = path.stat()
    result = probe(path)
    assert (result.size, result.key) == (st.st_size, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    assert hash(result) == hash(probe(path))  # frozen and hashable, metadata included by value in ==


def test_cut_inside_a_multibyte_character_of_the_header(tmp_path):
    entries = layout({"unet.€uro.weight": ("F16", (2,)), **TINY})[0]
    raw = json.dumps(entries, ensure_ascii=False).encode("utf-8")
    cut = 8 + raw.index("€".encode()) + 1  # between the bytes of one character
    path = write_safetensors_header(tmp_path / "m.safetensors", {}, raw_header=raw, truncate_to=cut)
    _expect(probe(path), "incomplete", "ends inside its header")


def test_other_files_are_not_checkpoints_whatever_their_first_bytes(tmp_path):
    config = tmp_path / "model_index.json"
    config.write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    notes = tmp_path / "README"
    notes.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    _expect(probe(config), "skipped", "not a safetensors file")
    _expect(probe(notes), "skipped", "not a safetensors file (header is not valid JSON")
    unnamed = write_safetensors_header(tmp_path / "model", small_checkpoint("sd1"))
    assert probe(unnamed).ok  # content decides, not the suffix


def test_probe_header_hands_out_the_validated_table_only_when_the_header_is_sound(tmp_path):
    from gmi_desktop.store.probe import probe_header

    layout = small_checkpoint("sdxl")
    path = write_safetensors_header(tmp_path / "m.safetensors", layout, metadata={"k": "v"})
    result, header = probe_header(path)
    assert result == probe(path) and result.ok and result.family == "sdxl"
    assert header.tensors == {name: (dtype, tuple(shape)) for name, (dtype, shape) in layout.items()}
    assert header.metadata == {"k": "v"} and header.data_len == path.stat().st_size - result.header_len
    with safe_open(str(path), "np") as fh:
        assert set(fh.keys()) == set(header.tensors)
    lora = write_safetensors_header(tmp_path / "l.safetensors", {"lora_unet_x.lora_down.weight": ("F16", (4, 8))})
    result, header = probe_header(lora)
    assert result.kind == "lora" and list(header.tensors) == ["lora_unet_x.lora_down.weight"]
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[: probe(path).header_len + 10])
    assert probe_header(cut)[0].status == "incomplete" and probe_header(cut)[1] is None
    assert probe_header(tmp_path)[1] is None and probe_header(tmp_path / "missing")[1] is None
