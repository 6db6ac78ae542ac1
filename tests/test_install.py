"""A real install works: the wheel carries resources/ and the installed copy finds it through the
package, far from the repository (issue 10, item 1)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "gmi_desktop", "resources")

PROBE = """
import json, sys
import gmi_desktop
from gmi_desktop.engine.sd_configs import config_dir, resources_dir
from gmi_desktop.engine.pipelines import clip_tokenizer
unet = json.loads((config_dir("sd1") / "unet" / "config.json").read_text())
tokenizer = clip_tokenizer()
print(json.dumps({"package": gmi_desktop.__file__, "resources": str(resources_dir()),
                  "cross_attention_dim": unet["cross_attention_dim"],
                  "ids": tokenizer("a photo of a cat")["input_ids"]}))
"""


def _run(args, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from a copy of the sources and installed into a target folder outside the
    repository (no build isolation: the test must not need the network)."""
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
          "-w", str(base / "dist")])
    (wheel,) = (base / "dist").glob("gmi_desktop-*.whl")
    target = base / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target", str(target), str(wheel)])
    shutil.rmtree(src)  # nothing of the sources is left to fall back on
    return base, target


def _probe(base: Path, target: Path, **env_extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GMI_RESOURCES")}
    env.update(PYTHONPATH=str(target), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **env_extra)
    return json.loads(_run([sys.executable, "-c", PROBE], cwd=base, env=env).splitlines()[-1])


def test_the_installed_wheel_loads_configs_and_the_tokenizer_from_its_own_copy(installed):
    base, target = installed
    assert ROOT not in base.parents and base not in ROOT.parents
    found = _probe(base, target)
    assert Path(found["package"]).is_relative_to(target)
    assert Path(found["resources"]) == target / "gmi_desktop" / "resources"
    assert found["cross_attention_dim"] == 768
    assert found["ids"][0] == 49406 and found["ids"][-1] == 49407 and len(found["ids"]) == 7
    assert (target / "gmi_desktop-0.1.0.dist-info" / "licenses" / "LICENSE").is_file()


def test_gmi_resources_dir_still_overrides_the_installed_copy(installed, tmp_path):
    base, target = installed
    copy = tmp_path / "my-resources"
    shutil.copytree(ROOT / "resources", copy)
    found = _probe(base, target, GMI_RESOURCES_DIR=str(copy))
    assert Path(found["resources"]) == copy


def test_a_missing_resources_folder_is_a_typed_error(monkeypatch, tmp_path):
    from gmi_desktop.core.errors import UserInputError
    from gmi_desktop.engine import sd_configs
    from gmi_desktop.store import resources as store_resources

    monkeypatch.setattr(store_resources, "candidates", lambda: [tmp_path / "nowhere"])
    with pytest.raises(UserInputError, match="resources folder is missing.*GMI_RESOURCES_DIR"):
        sd_configs.resources_dir()
