"""The package as installed: ``livesafe --version`` and the license it declares and ships."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

from harness import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
APACHE_TEXT = Path("/usr/share/common-licenses/Apache-2.0")  # Debian's copy of the license text


def test_version_is_the_installed_packages() -> None:
    assert importlib.metadata.version("livesafe") == PYPROJECT["version"]
    result = subprocess.run(
        [sys.executable, "-m", "livesafe.cli", "--version"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"livesafe {PYPROJECT['version']}"


def test_license_file_is_the_full_apache_2_text_and_the_metadata_names_it() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text
    if APACHE_TEXT.is_file():
        assert text == APACHE_TEXT.read_text(), "LICENSE must be the license text verbatim"
    assert PYPROJECT["license"] == "Apache-2.0" and PYPROJECT["license-files"] == ["LICENSE"]
    metadata = importlib.metadata.metadata("livesafe")
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
