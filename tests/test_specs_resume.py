"""``kill -9`` a real ``gmi-desktop build-specs`` process at several points; the finished
specifications are byte-identical to those of an uninterrupted build.

Both builds run in subprocesses with the same environment (settings through ``GMI_*`` variables,
tiny configs through ``GMI_RESOURCES_DIR``), so thread counts and libraries are the same.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gmi_desktop.store.specfile import SpecStore
from tests.support.spec_build import tiny_checkpoints, tiny_env, tiny_library, tiny_resources
from tests.support.tiny_clip import register_tiny_clip

ROOT = Path(__file__).resolve().parents[1]
N = 15  # prompts in the test resources' default set (coarse pass: 3)
BUILD = ("import sys; from tests.support.tiny_clip import register_tiny_clip; register_tiny_clip(); "
         "from gmi_desktop.cli.main import main; sys.exit(main(['build-specs']))")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    register_tiny_clip()
    folder = tmp_path_factory.mktemp("resume")
    return tiny_checkpoints(folder / "checkpoints", (1, 2)), tiny_resources(folder / "resources", n_prompts=N)


def make_home(base: Path, checkpoints, resources, monkeypatch) -> dict[str, str]:
    """A data dir with the library scanned into its catalog; the environment of its builds."""
    monkeypatch.setenv("GMI_RESOURCES_DIR", str(resources))
    catalog, _ = tiny_library(base, checkpoints, catalog_path=base / "data" / "catalog.sqlite3")
    catalog.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GMI_")}
    env.update(tiny_env(resources), GMI_DATA_DIR=str(base / "data"), GMI_CONFIG_DIR=str(base / "config"),
               GMI_CACHE_DIR=str(base / "cache"), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return env


def build(env, kill_after: str | None = None, delay: float = 0.0) -> tuple[int, str, str]:
    """Run a build; with ``kill_after``, SIGKILL it ``delay`` s after a stderr line containing it."""
    proc = subprocess.Popen([sys.executable, "-c", BUILD], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen = []
    if kill_after is not None:
        for line in proc.stderr:
            seen.append(line)
            if kill_after in line:
                time.sleep(delay)
                os.kill(proc.pid, signal.SIGKILL)
                break
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, "".join(seen) + err


def spec_bytes(data: Path) -> dict[str, bytes]:
    store = SpecStore(data / "specs")
    assert not store.skipped
    return {p.name: p.read_bytes() for p in store.paths}


def test_killed_builds_resume_to_the_same_bytes(setup, tmp_path, monkeypatch):
    checkpoints, resources = setup
    straight_env = make_home(tmp_path / "straight", checkpoints, resources, monkeypatch)
    code, out, err = build(straight_env)
    assert code == 0, err
    assert "2 ready, 0 coarse, 0 failed, 0 skipped; 30 images generated" in out
    expected = spec_bytes(tmp_path / "straight" / "data")
    assert len(expected) == 2

    env = make_home(tmp_path / "killed", checkpoints, resources, monkeypatch)
    data = tmp_path / "killed" / "data"
    kills = [
        ("loading m", 0.3),  # while loading or in the first coarse batch
        ("coarse specification saved", 0.0),  # between a coarse spec and the next model
        ("loading m", 0.5),  # inside the refinement
        ("full specification saved", 0.0),  # one model complete, the other not
    ]
    killed = 0
    for marker, delay in kills:
        code, _out, err = build(env, marker, delay)
        if code == 0:  # it finished before the kill landed: nothing left to interrupt
            break
        assert code == -signal.SIGKILL, err
        killed += 1
    assert killed >= 3
    code, out, err = build(env)
    assert code == 0, err
    done = int(out.rsplit("; ", 1)[1].split()[0])
    assert done < 2 * N  # it resumed rather than starting over
    assert spec_bytes(data) == expected
    assert not list((data / "specs" / "building").glob("*.state.safetensors"))


def test_bad_model_name_is_one_line_and_exit_2(setup, tmp_path, monkeypatch):
    checkpoints, resources = setup
    env = make_home(tmp_path / "home", checkpoints[:1], resources, monkeypatch)
    code = ("import sys; from gmi_desktop.cli.main import main; "
            "sys.exit(main(['build-specs', '--models', 'no-such-model']))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no checkpoint in the library matches 'no-such-model'" in lines[0]
