"""What `bench` and `demo` promise (issue 10, item 5), the toy's pick rates, and the default
weighting tied to the recorded weighting study: one test per promise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gmi_desktop.cli.main import main
from gmi_desktop.core.scores import DEFAULT_WEIGHTING, WEIGHTINGS, score_rkme_clip
from gmi_desktop.evaluation.benchmark_format import load_benchmark
from gmi_desktop.evaluation.demo import write_synthetic_benchmark

SMALL = dict(n_models=5, n_spec_prompts=12, n_task_prompts=4, n_seeds=3, dim=32, text_dim=24, pixel_dim=12)
STUDY = Path(__file__).resolve().parents[1] / "docs" / "weighting-study.json"


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory):
    folder, _world = write_synthetic_benchmark(tmp_path_factory.mktemp("promises") / "features", seed=5, **SMALL)
    return folder


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gmi-desktop: error: ")
    return lines[0]


def test_debug_works_after_the_subcommand_too(capsys, monkeypatch):
    import gmi_desktop.evaluation.toy as toy

    def broken(*_a, **_k):
        raise RuntimeError("boom")

    monkeypatch.setattr(toy, "pick_rates", broken)
    code, _out, err = _run(capsys, "bench", "--toy", "example-2.1")
    assert code == 1 and "internal error: RuntimeError: boom" in err and "Traceback" not in err
    for argv in (("--debug", "bench", "--toy", "example-2.1"), ("bench", "--toy", "example-2.1", "--debug")):
        code, _out, err = _run(capsys, *argv)
        assert code == 1 and "Traceback" in err and "RuntimeError: boom" in err, argv


@pytest.mark.parametrize("argv, option", [
    (("--toy", "example-2.1", "--own-prompts"), "--own-prompts"),
    (("--toy", "example-2.1", "--gammas", "1"), "--gammas"),
    (("--toy", "example-2.1", "--methods", "download"), "--methods"),
    (("--synthetic", "{tmp}/s", "--gamma", "4"), "--gamma"),
    (("--synthetic", "{tmp}/s", "--no-plots"), "--no-plots"),
    (("--weighting-study", "--seed", "3"), "--seed"),
    (("--weighting-study", "--gamma", "3"), "--gamma"),
    (("{features}", "--seed", "3"), "--seed"),
    (("{features}", "--seeds", "0-2"), "--seeds"),
    (("{features}", "--draws", "5"), "--draws"),
    (("{features}", "--toy", "example-2.1"), "FEATURES_DIR"),
])
def test_an_option_outside_its_mode_is_an_error(features_dir, tmp_path, capsys, argv, option):
    argv = [a.format(tmp=tmp_path, features=features_dir) for a in argv]
    code, out, err = _run(capsys, "bench", *argv)
    line = _one_error_line(err)
    assert code == 2 and out == "" and f"{option} does not apply to bench" in line
    assert not (tmp_path / "s").exists()


def test_bench_honours_gamma_and_method_settings(features_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GMI_GAMMA", "4")
    monkeypatch.setenv("GMI_METHOD", "proposal:paper")
    code, _out, err = _run(capsys, "bench", features_dir, "--methods", "rkme-clip", "proposal:paper",
                           "proposal:softmax", "--no-plots", "--out", tmp_path / "env")
    assert code == 0, err
    data = json.loads((tmp_path / "env" / "results.json").read_text())
    assert data["gamma"] == 4.0 and {r["gamma"] for r in data["results"]} == {4.0}
    assert set(data["gamma_sweeps"]) == {"rkme-clip", "proposal:paper"}  # the configured method is swept
    code, _out, err = _run(capsys, "bench", features_dir, "--methods", "download", "proposal", "--gamma", "2",
                           "--no-sweep", "--no-plots", "--out", tmp_path / "flag")
    assert code == 0, err
    assert json.loads((tmp_path / "flag" / "results.json").read_text())["gamma"] == 2.0  # the flag wins
    code, out, _err = _run(capsys, "bench", "--toy", "example-2.1", "--draws", "2")
    assert code == 0 and "gamma = 4." in out
    for name, value, fragment in (("GMI_METHOD", "magic", "method setting"), ("GMI_GAMMA", "1e308", "gamma"),
                                  ("GMI_GAMMA", "many", "GMI_GAMMA")):
        monkeypatch.setenv(name, value)
        code, out, err = _run(capsys, "bench", features_dir, "--no-plots", "--out", tmp_path / "bad")
        assert code == 2 and out == "" and fragment in _one_error_line(err), (name, value)
        monkeypatch.delenv(name)


def test_huge_gamma_is_one_line_and_no_warnings(features_dir, tmp_path, capsys):
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")
        code, out, err = _run(capsys, "bench", features_dir, "--gamma", "1e308", "--out", tmp_path)
    assert code == 2 and out == "" and "at most 10000" in _one_error_line(err)


def test_gamma_sweeps_show_progress(features_dir, tmp_path, capsys):
    code, _out, err = _run(capsys, "bench", features_dir, "--methods", "rkme-clip", "proposal", "--no-plots",
                           "--out", tmp_path)
    assert code == 0
    data = json.loads((tmp_path / "results.json").read_text())
    n = len(data["gamma_sweeps"]["rkme-clip"])
    for method in ("rkme-clip", f"proposal:{DEFAULT_WEIGHTING}"):
        lines = [line for line in err.splitlines() if f"gamma sweep of {method}: gamma" in line]
        assert len(lines) == n and lines[-1].endswith(f"({n}/{n})")
    assert f"[{2 * n + 1}/{2 * n + 1}]" in err  # a counter over the whole job


def test_synthetic_into_a_used_folder_replaces_what_it_wrote(tmp_path, capsys):
    folder = tmp_path / "syn"
    assert _run(capsys, "bench", "--synthetic", folder, "--seed", "1")[0] == 0
    assert _run(capsys, "bench", folder, "--methods", "download", "--no-sweep", "--no-plots")[0] == 0
    assert (folder / "results" / "results.json").is_file()
    (folder / "notes.txt").write_text("mine")  # a file of the user's own stays
    code, _out, err = _run(capsys, "bench", "--synthetic", folder, "--seed", "2", "--own-prompts")
    assert code == 0, err
    bench = load_benchmark(folder)
    assert len(list((folder / "specs").iterdir())) == 16 == len(bench.specs)
    assert all(s.model_id.startswith("synthetic-2-") for s in bench.specs)
    assert not (folder / "results" / "results.json").exists()  # results of the old benchmark are gone
    assert (folder / "notes.txt").read_text() == "mine"

    other = tmp_path / "someone-elses"
    other.mkdir()
    (other / "thesis.tex").write_text("keep me")
    code, out, err = _run(capsys, "bench", "--synthetic", other)
    assert code == 2 and out == "" and "holds no benchmark" in _one_error_line(err)
    assert sorted(p.name for p in other.iterdir()) == ["thesis.tex"]


def test_no_plots_leaves_no_stale_plots(features_dir, tmp_path, capsys):
    out = tmp_path / "r"
    code, _o, err = _run(capsys, "bench", features_dir, "--methods", "download", "rkme-clip", "--no-sweep",
                         "--out", out)
    assert code == 0, err
    assert sorted(p.name for p in out.glob("*.png")) == ["confusion-download.png", "confusion-rkme-clip.png", "topk.png"]
    code, _o, err = _run(capsys, "bench", features_dir, "--methods", "download", "--no-sweep", "--out", out)
    assert sorted(p.name for p in out.glob("*.png")) == ["confusion-download.png", "topk.png"]
    code, _o, err = _run(capsys, "bench", features_dir, "--methods", "download", "--no-sweep", "--no-plots",
                         "--out", out)
    assert code == 0 and not list(out.glob("*.png"))
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "table.md"]


def test_demo_line_on_the_default_weighting():
    from gmi_desktop.cli.cmd_demo import weighting_line

    assert weighting_line("proposal:softmax", "softmax") == "That is the default weighting (softmax)."
    line = weighting_line("proposal:clamped", "softmax")
    assert line.startswith("Not the default (softmax)") and "\n" not in line and "A.5" in line
    assert "softmax" in weighting_line("rkme-clip", "softmax")


def test_toy_pick_rates_are_honest():
    """Draws as stated; the baseline (Eq. 2, image features only) near a coin flip, the prompt
    weightings far above it; the batched size-1 baseline is exactly core.scores' own."""
    from gmi_desktop.evaluation.toy import TOY_METHODS, draw_scores, example_2_1, pick_rates

    rates = {r.method: r for r in pick_rates(200, seed=3)}
    assert [m for m, _ in TOY_METHODS] == list(rates) and all(r.draws == 200 for r in rates.values())
    assert all(r.tied == 0 for r in rates.values())  # random prompts: no forced tie
    for baseline in ("rkme-clip", "rkme-clip-full"):
        assert 0.38 < rates[baseline].right_share < 0.62
    assert rates[f"proposal:{DEFAULT_WEIGHTING}"].right_share > 0.9
    assert all(rates[f"proposal:{w}"].right_share > 0.75 for w in WEIGHTINGS)
    scores, true = draw_scores(4, seed=3)
    assert true.tolist() == [0, 1, 0, 1]
    for d in range(4):
        specs, req, t = example_2_1((3, d), true_model=d % 2)
        assert t == true[d]
        assert scores["rkme-clip"][d].tolist() == [score_rkme_clip(s, req) for s in specs]
    p = np.concatenate([example_2_1((0, d))[0][0].prompts for d in range(20)])
    values = np.array([float(x[2:]) for x in p])
    assert values.min() < -0.9 and values.max() > 0.9 and abs(values.mean()) < 0.1  # U(-1, 1), not a grid


