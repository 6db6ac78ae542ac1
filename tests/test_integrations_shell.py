"""Shell integration files: validated by the real tools, parsed back, installed and removed under a
temporary HOME leaving nothing behind, and never touching what is not ours."""

from __future__ import annotations

import json
import os
import plistlib
import re
import shlex
import shutil
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gmi_desktop.cli.main import main as cli_main
from gmi_desktop.integrations import linux, macos, windows
from gmi_desktop.integrations.common import MARKER, Manifest

# a program path a user can really have: spaces, non-ASCII, percent signs, shell metacharacters
AWKWARD = "/opt/My Apps/Ünïcode 画像 100%/gmi$HOME'x\"y`z\\w/python"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh HOME with XDG folders inside it."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    return home


def recorder(tmp_path: Path) -> tuple[list[str], Path]:
    """A command prefix that records the arguments it is given, and the file it writes them to."""
    script = tmp_path / "record args.py"
    log = tmp_path / "args.json"
    script.write_text(f"import json, sys\nopen({str(log)!r}, 'w').write(json.dumps(sys.argv[1:]))\n")
    return [sys.executable, str(script), "open"], log


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(root))] = (stat.S_IMODE(st.st_mode), path.read_bytes() if path.is_file() else None)
    return out


# -- desktop entry Exec: the Desktop Entry Specification, read back independently -----------------
def parse_exec(value: str) -> list[str]:
    """Split an Exec value (already string-unescaped) per the specification."""
    args, cur, i, quoted, started = [], [], 0, False, False
    while i < len(value):
        c = value[i]
        if quoted:
            if c == "\\" and i + 1 < len(value) and value[i + 1] in '"`$\\':
                cur.append(value[i + 1])
                i += 2
                continue
            if c == '"':
                quoted = False
            else:
                cur.append(c)
        elif c == '"':
            quoted, started = True, True
        elif c == " ":
            if cur or started:
                args.append("".join(cur))
            cur, started = [], False
        else:
            cur.append(c)
        i += 1
    if cur or started:
        args.append("".join(cur))
    return [a.replace("%%", "%") if a != "%F" else a for a in args]


