"""The foundations fit together: checkpoint -> images -> CLIP features -> specification file ->
index -> ranking, on tiny real models (diffusers pipelines, open_clip, BLIP), nothing mocked.

This is the path the spec builder and the identify service of later issues will take; the test
pins that the pieces' types line up and that the whole chain is reproducible bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from gmi_desktop.core.spec import Requirement, SpecRecipe, Specification, prompt_set_digest
from gmi_desktop.engine.clip import load_clip
from gmi_desktop.engine.generation import GenerationBackend, GenerationOptions, plan_images
from gmi_desktop.engine.interrogator import Interrogator, load_caption_model
from gmi_desktop.store.hashing import hash_file
from gmi_desktop.store.specfile import SpecStore, save_spec, spec_filename, spec_to_bytes
from tests.support.tiny_clip import TINY_CLIP, register_tiny_clip, tiny_assets
from tests.support.tiny_sd import make_tiny_checkpoint

PROMPTS = ("a red house", "a portrait of a cat", "a mountain lake at dawn", "a bowl of fruit")
OPTIONS = GenerationOptions(steps=2, resolution=64, batch_size=2, device="cpu")


@pytest.fixture(scope="module")
def clip():
    register_tiny_clip()
    return load_clip(TINY_CLIP, "random-seed0", weights=str(tiny_assets().clip_weights), device="cpu")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("library")
    return [make_tiny_checkpoint(folder / f"m{seed}", "sd1", seed=seed) for seed in (1, 2)]


def build_spec(ck, clip) -> Specification:
    """What the spec builder does: generate from the prompt set, encode images and prompts."""
    jobs = plan_images(PROMPTS, images_per_prompt=1, base_seed=0)
    loaded = GenerationBackend().load(ck.path, ck.family, options=OPTIONS, config_dir=ck.config_dir)
    try:
        images = loaded.generate([job.prompt for job in jobs], [job.seed for job in jobs])
    finally:
        loaded.close()
    sha = hash_file(ck.path).sha256
    recipe = SpecRecipe(
        checkpoint_sha256=sha,
        encoder_id=clip.encoder_id,
        prompt_set_digest=prompt_set_digest(PROMPTS),
        generation={"steps": OPTIONS.steps, "resolution": OPTIONS.resolution, "seed": 0},
    )
    return Specification(
        model_id=sha,
        image_features=clip.encode_images(images),
        prompt_features=clip.encode_texts(list(PROMPTS)),
        prompts=PROMPTS,
        recipe=recipe,
        display_name=ck.path.stem,
    )


def test_checkpoint_to_ranked_specification_is_reproducible(checkpoints, clip, tmp_path):
    specs = [build_spec(ck, clip) for ck in checkpoints]
    store_dir = tmp_path / "specs"
    for spec in specs:
        save_spec(spec, store_dir / spec_filename(spec.model_id, spec.recipe.encoder_id))

    # the whole chain again gives the very same file bytes (seeds everywhere, deterministic CPU)
    again = build_spec(checkpoints[0], clip)
    assert spec_to_bytes(again) == spec_to_bytes(specs[0])

    store = SpecStore(store_dir)
    assert not store.skipped and len(store.specs) == 2
    index = store.index()

    # a query that is model 0's own image for prompt 2, with that prompt: model 0 ranks first
    own = specs[0]
    req = Requirement(image_features=own.image_features[2:3], prompt_features=own.prompt_features[2:3])
    ranking = index.rank(req)
    assert ranking[0][0] == own.model_id and ranking[0][2] == 1
    assert ranking[0][1] < ranking[1][1]


def test_pseudo_prompt_from_the_interrogator_drives_a_query(checkpoints, clip):
    captioner = load_caption_model("tiny/blip-test", weights=str(tiny_assets().blip_folder), device="cpu")
    interrogator = Interrogator(clip, captioner, label_data_path=tiny_assets().labels, caption_max_length=12)
    spec = build_spec(checkpoints[1], clip)
    loaded = GenerationBackend().load(checkpoints[1].path, "sd1", options=OPTIONS, config_dir=checkpoints[1].config_dir)
    try:
        (image,) = loaded.generate(["a lighthouse in a storm"], [123])
    finally:
        loaded.close()
    pseudo_prompt = interrogator.interrogate(image, mode="fast")
    assert pseudo_prompt.strip()
    req = Requirement(image_features=clip.encode_images([image]), prompt_features=clip.encode_texts([pseudo_prompt]))
    from gmi_desktop.core.index import SpecIndex

    scores = SpecIndex([spec]).score(req)
    assert scores.shape == (1,) and np.isfinite(scores).all() and scores[0] >= 0.0
