"""The shipped prompt sets and per-model prompt sidecars."""

from __future__ import annotations

import pytest

from gmi_desktop.store import prompts
from gmi_desktop.store.prompts import PromptFileError, coarse_indices, prompt_set_for, sidecar_path


def test_default_and_evaluation_sets_have_their_sizes_and_are_disjoint():
    default, evaluation = prompts.default_prompts(), prompts.evaluation_prompts()
    assert len(default) == 55 and len(set(default)) == 55
    assert len(evaluation) == 18 and len(set(evaluation)) == 18
    assert not set(default) & set(evaluation)
    folded = {p.casefold() for p in default}
    assert not any(p.casefold() in folded for p in evaluation)


def test_the_coarse_subset_is_every_fifth_prompt_and_spans_every_kind():
    assert coarse_indices(55) == tuple(range(0, 55, 5))
    assert len({i % 11 for i in coarse_indices(55)}) == 11  # the file cycles through 11 kinds
    for n in (1, 4, 6, 13, 56, 200):
        idx = coarse_indices(n)
        assert idx[0] == 0 and len(idx) == -(-n // 5) and len(set(idx)) == len(idx) and idx[-1] < n
    assert coarse_indices(0) == ()


def test_a_sidecar_replaces_or_extends_the_default(tmp_path):
    ck = tmp_path / "myModel_v2.safetensors"
    ck.write_bytes(b"x")
    assert sidecar_path(ck) == tmp_path / "myModel_v2.prompts.txt"
    assert prompt_set_for(ck).source == "default" and prompt_set_for(ck).prompts == prompts.default_prompts()

    sidecar_path(ck).write_text("# from the developer\nknight in armor\n\nknight in armor\na cat\n", encoding="utf-8")
    got = prompt_set_for(ck)
    assert got.source == "sidecar" and got.prompts == ("knight in armor", "a cat") and got.path == sidecar_path(ck)

    sidecar_path(ck).write_text("knight in armor\n@default\n", encoding="utf-8")
    got = prompt_set_for(ck)
    assert got.source == "sidecar+default" and got.prompts == ("knight in armor", *prompts.default_prompts())


def test_bad_sidecars_are_typed_errors(tmp_path):
    ck = tmp_path / "m.safetensors"
    sidecar_path(ck).write_text("# only comments\n\n", encoding="utf-8")
    with pytest.raises(PromptFileError, match="no prompts"):
        prompt_set_for(ck)
    sidecar_path(ck).write_bytes(b"\xff\xfe bad")
    with pytest.raises(PromptFileError, match="UTF-8"):
        prompt_set_for(ck)


def test_gmi_resources_dir_overrides_the_shipped_folder(tmp_path, monkeypatch):
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "default.txt").write_text("one\ntwo\n", encoding="utf-8")
    monkeypatch.setenv("GMI_RESOURCES_DIR", str(tmp_path))
    assert prompts.default_prompts() == ("one", "two")
