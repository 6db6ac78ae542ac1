"""services/identify: metadata matches against a scanned library, content ranking over real
specifications (tiny open_clip encoding synthetic images), rerank without re-encoding, missing
weights, and the CLI face. Nothing mocked: real catalog, real spec files, real CLIP/BLIP."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gmi_desktop.cli.main import main
from gmi_desktop.core.errors import NotAnImage, UserInputError
from gmi_desktop.core.progress import run
from gmi_desktop.core.spec import SpecRecipe, Specification, prompt_set_digest
from gmi_desktop.engine.clip import load_clip
from gmi_desktop.engine.host import ModelHost
from gmi_desktop.services.identify import Identifier
from gmi_desktop.core.spec import spec_completeness as completeness
from gmi_desktop.services.identify_explain import closest_rows
from gmi_desktop.services.library import Library
from gmi_desktop.store.catalog import Catalog
from gmi_desktop.store.settings import Settings
from gmi_desktop.store.spec_state import save_thumbnail, thumbnail_paths
from gmi_desktop.store.specfile import load_spec, save_spec, spec_filename
from tests.support.image_metadata import (a1111_parameters, invokeai_metadata, write_comfyui, write_exif_comment,
                                          write_png_text)
from tests.support.library_files import write_checkpoint
from tests.support.tiny_clip import TINY_CLIP, register_tiny_clip, tiny_assets

PROMPTS = ("a red house", "a green tree", "a blue lake", "a yellow sun")
COLOURS = ((225, 30, 30), (30, 200, 40), (40, 60, 225), (235, 220, 40))


def picture(colour: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.array(COLOURS[colour], dtype=np.int16)
    pixels = base + rng.integers(-12, 13, (64, 64, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def tiny_settings(**overrides) -> Settings:
    assets = tiny_assets()
    values = dict(clip_model=TINY_CLIP, clip_pretrained="random-seed0", clip_weights=str(assets.clip_weights),
                  blip_model="tiny/blip-test", blip_weights=str(assets.blip_folder),
                  interrogator_labels=str(assets.labels), device="cpu", allow_downloads=False)
    values.update(overrides)
    return Settings(**values)


@dataclass
class World:
    data: Path  # a GMI_DATA_DIR: catalog.sqlite3 + specs/
    root: Path
    sha: dict[str, str]  # file stem -> sha256
    autov2: dict[str, str]
    autov1: dict[str, str]
    spec_paths: dict[str, Path]


@pytest.fixture(scope="module")
def clip():
    register_tiny_clip()
    return load_clip(TINY_CLIP, "random-seed0", weights=str(tiny_assets().clip_weights), device="cpu")


def make_spec(clip, sha: str, name: str, order: list[int], images_total: int | None = None) -> Specification:
    generation = {"steps": 4, "resolution": 64, "prompt_indices": list(range(len(order)))}
    if images_total:  # the spec builder's record of the full prompt set (a coarse spec holds fewer)
        generation.update(prompts_total=images_total, images_per_prompt=1)
    recipe = SpecRecipe(sha, clip.encoder_id, prompt_set_digest(PROMPTS), generation)
    return Specification(sha, clip.encode_images([picture(c, seed=100 + i) for i, c in enumerate(order)]),
                         clip.encode_texts(list(PROMPTS)), PROMPTS, recipe, display_name=name)


def make_spec_like(path: Path, encoder_id: str, dim: int = 768) -> Specification:
    """A specification of the same checkpoint with another encoder's (random, unit) features."""
    base = load_spec(path)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((base.n_images, dim))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    recipe = SpecRecipe(base.recipe.checkpoint_sha256, encoder_id, base.recipe.prompt_set_digest, {"steps": 25})
    return Specification(base.model_id, z, rng.standard_normal((base.n_images, dim)), base.prompts, recipe)


