"""Dependencies as they are used (issue 10, item 2): every third-party package gmi_desktop imports is
declared in pyproject.toml, and the environment the suite runs in meets every declared floor (the
floors are the versions the suite has run with)."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {_norm(r.name): r for r in map(Requirement, project["dependencies"])}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_top_level() -> set[str]:
    names = set()
    for path in (ROOT / "gmi_desktop").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "gmi_desktop"}


def test_every_directly_imported_package_is_declared():
    declared = _declared()
    owners = metadata.packages_distributions()
    undeclared = {}
    for module in sorted(_imported_top_level()):
        dists = owners.get(module)
        assert dists, f"{module} is imported but not installed"
        if not any(_norm(d) in declared for d in dists):
            undeclared[module] = dists
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_the_installed_versions_meet_every_declared_floor():
    below = {name: (metadata.version(req.name), str(req.specifier))
             for name, req in _declared().items() if metadata.version(req.name) not in req.specifier}
    assert not below, f"installed versions outside the declared ranges: {below}"


def test_the_license_file_matches_the_declared_licence():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")


def test_the_makefile_points_at_a_readme_section_that_exists():
    pointers = re.findall(r'README "([^"]+)"', (ROOT / "Makefile").read_text(encoding="utf-8"))
    headings = re.findall(r"^#+ (.+)$", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.M)
    assert pointers and all(p in headings for p in pointers)
