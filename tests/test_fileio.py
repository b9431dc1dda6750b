"""fileio: the one home of atomic writes (temporary file beside the target, then one rename)."""

import fnmatch

import numpy as np
import pytest

from e4e_jax.storage import fileio


def test_replacing_renames_on_success_and_removes_on_failure(tmp_path):
    target = tmp_path / "a.npy"
    with fileio.replacing(target) as tmp:
        assert tmp.parent == tmp_path and fileio.is_temp_name(tmp.name)
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(2, 3))
        out[:] = 1.5
        out.flush()
        del out
        assert not target.exists()  # nothing in place until the block ends
    np.testing.assert_array_equal(np.load(target), np.full((2, 3), 1.5, np.float32))
    with pytest.raises(RuntimeError):
        with fileio.replacing(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    np.testing.assert_array_equal(np.load(target), np.full((2, 3), 1.5, np.float32))  # old file kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]  # temporary removed


def test_temp_glob_matches_the_temporaries_of_matching_targets(tmp_path):
    pattern = fileio.temp_glob("[0-9][0-9].png")
    made = fileio.temp_path_beside(tmp_path / "07.png")
    assert fnmatch.fnmatchcase(made.name, pattern)
    assert not fnmatch.fnmatchcase(fileio.temp_path_beside(tmp_path / "x7.png").name, pattern)
    assert not fnmatch.fnmatchcase("07.png", pattern)


def test_check_room_refuses_what_cannot_fit_before_anything_is_written(tmp_path):
    """bundle.save asks first (orbax's writer threads cannot be stopped once one write fails)."""
    import resource

    fileio.check_room(tmp_path, 1000, tmp_path / "b")  # fits
    with pytest.raises(fileio.NoRoomError, match=str(tmp_path / "b")):
        fileio.check_room(tmp_path, 1 << 62, tmp_path / "b")  # more than the disk has free
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (500, hard))  # `ulimit -f`: lowering the soft limit only
    try:
        with pytest.raises(fileio.NoRoomError, match="File too large"):
            fileio.check_room(tmp_path, 1000, tmp_path / "b")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert not list(tmp_path.iterdir())