@pytest.fixture(scope="module")
def world(tmp_path_factory, clip) -> World:
    base = tmp_path_factory.mktemp("identify")
    root = base / "stable-diffusion-webui"
    models = root / "models" / "Stable-diffusion"
    write_checkpoint(models / "dreamy.safetensors", "sd1", seed=1)
    write_checkpoint(models / "SD15" / "other.safetensors", "sd1", seed=2)
    write_checkpoint(models / "third.safetensors", "sd1", seed=3)
    for seed, path in enumerate(sorted(models.rglob("*.safetensors"))):  # distinct AutoV1 windows (at 1 MiB)
        with open(path, "r+b") as handle:
            handle.seek(1 << 20)
            handle.write(np.random.default_rng(seed).bytes(1 << 16))
    data = base / "data"
    data.mkdir()
    with Catalog(data / "catalog.sqlite3") as catalog:
        library = Library(catalog, workers=0)
        run(library.scan([library.add_folder(root)]))
        records = {r.path.stem: r for r in catalog.files(status="ok")}
        assert set(records) == {"dreamy", "other", "third"}
        orders = {"dreamy": [0, 1, 2, 3], "other": [1, 0, 3, 2], "third": [3, 3, 2, 2]}
        spec_paths = {}
        for stem, order in orders.items():
            sha = records[stem].sha256
            spec = make_spec(clip, sha, stem, order, images_total=8 if stem == "third" else None)
            path = save_spec(spec, data / "specs" / spec_filename(spec.model_id, spec.recipe.encoder_id))
            catalog.set_spec_ref(sha, path)
            spec_paths[stem] = path
        vit_l = make_spec_like(spec_paths["dreamy"], "open_clip:ViT-L-14/openai")  # what a real install holds
        save_spec(vit_l, data / "specs" / spec_filename(vit_l.model_id, vit_l.recipe.encoder_id))
        dreamy = load_spec(spec_paths["dreamy"])  # thumbnails where the spec builder keeps them
        for row, path in enumerate(thumbnail_paths(spec_paths["dreamy"], dreamy)):
            save_thumbnail(path, picture(orders["dreamy"][row], seed=100 + row))
        return World(data, root, {k: r.sha256 for k, r in records.items()}, {k: r.autov2 for k, r in records.items()},
                     {k: r.autov1 for k, r in records.items()}, spec_paths)


@pytest.fixture
def catalog(world):
    with Catalog(world.data / "catalog.sqlite3") as cat:
        yield cat


@pytest.fixture
def host():
    h = ModelHost(tiny_settings())
    yield h
    h.close()


def identifier(world, catalog, host=None, settings=None) -> Identifier:
    settings = settings or tiny_settings()
    return Identifier(settings, host or ModelHost(settings), catalog, world.data / "specs")


# -- exact match from metadata ---------------------------------------------------------------
def test_a1111_png_autov2_is_an_exact_match(world, catalog, tmp_path):
    params = a1111_parameters("a red house", model="renamed", model_hash=world.autov2["dreamy"])
    image = write_png_text(tmp_path / "q.png", {"parameters": params}, picture(0))
    result = identifier(world, catalog).metadata_only([image])
    (match,) = result.metadata_matches
    assert (match.name, match.sha256, match.rank, match.exact) == ("dreamy", world.sha["dreamy"], 1, True)
    assert match.evidence[0].kind == "exact"
    assert f"AutoV2 {world.autov2['dreamy']}" in match.evidence[0].detail and "q.png" in match.evidence[0].detail
    assert (result.pseudo_prompt, result.prompt_source) == ("a red house", "metadata")
    assert result.queries[0].metadata.generator == "AUTOMATIC1111"


def test_a1111_jpeg_old_autov1_hash_and_a_same_name_file(world, catalog, tmp_path):
    assert world.autov1["other"]
    params = a1111_parameters("a green tree", model="dreamy", model_hash=world.autov1["other"])
    image = write_exif_comment(tmp_path / "q.jpg", params, image=picture(1))
    matches = identifier(world, catalog).metadata_only([image]).metadata_matches
    assert [(m.name, [e.kind for e in m.evidence]) for m in matches] == [("other", ["exact"]), ("dreamy", ["same_name"])]
    assert "AutoV1" in matches[0].evidence[0].detail
    assert "differs from this file's" in matches[1].evidence[0].detail


def test_a1111_subfolder_name_and_hash_that_matches_nothing(world, catalog, tmp_path):
    params = a1111_parameters("p", model="SD15_other", model_hash="ffffffffff")
    matches = identifier(world, catalog).metadata_only(
        [write_png_text(tmp_path / "q.png", {"parameters": params})]).metadata_matches
    assert [(m.name, m.exact) for m in matches] == [("other", False)]
    assert "AutoV2 ffffffffff differs" in matches[0].evidence[0].detail


