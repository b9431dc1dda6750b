"""Issue 30, group 1: no command replaces or deletes a file it did not write, `--overwrite` or not.

Each command marks the folder it writes into as its own (`.e4e-jax.owner`, e4e_jax/storage/outdir.py) before any
output, and refuses, naming the entries, a folder that holds anything else: the user's files (even under
the names the command uses), another command's output, an output of a version before the mark. The user's
files are compared byte for byte before and after; a refusal is one `error:` line and exit status 2.
"""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

from e4e_jax.cli import main as cli_main
from e4e_jax.storage import fileio, outdir
from tests import command_fixtures as fx
from tools.convert_weights.__main__ import main as convert_main


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return fx.make_models(tmp_path_factory.mktemp("models"))


def _refused(capsys, code: int) -> str:
    """The one `error:` line of a refused command (exit status 2, no traceback)."""
    err = capsys.readouterr().err
    lines = fx.error_lines(err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, (code, err)
    return lines[0]


def _users_folder(root, files: dict[str, bytes]):
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return fx.snapshot(root)


def test_invert_keeps_a_folder_of_the_users_files(models, tmp_path, capsys):
    """The user's own latents.npy, files.txt, report.json, skipped.txt and a JPEG named as invert names its
    reconstructions, no mark: --overwrite and --resume are refused, every file kept."""
    out = tmp_path / "D"
    before = _users_folder(
        out,
        {
            "latents.npy": b"mine",
            "files.txt": b"a.jpg\n",
            "report.json": b"{}",
            "skipped.txt": b"",
            "inversions/00000_car_img.jpg": b"my photo",
        },
    )
    for flag in ("--overwrite", "--resume", None):
        argv = ["invert", "--model", models["e4e"], "--images", models["photos"], "--output", out, "--quiet"]
        line = _refused(capsys, cli_main([str(a) for a in argv] + ([flag] if flag else [])))
        assert "did not write it" in line and "files.txt, inversions/, latents.npy" in line, line
    assert fx.snapshot(out) == before


def test_align_keeps_a_folder_of_the_users_files(models, tmp_path, capsys):
    out = tmp_path / "D"
    before = _users_folder(out, {"input_img.png": b"mine", "report.json": b"{}", "landmarks/input_img.json": b"{}"})
    for flag in ("--overwrite", "--resume"):
        argv = ["align", "--images", str(models["photos"]), "--output", str(out), flag]
        assert "input_img.png, landmarks/, report.json" in _refused(capsys, cli_main(argv))
    assert fx.snapshot(out) == before


def test_edit_keeps_a_folder_of_the_users_files(models, tmp_path, capsys):
    out = tmp_path / "D"
    names = ("latents.npy", "grid.png", "images/00000_s+1.png", "images/00001_s+1.png")
    before = _users_folder(out, {n: f"mine: {n}".encode() for n in names})
    argv = ["edit", "--model", models["g"], "--latents", models["w"], "--output", out, "--sefa", "0"]
    line = _refused(capsys, cli_main([str(a) for a in argv] + ["--strengths", "1", "--overwrite"]))
    assert "grid.png, images/, latents.npy" in line
    assert fx.snapshot(out) == before


def test_synthesize_keeps_a_png_folder_of_the_users_files(models, tmp_path, capsys):
    png = tmp_path / "P"
    before = _users_folder(png, {"000000.png": b"my picture"})
    argv = ["synthesize", "--model", models["g"], "--latents", models["w"], "--output", tmp_path / "x.npy"]
    assert "000000.png" in _refused(capsys, cli_main([str(a) for a in argv] + ["--png", str(png), "--overwrite"]))
    assert fx.snapshot(png) == before and not (tmp_path / "x.npy").exists()


def test_evaluate_replaces_only_its_own_metrics(models, tmp_path, capsys):
    """A metrics.json evaluate did not write is kept (there is no --overwrite to ask for it); its own is
    replaced by a rerun."""
    users, own = tmp_path / "D", tmp_path / "E"
    before = _users_folder(users, {"metrics.json": b'{"mine": 1}'})
    argv = ["evaluate", "--model", str(models["e4e"]), "--images", str(models["photos"]), "--num-samples", "0"]
    assert "metrics.json" in _refused(capsys, cli_main(argv + ["--output", str(users)]))
    assert fx.snapshot(users) == before
    assert cli_main(argv + ["--output", str(own)]) == 0
    first = json.loads((own / "metrics.json").read_text())
    assert cli_main(argv + ["--output", str(own), "--name", "again"]) == 0
    assert json.loads((own / "metrics.json").read_text())["n_images"] == first["n_images"] == fx.N_PHOTOS
    assert sorted(p.name for p in own.iterdir()) == [outdir.OWNER_NAME, "metrics.json"]


def test_train_keeps_a_workdir_of_the_users_files(tmp_path, capsys):
    """A work directory holding the user's config.json, model/ and metrics.jsonl: refused before any work
    (no checkpoints/ made), with --resume too."""
    work = tmp_path / "W"
    before = _users_folder(
        work, {"config.json": b"{}", "model/config.json": b'{"kind": "e4e"}', "metrics.jsonl": b'{"step": 1}\n'}
    )
    cfg = fx.train_config(tmp_path)
    for flag in ([], ["--resume"]):
        line = _refused(capsys, cli_main(["train", "--config", str(cfg), "--workdir", str(work), *flag]))
        assert "config.json, metrics.jsonl, model/" in line and "--workdir" in line
    assert fx.snapshot(work) == before


def test_tune_keeps_a_folder_of_the_users_files(models, tmp_path, capsys):
    """Files named as tune names its outputs (metrics.json, a reconstruction, a generator bundle), no mark:
    refused before any input is read, --overwrite and --resume included."""
    out = tmp_path / "D"
    before = _users_folder(
        out,
        {
            "metrics.json": b"{}",
            "inversions/00000_a.jpg": b"my photo",
            "generators/00000_a/config.json": b'{"kind": "stylegan2_delta"}',
        },
    )
    argv = ["tune", "--model", str(models["e4e"]), "--lpips", str(models["g"]), "--inversions", str(models["photos"])]
    for flag in ("--overwrite", "--resume"):
        line = _refused(capsys, cli_main(argv + ["--output", str(out), flag]))
        assert "did not write it" in line and "generators/, inversions/, metrics.json" in line, line
    assert fx.snapshot(out) == before


def test_quickstart_keeps_the_users_files(tmp_path, capsys):
    work = tmp_path / "Q"
    before = _users_folder(work, {"metrics.json": b"mine"})
    assert "metrics.json" in _refused(capsys, cli_main(["quickstart", "--workdir", str(work), "--steps", "1"]))
    assert fx.snapshot(work) == before


def test_another_commands_output_is_refused(models, tmp_path, capsys):
    """synthesize's PNG folder is not edit's, nor invert's, nor evaluate's; and a file added to it later is
    not synthesize's either."""
    png = tmp_path / "P"
    synth = ["synthesize", "--model", str(models["g"]), "--latents", str(models["w"])]
    assert cli_main(synth + ["--output", str(tmp_path / "x.npy"), "--png", str(png)]) == 0
    before = fx.snapshot(png)
    edit = ["edit", "--model", str(models["g"]), "--latents", str(models["w"]), "--output", str(png)]
    assert "output of `e4e-jax synthesize`" in _refused(capsys, cli_main(edit + ["--sefa", "0", "--strengths", "1"]))
    invert = ["invert", "--model", str(models["e4e"]), "--images", str(models["photos"]), "--output", str(png)]
    assert "output of `e4e-jax synthesize`" in _refused(capsys, cli_main(invert + ["--overwrite"]))
    assert fx.snapshot(png) == before
    (png / "notes.txt").write_text("mine")
    again = synth + ["--output", str(tmp_path / "y.npy"), "--png", str(png), "--overwrite"]
    assert "did not write: notes.txt" in _refused(capsys, cli_main(again))
    assert (png / "notes.txt").read_text() == "mine" and fx.snapshot(png) == {**before, "notes.txt": b"mine"}


def test_a_bundle_with_the_users_file_is_not_replaced(models, tmp_path, capsys):
    out = tmp_path / "b"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"kind": "stylegan2"}))
    (out / "README").write_text("my notes on this model")
    before = fx.snapshot(out)
    # Any source: the folder is refused before it is read.
    line = _refused(capsys, convert_main(["stylegan2", str(models["w"]), "--out", str(out), "--overwrite"]))
    assert "not part of a bundle: README" in line
    assert fx.snapshot(out) == before


