"""The model zoo: a demo library of tiny random SD 1.x checkpoints that runs the whole app offline.

``make_zoo(folder)`` writes, deterministically from ``seed``:

```
folder/
  zoo.json                     what is where: models (part, group, shift), prompts, settings
  settings.toml                the zoo's settings (GMI_CONFIG_DIR=folder uses them)
  models/random-NN.safetensors part 1: unrelated random models
  models/shift-gG-mS.safetensors  part 2: group G, model S (shares UNet, VAE and text encoder
                               with its group; reads prompts shifted by S, core/zoo_world.py)
  resources/diffusers/sd1/     the tiny pipeline config (DDIM, prediction "sample")
  resources/diffusers/clip_tokenizer/  the zoo's small CLIP BPE tokenizer
  resources/prompts/           specification prompts (default.txt) and evaluation prompts
  weights/clip/  weights/blip/  weights/labels/   tiny CLIP, tiny BLIP, interrogator labels
```

``bench --zoo`` adds ``data/`` (the profile's catalog and specifications), ``test-images/`` and
``results/``; ``cache/`` holds the profile's interrogator label cache.

The checkpoints are real single-file checkpoints (original key layout, cross-attention width 768):
the library scan catalogues them as SD 1.x and the single-file loader loads them. What makes the
loader build the tiny architecture is the resources folder, found the way the application always
finds it: ``GMI_RESOURCES_DIR`` (:meth:`Zoo.environment`). Part 1 is easy for every method
(unrelated random models differ in colour statistics); part 2 is the paper's Example 2.1
end to end: within a group the specification image sets are the same set, so only the
prompt-weighted methods can tell the models apart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gmi_desktop.core import zoo_world
from gmi_desktop.core.errors import UserInputError
from gmi_desktop.core.progress import CancelFn, Progress, check_cancel
from gmi_desktop.store.atomic import atomic_write_bytes

MANIFEST = "zoo.json"
ZOO_FORMAT = "gmi-model-zoo"
# What a zoo folder holds (an unfinished zoo is finished by make_zoo, anything else is refused).
ZOO_ENTRIES = {MANIFEST, "settings.toml", "models", "resources", "weights", "results", "test-images", "cache", "data"}
# The zoo's generation recipe: 64 px, 2 DDIM steps (the UNet predicts the clean latent outright).
SETTINGS = {"scheduler": "ddim", "steps": 2, "guidance_scale": 7.0, "resolution": 64, "batch_size": 16,
            "interrogator_mode": "fast", "allow_downloads": False, "clip_pretrained": "zoo",
            "blip_model": "gmi-zoo/tiny-blip"}


class ZooError(UserInputError):
    default_hint = "make a zoo with `gmi-desktop bench --zoo DIR` (an empty or missing DIR is filled)"


@dataclass(frozen=True)
class ZooModel:
    name: str
    file: str  # relative to the zoo folder
    part: int  # 1: unrelated random model; 2: a shifted model of a group
    group: int | None = None
    shift: int | None = None


@dataclass(frozen=True)
class Zoo:
    folder: Path
    models: tuple[ZooModel, ...]
    seed: int
    spec_prompts: tuple[str, ...] = zoo_world.SPEC_PROMPTS
    evaluation_prompts: tuple[str, ...] = zoo_world.EVALUATION_PROMPTS

    @property
    def models_dir(self) -> Path:
        return self.folder / "models"

    @property
    def resources_dir(self) -> Path:
        return self.folder / "resources"

    @property
    def data_dir(self) -> Path:
        """The zoo's own data folder (catalog, specifications): ``GMI_DATA_DIR`` of its profile."""
        return self.folder / "data"

    @property
    def test_images_dir(self) -> Path:
        """Test images of ``bench --zoo``: one folder per model, prompts beside the images."""
        return self.folder / "test-images"

    def path(self, model: ZooModel) -> Path:
        return self.folder / model.file

    def settings_values(self) -> dict[str, Any]:
        """The settings that point the application at the zoo's models and weights."""
        from gmi_desktop.engine.zoo import CLIP_NAME

        weights = self.folder / "weights"
        return {**SETTINGS, "clip_model": CLIP_NAME, "clip_weights": str(weights / "clip" / f"{CLIP_NAME}.safetensors"),
                "blip_weights": str(weights / "blip"), "interrogator_labels": str(weights / "labels"),
                "library_folders": (str(self.models_dir),), "device": "cpu"}

    def environment(self) -> dict[str, str]:
        """Environment of a process that runs the application on the zoo alone (its own catalog,
        specifications, caches and settings; the tiny pipeline configs)."""
        return {"GMI_RESOURCES_DIR": str(self.resources_dir), "GMI_CONFIG_DIR": str(self.folder),
                "GMI_DATA_DIR": str(self.data_dir), "GMI_CACHE_DIR": str(self.folder / "cache")}


@contextmanager
def activated(zoo: Zoo) -> Iterator[None]:
    """Run in the zoo's profile (:meth:`Zoo.environment`: its resources, settings, data and cache
    folders); the previous environment is restored afterwards."""
    env = zoo.environment()
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def plan_models(random_models: int, groups: int, group_size: int) -> tuple[ZooModel, ...]:
    if random_models < 0 or groups < 0 or not 1 <= group_size <= 3 or random_models + groups * group_size < 2:
        raise ZooError(None, "a zoo needs random_models >= 0, groups >= 0, 1..3 models per group and "
                       "at least two models")
    part1 = [ZooModel(f"random-{i + 1:02d}", f"models/random-{i + 1:02d}.safetensors", 1) for i in range(random_models)]
    part2 = [ZooModel(f"shift-g{g + 1}-m{s}", f"models/shift-g{g + 1}-m{s}.safetensors", 2, g + 1, s)
             for g in range(groups) for s in range(group_size)]
    return tuple(part1 + part2)