def test_comfyui_ckpt_name_with_subfolder_is_a_same_name_match(world, catalog, tmp_path):
    image = write_comfyui(tmp_path / "c.png", "SD15\\other.safetensors", "a blue lake")
    result = identifier(world, catalog).metadata_only([image])
    (match,) = result.metadata_matches
    assert (match.name, match.path.name, match.exact) == ("other", "other.safetensors", False)
    assert 'model name "SD15\\other.safetensors"' in match.evidence[0].detail
    assert "the image gives no hash" in match.evidence[0].detail
    assert result.pseudo_prompt == "a blue lake"


def test_invokeai_name_and_sha256(world, catalog, tmp_path):
    v3 = write_png_text(tmp_path / "3.png", {"invokeai_metadata": invokeai_metadata("a dog", "Third")})
    v4 = write_png_text(tmp_path / "4.png", {"invokeai_metadata": invokeai_metadata(
        "a dog", "whatever", version=4, model_hash=f"sha256:{world.sha['dreamy']}")})
    matches = identifier(world, catalog).metadata_only([v3, v4]).metadata_matches
    assert [(m.name, m.exact) for m in matches] == [("dreamy", True), ("third", False)]
    assert "SHA-256" in matches[0].evidence[0].detail and "4.png" in matches[0].evidence[0].detail
    assert matches[1].completeness == 0.5  # its spec holds 4 of 8 images


