"""setup.py installs the library as `e4e_jax` and the converters as `e4e_jax_tools.convert_weights` (no
generic top-level `tools`), and the installed `e4e-convert` runs without the repository.

Builds a wheel from a copy of the sources (no build isolation: offline, with the installed setuptools),
installs it into a folder and runs it from there with the repository off the path."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("e4e_jax", "tools"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if build.returncode != 0 and "No module named" in build.stderr:
        pytest.skip(f"cannot build a wheel here: {build.stderr.strip().splitlines()[-1]}")
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp / "dist").glob("*.whl")
    site = tmp / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    return wheel, site


def test_wheel_has_no_top_level_tools(installed):
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {
        "e4e_jax",
        "e4e_jax_tools",
    }
    assert "e4e_jax_tools/convert_weights/__main__.py" in names and "e4e_jax/storage/torchfile/reader.py" in names
    assert "e4e-convert = e4e_jax_tools.convert_weights:entry" in entry_points


def test_installed_e4e_convert_runs_without_the_repository(installed, tmp_path):
    _, site = installed
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(site)}
    code = (
        # The repository leaves the path, but not a virtual environment inside it (CI's .ci-venv).
        "import sys; sys.path[:] = [p for p in sys.path if not p.startswith(%r) or 'site-packages' in p]; "
        "from e4e_jax_tools.convert_weights.__main__ import main; import e4e_jax, e4e_jax_tools; "
        "assert e4e_jax.__file__.startswith(%r), e4e_jax.__file__; sys.argv[0] = 'e4e-convert'; "
        "sys.exit(main(sys.argv[1:]))"
    ) % (str(ROOT), str(site))
    r = subprocess.run(
        [sys.executable, "-c", code, "e4e", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "missing.pt: no such file" in r.stderr, r.stderr
    r = subprocess.run(
        [sys.executable, str(site / "bin" / "e4e-convert"), "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0 and r.stdout.startswith("usage: e4e-convert"), r.stderr
