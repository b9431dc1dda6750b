"""The import layering of docs/architecture.md as checked by `lint-imports` (.importlinter; .ci/run runs
it before the tests: `pip install import-linter && lint-imports`): every module of the package sits in
one of the contract's layers, and the page names the same layers."""

from __future__ import annotations

import configparser
import pkgutil
import re
from pathlib import Path

import e4e_jax

ROOT = Path(__file__).resolve().parents[1]


def _layers() -> list[set[str]]:
    """The layers of the 'layers' contract, top to bottom, each a set of module names under e4e_jax."""
    ini = configparser.ConfigParser()
    ini.read(ROOT / ".importlinter")
    lines = [line.strip() for line in ini["importlinter:contract:layers"]["layers"].splitlines() if line.strip()]
    return [{m.strip("() ").removeprefix("e4e_jax.") for m in re.split(r"[|:]", line)} for line in lines]


def _present() -> set[str]:
    """The package's top-level modules and subpackages; a subpackage whose modules sit in different layers
    (storage, runtime, metrics: docs/architecture.md) counts by each of its modules."""
    placed = set().union(*_layers())
    present = set()
    for m in pkgutil.iter_modules(e4e_jax.__path__):
        split = any(p.startswith(m.name + ".") for p in placed)
        if m.ispkg and split:
            sub = __import__(f"e4e_jax.{m.name}", fromlist=["_"])
            present |= {f"{m.name}.{s.name}" for s in pkgutil.iter_modules(sub.__path__)}
        else:
            present.add(m.name)
    return present


def test_every_module_of_the_package_is_in_a_layer():
    placed = set().union(*_layers())
    present = _present()
    assert present <= placed, f"modules in no layer of .importlinter: {sorted(present - placed)}"


def test_architecture_page_names_the_layers_in_the_same_order():
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text[text.index("## Layers") : text.index("Two more rules")]
    items = re.findall(r"^\d+\. (.+(?:\n   .+)*)", section, re.MULTILINE)
    listed = [set(re.findall(r"`([a-z0-9_.]+)`", re.sub(r"\([^)]*\)", "", item))) for item in items]  # not the (notes)
    assert listed == _layers()[::-1]


def test_configs_are_part_of_the_installed_package():
    from setuptools import find_packages

    # setup.py's own selection: an installed e4e-jax (no repository) still has `--config NAME` and quickstart.
    assert "e4e_jax.configs" in find_packages(str(ROOT), include=["e4e_jax", "e4e_jax.*"])
    assert (ROOT / "configs").resolve() == (ROOT / "e4e_jax" / "configs").resolve()
