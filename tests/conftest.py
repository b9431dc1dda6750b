"""Test-wide settings: run JAX on the CPU (parity tolerances assume fp32 without TF32) unless
E4E_TEST_PLATFORM names another platform."""

import os
import shutil

import pytest

os.environ.setdefault("JAX_PLATFORMS", os.environ.get("E4E_TEST_PLATFORM", "cpu"))
# TensorFlow (training input pipeline) must never grab an accelerator in tests.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Disk: the parity checkpoints are real-sized (the official IR-SE50 encoder alone is ~0.7 GB per file), and a
# CI machine may have only a few GB free. pytest.ini removes a passing test's tmp_path at once
# (tmp_path_retention_policy = failed); the fixture below does the same for what a module's fixtures made
# with tmp_path_factory, when the module ends. A module with a failure keeps its files for a look.
_MODULES_WITH_FAILURES: set[str] = set()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        _MODULES_WITH_FAILURES.add(item.module.__name__)
    return report


@pytest.fixture(scope="module", autouse=True)
def _module_scratch_removed(request, tmp_path_factory):
    """Removes, when the module ends, every entry its tests and fixtures added under pytest's base temp."""
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    yield
    if request.module.__name__ in _MODULES_WITH_FAILURES:
        return
    for entry in set(base.iterdir()) - before:
        if entry.is_symlink() or not entry.is_dir():
            entry.unlink(missing_ok=True)
        else:
            shutil.rmtree(entry, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _compile_cache_dir(tmp_path_factory):
    """One JAX compilation cache for the commands the tests run in this process (JAX keeps the first
    directory it is given for the whole process), under pytest's base temp rather than ~/.cache; made
    before the first module starts, so no module's clean-up removes it."""
    mp = pytest.MonkeyPatch()
    mp.setenv("E4E_JAX_CACHE_DIR", str(tmp_path_factory.mktemp("xla-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session", autouse=True)
def shared_dir(tmp_path_factory):
    """A folder for the files several modules share (tests/shared_files.py): made before the first module
    starts, so no module's clean-up removes it; it goes with the session's base temp."""
    return tmp_path_factory.mktemp("shared")


def pytest_collection_modifyitems(config, items):
    """Modules marked `long_module` first, each module's tests kept together and in order: the two xdist
    workers take whole files in this order (pytest.ini), so the run does not end with one worker alone on a
    minutes-long module while the other is idle."""
    items.sort(key=lambda item: item.get_closest_marker("long_module") is None)  # a stable sort
