"""Builds the view's third-party assets (``scripts/build-assets``: uPlot from npm) before the
package's files are collected, so an install, editable or not, and the wheel carry them.
Everything else about the package is in pyproject.toml."""

import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithAssets(build_py):
    def run(self) -> None:
        script = ROOT / "scripts" / "build-assets"
        if script.exists():  # absent in an sdist's build, whose tree already has them
            try:
                subprocess.run(["bash", str(script)], check=True)
            except (OSError, subprocess.CalledProcessError) as exc:
                print(f"runwatch: the view's charts are not built ({exc}); the page at / "
                      "says so. Run scripts/build-assets with npm on the PATH.", file=sys.stderr)
        super().run()


setup(cmdclass={"build_py": BuildPyWithAssets})
