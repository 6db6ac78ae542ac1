"""`make run` goes through the single-instance entry (`gmi-desktop open`), which says in one line
when there is no display."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from gmi_desktop.gui.app import NO_DISPLAY

ROOT = Path(__file__).resolve().parents[1]


def test_make_run_opens_through_the_single_instance_entry():
    recipe = re.search(r"^run:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert recipe.split()[-2:] == ["$(VENV)/bin/gmi-desktop", "open"]
    env = {k: v for k, v in os.environ.items() if k not in {"DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"}}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "gmi_desktop", "open"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"gmi-desktop: error: {NO_DISPLAY}"]
