"""A small library of tiny SD 1.x checkpoints, catalogued by the real scan, for spec-build tests.

Tiny checkpoints have widths no published family has, so the real header probe calls them
``unsupported``; :func:`tiny_probe` wraps the real probe and names them ``sd1``, which is what the
probe would say of a full-size file with the same keys. The loader finds their tiny diffusers
config through ``GMI_RESOURCES_DIR``: :func:`tiny_resources` writes a resources folder whose
``diffusers/sd1`` is the tiny config (tokenizer and prompt sets are the shipped ones).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from gmi_desktop.services.library import Library, run
from gmi_desktop.store.catalog import Catalog
from gmi_desktop.store.probe import probe
from gmi_desktop.store.resources import resources_dir
from gmi_desktop.store.settings import Settings
from tests.support.tiny_clip import TINY_CLIP, tiny_assets
from tests.support.tiny_sd import make_tiny_checkpoint, write_tiny_config_dir


def tiny_probe(path: Path):
    result = probe(path)
    if result.status == "unsupported" and "matches no SD" in result.reason:
        return dataclasses.replace(result, status="ok", family="sd1", variant="normal", kind=None, reason="")
    return result


def tiny_resources(folder: Path, prompts: Path | None = None) -> Path:
    """A resources folder for the tiny models (point ``GMI_RESOURCES_DIR`` at it)."""
    shipped = resources_dir()
    folder.mkdir(parents=True, exist_ok=True)
    write_tiny_config_dir(folder / "diffusers" / "sd1", "sd1")
    os.symlink(shipped / "diffusers" / "clip_tokenizer", folder / "diffusers" / "clip_tokenizer")
    if prompts is None:
        os.symlink(shipped / "prompts", folder / "prompts")
    else:
        shutil.copytree(prompts, folder / "prompts")
    return folder


def tiny_settings(**overrides) -> Settings:
    values = dict(clip_model=TINY_CLIP, clip_pretrained="random-seed0", clip_weights=str(tiny_assets().clip_weights),
                  device="cpu", steps=2, resolution=64, batch_size=4, allow_downloads=False)
    values.update(overrides)
    return Settings(**values)


def tiny_env(resources: Path) -> dict[str, str]:
    """The environment a build subprocess needs to see the same settings as :func:`tiny_settings`."""
    s = tiny_settings()
    return {"GMI_RESOURCES_DIR": str(resources), "GMI_CLIP_MODEL": s.clip_model, "GMI_CLIP_PRETRAINED": s.clip_pretrained,
            "GMI_CLIP_WEIGHTS": s.clip_weights, "GMI_DEVICE": "cpu", "GMI_STEPS": str(s.steps),
            "GMI_RESOLUTION": str(s.resolution), "GMI_BATCH_SIZE": str(s.batch_size), "GMI_ALLOW_DOWNLOADS": "false"}


def tiny_checkpoints(folder: Path, seeds: tuple[int, ...]) -> list[Path]:
    """Tiny SD 1.x checkpoint files ``m<seed>.safetensors`` (build once per module: a few seconds)."""
    out = []
    for seed in seeds:
        ck = make_tiny_checkpoint(folder / f"m{seed}", "sd1", seed=seed)
        out.append(Path(shutil.copy(ck.path, folder / f"m{seed}.safetensors")))
    return out


def tiny_library(folder: Path, checkpoints: list[Path], catalog_path: Path | None = None) -> tuple[Catalog, list[Path]]:
    """Copies of ``checkpoints`` in ``folder/library``, scanned into a catalog by the real scan."""
    lib = folder / "library"
    lib.mkdir(parents=True, exist_ok=True)
    paths = [Path(shutil.copy(ck, lib / ck.name)) for ck in checkpoints]
    catalog = Catalog(catalog_path)
    rescan(catalog, lib)
    return catalog, paths


def rescan(catalog: Catalog, lib: Path) -> None:
    library = Library(catalog, probe_fn=tiny_probe)
    library.add_folder(lib)
    run(library.scan())