def read_desktop(text: str) -> dict[str, dict[str, str]]:
    groups: dict[str, dict[str, str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("["):
            current = groups.setdefault(line.strip("[]"), {})
        elif "=" in line:
            key, value = line.split("=", 1)
            # string-level escapes of the specification
            value = re.sub(r"\\(.)", lambda m: {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}.get(m[1], "\\" + m[1]), value)
            current[key] = value
    return groups


def test_desktop_entry_exec_reads_back_and_validates(tmp_path):
    command = [AWKWARD, "-m", "gmi_desktop", "open"]
    text = linux.desktop_entry(command)
    entry = read_desktop(text)["Desktop Entry"]
    assert parse_exec(entry["Exec"]) == [*command, "%F"]
    assert entry["MimeType"] == "image/png;image/jpeg;image/webp;"
    assert entry["Icon"] == "gmi-desktop"
    tool = shutil.which("desktop-file-validate")
    if tool is None:
        pytest.skip("desktop-file-validate is not installed (Debian/Ubuntu: apt-get install desktop-file-utils)")
    path = tmp_path / "gmi-desktop.desktop"
    path.write_text(text, encoding="utf-8")
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_dolphin_menu_runs_the_same_command():
    command = [AWKWARD, "open"]
    groups = read_desktop(linux.dolphin_menu(command))
    assert groups["Desktop Entry"]["Type"] == "Service"
    assert groups["Desktop Entry"]["MimeType"] == "image/png;image/jpeg;image/webp;"
    action = groups["Desktop Action gmiFindBestModel"]
    assert action["Name"] == "Find best model"
    assert parse_exec(action["Exec"]) == [*command, "%F"]


def test_thunar_command_runs_as_thunar_runs_it(tmp_path):
    command, log = recorder(tmp_path)
    command = [*command[:-1], "odd 100% $HOME 'arg'", "open"]
    files = ["/home/u/my image 100%.png", "/home/u/it's ünï $HOME.webp"]
    line = linux.thunar_command(command)
    # Thunar replaces %F by the g_shell_quote'd files and %% by %, then runs /bin/sh -c LINE
    expanded = re.sub(r"%(.)", lambda m: " ".join(shlex.quote(f) for f in files) if m[1] == "F" else m[1], line)
    subprocess.run(["/bin/sh", "-c", expanded], check=True, timeout=60)
    assert json.loads(log.read_text()) == [*command[2:], *files]


def test_nautilus_script_passes_every_selected_path(tmp_path, home):
    command, log = recorder(tmp_path)
    script = tmp_path / "Find best model"
    script.write_text(linux.nautilus_script(command))
    script.chmod(0o755)
    files = ["/home/u/a b.png", "/home/u/*.png", "/home/u/ünï $HOME 100%.jpg", "/home/u/-dash.webp"]
    env = dict(os.environ, NAUTILUS_SCRIPT_SELECTED_FILE_PATHS="".join(f + "\n" for f in files))
    subprocess.run([str(script)], env=env, check=True, timeout=60)
    assert json.loads(log.read_text()) == ["open", "--", *files]


def test_install_uninstall_leaves_nothing_and_keeps_the_users_files(tmp_path, home):
    command, _ = recorder(tmp_path)
    apps = home / ".local" / "share" / "applications"
    apps.mkdir(parents=True)
    (apps / "theirs.desktop").write_text("[Desktop Entry]\nType=Application\nName=Theirs\nExec=theirs %F\n"
                                         "MimeType=image/png;\n")
    thunar = home / ".config" / "Thunar"
    thunar.mkdir(parents=True)
    users_uca = ('<?xml version="1.0" encoding="UTF-8"?>\n<actions>\n<!-- my own -->\n<action>\n'
                 '\t<icon>utilities-terminal</icon>\n\t<name>Open Terminal Here</name>\n'
                 '\t<unique-id>1234-1</unique-id>\n\t<command>exo-open --working-directory %f</command>\n'
                 '\t<description>Example</description>\n\t<patterns>*</patterns>\n\t<directories/>\n</action>\n'
                 '</actions>\n')
    (thunar / "uca.xml").write_text(users_uca)
    before = snapshot(home)

    first = linux.install(command)
    assert {i.state for i in first} == {"installed"}, first
    after_first = snapshot(home)
    second = linux.install(command)
    assert {i.state for i in second} == {"unchanged"}, second
    assert snapshot(home) == after_first  # idempotent, to the byte
    assert {i.state for i in linux.status(command)} == {"present"}

    places = linux.Places.from_env()
    for path in (places.dolphin, places.nautilus):
        assert os.stat(path).st_mode & stat.S_IXUSR, path
    assert places.icon.read_bytes().startswith(b"<?xml") and b"<svg" in places.icon.read_bytes()
    root = ET.parse(places.thunar).getroot()
    ids = [a.findtext("unique-id") for a in root.findall("action")]
    assert ids == ["1234-1", linux.THUNAR_ID]
    original = ET.fromstring(users_uca.encode()).find("action")
    assert ET.tostring(root.findall("action")[0]) == ET.tostring(original)
    assert "<!-- my own -->" in places.thunar.read_text()

    removed = linux.uninstall()
    assert {i.state for i in removed} == {"removed"}, removed
    after = snapshot(home)
    assert set(after) == set(before), set(after) ^ set(before)
    for name, (mode, data) in before.items():
        if name.endswith("uca.xml"):
            kept = ET.fromstring(after[name][1])
            assert [ET.tostring(a) for a in kept.findall("action")] == [ET.tostring(original)]
            assert b"<!-- my own -->" in after[name][1]
        else:
            assert after[name] == (mode, data), name
    assert not Manifest().path.exists()
    assert {i.state for i in linux.status(command)} == {"absent"}


def test_install_into_an_empty_home_and_uninstall_leaves_it_empty(tmp_path, home):
    command, _ = recorder(tmp_path)
    linux.install(command)
    assert any(home.rglob("*"))
    linux.uninstall()
    assert list(home.rglob("*")) == []


def test_never_overwrites_or_removes_what_it_did_not_write(tmp_path, home):
    command, _ = recorder(tmp_path)
    places = linux.Places.from_env()
    places.nautilus.parent.mkdir(parents=True)
    places.nautilus.write_text("#!/bin/sh\necho my own script of the same name\n")
    items = {i.what: i.state for i in linux.install(command)}
    assert items["Nautilus script"] == "foreign"
    assert items["desktop entry"] == "installed"
    assert "my own script" in places.nautilus.read_text()
    items = {i.what: i.state for i in linux.uninstall()}
    assert items["Nautilus script"] == "foreign"
    assert "my own script" in places.nautilus.read_text()
    assert not places.desktop_entry.exists()


def test_a_broken_thunar_file_is_left_alone(tmp_path, home):
    command, _ = recorder(tmp_path)
    places = linux.Places.from_env()
    places.thunar.parent.mkdir(parents=True)
    places.thunar.write_bytes(b"<actions><action><name>half")
    items = {i.what: i for i in linux.install(command)}
    assert items["Thunar custom action"].state == "problem"
    assert "cannot be read" in items["Thunar custom action"].detail
    assert places.thunar.read_bytes() == b"<actions><action><name>half"
    assert items["desktop entry"].state == "installed"


# -- Windows: the .reg file, parsed back, and the command line Explorer builds from it -------------
def parse_reg(data: bytes) -> dict[str, dict[str, str] | None]:
    """regedit 5.00: UTF-16 with BOM; ``[key]`` adds, ``[-key]`` deletes (None)."""
    assert data[:2] == b"\xff\xfe"
    lines = data.decode("utf-16").split("\r\n")
    assert lines[0] == "Windows Registry Editor Version 5.00"
    keys: dict[str, dict[str, str] | None] = {}
    current = None
    value_re = re.compile(r'^(@|"((?:[^"\\]|\\.)*)")="((?:[^"\\]|\\.)*)"$')
    for line in lines[1:]:
        if not line:
            continue
        if line.startswith("[-"):
            keys[line[2:-1]] = None
        elif line.startswith("["):
            current = keys.setdefault(line[1:-1], {})
        else:
            m = value_re.match(line)
            assert m, line
            unescape = lambda s: re.sub(r"\\(.)", r"\1", s)  # noqa: E731
            current["" if m[1] == "@" else unescape(m[2])] = unescape(m[3])
    return keys


def command_line_to_argv(line: str) -> list[str]:
    """CommandLineToArgvW's rules for the arguments (2n backslashes + quote: n and a quote toggle;
    2n+1: n and a literal quote; other backslashes literal)."""
    args, cur, i, quoted, started = [], [], 0, False, False
    while i < len(line):
        c = line[i]
        if c == "\\":
            n = len(line[i:]) - len(line[i:].lstrip("\\"))
            if i + n < len(line) and line[i + n] == '"':
                cur.append("\\" * (n // 2))
                if n % 2:
                    cur.append('"')
                    i += n + 1
                else:
                    i += n
                continue
            cur.append("\\" * n)
            i += n
            continue
        if c == '"':
            quoted, started = not quoted, True
        elif c in " \t" and not quoted:
            if cur or started:
                args.append("".join(cur))
            cur, started = [], False
        else:
            cur.append(c)
        i += 1
    if cur or started:
        args.append("".join(cur))
    return args


def explorer_expand(template: str, file: str) -> str:
    """What Explorer does to the command before starting it: %1 -> the file, %% -> %."""
    return re.sub(r"%(.)", lambda m: file if m[1] == "1" else "%" if m[1] == "%" else m[0], template)


@pytest.mark.parametrize("program", [
    r"C:\Program Files\GMI Desktop\gmi-desktop.exe",
    r"C:\Users\Zoë Ünïcode\AppData\Local\Programs\GMI 画像 100%\gmi-desktop.exe",
    r"D:\%PATH%\odd dir\\gmi-desktop.exe",
])
def test_reg_file_reads_back_to_the_same_command(program):
    command = [program, "open", 'a "quoted" arg\\', "trailing\\"]
    data = windows.render_reg(windows.registry_keys(command, windows.default_icon(command)))
    keys = parse_reg(data)
    base = r"HKEY_CURRENT_USER\Software\Classes\SystemFileAssociations\image\shell\GMIDesktop.FindBestModel"
    assert set(keys) == {base, base + r"\command"}
    verb = keys[base]
    assert verb["MUIVerb"] == "Find best model"
    assert verb["GMIDesktopManaged"] == MARKER
    assert verb["AppliesTo"] == ("System.FileExtension:=.png OR System.FileExtension:=.jpg OR "
                                 "System.FileExtension:=.jpeg OR System.FileExtension:=.webp")
    assert verb["Icon"] == f"{program},0"
    for image in (r"C:\Users\Zoë\My Pictures\cat 100%.png", r"\\server\share\ünï.webp"):
        argv = command_line_to_argv(explorer_expand(keys[base + r"\command"][""], image))
        assert argv == [*command, image]


def test_unreg_file_deletes_only_our_verb():
    keys = parse_reg(windows.render_unreg())
    assert keys == {r"HKEY_CURRENT_USER\Software\Classes\SystemFileAssociations\image\shell\GMIDesktop.FindBestModel": None}


def test_winreg_is_refused_off_windows():
    if sys.platform == "win32":
        pytest.skip("checks the refusal on other platforms")
    with pytest.raises(Exception, match="only on Windows"):
        windows.install(["x"])


# -- macOS: plists round-tripped -------------------------------------------------------------------
def test_info_plist_document_types_round_trip():
    keys = plistlib.loads(plistlib.dumps(macos.app_info_plist("1.2.3")))
    assert keys["CFBundleShortVersionString"] == "1.2.3"
    (doc,) = keys["CFBundleDocumentTypes"]
    assert doc["CFBundleTypeRole"] == "Viewer" and doc["LSHandlerRank"] == "Alternate"
    assert doc["LSItemContentTypes"] == ["public.png", "public.jpeg", "org.webmproject.webp"]
    assert keys["NSHighResolutionCapable"] is True


def test_quick_action_round_trips_and_its_script_passes_the_files(tmp_path):
    command, log = recorder(tmp_path)
    files = macos.quick_action_files(command)
    info = plistlib.loads(files["Contents/Info.plist"])
    (service,) = info["NSServices"]
    assert service["NSMenuItem"] == {"default": "Find best model"}
    assert service["NSMessage"] == "runWorkflowAsService"
    assert service["NSSendFileTypes"] == ["public.image"]
    document = plistlib.loads(files["Contents/document.wflow"])
    assert document["workflowMetaData"]["workflowTypeIdentifier"] == "com.apple.Automator.servicesMenu"
    (entry,) = document["actions"]
    params = entry["action"]["ActionParameters"]
    assert params["inputMethod"] == 1 and params["shell"] == "/bin/sh"
    chosen = ["/Users/me/a b.png", "/Users/me/ünï 100%.jpg"]
    subprocess.run(["/bin/sh", "-c", params["COMMAND_STRING"], "sh", *chosen], check=True, timeout=60)
    assert json.loads(log.read_text()) == ["open", "--", *chosen]
    # rendering is deterministic: a second install compares equal
    assert macos.quick_action_files(command) == files


def test_quick_action_install_uninstall_in_a_folder(tmp_path):
    services = tmp_path / "Library" / "Services"
    items = macos.install(["/Applications/GMI Desktop.app/Contents/MacOS/gmi-desktop", "open"], folder=services)
    assert {i.state for i in items} == {"installed"}
    assert (services / "Find best model.workflow" / "Contents" / "document.wflow").exists()
    assert {i.state for i in macos.uninstall(folder=services)} == {"removed"}
    assert not (tmp_path / "Library").exists()


# -- the command line ------------------------------------------------------------------------------
def test_cli_install_status_uninstall(tmp_path, home, capsys):
    exe = tmp_path / "bin dir" / "gmi-desktop"
    assert cli_main(["integrate", "install", "--exe", str(exe)]) == 0
    out = capsys.readouterr().out
    assert out.count("installed") == 5
    entry = read_desktop(linux.Places.from_env().desktop_entry.read_text())["Desktop Entry"]
    assert parse_exec(entry["Exec"]) == [str(exe), "open", "%F"]
    assert cli_main(["integrate", "status", "--exe", str(exe)]) == 0
    assert capsys.readouterr().out.count("present") == 5
    assert cli_main(["integrate", "uninstall"]) == 0
    assert capsys.readouterr().out.count("removed") == 5
    assert list(home.rglob("*")) == []


def test_cli_render_windows_and_macos(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli_main(["integrate", "render", "--platform", "windows", "--out", str(out),
                     "--exe", r"C:\Program Files\GMI Desktop\gmi-desktop.exe"]) == 0
    keys = parse_reg((out / "gmi-desktop-context-menu.reg").read_bytes())
    command = next(v[""] for k, v in keys.items() if k.endswith("command"))
    assert command_line_to_argv(explorer_expand(command, r"C:\x.png"))[1:] == ["open", r"C:\x.png"]
    assert cli_main(["integrate", "render", "--platform", "macos", "--out", str(out)]) == 0
    assert plistlib.loads((out / "Info.plist").read_bytes())["CFBundleDocumentTypes"]
    if sys.platform != "win32":
        assert cli_main(["integrate", "install", "--platform", "windows"]) == 2
        assert "use render" in capsys.readouterr().err
