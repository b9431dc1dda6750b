"""Where the tests find the official e4e files (editing directions, GANSpace PCA, sample photos):
../shared/assets/e4e beside the checkout, or $E4E_SHARED/assets/e4e (e.g. from a git worktree).
They are not in the repository; a test that needs them skips and says where it looked.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
E4E_ASSETS = Path(os.environ.get("E4E_SHARED", ROOT.parent / "shared")) / "assets" / "e4e"


def skip_reason(path: Path) -> str:
    """Why a test that needs `path` did not run."""
    return (
        f"needs the official e4e files at {path}: ../shared/assets/e4e beside the checkout, or set "
        f"E4E_SHARED to the folder holding assets/e4e"
    )


def require(sub: str = "") -> Path:
    """E4E_ASSETS/sub, or skip the calling test saying where the files belong."""
    path = E4E_ASSETS / sub
    if not path.exists():
        pytest.skip(skip_reason(path))
    return path


needs_assets = pytest.mark.skipif(not E4E_ASSETS.is_dir(), reason=skip_reason(E4E_ASSETS))
