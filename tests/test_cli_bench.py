"""``gmi-desktop bench`` / ``demo`` end to end, the benchmark format, and a golden table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from gmi_desktop.cli.main import main
from gmi_desktop.core.progress import run as run_job
from gmi_desktop.core.scores import DEFAULT_WEIGHTING
from gmi_desktop.evaluation.benchmark import ALL_METHODS, markdown_table
from gmi_desktop.evaluation.benchmark import run_benchmark as benchmark_job
from gmi_desktop.evaluation.benchmark_format import BenchmarkFormatError, load_benchmark, write_benchmark
from gmi_desktop.evaluation.demo import write_synthetic_benchmark
from gmi_desktop.store.tensorfile import checked_bytes

GOLDEN = Path(__file__).parent / "golden" / "bench_table_seed7.md"
SMALL = dict(n_models=5, n_spec_prompts=12, n_task_prompts=4, n_seeds=3, dim=32, text_dim=24, pixel_dim=12)


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory):
    folder, _world = write_synthetic_benchmark(tmp_path_factory.mktemp("bench") / "features", seed=7, **SMALL)
    return folder


def run_benchmark(*args, **kwargs):
    return run_job(benchmark_job(*args, **kwargs))


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_toy_example_2_1_reports_pick_rates_over_draws(capsys):
    code, out, _err = _run(capsys, "bench", "--toy", "example-2.1", "--draws", "60", "--seed", "1")
    assert code == 0
    assert "Each of 60 draws (seed 1): 55 default prompts p ~ U(-1, 1)" in out and "U(0, 0.5)" in out
    rows = {line.split("  ")[1].strip(): line for line in out.splitlines() if line.startswith("  RKME") or
            line.startswith("  Proposal")}
    assert len(rows) == 5
    shares = {label: [float(x) / 100 for x in re.findall(r"(\d+\.\d)%", line)] for label, line in rows.items()}
    assert all(len(v) == 3 and sum(v) == pytest.approx(1.0, abs=0.002) for v in shares.values())
    baseline = shares["RKME-CLIP, Eq. 2 on a reduced set of 1 point (the benchmarked baseline)"]
    default = next(v for k, v in shares.items() if k.endswith("(the default)"))
    assert 0.3 < baseline[0] < 0.7 and default[0] > 0.85  # a coin flip against nearly always right
    assert "The image-only baseline picks the right model in" in out
    code, out4, _err = _run(capsys, "bench", "--toy", "example-2.1", "--draws", "4", "--gamma", "4")
    assert code == 0 and "gamma = 4." in out4


def test_bench_writes_json_markdown_and_plots_matching_in_process(features_dir, tmp_path, capsys):
    out_dir = tmp_path / "results"
    code, out, err = _run(capsys, "bench", features_dir, "--out", out_dir, "--gamma", "2")
    assert code == 0, err
    files = sorted(p.name for p in out_dir.iterdir())
    confusion = [f"confusion-{m.replace(':', '-')}.png" for m in ALL_METHODS]
    assert files == sorted(["results.json", "table.md", "topk.png", "gamma-sweep.png", *confusion])
    for name in files:
        if name.endswith(".png"):
            assert (out_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out in (out_dir / "table.md").read_text()  # the file adds the benchmark's title
    assert "scoring" in err and "| Method |" not in err  # progress on stderr, table on stdout

    data = json.loads((out_dir / "results.json").read_text())
    bench = load_benchmark(features_dir)
    expected = run_benchmark(bench.specs, bench.tasks, gamma=2.0, sweep_methods=[])
    assert [r["method"] for r in data["results"]] == list(ALL_METHODS)
    for got, want in zip(data["results"], expected.results):
        assert got["ranks"] == want.ranks.tolist()
        assert got["topk"] == {str(k): v for k, v in want.topk.items()}
        assert got["average_rank"] == want.average_rank
        assert got["confusion"] == want.confusion.tolist()
        assert sum(map(sum, got["confusion"])) == bench.tasks.n_images
    sweep = data["gamma_sweeps"]
    assert set(sweep) == {"rkme-clip", f"proposal:{DEFAULT_WEIGHTING}"}
    assert all(len(points) >= 10 for points in sweep.values())
    gammas = [p["gamma"] for p in sweep["rkme-clip"]]
    assert {0.005, 0.02, 0.05} <= set(gammas) and max(gammas) > 1  # paper grid + our scale
    for method, points in sweep.items():  # a sweep point equals a plain run at that gamma
        point = points[-1]
        again = run_benchmark(bench.specs, bench.tasks, methods=[method], gamma=point["gamma"], sweep_methods=[])
        assert (point["top1"], point["average_rank"]) == (again.results[0].top1, again.results[0].average_rank)


def test_golden_markdown_table(features_dir, capsys):
    code, out, _err = _run(capsys, "bench", features_dir, "--no-sweep", "--no-plots", "--gamma", "2",
                           "--out", features_dir.parent / "golden-out")
    assert code == 0
    assert out == GOLDEN.read_text(encoding="utf-8")


def test_multi_image_queries_and_method_selection(features_dir, tmp_path, capsys):
    code, out, err = _run(capsys, "bench", features_dir, "--methods", "rkme-clip", "proposal",
                          "--images-per-query", "3", "--no-sweep", "--no-plots", "--out", tmp_path)
    assert code == 0, err
    data = json.loads((tmp_path / "results.json").read_text())
    assert [r["method"] for r in data["results"]] == ["rkme-clip", f"proposal:{DEFAULT_WEIGHTING}"]
    assert all(r["images_per_query"] == 3 and r["n_queries"] == 5 * 3 * 4 // 3 for r in data["results"])
    assert "queries of 3 image(s)" in out


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gmi-desktop: error: ")
    return lines[0]


def test_bad_features_dirs_exit_2_with_one_line(features_dir, tmp_path, capsys):
    code, out, err = _run(capsys, "bench", tmp_path / "does-not-exist")
    assert code == 2 and out == "" and "not a folder" in _one_error_line(err)

    empty = tmp_path / "empty"
    empty.mkdir()
    code, _out, err = _run(capsys, "bench", empty)
    assert code == 2 and "manifest.json is missing" in _one_error_line(err)

    broken = tmp_path / "broken"
    write_benchmark(broken, load_benchmark(features_dir).specs, load_benchmark(features_dir).tasks)
    data = (broken / "tasks.safetensors").read_bytes()
    (broken / "tasks.safetensors").write_bytes(data[: len(data) // 2])
    code, _out, err = _run(capsys, "bench", broken)
    assert code == 2 and "tasks.safetensors" in _one_error_line(err)

    code, _out, err = _run(capsys, "bench", features_dir, "--methods", "magic")
    assert code == 2 and "unknown method" in _one_error_line(err)
    code, _out, err = _run(capsys, "bench")
    assert code == 2 and "FEATURES_DIR" in _one_error_line(err)
    for gamma in ("inf", "nan", "0", "-1", "1e308", "20000"):
        code, out, err = _run(capsys, "bench", features_dir, "--gamma", gamma, "--no-sweep", "--no-plots",
                              "--out", tmp_path / "g")
        assert code == 2 and out == "" and "--gamma must be a number > 0 and at most 10000" in _one_error_line(err)
    code, _out, err = _run(capsys, "bench", "--weighting-study", "--gammas", "1", "inf")
    assert code == 2 and "--gammas must be a number > 0" in _one_error_line(err)


def test_benchmark_format_round_trip_and_cross_checks(features_dir, tmp_path):
    bench = load_benchmark(features_dir)
    assert bench.manifest["models"] == list(bench.model_ids) and len(bench.specs) == 5
    copy = write_benchmark(tmp_path / "copy", bench.specs, bench.tasks, description="copy")
    again = load_benchmark(copy)
    for name in ("image_features", "prompt_features", "true_model", "pixel_features", "group"):
        assert getattr(again.tasks, name).tobytes() == getattr(bench.tasks, name).tobytes()

    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["models"] = manifest["models"][::-1]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BenchmarkFormatError, match="differs from the manifest"):
        load_benchmark(copy)

    manifest["models"] = manifest["models"][::-1] + ["a-model-without-spec"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BenchmarkFormatError, match="no usable spec file"):
        load_benchmark(copy)

    manifest["models"] = manifest["models"][:-1]
    manifest["version"] = 2
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BenchmarkFormatError, match="version 2"):
        load_benchmark(copy)


def test_corrupt_spec_file_is_named_in_the_error_and_other_bad_files_are_skipped(features_dir, tmp_path, capsys):
    bench = load_benchmark(features_dir)
    folder = write_benchmark(tmp_path / "b", bench.specs, bench.tasks)
    (folder / "specs" / "stray-notes.safetensors").write_text("not a spec")
    code, _out, err = _run(capsys, "bench", folder, "--methods", "download", "--no-sweep", "--no-plots")
    assert code == 0 and "skipped: stray-notes.safetensors" in err
    victim = sorted((folder / "specs").glob("synthetic-*.safetensors"))[2]
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0xFF
    victim.write_bytes(bytes(data))
    code, _out, err = _run(capsys, "bench", folder)
    line = _one_error_line(err)
    assert code == 2 and victim.name in line and "checksum mismatch" in line


def test_tasks_with_wrong_widths_or_truth_are_rejected(features_dir, tmp_path):
    bench = load_benchmark(features_dir)
    folder = write_benchmark(tmp_path / "b", bench.specs, bench.tasks)
    ids = json.dumps(list(bench.model_ids))
    base = {"image_features": bench.tasks.image_features, "prompt_features": bench.tasks.prompt_features,
            "true_model": bench.tasks.true_model}
    cases = {
        "width": dict(base, image_features=bench.tasks.image_features[:, :-1]),
        "truth": dict(base, true_model=np.full_like(bench.tasks.true_model, 9)),
        "rows": dict(base, true_model=bench.tasks.true_model[:-1]),
        "group": dict(base, group=np.zeros_like(bench.tasks.true_model)),
        "nan": dict(base, prompt_features=np.where(np.eye(*bench.tasks.prompt_features.shape) > 0, np.nan,
                                                   bench.tasks.prompt_features).astype(np.float32)),
    }
    cases["norm"] = dict(base, image_features=bench.tasks.image_features * 3.0)
    fragments = {"width": "width", "truth": "index", "rows": "same", "group": "different true models", "nan": "finite",
                 "norm": "not L2-normalised"}
    for name, tensors in cases.items():
        (folder / "tasks.safetensors").write_bytes(
            checked_bytes(tensors, {"gmi.kind": json.dumps("benchmark-tasks"), "gmi.model_ids": ids})
        )
        with pytest.raises(BenchmarkFormatError) as info:
            load_benchmark(folder)
        assert info.value.path == folder / "tasks.safetensors", name
        assert fragments[name] in info.value.reason, (name, info.value.reason)


def test_synthetic_command_writes_a_loadable_benchmark(tmp_path, capsys):
    code, out, _err = _run(capsys, "bench", "--synthetic", tmp_path / "syn", "--seed", "3", "--own-prompts")
    assert code == 0 and "wrote a synthetic benchmark" in out
    bench = load_benchmark(tmp_path / "syn")
    assert len(bench.specs) == 16 and bench.tasks.n_images == 16 * 18 * 10
    assert len({s.recipe.prompt_set_digest for s in bench.specs}) == 16  # A.5: own prompt sets
    assert bench.manifest["synthetic"]["seed"] == 3


def test_demo_runs(capsys):
    code, out, err = _run(capsys, "demo", "--no-plots")
    assert code == 0, err
    assert "Example 2.1" in out and "Each of 1000 draws (seed 0)" in out
    assert "The image-only baseline picks the right model in" in out
    best = next(line for line in out.splitlines() if line.startswith("Best average rank: "))
    method = best.split()[3].rstrip(".")
    if method == f"proposal:{DEFAULT_WEIGHTING}":
        assert "That is the default weighting" in best
    elif method.startswith("proposal:"):  # the one line on why the best row here is not the default
        assert f"Not the default ({DEFAULT_WEIGHTING})" in best and "docs/evaluation.md" in best
    assert "| Proposal (paper) |" in out and "| RKME-CLIP |" in out
    table = [line for line in out.splitlines() if line.startswith(f"| Proposal ({DEFAULT_WEIGHTING})")]
    assert float(table[0].split("|")[2]) > 2 / 16  # top-1 far above chance on the demo world


def test_markdown_table_shape(features_dir):
    bench = load_benchmark(features_dir)
    report = run_benchmark(bench.specs, bench.tasks, methods=["download", "proposal:paper"], sweep_methods=[])
    lines = markdown_table(report).splitlines()
    assert lines[0] == "| Method | Top-1 | Top-2 | Top-3 | Top-4 | Top-5 | Top-6 | Top-7 | Top-8 | Avg. rank |"
    assert lines[2].startswith("| Download | 0.200 | 0.400 | 0.600 | 0.800 | 1.000 |")
    assert lines[2].endswith("| 3.000 |")  # a fixed order over 5 models: mean rank (1+...+5)/5


def test_weighting_study_service_on_small_worlds():
    from gmi_desktop.core.scores import WEIGHTINGS
    from gmi_desktop.evaluation.weighting_study import SCENARIOS, run_weighting_study, study_markdown

    study = run_job(run_weighting_study([0, 1], images_per_query=(1, 2), world_overrides=SMALL))
    assert len(study.cells) == len(SCENARIOS) * 2 * 4
    assert all(len(c.top1) == 2 and all(0 <= v <= 1 for v in c.top1) for c in study.cells)
    assert all(1 <= c.mean("average_rank") <= SMALL["n_models"] + 1 for c in study.cells)
    decoy = [c for c in study.cells if c.scenario == "shared + decoy"]
    assert decoy and all(len(c.decoy_top1) == 2 for c in decoy)
    own_single = [c for c in study.cells if c.scenario.startswith("own") and c.images_per_query == 1]
    assert all(len(c.prompt_driven) == 2 for c in own_single)
    assert study.recommended() in WEIGHTINGS
    text = study_markdown(study)
    assert f"**{study.recommended()}**" in text and text.count("\n| ") == len(study.cells) + 1
    assert json.loads(study.to_json())["recommended"] == study.recommended()


def test_output_paths_that_are_files_exit_2_with_one_line(features_dir, tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    code, out, err = _run(capsys, "bench", features_dir, "--out", a_file, "--methods", "download",
                          "--no-sweep", "--no-plots")
    assert code == 2 and out == "" and "not a folder" in _one_error_line(err)
    code, out, err = _run(capsys, "bench", "--synthetic", a_file / "below")
    assert code == 2 and out == "" and "a-file" in _one_error_line(err)
    code, out, err = _run(capsys, "bench", "--weighting-study", "--seeds", "0", "--out", a_file)
    assert code == 2 and out == "" and "not a folder" in _one_error_line(err)
    assert a_file.read_text() == "not a folder"


def test_ties_with_the_true_model_are_reported(features_dir):
    bench = load_benchmark(features_dir)
    # a kernel so narrow that every cross term underflows: RKME-CLIP gives every model the same
    # score, so the paper's rank (ties in the true model's favour) makes it look perfect
    report = run_benchmark(bench.specs, bench.tasks, methods=["rkme-clip", "download"], gamma=1e4,
                           sweep_methods=["rkme-clip"], sweep_gammas=[1e4, 2.0])
    clip, download = report.result("rkme-clip"), report.result("download")
    assert clip.top1 == 1.0 and clip.tied_share == 1.0 and download.tied_share == 0.0
    assert [p.tied_share for p in report.sweeps["rkme-clip"]] == [1.0, 0.0]
    notes = [n for n in report.notes if "tie" in n]
    assert len(notes) == 2 and "rkme-clip" in notes[0] and "100.0%" in notes[0]
    assert "gamma 10000 (100.0%)" in notes[1] and "2 (" not in notes[1]
    from gmi_desktop.evaluation.metrics import GammaPoint
    from gmi_desktop.evaluation.benchmark import tie_notes

    rare = tie_notes([], {"m": [GammaPoint(0.5, 0.3, 0.6, 3.0, 1 / 2880), GammaPoint(1.0, 0.3, 0.6, 3.0, 0.25)]})
    assert rare == ["m gamma sweep: the true model ties with another model at gamma 0.5 (<0.1%), 1 (25.0%)"]


def test_spec_image_features_must_be_unit_norm_as_the_format_says(features_dir, tmp_path):
    import dataclasses

    bench = load_benchmark(features_dir)
    raw = dataclasses.replace(bench.specs[1], image_features=bench.specs[1].image_features * 12.0)
    folder = write_benchmark(tmp_path / "raw", [bench.specs[0], raw, *bench.specs[2:]], bench.tasks)
    with pytest.raises(BenchmarkFormatError, match="not L2-normalised") as info:
        load_benchmark(folder)
    assert info.value.path.parent == folder / "specs" and raw.model_id in info.value.path.name
    assert "divide" in info.value.hint


def test_negative_world_seeds_exit_2_with_one_line(tmp_path, capsys):
    code, out, err = _run(capsys, "bench", "--synthetic", tmp_path / "neg", "--seed", "-1")
    assert code == 2 and out == "" and "--seed" in _one_error_line(err)
    assert not (tmp_path / "neg").exists()
    code, out, err = _run(capsys, "demo", "--seed", "-3", "--no-plots")
    assert code == 2 and out == "" and "--seed" in _one_error_line(err)


def test_nothing_left_to_run_is_a_one_line_error(features_dir, tmp_path, capsys):
    import dataclasses

    bench = load_benchmark(features_dir)
    folder = write_benchmark(tmp_path / "no-pixels", bench.specs, dataclasses.replace(bench.tasks, pixel_features=None))
    code, out, err = _run(capsys, "bench", folder, "--methods", "rkme-basic", "--no-plots")
    last = err.strip().splitlines()[-1]  # after the "loaded ..." progress line
    assert code == 2 and out == "" and last.startswith("gmi-desktop: error: nothing to run")
    assert "no pixel features" in last and "Traceback" not in err
    assert not (folder / "results" / "results.json").exists()


def test_seed_lists_are_parsed_strictly_and_named_as_given(capsys):
    from gmi_desktop.cli.cmd_bench import _parse_seeds
    from gmi_desktop.core.scores import WEIGHTINGS
    from gmi_desktop.evaluation.weighting_study import StudyCell, WeightingStudy, study_markdown

    assert _parse_seeds("0-3") == [0, 1, 2, 3] and _parse_seeds("0,3,5") == [0, 3, 5]
    for bad in ("1-", "0,0", "2-4,3", "", "a"):
        code, out, err = _run(capsys, "bench", "--weighting-study", "--seeds", bad)
        assert code == 2 and out == "" and "--seeds" in _one_error_line(err), bad
    cells = [StudyCell("shared prompts", 1, 2.0, f"proposal:{w}", top1=[0.5], top4=[0.9], average_rank=[2.0 + i])
             for i, w in enumerate(WEIGHTINGS)]
    assert "World seeds 0, 3, 5 (3 worlds)" in study_markdown(WeightingStudy([0, 3, 5], (2.0,), (1,), cells))
    assert "World seeds 0..9 (10 worlds)" in study_markdown(WeightingStudy(list(range(10)), (2.0,), (1,), cells))
