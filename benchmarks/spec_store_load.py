"""How long loading a folder of specification files takes, and what validation costs.

Writes M synthetic specs (N = 55 images, D = 768, Dt = 768, like CLIP ViT-L/14) into a temp
folder, then measures in the same process:

- baseline: ``safetensors.numpy.load_file`` of every file (no checks at all);
- ``SpecStore.open`` (checksum, header, version, shapes, finiteness, Specification objects);
- building the SpecIndex from the loaded specs (contiguous arrays for one-pass scoring).

Usage: python benchmarks/spec_store_load.py [M ...]   (default: 100 1000)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gmi_desktop.core.index import SpecIndex  # noqa: E402
from gmi_desktop.core.spec import Specification, SpecRecipe, prompt_set_digest  # noqa: E402
from gmi_desktop.store.specfile import SpecStore, save_spec, spec_filename  # noqa: E402

N, D, DT = 55, 768, 768


def make_specs(m: int, seed: int = 0) -> list[Specification]:
    rng = np.random.default_rng(seed)
    prompts = tuple(f"default prompt {i}" for i in range(N))
    q = rng.standard_normal((N, DT)).astype(np.float32)
    digest = prompt_set_digest(prompts)
    specs = []
    for i in range(m):
        z = rng.standard_normal((N, D)).astype(np.float32)
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        recipe = SpecRecipe(f"{i:064x}", "open_clip:ViT-L-14/openai", digest)
        specs.append(Specification(f"model-{i:05d}", z, q, prompts, recipe, popularity=float(m - i)))
    return specs


def timed(fn, repeats: int = 3) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(sizes: list[int]) -> None:
    from safetensors.numpy import load_file

    print(f"{'M':>6} {'raw load s':>11} {'SpecStore s':>12} {'ratio':>6} {'per file ms':>12} {'index s':>8} {'MB/file':>8}")
    for m in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            for spec in make_specs(m):
                save_spec(spec, folder / spec_filename(spec.model_id, spec.recipe.encoder_id))
            files = sorted(folder.glob("*.safetensors"))
            raw, _ = timed(lambda: [load_file(str(p)) for p in files])
            full, store = timed(lambda: SpecStore.open(folder))
            assert len(store.specs) == m and not store.skipped
            build, _ = timed(lambda: SpecIndex(store.specs), repeats=1)
            size_mb = sum(p.stat().st_size for p in files) / m / 1e6
            print(f"{m:>6} {raw:>11.3f} {full:>12.3f} {full / raw:>6.2f} {1000 * full / m:>12.2f} {build:>8.3f} {size_mb:>8.3f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100, 1000])