def test_default_weighting_is_the_recorded_studys_result():
    """DEFAULT_WEIGHTING is what the rule gives on the recorded study (docs/weighting-study.json):
    the recommendation is recomputed from the per-seed cells, not read from the file."""
    from gmi_desktop.evaluation.weighting_study import StudyCell, WeightingStudy

    data = json.loads(STUDY.read_text(encoding="utf-8"))
    cells = [StudyCell(**c) for c in data["cells"]]
    study = WeightingStudy(data["seeds"], tuple(data["gammas"]), tuple(data["images_per_query"]), cells)
    assert study.recommended() == data["recommended"] == DEFAULT_WEIGHTING
    assert data["seeds"] == list(range(10)) and data["gammas"] == [1.0, 2.0, 4.0]
    assert {c.method for c in cells} >= {f"proposal:{w}" for w in WEIGHTINGS}
    assert all(len(c.average_rank) == 10 for c in cells)


def test_weighting_study_is_bit_reproducible_on_one_machine():
    """Two runs give the same bytes (the recorded study differed from a rerun in one cell because
    float32 index scores round differently on another CPU/BLAS build: docs/evaluation.md)."""
    from gmi_desktop.core.progress import run as run_job
    from gmi_desktop.evaluation.weighting_study import run_weighting_study

    small = dict(SMALL, n_models=6)
    first = run_job(run_weighting_study([0, 1], gammas=(2.0,), images_per_query=(1,), world_overrides=small))
    again = run_job(run_weighting_study([0, 1], gammas=(2.0,), images_per_query=(1,), world_overrides=small))
    assert first.to_json() == again.to_json()


def test_recorded_study_matches_the_current_code():
    """One recorded cell (world seed 0, own prompts, gamma 2, single images) recomputed: a change to
    the scoring code that moves the study fails here, rather than leaving the document stale."""
    from gmi_desktop.core.index import SpecIndex
    from gmi_desktop.evaluation.benchmark import build_requirements, evaluate_methods
    from gmi_desktop.evaluation.synthetic import make_world, world_specifications

    data = json.loads(STUDY.read_text(encoding="utf-8"))
    methods = [f"proposal:{w}" for w in WEIGHTINGS]
    world = make_world(0, own_prompts=True)
    reqs, true = build_requirements(world.tasks, 1, with_pixels=False)
    results = evaluate_methods(SpecIndex(world_specifications(world), gamma=2.0), reqs, true, methods, 1, world.model_ids)
    for res in results:
        cell = next(c for c in data["cells"] if c["scenario"] == "own prompts (A.5)" and c["images_per_query"] == 1
                    and c["gamma"] == 2.0 and c["method"] == res.method)
        assert (res.average_rank, res.top1) == (cell["average_rank"][0], cell["top1"][0]), res.method
