"""packaging/: the installers' files agree with the integration code and pass the real validators;
the frozen app is smoke-tested where PyInstaller can run (opt-in: it takes minutes)."""

from __future__ import annotations

import ast
import os
import plistlib
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gmi_desktop.cli.main import SUBCOMMANDS
from gmi_desktop.integrations import linux, macos, windows
from gmi_desktop.integrations.common import IMAGE_MIME_TYPES

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"


def test_linux_desktop_file_is_the_rendered_one_and_validates():
    path = PACKAGING / "linux" / "gmi-desktop.desktop"
    assert path.read_text() == linux.desktop_entry(["gmi-desktop", "open"])
    tool = shutil.which("desktop-file-validate")
    if tool is None:
        pytest.skip("desktop-file-validate is not installed (Debian/Ubuntu: apt-get install desktop-file-utils)")
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_appstream_metainfo_names_the_desktop_file_and_validates():
    (path,) = (PACKAGING / "linux").glob("*.metainfo.xml")
    root = ET.parse(path).getroot()
    assert root.findtext("id") + ".metainfo.xml" == path.name
    assert (PACKAGING / "linux" / root.findtext("launchable")).exists()
    assert [m.text for m in root.iter("mediatype")] == list(IMAGE_MIME_TYPES)
    tool = shutil.which("appstreamcli")
    if tool is None:
        pytest.skip("appstreamcli is not installed (Debian/Ubuntu: apt-get install appstream)")
    proc = subprocess.run([tool, "validate", "--no-net", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_macos_info_plist_is_the_rendered_one():
    data = (PACKAGING / "macos" / "Info.plist").read_bytes()
    assert plistlib.loads(data) == macos.app_info_plist()


def inno_registry(text: str) -> list[dict[str, str]]:
    """The [Registry] entries of an Inno Setup script: ``Name: "value"; ...`` with "" for "."""
    section = re.search(r"^\[Registry\]\n(.*?)(?=^\[|\Z)", text, re.S | re.M)[1]
    entries = []
    for line in section.splitlines():
        if not line.strip() or line.startswith(";"):
            continue
        fields = {}
        for m in re.finditer(r'(\w+): ("(?:[^"]|"")*"|[^;]+)', line):
            value = m[2].strip()
            fields[m[1]] = value[1:-1].replace('""', '"') if value.startswith('"') else value
        entries.append(fields)
    return entries


def test_inno_setup_registers_the_same_verb_and_removes_it_on_uninstall():
    text = (PACKAGING / "windows" / "gmi-desktop.iss").read_text()
    assert re.search(r"^PrivilegesRequired=lowest$", text, re.M)  # per user unless elevated
    defines = dict(re.findall(r'^#define (\w+) "(.*)"$', text, re.M))
    app = r"C:\Users\Zoë\AppData\Local\Programs\GMI 100% Desktop"
    exe = app + r"\GMI Desktop.exe"
    expected = {k.path: dict(k.values) for k in windows.registry_keys([exe, "open"], f"{exe},0")}
    found: dict[str, dict[str, str]] = {}
    for entry in inno_registry(text):
        assert entry["Root"] == "HKA" and entry["ValueType"] == "string"
        subkey = entry["Subkey"].replace("{#VerbKey}", defines["VerbKey"])
        value = (entry["ValueData"].replace("{code:PercentEscapedApp}", app.replace("%", "%%"))
                 .replace("{app}", app))
        found.setdefault(subkey, {})[entry["ValueName"]] = value
        if "Flags" in entry:
            assert entry["Flags"] == "uninsdeletekey"
    assert found == expected
    flagged = {e["Subkey"] for e in inno_registry(text) if e.get("Flags") == "uninsdeletekey"}
    assert flagged == {"{#VerbKey}", "{#VerbKey}\\command"}
    assert "StringChangeEx(Result, '%', '%%', True)" in text


def _lazy_module_names() -> set[str]:
    """gmi_desktop modules imported by name at run time (importlib), which PyInstaller cannot see."""
    names = set(SUBCOMMANDS)
    for path in (ROOT / "gmi_desktop").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                names.add(node.args[0].value)
    return names


def test_pyinstaller_spec_names_every_module_imported_by_name_and_ships_resources():
    text = (PACKAGING / "pyinstaller" / "gmi-desktop.spec").read_text()
    tree = ast.parse(text)
    listed: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "hiddenimports" for t in node.targets):
            listed |= {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
            if any(isinstance(e, ast.Starred) and getattr(e.value, "id", "") == "SUBCOMMANDS" for e in node.value.elts):
                listed |= set(SUBCOMMANDS)
    missing = _lazy_module_names() - listed
    assert not missing, f"add to hiddenimports: {sorted(missing)}"
    assert 'datas = [(str(ROOT / "resources"), "resources")]' in text
    assert "gmi_desktop.integrations.single_instance" in listed


@pytest.mark.skipif(os.environ.get("GMI_TEST_FREEZE") != "1",
                    reason="builds a PyInstaller bundle (minutes): set GMI_TEST_FREEZE=1 to run it")
def test_frozen_light_bundle_runs(tmp_path, qtbot):
    pytest.importorskip("PyInstaller", reason="PyInstaller is not installed (pip install -e '.[freeze]')")
    env = dict(os.environ, GMI_FREEZE_LIGHT="1")
    subprocess.run([sys.executable, "-m", "PyInstaller", "--noconfirm", "--distpath", str(tmp_path / "dist"),
                    "--workpath", str(tmp_path / "build"), str(PACKAGING / "pyinstaller" / "gmi-desktop.spec")],
                   check=True, env=env, cwd=tmp_path, capture_output=True, timeout=1800)
    exe = tmp_path / "dist" / "gmi-desktop" / "gmi-desktop"
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "0.1.0" in out.stdout
    rendered = tmp_path / "rendered"
    subprocess.run([str(exe), "integrate", "render", "--platform", "linux", "--out", str(rendered)],
                   check=True, timeout=120)
    assert (rendered / "gmi-desktop.svg").read_bytes() == (ROOT / "resources" / "icons" / "gmi-desktop.svg").read_bytes()
    entry = (rendered / "gmi-desktop.desktop").read_text()
    assert f"Exec={exe} open %F" in entry  # a frozen app runs itself
    # the frozen `open` hands its image to a running instance (QtNetwork made it into the bundle)
    from gmi_desktop.integrations.single_instance import claim

    primary = claim([], timeout_s=10)
    try:
        with qtbot.waitSignal(primary.paths_received, timeout=60_000) as received:
            proc = subprocess.Popen([str(exe), "open", "frozen image.png"], cwd=tmp_path)
        assert received.args == [[str(tmp_path / "frozen image.png")]]
        assert proc.wait(timeout=60) == 0
    finally:
        primary.close()
