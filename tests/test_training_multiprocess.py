"""Training on several processes (docs/architecture.md, "Several processes": the TPU-pod path), for real: `e4e-jax train` as 2 JAX
processes × 2 CPU devices (`jax.distributed` on 127.0.0.1, gloo collectives), against the same run as
1 process × 4 devices, and a 2-process `--resume` from a mid-run checkpoint.

Shown: the run with image grids, validation and bundle export completes on both processes; their
replicated states are bit-identical and within the 1-vs-N-devices tolerance of the 1-process run; each
process decodes only its rows of every training and test batch; metrics.jsonl has one line per step
and every image is written once; final_metrics.json and model/ exist; the resumed run is bit-identical
to the uninterrupted one. And: the rows a process loads come from the batch sharding (an interleaved
mesh), not from an assumed device order.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from tests.multiprocess import describe, launch
from tests.training_helpers import ONE_VS_MANY_RTOL, read_state, worst_relative_difference

pytestmark = pytest.mark.long_module  # minutes long: run first (tests/conftest.py)

PROCESSES, DEVICES = 2, 2  # 2 processes × 2 devices, against 1 process × 4 devices
BATCH = TEST_BATCH = PROCESSES * DEVICES  # one row per device
STEPS, MID = 6, 4  # the resumed run continues from checkpoint MID
IMAGE_EVERY, VAL_EVERY, SAVE_EVERY = 2, 3, 2
TRAIN_FILES, TEST_FILES, SIZE = 3 * BATCH, 2 * TEST_BATCH, 16  # 3 steps per epoch: the run crosses epochs
TIMEOUT_S = 400  # per run of the CLI (measured: about 30-70 s on 2 CPU cores)

# A tiny configs/tiny.py: 16 px generator (6 codes), small IR-SE widths, folder data, every loss but
# LPIPS (random LPIPS needs ≥ 32 px), progressive stages and R1 within the run.
OVERRIDES = [
    "--config.data.source=folder",
    f"--config.data.image_size=({SIZE},{SIZE})",
    f"--config.output_size=({SIZE},{SIZE})",
    "--config.generator.random_init={'size': %d, 'channels': (16, 16, 16), 'style_dim': 512, 'n_mlp': 1, "
    "'seed': 0}" % SIZE,
    "--config.encoder.kwargs.widths=(8,8,16,16)",
    "--config.encoder.kwargs.units=(1,1,1,1)",
    "--config.encoder.kwargs.style_channels=16",
    "--config.lpips_lambda=0",
    f"--config.batch_size={BATCH}",
    f"--config.test_batch_size={TEST_BATCH}",
    f"--config.max_steps={STEPS}",
    "--config.board_interval=1",
    f"--config.image_interval={IMAGE_EVERY}",
    f"--config.val_interval={VAL_EVERY}",
    f"--config.save_interval={SAVE_EVERY}",
    "--config.max_val_batches=-1",
    "--config.progressive_start=2",
    "--config.progressive_step_every=2",
    "--config.d_reg_every=2",
    "--config.w_pool_size=4",
]
ROWS_LOG = re.compile(r"process (\d+) reads (train step|test batch) (\d+) rows=(\[[^\]]*\]) files=(\[[^\]]*\])")


def _images(d: Path, n: int, seed: int) -> Path:
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(d / f"{i:02d}.png")
    return d


def _train(data: Path, workdir: Path, processes: int, devices: int, cache: Path, *extra: str, flags: bool = False):
    """The CLI run; the process group named by the JAX_* environment, or (flags) by --config.distributed.*."""
    argv = [
        "-m",
        "e4e_jax.cli",
        "train",
        "--config",
        "configs/tiny.py",
        "--workdir",
        str(workdir),
        "--log-level",
        "debug",
        f"--config.data.train_dir={data / 'train'}",
        f"--config.data.test_dir={data / 'test'}",
        *OVERRIDES,
        *extra,
    ]
    # One compilation cache for all runs: the resumed run reuses the executables of the first.
    results = launch(
        argv,
        processes,
        devices,
        TIMEOUT_S,
        extra_env={"JAX_COMPILATION_CACHE_DIR": str(cache)},
        flag_prefix="--config.distributed." if flags else None,
    )
    assert all(r.returncode == 0 for r in results), describe(results)
    return results


def _final(result) -> dict:
    """The final metrics the command printed (after any lines of the collectives library)."""
    text = "\n" + result.stdout
    return json.loads(text[text.index("\n{\n") + 1 :])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("multiprocess")
    data = root / "data"
    _images(data / "train", TRAIN_FILES, 0), _images(data / "test", TEST_FILES, 1)
    cache = root / "jax_cache"
    two = _train(data, root / "two", PROCESSES, DEVICES, cache)
    one = _train(data, root / "one", 1, PROCESSES * DEVICES, cache)
    # "Killed" after checkpoint MID: a fresh work directory holding only that checkpoint, resumed.
    (root / "resumed" / "checkpoints").mkdir(parents=True)
    shutil.copytree(root / "two" / "checkpoints" / str(MID), root / "resumed" / "checkpoints" / str(MID))
    resumed = _train(data, root / "resumed", PROCESSES, DEVICES, cache, "--resume", flags=True)
    return {"root": root, "data": data, "two": two, "one": one, "resumed": resumed}


def test_two_process_run_writes_every_output_once(runs):
    work = runs["root"] / "two"
    finals = [_final(r) for r in runs["two"]]
    assert [f["step"] for f in finals] == [STEPS] * PROCESSES
    assert json.loads((work / "final_metrics.json").read_text())["step"] == STEPS

    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in rows if r["kind"] == "scalars" and "train/loss" in r]
    assert train_steps == list(range(1, STEPS + 1))
    val_steps = [r["step"] for r in rows if r["kind"] == "scalars" and "test/loss" in r]
    assert val_steps == [s for s in range(1, STEPS + 1) if s % VAL_EVERY == 0 or s == STEPS]
    assert [r["kind"] for r in rows].count("hparams") == 1
    grids = [(r["step"], r["name"]) for r in rows if r["kind"] == "images"]
    want = sorted(
        [(s, "train/input_reconstruction") for s in range(IMAGE_EVERY, STEPS + 1, IMAGE_EVERY)]
        + [(s, "test/input_reconstruction") for s in val_steps]
    )
    assert sorted(grids) == want  # each grid recorded once (process 0 alone writes)
    pngs = sorted(p.relative_to(work / "images").as_posix() for p in (work / "images").rglob("*.png"))
    assert pngs == sorted(f"{name.replace('/', '_')}/{s:08d}_0.png" for s, name in grids)

    from e4e_jax.storage import bundle

    cfg, variables = bundle.load(work / "model", "e4e")
    assert cfg["trained_steps"] == STEPS
    state = read_state(work, STEPS)  # the bundle holds the final state's encoder (Lookahead fast weights)
    for a, b in zip(jax.tree.leaves(variables["encoder"]["params"]), jax.tree.leaves(state["encoder_params"]["fast"])):
        np.testing.assert_array_equal(a, b)


def test_processes_agree_bit_for_bit_and_match_one_process(runs):
    work_two, work_one = runs["root"] / "two", runs["root"] / "one"
    finals = [_final(r) for r in runs["two"]]
    # The loop compares the processes' state fingerprints (and would have failed); both report the same.
    assert finals[0]["state_sha256"] == finals[1]["state_sha256"]
    assert {k: v for k, v in finals[0].items() if k != "model_bundle"} == {
        k: v for k, v in finals[1].items() if k != "model_bundle"
    }
    two, one = read_state(work_two, STEPS), read_state(work_one, STEPS)
    worst, leaf = worst_relative_difference(one, two)
    assert worst <= ONE_VS_MANY_RTOL, (worst, leaf)
    # Not a comparison of untouched states: training moved them.
    moved, _ = worst_relative_difference(read_state(work_two, SAVE_EVERY), two)
    assert moved > ONE_VS_MANY_RTOL * 100, moved
    print(
        f"2 processes × {DEVICES} vs 1 × {PROCESSES * DEVICES} devices after {STEPS} steps: worst relative "
        f"difference {worst:.3g} ({leaf})"
    )


def test_each_process_decodes_only_its_rows(runs):
    from e4e_jax.data import epochs, folder

    files = {kind: [p.name for p in folder.list_images(runs["data"] / kind)] for kind in ("train", "test")}
    seed = json.loads((runs["root"] / "two" / "config.json").read_text())["seed"]
    order = epochs.EpochOrder(TRAIN_FILES, BATCH, seed)
    reads: dict[tuple[str, int], dict[int, tuple[list, list]]] = {}
    for p, result in enumerate(runs["two"]):
        for proc, what, k, rows, names in ROWS_LOG.findall(result.stderr):
            assert int(proc) == p
            key = (what, int(k))
            assert p not in reads.setdefault(key, {}), f"process {p} read {key} twice"
            reads[key][p] = (json.loads(rows), json.loads(names))
    wanted = [("train step", s) for s in range(STEPS)] + [("test batch", k) for k in range(TEST_FILES // TEST_BATCH)]
    for what, k in wanted:
        per = reads.get((what, k), {})
        assert sorted(per) == list(range(PROCESSES)), (what, k, per)
        rows = [r for p in per for r in per[p][0]]
        assert sorted(rows) == list(range(BATCH)), (what, k, per)  # disjoint, and together the whole batch
        for p, (mine, names) in per.items():
            assert len(mine) == BATCH // PROCESSES
            if what == "train step":
                want = [files["train"][i] for i in order.indices(k)[1][mine]]
            else:
                want = [files["test"][k * TEST_BATCH + r] for r in mine]
            assert names == want, (what, k, p)


def test_two_process_resume_is_bit_identical(runs):
    full, resumed = runs["root"] / "two", runs["root"] / "resumed"
    finals = [_final(r) for r in runs["resumed"]]
    assert {f["state_sha256"] for f in finals} == {_final(runs["two"][0])["state_sha256"]}
    a, b = read_state(full, STEPS), read_state(resumed, STEPS)
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(y), np.asarray(x), err_msg=jax.tree_util.keystr(path))
    steps = [
        json.loads(line)["step"]
        for line in (resumed / "metrics.jsonl").read_text().splitlines()
        if '"train/loss"' in line
    ]
    assert steps == list(range(MID + 1, STEPS + 1))


# ----------------------------------------------------------------------------- rows from the sharding


def _rows_worker(data: str) -> None:
    """In each of 2 processes: a mesh whose device order alternates between the processes; the global
    training and test batches built from each process's rows must be the batches one process reads."""
    from jax.experimental import multihost_utils

    from e4e_jax.configs import tiny
    from e4e_jax.data import folder, tfds_pipeline, train_input
    from e4e_jax.runtime import distributed, sharding

    assert distributed.initialize() and jax.process_count() == PROCESSES
    by_process = [[d for d in jax.devices() if d.process_index == p] for p in range(PROCESSES)]
    mesh = sharding.data_mesh([d for group in zip(*by_process) for d in group])  # p0 d0, p1 d0, p0 d1, ...
    config = tiny.get_config()
    config.data.source, config.data.image_size = "folder", (SIZE, SIZE)
    config.data.train_dir, config.data.test_dir = f"{data}/train", f"{data}/test"
    config.batch_size = config.test_batch_size = BATCH
    files = folder.list_images(config.data.train_dir)
    whole = train_input.NumpyFolderLoader(files, BATCH, (SIZE, SIZE), config.seed, config.data.random_flip, 1)
    loaders = ["numpy"] + (["tfds"] if tfds_pipeline.tf_available() else [])
    for loader in loaders:
        config.data.loader = loader
        it = train_input.train_batches(config, None, mesh, start_step=1)
        for step in (1, 2):
            got = multihost_utils.process_allgather(next(it)["image"], tiled=True)
            np.testing.assert_allclose(got, whole.local_batch(step), atol=1e-6, err_msg=f"{loader} step {step}")
        it.close()
    test_files = folder.list_images(config.data.test_dir)
    for k, b in enumerate(train_input.eval_batches(config, None, mesh)):
        want = np.stack([folder.load_image(p, (SIZE, SIZE)) for p in test_files[k * BATCH : (k + 1) * BATCH]])
        np.testing.assert_array_equal(multihost_utils.process_allgather(b["image"], tiled=True), want)
    rows = sharding.process_rows(sharding.batch_sharding(mesh), BATCH)
    print(json.dumps({"rows": rows.tolist(), "loaders": loaders}))


def test_rows_come_from_the_sharding_not_the_device_order(tmp_path):
    data = tmp_path / "data"
    _images(data / "train", TRAIN_FILES, 0), _images(data / "test", TEST_FILES, 1)
    results = launch(["-m", "tests.test_training_multiprocess", "rows", str(data)], PROCESSES, DEVICES, TIMEOUT_S)
    assert all(r.returncode == 0 for r in results), describe(results)
    rows = [json.loads(r.stdout.strip().splitlines()[-1])["rows"] for r in results]
    assert sorted(r for rs in rows for r in rs) == list(range(BATCH))
    # Interleaved: process p holds rows p, p + 2 (an assumed contiguous split would load the wrong images).
    assert rows == [list(range(p, BATCH, PROCESSES)) for p in range(PROCESSES)]


if __name__ == "__main__":
    if sys.argv[1] == "rows":
        _rows_worker(sys.argv[2])
