"""Model libraries for scan tests: real safetensors checkpoints (compact, distinct content) and
the non-checkpoints that sit next to them, in the folder layouts of the popular UIs."""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

from gmi_desktop.store.hashing import iter_hash_file, stat_key
from gmi_desktop.store.probe import probe
from gmi_desktop.store.sidecars import read_sidecars
from tests.support.checkpoint_files import write_safetensors_header
from tests.support.model_headers import embedding_layout, lora_layout, small_checkpoint, vae_layout


def compact_checkpoint(family: str = "sd1", variant: str = "normal"):
    """``small_checkpoint`` with 16-row token embeddings: every key that tells the family, ~9 MB."""
    layout = small_checkpoint(family, variant)
    return {k: (d, (16, *s[1:]) if k.endswith("token_embedding.weight") else s) for k, (d, s) in layout.items()}


def write_checkpoint(path: Path, family: str = "sd1", *, seed: int = 0, variant: str = "normal",
                     metadata: dict | None = None) -> Path:
    """A real checkpoint file whose content depends on ``seed``: sparse data with 64 KiB of seeded
    random bytes at the start and at the end of the data region (and a seeded ``__metadata__``
    entry). A finished file does not end in zeros: that is how a preallocated download looks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"gmi.test_seed": str(seed), **(metadata or {})}
    write_safetensors_header(path, compact_checkpoint(family, variant), metadata=meta)
    header_len = probe(path).header_len
    noise = random.Random(seed).randbytes(2 * 65536)
    with open(path, "r+b") as handle:
        handle.seek(header_len)
        handle.write(noise[:65536])
        handle.seek(-65536, os.SEEK_END)
        handle.write(noise[65536:])
    return path


def write_lora(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_safetensors_header(path, lora_layout(), data="zeros")


def write_vae(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_safetensors_header(path, vae_layout())


def write_embedding(path: Path, vectors: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_safetensors_header(path, embedding_layout("sd1", vectors), data="zeros")


def bump_mtime(path: Path, delta_ns: int) -> None:
    """Move the modification time by ``delta_ns`` (negative: older), keeping the access time."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + delta_ns))


def key_of(path: Path):
    return stat_key(os.stat(path))


class Counting:
    """The real readers, counting how often each path is opened by them."""

    def __init__(self, before_probe=None):
        self.probes: Counter = Counter()
        self.hashes: Counter = Counter()
        self.sidecars: Counter = Counter()
        self.before_probe = before_probe

    def probe(self, path):
        self.probes[Path(path).name] += 1
        if self.before_probe is not None:
            self.before_probe(Path(path))
        return probe(path)

    def hash(self, path, **kw):
        self.hashes[Path(path).name] += 1
        return iter_hash_file(path, **kw)

    def read_sidecars(self, path, metadata=None):
        self.sidecars[Path(path).name] += 1
        return read_sidecars(path, metadata)

    def reads(self) -> int:
        return sum(self.probes.values()) + sum(self.hashes.values()) + sum(self.sidecars.values())