def test_a_killed_runs_partial_output_is_recognised(models, tmp_path):
    """edit killed (kill -9) half-way through its writes: its folder is still its own (the mark comes first),
    so --overwrite replaces the partial output; without it the rerun is refused."""
    out = tmp_path / "D"
    cmd = fx.e4e_jax(
        "edit", "--model", models["g"], "--latents", models["w"], "--output", out, "--sefa", "0", "--strengths", "1"
    )
    # Writes: the mark, latents.npy, then images: stop inside the first image's write.
    code, _ = fx.stopped_at(cmd, fileio.WRITE_POINT, tmp_path, sig=signal.SIGKILL, k=3)
    assert code == -signal.SIGKILL
    assert (out / outdir.OWNER_NAME).is_file() and (out / "latents.npy").is_file() and fx.temporaries(out)
    again = fx.run(cmd, tmp_path)
    assert again.returncode == 2 and "--overwrite" in fx.error_lines(again.stderr)[0], again.stderr
    r = fx.run(cmd + ["--overwrite"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(fx.snapshot(out)) == [
        outdir.OWNER_NAME,
        "grid.png",
        "images/00000_s+1.png",
        "images/00001_s+1.png",
        "latents.npy",
    ]


def test_an_unfinished_invert_of_a_version_before_the_mark_is_resumed(models, tmp_path, capsys):
    """A run of a version that wrote no mark left its plan (.e4e-invert/plan.json): --resume adopts the
    folder and finishes it; a plain rerun is refused with that hint. A finished old output (no plan) is
    refused with a way on."""
    from e4e_jax.data import folder
    from e4e_jax.jobs.invert import job, layout, plan

    out = tmp_path / "old"
    opts = job.InvertOptions(model=str(models["e4e"]), images=models["photos"], output=out, batch_size=2)
    files = [str(p) for p in folder.list_images(models["photos"])]
    layout.Layout(out).write_plan(plan.make_plan(opts, files, 2, 1))
    argv = ["invert", "--model", str(models["e4e"]), "--images", str(models["photos"]), "--output", str(out)]
    argv += ["--batch-size", "2", "--quiet"]
    assert "finish it with --resume" in _refused(capsys, cli_main(argv))
    assert cli_main(argv + ["--resume"]) == 0
    assert outdir.owner(out) == "invert" and np.load(out / "latents.npy").shape[0] == fx.N_PHOTOS

    (out / outdir.OWNER_NAME).unlink()  # the same output as a version before the mark left it
    line = _refused(capsys, cli_main(argv + ["--overwrite"]))
    assert "older e4e-jax" in line and "move it away" in line


def test_overwrite_never_follows_a_link_out_of_the_folder(models, tmp_path, capsys):
    """An edit output whose images/ became a link to the user's folder of files named as edit names its
    images: the link is not edit's, --overwrite is refused and nothing behind it is touched."""
    out, users = tmp_path / "D", tmp_path / "mine"
    argv = ["edit", "--model", str(models["g"]), "--latents", str(models["w"]), "--output", str(out), "--sefa", "0"]
    assert cli_main(argv + ["--strengths", "1"]) == 0
    images = out / "images"
    for p in images.iterdir():
        p.unlink()
    images.rmdir()
    before = _users_folder(users, {"00000_s+1.png": b"my picture"})
    images.symlink_to(users)
    assert "did not write: images" in _refused(capsys, cli_main(argv + ["--strengths", "1", "--overwrite"]))
    assert fx.snapshot(users) == before
