"""Issue 30, items 4 and 5, for bundles: every file a bundle writes is recorded (size and sha256 in its
checksums.json) and checked when it is loaded, so a flipped byte is one error naming the file and the fix
instead of other weights; bundles from before the checksums still load (said once); `weights_id` digests
the checksums; a damaged OCDBT file is one error line, without the "Event loop is closed" tracebacks a
failed orbax restore printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from e4e_jax.cli import main as cli_main
from e4e_jax.models.stylegan2 import StyleGAN2Config, init_variables
from e4e_jax.storage import bundle

ROOT = Path(__file__).resolve().parents[1]
GEN_CFG = StyleGAN2Config(size=16, channels=(16, 16, 8), n_mlp=2)  # its mapping alone is a 2 MB data file


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A stylegan2 bundle as bundle.save writes it, and latents that fit it."""
    root = tmp_path_factory.mktemp("bundles")
    variables = init_variables(GEN_CFG, jax.random.key(0))
    bundle.save(root / "g", "stylegan2", GEN_CFG.to_dict(), variables)
    np.save(root / "w.npy", np.zeros((1, GEN_CFG.n_latent, 512), np.float32))
    return {"g": root / "g", "w": root / "w.npy", "variables": variables}


def _copy(src: Path, dst: Path, *, without_checksums: bool = False) -> Path:
    shutil.copytree(src, dst)
    if without_checksums:  # as written by an e4e-jax older than the checksums
        (dst / bundle.CHECKSUMS_FILE).unlink()
    return dst


