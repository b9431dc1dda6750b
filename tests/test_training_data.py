"""Training input: deterministic per-step batches, per-process slices, corrupt files skipped, the tfds
pipeline (where TensorFlow is installed) reading the same batches as the TF-free loader, synthetic data."""

from __future__ import annotations

import logging

import jax
import numpy as np
import pytest
from PIL import Image

from e4e_jax.configs import tiny
from e4e_jax.data import epochs, folder, tfds_pipeline, train_input
from e4e_jax.runtime import sharding


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("train_images")
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)).save(d / f"img_{i:02d}.png")
    return d


@pytest.fixture(scope="module")
def image_dir_with_bad(tmp_path_factory, image_dir):
    d = tmp_path_factory.mktemp("train_images_bad")
    for p in sorted(image_dir.iterdir()):
        (d / p.name).write_bytes(p.read_bytes())
    (d / "img_03.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")  # corrupt
    return d


def _files(d):
    return folder.list_images(d)


def test_batches_are_a_function_of_the_step(image_dir):
    files = _files(image_dir)
    a = train_input.NumpyFolderLoader(files, 4, (8, 8), seed=3, num_workers=2)
    b = train_input.NumpyFolderLoader(files, 4, (8, 8), seed=3, num_workers=2)
    for step in (0, 1, 2, 7):
        np.testing.assert_array_equal(a.local_batch(step), b.local_batch(step))
    # 10 files, batch 4: 2 steps per epoch (drop_last), no file twice within an epoch.
    order = epochs.EpochOrder(10, 4, 3)
    e0 = np.concatenate([order.indices(0)[1], order.indices(1)[1]])
    assert len(set(e0.tolist())) == 8 and order.indices(2)[0] == 1
    assert not np.array_equal(order.permutation(0), order.permutation(1))
    # Contents: the official transform of the chosen file, flipped when its coin says so.
    epoch, idx = order.indices(1)
    got = a.local_batch(1)
    for row, i in enumerate(idx):
        want = folder.load_image(files[i], (8, 8))
        if epochs.flip_draw(3, epoch, int(i)):
            want = want[:, ::-1]
        np.testing.assert_array_equal(got[row], want)
    flips = [epochs.flip_draw(3, e, i) for e in range(20) for i in range(10)]
    assert 70 <= sum(flips) <= 130
    a.close(), b.close()


def test_processes_read_their_rows_of_the_global_batch(image_dir):
    files = _files(image_dir)
    whole = train_input.NumpyFolderLoader(files, 4, (8, 8), seed=1, num_workers=1)
    # Rows as a process holds them: contiguous, or interleaved (a mesh whose device order alternates).
    for split in ([[0, 1], [2, 3]], [[0, 2], [1, 3]]):
        parts = [train_input.NumpyFolderLoader(files, 4, (8, 8), seed=1, num_workers=1, rows=r) for r in split]
        for step in range(3):
            want = whole.local_batch(step)
            for rows, part in zip(split, parts):
                np.testing.assert_array_equal(part.local_batch(step), want[rows])


def test_process_rows_follow_the_sharding():
    mesh = sharding.data_mesh(jax.devices()[:1])
    np.testing.assert_array_equal(sharding.process_rows(sharding.batch_sharding(mesh), 4), np.arange(4))


