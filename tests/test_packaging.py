"""The package as installed: ``livesafe --version`` and the license it declares and ships."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import threading
import tomllib
import zipfile
from pathlib import Path

from harness import ROOT, unused_port

from livesafe import samples

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


def test_the_demo_sample_ships_in_the_package_as_the_same_bytes_as_sample_streams() -> None:
    """The packaged copies are what sample_streams/generate.py wrote: one sample, not two that drift."""
    for name in (samples.CLIP, samples.BLOCKLIST):
        assert (ROOT / "livesafe" / "samples" / name).read_bytes() == (ROOT / "sample_streams" / name).read_bytes()
    assert samples.demo_clip() == ROOT / "livesafe" / "samples" / samples.CLIP


def test_a_non_editable_install_runs_the_demo_from_any_directory(tmp_path: Path) -> None:
    """What ``pip install .`` installs: the wheel holds the web pages and the demo's sample, and the demo
    installed from it, started in an empty directory, publishes the packaged clip guarded by its list."""
    source = tmp_path / "source"
    _mkdir(source)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "livesafe", source / "livesafe", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("livesafe-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    shipped = {f"livesafe/web/{p.name}" for p in (ROOT / "livesafe" / "web").iterdir() if p.suffix != ".py"}
    shipped |= {f"livesafe/samples/{samples.CLIP}", f"livesafe/samples/{samples.BLOCKLIST}"}
    assert shipped - {"livesafe/web/__pycache__"} <= names
    site = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    empty = _mkdir(tmp_path / "elsewhere")
    port = unused_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "livesafe.cli", "demo", "--port", str(port)],
        cwd=empty, env=os.environ | {"PYTHONPATH": str(site)}, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    watchdog = threading.Timer(120, demo.kill)  # a demo that hangs silently is killed: the read below ends
    watchdog.start()
    try:
        seen = []
        for line in demo.stderr:
            seen.append(line)
            if "is live" in line:  # published from the packaged clip; SIGINT is the demo's to handle by now
                break
        banner = "".join(seen)
        assert "1 list(s), 3 hashes" in banner, banner
        assert f"preparing {site / 'livesafe' / 'samples' / samples.CLIP}" in banner, banner
    finally:
        watchdog.cancel()
        demo.send_signal(signal.SIGINT)
        try:
            assert demo.wait(timeout=30) == 0
        finally:
            if demo.poll() is None:
                demo.kill()
    assert (empty / "livesafe.db").is_file(), "the event store is in the directory it ran in"


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