def _largest(model: Path) -> str:
    """Path in the bundle of its biggest data file: hashed while orbax restores it."""
    files = sorted((p for p in (model / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    assert files[-1].stat().st_size > bundle.SMALL_FILE_BYTES  # else this would test the other path
    return files[-1].relative_to(model).as_posix()


def _record(model: Path, checksums) -> None:
    (model / bundle.CHECKSUMS_FILE).write_text(json.dumps(checksums))


def _flip(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x01
    path.write_bytes(bytes(data))


def _synthesize(model: Path, latents: Path, out: Path, capsys) -> list[str]:
    """stderr lines of `e4e-jax synthesize` refusing `model` (exit 2, nothing written)."""
    assert cli_main(["synthesize", "--model", str(model), "--latents", str(latents), "--output", str(out)]) == 2
    assert not out.exists()
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_save_records_every_file(written):
    model = written["g"]
    files = {p.relative_to(model).as_posix(): p for p in model.rglob("*") if p.is_file()}
    recorded = json.loads((model / bundle.CHECKSUMS_FILE).read_text())
    assert set(recorded) == set(files) - {bundle.CHECKSUMS_FILE} and "config.json" in recorded and len(files) > 4
    for rel, entry in recorded.items():
        data = files[rel].read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}, rel


@pytest.mark.parametrize("where", ["data", "manifest", "config"])
def test_a_flipped_byte_is_named_with_the_fix(written, tmp_path, capsys, where):
    """A flipped bit in the arrays' data (hashed while orbax restores; it loaded silently before), in
    orbax's manifest (checked before orbax opens it) or in config.json: one line naming the file."""
    model = _copy(written["g"], tmp_path / "g")
    rel = {"data": _largest(model), "manifest": "params/manifest.ocdbt", "config": "config.json"}[where]
    if where == "config":  # a digit that reads as well as the right one, and no shape can tell
        text = (model / rel).read_text()
        assert text.count('"lr_mlp": 0.01') == 1
        (model / rel).write_text(text.replace('"lr_mlp": 0.01', '"lr_mlp": 0.02'))
    else:
        _flip(model / rel)
    err = _synthesize(model, written["w"], tmp_path / "o.npy", capsys)
    assert len(err) == 1 and err[0].startswith("error:"), err
    assert f"{rel} differs from the file written with the bundle" in err[0] and "re-create it" in err[0], err


def test_truncated_and_missing_files_are_named_before_orbax_reads(written, tmp_path, capsys):
    cut = _copy(written["g"], tmp_path / "cut")
    rel = _largest(cut)
    size = (cut / rel).stat().st_size
    with open(cut / rel, "r+b") as f:
        f.truncate(size // 2)
    gone = _copy(written["g"], tmp_path / "gone")
    (gone / "params" / "_METADATA").unlink()
    for model, expected in (
        (cut, f"{size // 2} bytes instead of the {size} written"),
        (gone, "params/_METADATA is missing"),
    ):
        with pytest.raises(bundle.BundleError) as info:
            bundle.load(model)
        assert str(model) in str(info.value) and expected in str(info.value), info.value
    assert "Event loop is closed" not in capsys.readouterr().err


def test_a_converted_bundle_names_its_source(tmp_path):
    torch = pytest.importorskip("torch")
    from tests.refs.rosinality_stylegan2 import Generator, channel_table
    from tools.convert_weights.__main__ import main as convert_main

    # 256 channels: each 3x3 conv's weight (2.4 MB) is a data file above SMALL_FILE_BYTES however orbax
    # splits the arrays over its files (with 8 channels the largest was 1 MiB, under it on a loaded machine).
    g = Generator(16, style_dim=512, n_mlp=2, channels={r: 256 for r in channel_table(1)}).randomize_()
    src = tmp_path / "g.pt"
    torch.save({"g_ema": g.state_dict(), "latent_avg": torch.zeros(512)}, src)
    assert convert_main(["stylegan2", str(src), "--out", str(tmp_path / "b")]) == 0
    rel = _largest(tmp_path / "b")
    _flip(tmp_path / "b" / rel, at=0.9)
    with pytest.raises(bundle.BundleError, match=f"{rel} differs .* re-convert it from {src}"):
        bundle.load(tmp_path / "b")


def test_a_bundle_without_checksums_loads_and_is_said_once(written, tmp_path, capsys):
    old = _copy(written["g"], tmp_path / "old", without_checksums=True)
    for _ in range(2):
        _, variables = bundle.load(old, "stylegan2")
        np.testing.assert_array_equal(
            variables["params"]["mapping"]["dense_0"]["weight"],
            np.asarray(written["variables"]["params"]["mapping"]["dense_0"]["weight"]),
        )
    notes = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(notes) == 1 and notes[0].startswith(f"note: {old} ") and "no checksums.json" in notes[0], notes


def test_malformed_checksums_are_a_message(written, tmp_path):
    for name, value in (("str", "abc"), ("outside", {"../config.json": {"bytes": 1, "sha256": "0" * 64}})):
        model = _copy(written["g"], tmp_path / name)
        _record(model, value)
        with pytest.raises(bundle.BundleError, match=f"{model / bundle.CHECKSUMS_FILE} is malformed"):
            bundle.load(model)
    (model / bundle.CHECKSUMS_FILE).write_bytes(b"\xff{")
    with pytest.raises(bundle.BundleError, match=f"{model / bundle.CHECKSUMS_FILE} cannot be read"):
        bundle.load(model)


def test_weights_id_digests_the_checksums(written, tmp_path):
    """Same file names and sizes, other bytes in a large data file: another model (names and sizes alone,
    the identity of a bundle without checksums, could not tell them apart). A copy is the same model."""
    same = _copy(written["g"], tmp_path / "same")
    assert bundle.weights_id(same) == bundle.weights_id(written["g"])
    other = _copy(written["g"], tmp_path / "other")
    rel = _largest(other)
    _flip(other / rel)
    checksums = json.loads((other / bundle.CHECKSUMS_FILE).read_text())
    checksums[rel]["sha256"] = bundle.sha256_of(other / rel)  # as its save records
    _record(other, checksums)
    assert bundle.weights_id(other) != bundle.weights_id(written["g"])
    old_a = _copy(written["g"], tmp_path / "old_a", without_checksums=True)
    old_b = _copy(other, tmp_path / "old_b", without_checksums=True)
    assert bundle.weights_id(old_a) == bundle.weights_id(old_b)  # what the checksums add


@pytest.mark.parametrize("checksums", [True, False])
def test_a_damaged_ocdbt_file_is_one_line_without_event_loop_noise(written, tmp_path, checksums):
    """As a user runs it (a fresh process): a bundle whose OCDBT data file is cut short. Without checksums
    orbax's restore fails, and its closed event loop used to print 90-130 lines of tracebacks after the
    error line."""
    model = _copy(written["g"], tmp_path / "g", without_checksums=not checksums)
    rel = _largest(model)
    with open(model / rel, "r+b") as f:
        f.truncate(f.seek(0, os.SEEK_END) // 2)
    r = subprocess.run(
        [sys.executable, "-m", "e4e_jax.cli", "synthesize", "--model", str(model), "--latents", str(written["w"])]
        + ["--output", str(tmp_path / "o.npy")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and "Event loop is closed" not in r.stderr, r.stderr
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    if checksums:
        assert lines == errors and f"{rel} differs" in errors[0], r.stderr
    else:
        assert len(lines) == 2 and lines[0].startswith("note:") and "params/ cannot be read" in errors[0], r.stderr
    assert not (tmp_path / "o.npy").exists()
