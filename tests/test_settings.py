from __future__ import annotations

import pytest

from gmi_desktop.core.errors import SettingsError
from gmi_desktop.store import paths
from gmi_desktop.store.atomic import atomic_write_bytes
from gmi_desktop.store.settings import Settings, load_settings


def test_precedence_defaults_file_env_cli(tmp_path):
    cfg = tmp_path / "settings.toml"
    cfg.write_text('steps = 30\ndevice = "cpu"\nseed = 5\nfuture_key = 1\n')
    env = {"GMI_STEPS": "40", "GMI_LOW_VRAM": "yes"}
    s = load_settings(cfg, env=env, seed=9)
    assert s.steps == 40 and s.device == "cpu" and s.low_vram is True and s.seed == 9
    assert s.guidance_scale == Settings().guidance_scale
    assert s.extra == {"future_key": 1}


def test_bad_values_are_typed_errors(tmp_path):
    cfg = tmp_path / "settings.toml"
    cfg.write_text("steps = [\n")
    with pytest.raises(SettingsError) as err:
        load_settings(cfg, env={})
    assert str(cfg) in str(err.value)
    with pytest.raises(SettingsError):
        load_settings(tmp_path / "missing.toml", env={"GMI_STEPS": "many"})


@pytest.mark.parametrize("line", ["steps = 2.5", "steps = true", "low_vram = 1.5", "gamma = nan",
                                  "guidance_scale = inf", "gamma = false", 'device = ["cpu"]'])
def test_values_of_the_wrong_type_are_refused_not_converted(tmp_path, line):
    cfg = tmp_path / "settings.toml"
    cfg.write_text(line + "\n")
    with pytest.raises(SettingsError, match=line.split()[0]) as err:
        load_settings(cfg, env={})
    assert str(cfg) in str(err.value)


def test_numbers_in_toml_and_env_are_taken_as_written(tmp_path):
    cfg = tmp_path / "settings.toml"
    cfg.write_text("steps = 30\nguidance_scale = 7\ngamma = 2.5\n")
    s = load_settings(cfg, env={"GMI_SEED": " 12 "})
    assert (s.steps, s.guidance_scale, s.gamma, s.seed) == (30, 7.0, 2.5, 12)
    with pytest.raises(SettingsError, match="GMI_GAMMA"):
        load_settings(cfg, env={"GMI_GAMMA": "nan"})
    flags = load_settings(cfg, env={}, clip_weights=tmp_path / "w.safetensors", library_folders=[tmp_path])
    assert flags.clip_weights == str(tmp_path / "w.safetensors") and flags.library_folders == (str(tmp_path),)


def test_dirs_are_redirected_by_env(tmp_path, monkeypatch):
    monkeypatch.setenv("GMI_DATA_DIR", str(tmp_path / "d"))
    assert paths.data_dir() == tmp_path / "d" and paths.data_dir().is_dir()
    assert paths.catalog_path().parent == tmp_path / "d"


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "x.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError):
        from gmi_desktop.store.atomic import atomic_writer

        with atomic_writer(target) as fh:
            fh.write(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_top_k_setting_from_file_and_env_at_least_one(tmp_path):
    from gmi_desktop.store.settings import save_settings

    assert Settings().top_k == 10
    cfg = tmp_path / "settings.toml"
    cfg.write_text("top_k = 3\n")
    assert load_settings(cfg, env={}).top_k == 3
    assert load_settings(cfg, env={"GMI_TOP_K": "25"}).top_k == 25
    for bad in ({"GMI_TOP_K": "0"}, {"GMI_TOP_K": "-4"}):
        with pytest.raises(SettingsError, match="top_k.*at least 1"):
            load_settings(cfg, env=bad)
    with pytest.raises(SettingsError, match="top_k"):
        save_settings({"top_k": 0}, cfg)
    assert cfg.read_text() == "top_k = 3\n"  # nothing written
