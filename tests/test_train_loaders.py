"""Both training loaders (the numpy/PIL loader and the tf.data pipeline) accept the same files and read
the same batches (issue 30, item 3): TIFFs too, unreadable files replaced the same way; a training folder
with nothing usable (empty, or only unreadable images) stops before any work with one message and the
exit status of an input folder with nothing usable (errors.NoInputError, 1), never a hang."""

from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest
from PIL import Image

from e4e_jax import cli, errors
from e4e_jax.data import epochs, folder, tfds_pipeline, train_input

SIZE = (8, 8)
BATCH = 4
WAIT_S = 300  # bound on reading a few batches (a hang fails the test instead of blocking the suite)
needs_tf = pytest.mark.skipif(not tfds_pipeline.tf_available(), reason="tensorflow / tensorflow-datasets not installed")


def _pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(*SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiff_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiffs")
    for i in range(6):
        Image.fromarray(_pixels(i)).save(d / f"img_{i}.tif", format="TIFF")
    return d


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory):
    """PNGs, TIFFs (one 16-bit grey) and two files named .jpg that are not images."""
    d = tmp_path_factory.mktemp("mixed")
    for i in range(4):
        Image.fromarray(_pixels(10 + i)).save(d / f"a_{i}.png")
        Image.fromarray(_pixels(20 + i)).save(d / f"b_{i}.tiff", format="TIFF")
    Image.fromarray((np.arange(64, dtype=np.uint16).reshape(SIZE) * 1000)).save(d / "c_grey16.tif", format="TIFF")
    for name in ("d_bad.jpg", "e_bad.jpg"):
        (d / name).write_bytes(b"not a jpeg at all")
    return d


@pytest.fixture(scope="module")
def unreadable_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("unreadable")
    for i in range(5):
        (d / f"photo_{i}.jpg").write_bytes(b"\xff\xd8\xff truncated" * (i + 1))
    return d


def _bounded(fn):
    """fn() run in a thread, failing the test (rather than hanging it) when it takes longer than WAIT_S."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(fn).result(timeout=WAIT_S)
    finally:
        pool.shutdown(wait=False)


def _tfds(files, start: int, steps: int, flip: bool = True) -> list[np.ndarray]:
    def read():
        it = tfds_pipeline.local_batches(files, BATCH, SIZE, 3, flip, start)
        try:
            return [next(it) for _ in range(steps)]
        finally:
            it.close()

    return _bounded(read)


def test_the_numpy_loader_reads_tiffs_as_the_inference_reader_does(tiff_dir):
    files = folder.list_images(tiff_dir)
    assert [f.suffix for f in files] == [".tif"] * 6
    loader = train_input.NumpyFolderLoader(files, BATCH, SIZE, seed=3, random_flip=False, num_workers=2)
    order = epochs.EpochOrder(len(files), BATCH, 3)
    for step in range(3):
        _, idx = order.indices(step)
        want = np.stack([folder.load_image(files[i], SIZE) for i in idx])
        np.testing.assert_array_equal(loader.local_batch(step), want)
    loader.close()


@needs_tf
def test_the_tfds_pipeline_reads_a_folder_of_tiffs(tiff_dir):
    files = folder.list_images(tiff_dir)
    loader = train_input.NumpyFolderLoader(files, BATCH, SIZE, seed=3, num_workers=2)
    for step, got in enumerate(_tfds(files, 0, 4)):
        np.testing.assert_array_equal(got, loader.local_batch(step))
    loader.close()


@needs_tf
def test_both_loaders_read_the_same_batches_of_a_mixed_folder(mixed_dir):
    files = folder.list_images(mixed_dir)
    assert len(files) == 11  # .jpg files that are not images are listed, and replaced when read
    loader = train_input.NumpyFolderLoader(files, BATCH, SIZE, seed=3, num_workers=2)
    steps = 2 * epochs.EpochOrder(len(files), BATCH, 3).steps_per_epoch  # two epochs, resumed at step 1
    want = [loader.local_batch(s) for s in range(1, steps + 1)]
    for got, w in zip(_tfds(files, 1, steps), want):
        np.testing.assert_array_equal(got, w)
    # TIFFs are trained on: every row whose file is a TIFF holds that file's image (mirrored by its coin).
    order, tiff_rows = epochs.EpochOrder(len(files), BATCH, 3), 0
    for step, batch in zip(range(1, steps + 1), want):
        epoch, idx = order.indices(step)
        for row, i in zip(batch, idx):
            if files[i].suffix in (".tif", ".tiff"):
                x = folder.load_image(files[i], SIZE)
                np.testing.assert_array_equal(row, x[:, ::-1] if epochs.flip_draw(3, epoch, int(i)) else x)
                tiff_rows += 1
    assert tiff_rows >= 3
    loader.close()


@pytest.mark.parametrize("loader", ["numpy", pytest.param("tfds", marks=needs_tf)])
def test_loaders_stop_on_a_folder_of_only_unreadable_images(unreadable_dir, loader):
    files = folder.list_images(unreadable_dir)
    if loader == "tfds":
        read = lambda: _tfds(files, 0, 1)  # noqa: E731
    else:
        read = lambda: train_input.NumpyFolderLoader(files, BATCH, SIZE, seed=0, num_workers=2).local_batch(0)  # noqa: E731
    with pytest.raises(errors.NoInputError, match=r"none of the 5 training images .* can be read \(e.g. photo_"):
        _bounded(read)


def _train(capsys, tmp_path, train_dir, loader: str) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = cli.main(
        [
            *("train", "--config", "configs/tiny.py", "--workdir", str(tmp_path / "w")),
            *("--config.data.source=folder", f"--config.data.train_dir={train_dir}", f"--config.data.loader={loader}"),
        ]
    )
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("loader", ["numpy", pytest.param("tfds", marks=needs_tf)])
def test_train_on_a_folder_with_nothing_usable_is_one_message_before_any_work(tmp_path, capsys, unreadable_dir, loader):
    code, err = _bounded(lambda: _train(capsys, tmp_path, unreadable_dir, loader))
    assert code == errors.EXIT_NOTHING == errors.NoInputError.exit_code, err
    assert len(err) == 1 and err[0].startswith("error: none of the 5 training images") and "photo_0.jpg" in err[0], err
    assert not (tmp_path / "w").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    code, err = _train(capsys, tmp_path, empty, loader)
    assert code == errors.EXIT_NOTHING and len(err) == 1, err
    assert err[0].startswith(f"error: config.data.train_dir={empty}: no image files"), err
    assert not (tmp_path / "w").exists()
