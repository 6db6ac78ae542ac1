"""Header probe speed: 1 000 sparse SD 1.5-size checkpoints (~1 140 keys each), three ways.

* ``probe``     gmi_desktop.store.probe.probe (stat, read header, validate, classify)
* ``library``   the safetensors library's own header parse (safe_open + keys + metadata)
* ``json only`` read the header bytes and json.loads them, nothing else (a floor)

All three run in this process on the same files, after one warm-up pass, so the page cache
holds the headers for each (the data regions are holes and never read). Prints seconds per
pass and the ratios. Run: ``python benchmarks/probe.py [--files N]``.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gmi_desktop.store.probe import probe  # noqa: E402
from tests.support.checkpoint_files import write_safetensors_header  # noqa: E402
from tests.support.full_layouts import full_layout  # noqa: E402


def _library(path: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        f.metadata()
        return len(list(f.keys()))


def _json_only(path: Path) -> int:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return len(json.loads(f.read(n)))


def _timed(fn, paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        fn(path)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    args = parser.parse_args()
    layout = full_layout("sd1")
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.files):
            meta = {"modelspec.title": f"merge {i}", "format": "pt"}
            paths.append(write_safetensors_header(Path(tmp) / f"model_{i:04d}.safetensors", layout, metadata=meta))
        assert all(probe(p).ok for p in paths[:3])
        runs = {"probe": probe, "library": _library, "json only": _json_only}
        for fn in runs.values():
            _timed(fn, paths)  # warm-up
        times = {name: min(_timed(fn, paths) for _ in range(3)) for name, fn in runs.items()}
    print(f"{args.files} files, {len(layout)} keys each (best of 3 passes)")
    for name, seconds in times.items():
        print(f"  {name:20s} {seconds:7.3f} s   {seconds / args.files * 1e3:6.2f} ms/file")
    print(f"  probe / library   = {times['probe'] / times['library']:.2f}x")
    print(f"  probe / json only = {times['probe'] / times['json only']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
