"""The layering of docs/ARCHITECTURE.md, checked on the source (AST), not by habit."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "gmi_desktop"
HEAVY = {"torch", "torchvision", "diffusers", "transformers", "open_clip", "clip_interrogator", "accelerate"}
QT = {"PySide6", "shiboken6"}
LAYERS = ["core", "store", "engine", "services", "evaluation", "cli", "gui", "integrations"]
# who may import whom (besides itself); nothing of the product imports `evaluation`, only `cli`
ALLOWED = {
    "core": set(),
    "store": {"core"},
    "engine": {"core", "store"},
    "services": {"core", "store", "engine"},
    "evaluation": {"core", "store", "engine", "services"},
    "cli": {"core", "store", "engine", "services", "evaluation", "integrations"},
    "gui": {"core", "store", "services"},
    "integrations": {"core", "store", "services", "gui"},
}
# modules of `evaluation` that are pure numpy like `core` (they may import `core` and each other)
EVALUATION_NUMPY = {"metrics", "synthetic", "toy"}


def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node, node.module


def _top_level_nodes(path: Path):
    """Import nodes executed at import time (module body, not inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []

    def visit(body):
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                out.append(node)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                for sub in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, sub, []) or []:
                        visit([child] if not isinstance(child, ast.ExceptHandler) else child.body)
    visit(tree.body)
    return {id(n) for n in out}


def _layer_files():
    for layer in LAYERS:
        for path in sorted((PKG / layer).rglob("*.py")):
            yield layer, path


@pytest.mark.parametrize("layer,path", list(_layer_files()), ids=lambda v: str(v) if isinstance(v, str) else v.name)
def test_layer_rules(layer, path):
    eager = _top_level_nodes(path)
    for node, name in _imports(path):
        root = name.split(".")[0]
        if root in QT:
            assert layer in {"gui", "integrations"}, f"{path}: Qt imported outside gui/integrations"
        if root in HEAVY:
            assert layer in {"engine"} or id(node) not in eager, f"{path}: {name} imported eagerly outside engine"
            assert layer not in {"core", "store"}, f"{path}: {name} must not be imported in {layer}"
        if name.startswith("gmi_desktop."):
            target = name.split(".")[1]
            if target in LAYERS and target != layer:
                assert target in ALLOWED[layer], f"{path}: {layer} may not import {target}"


def test_core_is_numpy_only():
    for path in (PKG / "core").rglob("*.py"):
        for _node, name in _imports(path):
            root = name.split(".")[0]
            assert root not in HEAVY | QT | {"gmi_desktop"} or name.startswith("gmi_desktop.core"), (path, name)


def test_numpy_only_evaluation_modules():
    for stem in sorted(EVALUATION_NUMPY):
        path = PKG / "evaluation" / f"{stem}.py"
        assert path.is_file(), path
        for _node, name in _imports(path):
            parts = name.split(".")
            if parts[0] == "gmi_desktop":
                ok = parts[1] == "core" or (parts[1] == "evaluation" and parts[2:3] and parts[2] in EVALUATION_NUMPY)
                assert ok, (path, name)
            else:
                assert parts[0] not in HEAVY | QT, (path, name)


def test_cli_entry_does_not_import_heavy_libraries():
    code = (
        "import sys, gmi_desktop.cli.main as m; m.build_parser(); "
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in %r); "
        "print(','.join(bad)); sys.exit(1 if bad else 0)" % sorted(HEAVY | QT)
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"heavy modules imported at CLI start: {proc.stdout} {proc.stderr}"
