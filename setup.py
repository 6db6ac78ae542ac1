"""Ship the top-level ``resources/`` folder inside the wheel as ``gmi_desktop/resources/``.

Everything else about the package is declared in ``pyproject.toml``. ``resources/`` stays at the
top of the repository (where users and packagers look for it); the wheel carries a copy inside the
package, where :func:`gmi_desktop.engine.sd_configs.resources_dir` finds it once installed.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class build_py_with_resources(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's resources/ in place
        source = ROOT / "resources"
        target = Path(self.build_lib) / "gmi_desktop" / "resources"
        for path in sorted(source.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                self.mkpath(str((target / path.relative_to(source)).parent))
                self.copy_file(str(path), str(target / path.relative_to(source)), preserve_mode=False)


setup(cmdclass={"build_py": build_py_with_resources})