def test_corrupt_file_is_logged_and_replaced(image_dir_with_bad, caplog):
    files = _files(image_dir_with_bad)
    bad = [i for i, f in enumerate(files) if f.name == "img_03.png"][0]
    loader = train_input.NumpyFolderLoader(files, 5, (8, 8), seed=0, num_workers=2)
    order = epochs.EpochOrder(10, 5, 0)
    step = 0 if bad in order.indices(0)[1] else 1
    with caplog.at_level(logging.WARNING):
        x = loader.local_batch(step)
    assert x.shape == (5, 8, 8, 3) and np.all(np.isfinite(x)) and np.abs(x).max() <= 1
    assert any("img_03.png" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(loader.local_batch(step), x)  # deterministic, the bad file stays known
    with pytest.raises(ValueError, match="fewer than one global batch"):
        epochs.EpochOrder(3, 4, 0)


@pytest.mark.skipif(not tfds_pipeline.tf_available(), reason="tensorflow / tensorflow-datasets not installed")
def test_tfds_pipeline_reads_the_same_batches(image_dir, image_dir_with_bad):
    files = _files(image_dir)
    np_loader = train_input.NumpyFolderLoader(files, 4, (8, 8), seed=5, num_workers=1)
    it = tfds_pipeline.local_batches(files, 4, (8, 8), 5, True, 1)  # from step 1 (a resumed run)
    for step in (1, 2, 3):
        np.testing.assert_allclose(next(it), np_loader.local_batch(step), atol=1e-6)
    # Per-process rows (here interleaved, as a process of an alternating mesh holds them).
    it1 = tfds_pipeline.local_batches(files, 4, (8, 8), 5, True, 0, [1, 3])
    np.testing.assert_allclose(next(it1), np_loader.local_batch(0)[[1, 3]], atol=1e-6)
    # Resizing goes through TF's antialiased bilinear (PIL's stand-in): close, not identical.
    it2 = tfds_pipeline.local_batches(files, 4, (6, 6), 5, False, 0)
    pil = train_input.NumpyFolderLoader(files, 4, (6, 6), seed=5, random_flip=False, num_workers=1)
    assert np.mean(np.abs(next(it2) - pil.local_batch(0))) < 0.1
    # A corrupt file is dropped, the pipeline keeps going.
    bad = tfds_pipeline.local_batches(_files(image_dir_with_bad), 2, (8, 8), 0, True, 0)
    batches = [next(bad) for _ in range(8)]
    assert all(b.shape == (2, 8, 8, 3) and np.all(np.isfinite(b)) for b in batches)


def test_synthetic_source_is_deterministic_and_image_like():
    from e4e_jax.training import networks
    from tests.training_helpers import small_config

    config = small_config(batch_size=4)
    run = networks.build(config)
    mesh = sharding.data_mesh(jax.devices()[:1])
    it = train_input.train_batches(config, run.generator_source(), mesh, start_step=2)
    first = np.asarray(next(it)["image"])
    it.close()
    again = np.asarray(next(train_input.train_batches(config, run.generator_source(), mesh, start_step=2))["image"])
    np.testing.assert_array_equal(first, again)
    assert first.shape == (4, 8, 8, 3) and np.abs(first).max() <= 1.0 and first.std() > 0.05
    ev = train_input.eval_batches(config, run.generator_source(), mesh)
    assert len(ev) == 1 and ev[0]["image"].shape == (4, 8, 8, 3)
    assert not np.array_equal(np.asarray(ev[0]["image"]), first)


def test_test_folder_batches_in_sorted_order_with_a_bad_file_replaced(image_dir_with_bad, caplog):
    config = tiny.get_config()
    config.data.source, config.data.test_dir, config.data.image_size = "folder", str(image_dir_with_bad), (8, 8)
    config.test_batch_size, config.max_val_batches = 4, -1
    mesh = sharding.data_mesh(jax.devices()[:1])
    files = _files(image_dir_with_bad)
    with caplog.at_level(logging.WARNING):
        batches = train_input.eval_batches(config, None, mesh)
    assert len(batches) == len(files) // 4  # drop_last; the bad file does not shorten the set
    got = np.concatenate([np.asarray(b["image"]) for b in batches])
    names = [f.name for f in files]
    bad = names.index("img_03.png")
    for row in range(got.shape[0]):
        src = bad + 1 if row == bad else row  # the next readable file of the sorted list takes its place
        np.testing.assert_array_equal(got[row], folder.load_image(files[src], (8, 8)))
    assert any("img_03.png" in r.getMessage() for r in caplog.records)
