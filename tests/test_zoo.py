"""The model zoo (services/zoo.py, engine/zoo.py) and ``bench --zoo`` on a small instance.

The zoo is product code: its checkpoints must pass the real header probe and load through the
real single-file loader with the zoo's resources folder, and in part 2 a group's models must draw
the same specification image set while each prompt's image differs.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from safetensors.numpy import load_file

from gmi_desktop.cli.main import main
from gmi_desktop.core import zoo_world
from gmi_desktop.core.progress import Progress, run
from gmi_desktop.core.scores import DEFAULT_WEIGHTING
from gmi_desktop.services.zoo import ZooError, activated, load_zoo, make_zoo
from gmi_desktop.store.probe import probe

TOKENS = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    events: list[Progress] = []
    made = run(make_zoo(tmp_path_factory.mktemp("zoo") / "zoo", random_models=1, groups=1), events.append)
    assert events[-1].done == events[-1].total and all(e.stage == "zoo" for e in events)
    return made


def test_checkpoints_are_recognised_sd1_in_the_real_layout(zoo):
    assert [m.name for m in zoo.models] == ["random-01", "shift-g1-m0", "shift-g1-m1", "shift-g1-m2"]
    for model in zoo.models:
        result = probe(zoo.path(model))
        assert (result.status, result.family, result.variant) == ("ok", "sd1", "normal"), result.reason
    assert load_zoo(zoo.folder) == zoo


def test_group_models_differ_only_in_their_slot_word_rows(zoo):
    from gmi_desktop.engine.zoo import load_tokenizer

    tokenizer = load_tokenizer(zoo.resources_dir / "diffusers" / "clip_tokenizer")
    ids = [[tokenizer(w, add_special_tokens=False).input_ids for w in words] for words in zoo_world.SLOTS]
    assert all(len(i) == 1 for words in ids for i in words)  # every slot word is one token
    tensors = [load_file(str(zoo.path(m))) for m in zoo.models[1:]]
    for name in tensors[0]:
        if name != TOKENS:
            assert all(np.array_equal(tensors[0][name], t[name]) for t in tensors[1:]), name
    for shift, table in enumerate(t[TOKENS] for t in tensors):
        for words in ids:
            for n, (row,) in enumerate(words):
                assert np.array_equal(table[row], tensors[0][TOKENS][words[(n + shift) % 3][0]])
    random_model = load_file(str(zoo.path(zoo.models[0])))
    assert not np.array_equal(random_model[TOKENS], tensors[0][TOKENS])


def test_same_arguments_same_bytes(zoo, tmp_path):
    again = run(make_zoo(tmp_path / "again", random_models=1, groups=1))
    for model in zoo.models:
        assert zoo.path(model).read_bytes() == again.path(model).read_bytes(), model.name


def test_a_group_draws_one_specification_image_set(zoo):
    """Through the real loader: model s draws for prompt t what model 0 draws for t + s, and the
    prompt decides the image far more than the seed does."""
    from gmi_desktop.engine.host import ModelHost
    from gmi_desktop.store.settings import Settings

    spec = zoo_world.triples(0)
    with activated(zoo):
        host = ModelHost(Settings(**zoo.settings_values()))
        try:
            drawn = []
            for model in zoo.models[1:]:
                pipe = host.pipeline(zoo.path(model), "sd1")
                images = pipe.generate([zoo_world.prompt(t) for t in spec], [0] * len(spec))
                drawn.append({t: np.asarray(im, np.float32) / 255 for t, im in zip(spec, images)})
            reseeded = pipe.generate([zoo_world.prompt(spec[0])], [1])[0]
        finally:
            host.close()
    between_prompts = np.mean([np.abs(drawn[0][a] - drawn[0][b]).mean() for a in spec for b in spec if a != b])
    seed_effect = np.abs(np.asarray(reseeded, np.float32) / 255 - drawn[2][spec[0]]).mean()
    assert seed_effect < between_prompts / 10
    for shift in (1, 2):
        for t in spec:
            same = np.abs(drawn[shift][t] - drawn[0][zoo_world.shifted(t, shift)]).mean()
            assert same < between_prompts / 10, (shift, t)


def test_make_zoo_refuses_foreign_and_other_folders(zoo, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(ZooError, match="not empty"):
        run(make_zoo(tmp_path / "photos"))
    with pytest.raises(ZooError, match="another zoo"):
        run(make_zoo(zoo.folder, random_models=2, groups=1))
    with pytest.raises(ZooError, match="no zoo.json"):
        load_zoo(tmp_path)


def _top1(table: str, method: str) -> float:
    line = next(line for line in table.splitlines() if line.startswith(f"| {method} |"))
    return float(line.split("|")[2])


def _section(text: str, title: str) -> str:
    return text.split(f"### {title}")[1].split("###")[0]


def test_bench_zoo_runs_the_whole_path(zoo, capsys, tmp_path):
    code = main(["bench", "--zoo", str(zoo.folder), "--random-models", "1", "--groups", "1", "--seeds", "0",
                 "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert (tmp_path / "out" / "zoo-benchmark.md").read_text(encoding="utf-8") == out
    for stage in ("scan", "specifications", "test images", "identify"):
        assert re.search(rf"\| {stage}[^|]*\| \d+\.\d \|", out), stage
    part2 = _section(out, "Part 2, true prompts")
    assert "3 models, 27 queries" in part2 and "Download" in part2 and "RKME-Concat" in part2
    proposal = _top1(part2, f"Proposal ({DEFAULT_WEIGHTING})")
    for baseline in ("RKME-CLIP", "RKME-Basic"):
        assert _top1(part2, baseline) == pytest.approx(1 / 3, abs=0.01)  # identical spec image sets: chance
        assert proposal > _top1(part2, baseline) + 0.2
    # the image alone cannot tell a group's models apart (module docstring of core/zoo_world.py)
    assert _top1(_section(out, "Part 2, pseudo-prompts"), f"Proposal ({DEFAULT_WEIGHTING})") < proposal
    assert "Part 1, true prompts" in out and "->" in out  # the interrogator ran on every test image
    specs = list((zoo.data_dir / "specs").glob("*.safetensors"))
    assert len(specs) == len(zoo.models)
    assert len(list(zoo.test_images_dir.rglob("*.png"))) == 9 * len(zoo.models)


def test_bench_images_on_the_zoo_as_the_users_library(zoo, capsys, tmp_path, monkeypatch):
    """The zoo as a profile (its settings, resources, data folder, where ``bench --zoo`` left its
    catalog and specifications): scan and build-specs find nothing to do, then ``bench --images``
    runs on two models' test images, laid out one folder per model with their prompts."""
    import shutil

    if not zoo.test_images_dir.is_dir():
        pytest.skip("needs the test images of test_bench_zoo_runs_the_whole_path")
    for key, value in zoo.environment().items():
        monkeypatch.setenv(key, value)
    images = tmp_path / "images"
    for model in zoo.models[1:3]:
        shutil.copytree(zoo.test_images_dir / model.name, images / model.name)
    assert main(["scan", str(zoo.models_dir)]) == 0
    assert main(["build-specs"]) == 0
    capsys.readouterr()
    code = main(["bench", "--images", str(images)])
    out, err = capsys.readouterr()
    assert code == 0, err
    table = _section(out, "Your models, true prompts")
    assert "2 models, 18 queries" in table
    assert _top1(table, f"Proposal ({DEFAULT_WEIGHTING})") > _top1(table, "RKME-CLIP")
    assert "Your models, pseudo-prompts" in out
    assert (tmp_path / "images-results" / "images-benchmark.md").is_file()
    (images / "nobody").mkdir()
    assert main(["bench", "--images", str(images)]) == 2
    assert "'nobody' matches no checkpoint" in capsys.readouterr().err


def test_the_pipeline_tokenizer_follows_the_resources_folder(zoo):
    from gmi_desktop.engine.pipelines import clip_tokenizer

    shipped = len(clip_tokenizer())
    with activated(zoo):
        assert len(clip_tokenizer()) == len(load_json(zoo.resources_dir / "diffusers" / "clip_tokenizer" / "vocab.json"))
    assert len(clip_tokenizer()) == shipped == 49408


def load_json(path):
    import json

    return json.loads(path.read_text(encoding="utf-8"))