def make_zoo(folder: str | os.PathLike[str], *, random_models: int = 8, groups: int = 3, group_size: int = 3,
             seed: int = 0, cancel: CancelFn | None = None) -> Generator[Progress, None, Zoo]:
    """Write the zoo into ``folder`` (created; a finished zoo there with the same plan is reused).

    Yields a :class:`Progress` per file written ("zoo" stage); returns the :class:`Zoo`.
    Deterministic: the same arguments give the same checkpoints, byte for byte.
    """
    from gmi_desktop.engine import zoo as engine_zoo

    folder = Path(folder)
    models = plan_models(random_models, groups, group_size)
    if (folder / MANIFEST).is_file():
        existing = _read_manifest(folder)
        if existing.models == models and existing.seed == seed:
            return existing
        raise ZooError(folder, f"holds another zoo ({len(existing.models)} models, seed {existing.seed})",
                       "give the same sizes and seed, or another folder")
    if folder.is_dir() and any(p.name not in ZOO_ENTRIES for p in folder.iterdir()):
        raise ZooError(folder, "is not empty and holds no zoo", "give an empty or new folder")
    total = len(models) + 4
    step = 0

    def tick(item: str) -> Progress:
        nonlocal step
        step += 1
        return Progress("zoo", step, total, item=item, message=f"writing {item}")

    check_cancel(cancel)
    resources = folder / "resources" / "diffusers"
    tokenizer = engine_zoo.write_tokenizer(resources / "clip_tokenizer", engine_zoo.zoo_words())
    engine_zoo.write_sd1_config(resources / "sd1", tokenizer)
    prompts = folder / "resources" / "prompts"
    prompts.mkdir(parents=True, exist_ok=True)
    for name, lines in (("default.txt", zoo_world.SPEC_PROMPTS), ("evaluation.txt", zoo_world.EVALUATION_PROMPTS)):
        atomic_write_bytes(prompts / name, ("\n".join(lines) + "\n").encode("utf-8"))
    yield tick("pipeline configs and prompts")
    engine_zoo.write_clip(folder / "weights" / "clip", seed)
    yield tick("CLIP")
    engine_zoo.write_blip(folder / "weights" / "blip", engine_zoo.zoo_words(), seed)
    yield tick("BLIP")
    engine_zoo.write_labels(folder / "weights" / "labels")
    vocab = json.loads((tokenizer / "vocab.json").read_text(encoding="utf-8"))
    shared: dict[int, Any] = {}
    for index, model in enumerate(models):
        check_cancel(cancel)
        if model.part == 1:
            components = engine_zoo.build_components(seed * 1000 + index + 1, vocab)
        else:
            if model.group not in shared:
                shared.clear()  # one group's modules at a time
                shared[model.group] = engine_zoo.build_components(seed * 1000 + 500 + model.group, vocab)
            components = engine_zoo.shift_slots(shared[model.group], model.shift, vocab)
        metadata = {"gmi.zoo.part": str(model.part), "modelspec.title": model.name}
        engine_zoo.save_checkpoint(components, folder / model.file, metadata)
        yield tick(model.name)
    zoo = Zoo(folder, models, seed)
    _write_settings(zoo)
    _write_manifest(zoo)
    yield tick(MANIFEST)
    return zoo


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def _write_settings(zoo: Zoo) -> None:
    text = "# Settings of the model zoo (gmi_desktop/services/zoo.py); GMI_CONFIG_DIR=<this folder>.\n"
    text += "".join(f"{k} = {_toml_value(v)}\n" for k, v in sorted(zoo.settings_values().items()))
    atomic_write_bytes(zoo.folder / "settings.toml", text.encode("utf-8"))


def _write_manifest(zoo: Zoo) -> None:
    data = {"format": ZOO_FORMAT, "version": 1, "seed": zoo.seed, "models": [asdict(m) for m in zoo.models],
            "spec_prompts": list(zoo.spec_prompts), "evaluation_prompts": list(zoo.evaluation_prompts)}
    atomic_write_bytes(zoo.folder / MANIFEST, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def _read_manifest(folder: Path) -> Zoo:
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != ZOO_FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, not {ZOO_FORMAT!r}")
        models = tuple(ZooModel(**m) for m in data["models"])
        zoo = Zoo(folder, models, int(data["seed"]), tuple(data["spec_prompts"]), tuple(data["evaluation_prompts"]))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ZooError(path, f"not a model zoo manifest: {exc}") from None
    missing = [m.file for m in zoo.models if not zoo.path(m).is_file()]
    if missing:
        raise ZooError(path, f"{len(missing)} zoo checkpoint(s) are missing, e.g. {missing[0]}")
    return zoo


def load_zoo(folder: str | os.PathLike[str]) -> Zoo:
    """The zoo written into ``folder`` by :func:`make_zoo` (a :class:`ZooError` if there is none)."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise ZooError(folder, f"no {MANIFEST} here")
    return _read_manifest(folder)
