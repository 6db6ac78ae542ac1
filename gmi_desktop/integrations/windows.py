"""Windows shell integration: "Find best model" on the context menu of PNG, JPEG and WebP images.

One verb under ``HKCU\\Software\\Classes\\SystemFileAssociations\\image\\shell\\<verb>`` (per user,
no admin rights), restricted by ``AppliesTo`` to the three extensions. Explorer starts one process
per selected file (a static verb passes ``%1`` only); the single-instance handshake gathers them
into the running window. On Windows 11 the entry sits under "Show more options" (Shift+F10): the
new first-level menu only lists packaged apps' ``IExplorerCommand`` handlers.

The same keys are written through :mod:`winreg` on Windows (:func:`install`) and rendered as a
``.reg`` file anywhere (:func:`render_reg`), which is how the tests check them on Linux.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass

from gmi_desktop.integrations.common import (
    IMAGE_SUFFIXES, MARKER, VERB, VERB_ID, IntegrationError, Item, check_command,
)

HIVE = "HKEY_CURRENT_USER"
SHELL_KEY = r"Software\Classes\SystemFileAssociations\image\shell"
VERB_KEY = SHELL_KEY + "\\" + VERB_ID
MARKER_VALUE = "GMIDesktopManaged"


@dataclass(frozen=True)
class RegKey:
    """A registry key (below the hive) and its string values; the name "" is the default value."""

    path: str
    values: tuple[tuple[str, str], ...]


def quote_arg(arg: str) -> str:
    """One argument as ``CommandLineToArgvW`` reads it back: always in double quotes, a quote
    escaped by a backslash, backslashes doubled only where they precede a quote."""
    out, backslashes = ['"'], 0
    for c in arg:
        if c == "\\":
            backslashes += 1
            continue
        if c == '"':
            out.append("\\" * (2 * backslashes + 1) + '"')
        else:
            out.append("\\" * backslashes + c)
        backslashes = 0
    out.append("\\" * (2 * backslashes) + '"')
    return "".join(out)


def command_line(command: list[str]) -> str:
    """The verb's command: the quoted program and arguments, then ``"%1"``. Explorer replaces
    ``%1`` (and ``%VAR%`` environment references), so every ``%`` of ours is written ``%%``."""
    check_command(command)
    return " ".join(quote_arg(a).replace("%", "%%") for a in command) + ' "%1"'


def registry_keys(command: list[str], icon: str) -> list[RegKey]:
    applies = " OR ".join(f"System.FileExtension:={s}" for s in IMAGE_SUFFIXES)
    return [
        RegKey(VERB_KEY, (("MUIVerb", VERB), ("Icon", icon), ("AppliesTo", applies),
                          ("MultiSelectModel", "Player"), (MARKER_VALUE, MARKER))),
        RegKey(VERB_KEY + "\\command", (("", command_line(command)),)),
    ]


def _reg_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_reg(keys: list[RegKey]) -> bytes:
    """A ``.reg`` file (regedit 5.00: UTF-16 LE with a byte-order mark, CRLF lines) adding ``keys``."""
    lines = ["Windows Registry Editor Version 5.00", ""]
    for key in keys:
        lines.append(f"[{HIVE}\\{key.path}]")
        for name, value in key.values:
            lines.append(f"{'@' if name == '' else _reg_string(name)}={_reg_string(value)}")
        lines.append("")
    return ("\r\n".join(lines) + "\r\n").encode("utf-16")


def render_unreg() -> bytes:
    """A ``.reg`` file that deletes the verb (and only it)."""
    return ("\r\n".join(["Windows Registry Editor Version 5.00", "", f"[-{HIVE}\\{VERB_KEY}]", ""]) + "\r\n").encode("utf-16")


def default_icon(command: list[str]) -> str:
    return f"{command[0]},0"


# -- the real registry (Windows only) --------------------------------------------------------------
def _winreg():
    if sys.platform != "win32":
        raise IntegrationError(None, "the Windows registry exists only on Windows",
                               "use `gmi-desktop integrate render --platform windows` for a .reg file")
    import winreg

    return winreg


def _ours(winreg) -> bool | None:
    """True: our verb is there; False: a verb of that name we did not write; None: none."""
    try:
        key = winreg.OpenKey(winreg.HKEY_CURRENT_USER, VERB_KEY)
    except FileNotFoundError:
        return None
    with key:
        try:
            value, _kind = winreg.QueryValueEx(key, MARKER_VALUE)
        except OSError:  # a verb of that name without our marker
            return False
        return value == MARKER


def install(command: list[str]) -> list[Item]:
    winreg = _winreg()
    where = f"{HIVE}\\{VERB_KEY}"
    if _ours(winreg) is False:
        return [Item("context menu verb", where, "foreign")]
    for spec in registry_keys(command, default_icon(command)):
        with winreg.CreateKeyEx(winreg.HKEY_CURRENT_USER, spec.path, 0, winreg.KEY_WRITE) as key:
            for name, value in spec.values:
                winreg.SetValueEx(key, name, 0, winreg.REG_SZ, value)
    _notify_association_changed()
    return [Item("context menu verb", where, "installed")]


def uninstall() -> list[Item]:
    winreg = _winreg()
    where = f"{HIVE}\\{VERB_KEY}"
    state = _ours(winreg)
    if state is None:
        return [Item("context menu verb", where, "absent")]
    if state is False:
        return [Item("context menu verb", where, "foreign")]
    with contextlib.suppress(FileNotFoundError):
        winreg.DeleteKey(winreg.HKEY_CURRENT_USER, VERB_KEY + "\\command")
    winreg.DeleteKey(winreg.HKEY_CURRENT_USER, VERB_KEY)
    _notify_association_changed()
    return [Item("context menu verb", where, "removed")]


def status(command: list[str]) -> list[Item]:
    winreg = _winreg()
    where = f"{HIVE}\\{VERB_KEY}"
    state = _ours(winreg)
    if state is None:
        return [Item("context menu verb", where, "absent")]
    if state is False:
        return [Item("context menu verb", where, "foreign")]
    try:
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, VERB_KEY + "\\command") as key:
            current, _ = winreg.QueryValueEx(key, "")
    except OSError:
        current = None
    return [Item("context menu verb", where, "present" if current == command_line(command) else "outdated")]


def _notify_association_changed() -> None:
    import ctypes

    SHCNE_ASSOCCHANGED, SHCNF_IDLIST = 0x08000000, 0
    ctypes.windll.shell32.SHChangeNotify(SHCNE_ASSOCCHANGED, SHCNF_IDLIST, None, None)

