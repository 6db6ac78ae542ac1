"""Library scan and hashing speed (issue 3 targets), measured on this machine.

1. cold scan + classify of 1 000 sparse checkpoints with the real SD 1.5 key layout (~1 100 keys,
   ~2.1 GB each on paper, no disk used; the last bytes written, as in a finished download):
   target <= 2 s;
2. rescan of the same unchanged library: target <= 0.3 s;
3. hashing a 1 GiB file of random bytes: throughput >= 0.8x ``sha256sum`` on the same file, both
   measured here (best of 3, page cache warm for both).

Run: ``python benchmarks/scan.py [--files 1000] [--hash-mib 1024]``. The first step builds the SD
1.5 layout from the shipped diffusers configs on torch's meta device (slow import, not timed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gmi_desktop.core.progress import run  # noqa: E402
from gmi_desktop.services.library import Library  # noqa: E402
from gmi_desktop.store.catalog import Catalog  # noqa: E402
from gmi_desktop.store.hashing import hash_file  # noqa: E402
from gmi_desktop.store.probe import probe  # noqa: E402


def _sd15_files(folder: Path, count: int) -> int:
    from tests.support.checkpoint_files import header_bytes, layout
    from tests.support.full_layouts import full_layout

    entries, data_len = layout(full_layout("sd1"))
    folder.mkdir(parents=True)
    for i in range(count):
        raw = header_bytes(entries, {"modelspec.title": f"bench model {i:06d}", "gmi.bench": "1"})
        with open(folder / f"model_{i:05d}.safetensors", "wb") as handle:
            handle.write(len(raw).to_bytes(8, "little") + raw)
            handle.truncate(8 + len(raw) + data_len)
            handle.seek(-8, os.SEEK_END)
            handle.write(b"finished")  # a finished download does not end in zeros
    return len(entries)


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def bench_scan(tmp: Path, count: int) -> None:
    folder = tmp / "library"
    keys = _sd15_files(folder, count)
    sample = sorted(folder.iterdir())[:100]
    probe_only, _ = _timed(lambda: [probe(p) for p in sample])
    per_file = probe_only / len(sample)
    print(f"baseline: header probe alone, in-process: {per_file * 1000:.1f} ms/file "
          f"-> {per_file * count:.1f} s for {count} files serially")
    with Catalog(tmp / "catalog.sqlite3") as catalog:
        library = Library(catalog)
        library.add_folder(folder)
        cold, summary = _timed(lambda: run(library.scan(hashing=False)))
        ok = sum(1 for r in catalog.files() if r.status == "ok" and r.family == "sd1")
        warm, again = _timed(lambda: run(library.scan(hashing=False)))
    assert ok == count and again.unchanged == count and again.probed == 0  # noqa: S101 - bench sanity
    print(f"cold scan + classify: {count} files x {keys} keys in {cold:.3f} s "
          f"({count / cold:.0f} files/s); target 2.0 s -> {cold / 2.0:.2f} of budget "
          f"({summary.probed} probed in {library.workers} worker processes; "
          f"{per_file * count / cold:.2f}x the serial probe baseline)")
    print(f"rescan unchanged:     {count} files in {warm:.3f} s; target 0.3 s -> {warm / 0.3:.2f} of budget")


def bench_hash(tmp: Path, mib: int) -> None:
    path = tmp / "random.bin"
    block = os.urandom(16 * 1024 * 1024)
    with open(path, "wb") as handle:
        for i in range(mib // 16):
            handle.write(bytes([i % 256]) + block[1:])  # distinct blocks, random-ish bytes
    size = path.stat().st_size
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    sha_times, ours, ours_full_only = [], [], []
    for _ in range(3):
        sha_times.append(_timed(lambda: subprocess.run(["sha256sum", str(path)], capture_output=True, check=True))[0])
        ours.append(_timed(lambda: hash_file(path, tensor_offset=8 + 120_000))[0])
        ours_full_only.append(_timed(lambda: hash_file(path))[0])
    reference = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]
    assert hash_file(path).sha256 == reference  # noqa: S101 - bench sanity
    mb = size / 1e6
    best_sha, best_ours, best_full = min(sha_times), min(ours), min(ours_full_only)
    print(f"sha256sum:            {mb / best_sha:7.0f} MB/s ({best_sha:.3f} s for {size / 2**30:.2f} GiB)")
    print(f"hash_file (all four): {mb / best_ours:7.0f} MB/s ({best_ours:.3f} s) -> "
          f"{best_sha / best_ours:.2f}x sha256sum; target >= 0.8x")
    print(f"hash_file (no tensor hash): {mb / best_full:7.0f} MB/s -> {best_sha / best_full:.2f}x sha256sum")
    path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--hash-mib", type=int, default=1024)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gmi-bench-scan-"))
    try:
        bench_scan(tmp, args.files)
        bench_hash(tmp, args.hash_mib)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