def test_bad_query_image_is_a_typed_error(world, catalog, tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG but not really")
    with pytest.raises(NotAnImage):
        identifier(world, catalog).metadata_only([junk])
    with pytest.raises(UserInputError):
        identifier(world, catalog).metadata_only([])


# -- content ranking -------------------------------------------------------------------------
def test_ranking_with_user_prompt_closest_thumbnails_and_completeness(world, catalog, host, tmp_path):
    query = tmp_path / "q.png"
    picture(0, seed=7).save(query)
    ident = identifier(world, catalog, host)
    events = []
    result = run(ident.identify([query], prompt="a red house"), events.append)
    assert [m.name for m in result.ranking][0] == "dreamy"
    assert {m.name for m in result.ranking} == {"dreamy", "other", "third"}
    assert [m.rank for m in result.ranking] == sorted(m.rank for m in result.ranking)
    assert (result.prompt_source, result.pseudo_prompt, result.method) == ("user", "a red house", "proposal")
    by_name = {m.name: m for m in result.ranking}
    assert by_name["third"].completeness == 0.5 and by_name["dreamy"].completeness == 1.0
    # the closest spec thumbnails: dreamy's row 0 is the red image
    assert by_name["dreamy"].closest[0] == thumbnail_paths(world.spec_paths["dreamy"], load_spec(world.spec_paths["dreamy"]))[0]
    assert len(by_name["dreamy"].closest) == 3 and by_name["other"].closest == ()
    assert {"reading", "encoding", "ranking"} <= {e.stage for e in events}
    assert result.missing is None and result.metadata_matches == ()


def test_closest_rows_and_completeness_rules(clip):
    spec = make_spec(clip, "a" * 64, "x", [2, 0, 1, 3])
    query = clip.encode_images([picture(0, seed=9)])
    assert int(closest_rows(spec, query)[0]) == 1
    assert completeness(spec) == 1.0
    assert completeness(make_spec(clip, "b" * 64, "y", [0, 1, 2, 3], images_total=16)) == 0.25


def test_metadata_prompt_and_exact_evidence_carried_into_the_ranking(world, catalog, host, tmp_path):
    params = a1111_parameters("a green tree", model="other", model_hash=world.autov2["other"])
    image = write_png_text(tmp_path / "q.png", {"parameters": params}, picture(0, seed=3))
    result = run(identifier(world, catalog, host).identify([image]))
    assert (result.prompt_source, result.pseudo_prompt) == ("metadata", "a green tree")
    top = result.ranking[0]
    assert top.name == "other" and top.exact  # the red image, generated for prompt 2 by "other"
    assert result.metadata_matches[0].name == "other"


def test_rerank_changes_the_order_without_encoding_the_image_or_interrogating(world, catalog, host, tmp_path):
    query = tmp_path / "q.png"
    picture(0, seed=11).save(query)
    clip_model, interrogator = host.clip(), host.interrogator()
    calls = {"images": 0, "image_tower": 0, "interrogate": 0, "texts": 0}

    def counting(obj, name, key):
        real = getattr(obj, name)

        def wrapper(*args, **kwargs):
            calls[key] += 1
            return real(*args, **kwargs)

        setattr(obj, name, wrapper)

    counting(clip_model, "encode_images", "images")
    counting(clip_model.module, "encode_image", "image_tower")  # the interrogator's image features too
    counting(clip_model, "tokenizer", "texts")  # every text encoding path tokenizes once
    counting(interrogator, "interrogate", "interrogate")
    ident = identifier(world, catalog, host)
    result = run(ident.identify([query]))
    assert result.prompt_source == "interrogator" and result.pseudo_prompt.strip()
    assert calls["images"] == 1 and calls["interrogate"] == 1
    seen = dict(calls)

    red = ident.rerank(result, "a red house")
    green = ident.rerank(red, "a green tree")
    assert red.ranking[0].name == "dreamy" and green.ranking[0].name == "other"
    assert (green.prompt_source, green.pseudo_prompt) == ("user", "a green tree")
    assert calls["images"] == seen["images"] and calls["interrogate"] == seen["interrogate"]
    assert calls["image_tower"] == seen["image_tower"] > 0
    assert calls["texts"] == seen["texts"] + 2  # only the two new prompts were encoded
    again = ident.rerank(green, "a red house")  # cached text feature: nothing encoded at all
    assert calls["texts"] == seen["texts"] + 2 and again.ranking == red.ranking
    back = ident.rerank(green, "")  # back to the generated pseudo-prompt
    assert (back.pseudo_prompt, back.prompt_source) == (result.pseudo_prompt, "interrogator")
    assert back.ranking == result.ranking
    baseline = ident.rerank(green, "a green tree", method="rkme_clip")
    assert baseline.method == "rkme_clip" and len(baseline.ranking) == 3


def test_unknown_method_is_refused(world, catalog, tmp_path):
    query = tmp_path / "q.png"
    picture(0).save(query)
    with pytest.raises(UserInputError, match="unknown method"):
        run(identifier(world, catalog).identify([query], method="vibes"))


# -- weights missing ---------------------------------------------------------------------------
def test_no_weights_at_all_still_reports_the_metadata_match(world, catalog, tmp_path):
    settings = Settings(device="cpu", allow_downloads=False)  # ViT-L-14/openai: nowhere on this machine
    params = a1111_parameters("a red house", model="dreamy", model_hash=world.autov2["dreamy"])
    image = write_png_text(tmp_path / "q.png", {"parameters": params}, picture(0))
    host = ModelHost(settings)
    result = run(Identifier(settings, host, catalog, world.data / "specs").identify([image]))
    assert result.metadata_matches[0].name == "dreamy" and result.metadata_matches[0].exact
    assert result.ranking == () and "CLIP" in result.missing and "ViT-L-14" in result.missing
    assert host.loaded() == []


def test_missing_caption_model_falls_back_to_image_only(world, catalog, tmp_path):
    settings = tiny_settings(blip_model="", blip_weights="")
    query = tmp_path / "q.png"
    picture(0).save(query)
    host = ModelHost(settings)
    try:
        result = run(Identifier(settings, host, catalog, world.data / "specs").identify([query]))
        assert result.method == "rkme_clip" and len(result.ranking) == 3
        assert "BLIP" in result.missing and any("RKME-CLIP" in n for n in result.notes)
        typed = Identifier(settings, host, catalog, world.data / "specs").rerank(result, "a red house", "proposal")
        assert typed.method == "proposal" and typed.ranking[0].name == "dreamy"
    finally:
        host.close()


def test_no_specifications_yet_or_none_for_this_encoder(tmp_path, catalog, world):
    query = tmp_path / "q.png"
    picture(0).save(query)
    host = ModelHost(tiny_settings())
    result = run(Identifier(tiny_settings(), host, catalog, tmp_path / "none").identify([query]))
    assert result.ranking == () and "build-specs" in result.notes[0]
    other = tiny_settings(clip_pretrained="random-seed1")
    other_host = ModelHost(other)
    result = run(Identifier(other, other_host, catalog, world.data / "specs").identify([query]))
    assert result.ranking == () and "no specification was made with open_clip:GMI-Tiny-CLIP/random-seed1" in result.notes[0]
    assert host.loaded() == [] and other_host.loaded() == []  # nothing to rank: CLIP never loaded


# -- CLI -------------------------------------------------------------------------------------
def _env(monkeypatch, world, **settings):
    monkeypatch.setenv("GMI_DATA_DIR", str(world.data))
    for key, value in settings.items():
        monkeypatch.setenv(f"GMI_{key.upper()}", str(value))


def test_cli_identify_without_weights_prints_the_metadata_match(world, tmp_path, monkeypatch, capsys):
    _env(monkeypatch, world, allow_downloads="false", device="cpu")
    params = a1111_parameters("a red house", model="dreamy", model_hash=world.autov2["dreamy"])
    image = write_png_text(tmp_path / "q.png", {"parameters": params}, picture(0))
    assert main(["identify", str(image)]) == 0
    out, err = capsys.readouterr()
    assert "exact match" in out and "dreamy" in out and world.autov2["dreamy"] in out
    missing = [line for line in err.splitlines() if line.startswith("missing:")]
    assert len(missing) == 1 and "ViT-L-14" in missing[0]
    assert main(["identify", "--json", str(image)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["metadata_matches"][0]["name"] == "dreamy" and doc["metadata_matches"][0]["evidence"][0]["kind"] == "exact"
    assert doc["ranking"] == [] and "ViT-L-14" in doc["missing"]


def test_cli_identify_ranks_and_refuses_bad_input(world, tmp_path, monkeypatch, capsys):
    s = tiny_settings()
    _env(monkeypatch, world, clip_model=s.clip_model, clip_pretrained=s.clip_pretrained, clip_weights=s.clip_weights,
         blip_model=s.blip_model, blip_weights=s.blip_weights, interrogator_labels=s.interrogator_labels,
         device="cpu", allow_downloads="false")
    query = tmp_path / "q.png"
    picture(0, seed=5).save(query)
    assert main(["identify", str(query), "--prompt", "a red house", "--top", "2"]) == 0
    out, err = capsys.readouterr()
    rows = [line for line in out.splitlines() if line[:1].isdigit()]
    assert len(rows) == 2 and rows[0].split()[1] == "dreamy"
    assert "prompt (user): a red house" in out
    monkeypatch.setenv("GMI_TOP_K", "1")  # --top defaults to the top_k setting
    assert main(["identify", str(query), "--prompt", "a red house"]) == 0
    assert len([line for line in capsys.readouterr().out.splitlines() if line[:1].isdigit()]) == 1
    monkeypatch.delenv("GMI_TOP_K")
    assert main(["identify", str(query), "--prompt", "a green tree", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ranking"][0]["name"] == "other" and doc["prompt_source"] == "user"
    junk = tmp_path / "junk.png"
    junk.write_text("nope")
    assert main(["identify", str(junk)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "junk.png" in err
    assert main(["identify", str(query), "--method", "vibes"]) == 2
    assert main(["identify", str(query), "--top", "0"]) == 2


def test_trimmed_prompt_features_equal_the_full_encoder(clip):
    from gmi_desktop.engine.prompt_features import encode_prompts, trimmable

    texts = ["a red house", "masterpiece, best quality, " * 30, "", "a green tree at night"]
    assert trimmable(clip.module)
    np.testing.assert_allclose(encode_prompts(clip, texts), clip.encode_texts(texts), atol=1e-6)


def test_two_query_images_each_with_its_own_prompt(world, catalog, host, tmp_path):
    params = a1111_parameters("a red house", model="dreamy", model_hash=world.autov2["dreamy"])
    tagged = write_png_text(tmp_path / "a.png", {"parameters": params}, picture(0, seed=21))
    plain = tmp_path / "b.png"
    picture(0, seed=22).save(plain)
    result = run(identifier(world, catalog, host).identify([tagged, plain]))
    assert [q.prompt_source for q in result.queries] == ["metadata", "interrogator"]
    assert result.queries[0].prompt == "a red house" and result.queries[1].prompt
    assert result.prompt_source == "interrogator" and len(result.ranking) == 3
    assert result.ranking[0].name == "dreamy" and result.ranking[0].exact


def test_metadata_only_imports_no_torch(world, tmp_path):
    import subprocess
    import sys

    params = a1111_parameters("a red house", model="dreamy", model_hash=world.autov2["dreamy"])
    image = write_png_text(tmp_path / "q.png", {"parameters": params}, picture(0))
    code = ("import sys\n"
            "from gmi_desktop.services.identify import Identifier\n"
            "from gmi_desktop.store.catalog import Catalog\n"
            "from gmi_desktop.store.settings import Settings\n"
            f"with Catalog({str(world.data / 'catalog.sqlite3')!r}) as catalog:\n"
            f"    result = Identifier(Settings(), None, catalog).metadata_only([{str(image)!r}])\n"
            "assert result.metadata_matches[0].name == 'dreamy', result\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
