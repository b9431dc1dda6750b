"""The hostile-input probe of issue 16, as tests: wrong files, odd values, leftovers of a kill and two runs
at once, tried on every command with tiny random bundles. Each failure must be one line `error: ...` with
exit status 2 (or an argparse error at parse time), and leave the user's files and no partial output behind.

Invert and train have their own tests of their parts (locks, --resume); the README's "Failure behaviour"
section describes the whole.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from e4e_jax import bundle, outdir
from e4e_jax.cli import COMMANDS, build_parser
from e4e_jax.cli import main as cli_main
from e4e_jax.data import folder
from e4e_jax.models.encoder import Encoder4Editing
from e4e_jax.models.stylegan2 import StyleGAN2Config, init_variables

torch = pytest.importorskip("torch")
from tests.refs.rosinality_stylegan2 import Generator as TorchGenerator  # noqa: E402
from tests.refs.rosinality_stylegan2 import channel_table  # noqa: E402
from tools.convert_weights.__main__ import build_parser as convert_parser  # noqa: E402
from tools.convert_weights.__main__ import main as convert_main  # noqa: E402
from tools.convert_weights.state_dicts import KeyTracker, conv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GEN_CFG = StyleGAN2Config(size=16, channels=(16, 16, 8), n_mlp=2)
ENC_SIZES = dict(widths=(16, 32, 64, 128), units=(1, 1, 1, 1))  # a toy encoder: fast to build
ENC_HW = (256, 256)  # what evaluate's metrics take
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny stylegan2 bundle, a tiny e4e bundle, and W+ latents that fit them."""
    root = tmp_path_factory.mktemp("models")
    gen_vars = init_variables(GEN_CFG, jax.random.key(0))
    bundle.save(root / "g", "stylegan2", GEN_CFG.to_dict(), gen_vars)
    enc = Encoder4Editing(n_styles=GEN_CFG.n_latent, **ENC_SIZES)
    enc_vars = jax.jit(enc.init)(jax.random.key(1), jnp.zeros((1, *ENC_HW, 3)))
    arch = {
        "encoder": {
            "mode": "e4e",
            "encoder_type": "Encoder4Editing",
            "n_styles": GEN_CFG.n_latent,
            "num_layers": 50,
            "backbone_mode": "ir_se",
            "input_size": list(ENC_HW),
            **{k: list(v) for k, v in ENC_SIZES.items()},
        },
        "generator": GEN_CFG.to_dict(),
        "domain": "ffhq",
    }
    variables = {
        "encoder": enc_vars,
        "generator": gen_vars,
        "latent_avg": np.zeros((GEN_CFG.n_latent, 512), np.float32),
    }
    bundle.save(root / "e4e", "e4e", arch, variables)
    latents = np.random.default_rng(0).standard_normal((2, GEN_CFG.n_latent, 512)).astype(np.float32)
    np.save(root / "w.npy", latents)
    return {"root": root, "g": root / "g", "e4e": root / "e4e", "w": root / "w.npy", "latents": latents}


@pytest.fixture(scope="module")
def rosinality_pt(tmp_path_factory):
    """A small rosinality generator checkpoint ({'g_ema': state dict, 'latent_avg'}) and its state dict."""
    torch.manual_seed(0)
    tg = TorchGenerator(16, style_dim=16, n_mlp=2, channels={r: 8 for r in channel_table(1)}).randomize_()
    sd = {k: v.detach().clone() for k, v in tg.state_dict().items()}
    path = tmp_path_factory.mktemp("pt") / "g.pt"
    torch.save({"g_ema": sd, "latent_avg": torch.zeros(16)}, path)
    return path, sd


def _save_pt(path: Path, sd: dict, **extra) -> Path:
    torch.save({"g_ema": sd, "latent_avg": torch.zeros(16), **extra}, path)
    return path


def _error(capsys) -> str:
    """The stderr of the last command: exactly one `error: ...` line, no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _parse_error(argv: list[str], parser=None) -> None:
    with pytest.raises(SystemExit) as e:
        (parser or build_parser()).parse_args(argv)
    assert e.value.code == 2


def _image(path: Path, seed: int) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*ENC_HW, 3), np.uint8)).save(path)
    return path


# ----------------------------------------------------------------------- 1: --overwrite replaces only bundles


def test_convert_overwrite_replaces_only_a_bundle(rosinality_pt, tmp_path, capsys):
    src, _ = rosinality_pt
    user = tmp_path / "V"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    assert convert_main(["stylegan2", str(src), "--out", str(user), "--overwrite"]) == 2
    assert "not an e4e-jax bundle" in _error(capsys)
    assert (user / "thesis.tex").read_text() == "years of work"
    assert convert_main(["stylegan2", str(src), "--out", str(user)]) == 2  # existing, no --overwrite
    assert "--overwrite" in _error(capsys)

    out = tmp_path / "b"
    assert convert_main(["stylegan2", str(src), "--out", str(out)]) == 0
    (out / "note").write_text("inside the old bundle")
    assert convert_main(["stylegan2", str(src), "--out", str(out), "--overwrite"]) == 0
    assert not (out / "note").exists() and bundle.read_config(out)["kind"] == "stylegan2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["V", "b"]  # no temporary or lock left


# ------------------------------------------------------- 5, 7: NaN weights, w_avg_samples=0, wrong tensor shapes


def test_convert_refuses_non_finite_weights_and_zero_samples(rosinality_pt, tmp_path, capsys):
    src, sd = rosinality_pt
    bad = dict(sd)
    bad["convs.0.conv.weight"] = sd["convs.0.conv.weight"].clone()
    bad["convs.0.conv.weight"][0, 0, 0, 0, 0] = float("nan")
    assert convert_main(["stylegan2", str(_save_pt(tmp_path / "nan.pt", bad)), "--out", str(tmp_path / "o")]) == 2
    msg = _error(capsys)
    assert "NaN" in msg and "convs_0/weight" in msg and "nan.pt" in msg
    no_avg = tmp_path / "no_avg.pt"
    torch.save({"g_ema": sd}, no_avg)
    for value, why in (("0", "≥ 1"), ("-3", "≥ 1"), ("many", "whole number")):
        assert (
            convert_main(["stylegan2", str(no_avg), "--out", str(tmp_path / "o"), "--option", f"w_avg_samples={value}"])
            == 2
        )
        assert why in _error(capsys)
    assert convert_main(["stylegan2", str(no_avg), "--out", str(tmp_path / "o"), "--option", "w_avg=3"]) == 2
    assert "w_avg_samples" in _error(capsys)  # unknown option: the supported ones are named
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "key,shape", [("convs.1.conv.weight", (1, 8, 7, 3, 3)), ("to_rgbs.0.conv.modulation.weight", (8, 15))]
)
def test_convert_checks_every_shape_against_the_architecture(rosinality_pt, tmp_path, capsys, key, shape):
    _, sd = rosinality_pt
    bad = dict(sd)
    bad[key] = torch.randn(shape)
    src = _save_pt(tmp_path / "shape.pt", bad)
    assert convert_main(["stylegan2", str(src), "--out", str(tmp_path / "o")]) == 2
    msg = _error(capsys)
    assert "shape.pt" in msg and "has shape" in msg and "expected" in msg, msg
    assert not (tmp_path / "o").exists()


def test_convert_never_replaces_its_source(rosinality_pt, tmp_path, capsys):
    """A checkpoint kept inside the bundle folder it converts to: --overwrite would delete it."""
    src, _ = rosinality_pt
    out = tmp_path / "b"
    assert convert_main(["stylegan2", str(src), "--out", str(out)]) == 0
    inside = out / "my_generator.pt"
    inside.write_bytes(src.read_bytes())
    assert convert_main(["stylegan2", str(inside), "--out", str(out), "--overwrite"]) == 2
    assert "overlaps the input" in _error(capsys)
    assert inside.read_bytes() == src.read_bytes()


def _with(sd: dict, key: str, value) -> dict:
    return {**sd, key: value}


# (checkpoint entries beside g_ema, or a changed g_ema entry) -> what the one-line error says
MALFORMED_GENERATORS = {
    "empty_latent_avg": (dict(latent_avg=torch.zeros(0)), None, "latent_avg has shape (0,)"),
    "dict_latent_avg": (dict(latent_avg={"a": 1}), None, "latent_avg is a dict"),
    "short_latent_avg": (dict(latent_avg=torch.zeros(15)), None, "latent_avg has shape (15,)"),
    "rows_latent_avg": (dict(latent_avg=torch.randn(3, 16)), None, "rows that differ"),
    "complex_latent_avg": (dict(latent_avg=torch.zeros(16, dtype=torch.complex64)), None, "not a real tensor"),
    "input_rank": ({}, ("input.input", torch.zeros(1, 1, 8, 4, 4)), "expected 4 dimensions"),
    "noise_weight": ({}, ("conv1.noise.weight", torch.zeros(2)), "has shape (2,), expected (1,)"),
    "rgb_bias": ({}, ("to_rgb1.bias", torch.zeros(1, 3, 2, 1)), "has shape (1, 3, 2, 1), expected (1, 3, 1, 1)"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_GENERATORS))
def test_convert_malformed_generator_entries_are_messages(rosinality_pt, tmp_path, capsys, case):
    _, sd = rosinality_pt
    entries, change, expected = MALFORMED_GENERATORS[case]
    g_ema = _with(sd, *change) if change else sd
    src = tmp_path / f"{case}.pt"
    torch.save({"g_ema": g_ema, "latent_avg": torch.zeros(16), **entries}, src)
    assert convert_main(["stylegan2", str(src), "--out", str(tmp_path / "o")]) == 2
    msg = _error(capsys)
    assert expected in msg and src.name in msg, msg
    assert not (tmp_path / "o").exists()


def test_convert_malformed_encoder_checkpoints_are_messages(tmp_path, capsys):
    cases = {
        "list_state.pt": ({"state_dict": [1, 2], "opts": {}}, [], "the state dict is a list"),
        "str_opts.pt": ({"state_dict": {}, "opts": "Namespace(...)"}, [], "'opts' is a str"),
        "typed.pt": (
            {"state_dict": {}, "opts": {"encoder_type": "Encoder4Editing"}},
            ["--option", "encoder_type=GradualStyleEncoder"],
            "contradicts the checkpoint's opts",
        ),
    }
    for name, (ckpt, extra, expected) in cases.items():
        torch.save(ckpt, tmp_path / name)
        assert convert_main(["e4e", str(tmp_path / name), "--out", str(tmp_path / "o"), *extra]) == 2, name
        msg = _error(capsys)
        assert expected in msg and name in msg, msg
    torch.save({"state_dict": None}, tmp_path / "none_state.pt")  # under the generator converter
    assert convert_main(["stylegan2", str(tmp_path / "none_state.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "not a StyleGAN2 generator checkpoint" in _error(capsys)
    assert not (tmp_path / "o").exists()


def test_conv_layouts_check_the_rank():
    keys = KeyTracker({"x.weight": np.zeros((2, 3, 3), np.float32)}, "", "f.pt")
    with pytest.raises(ValueError, match=r"f\.pt: x\.weight has shape \(2, 3, 3\), expected 4 dimensions"):
        conv(keys, "x", bias=False)


# ----------------------------------------------------------------- converter tracebacks -> one-line messages


def test_convert_bad_sources_and_outputs_are_messages(rosinality_pt, tmp_path, capsys):
    src, sd = rosinality_pt
    (tmp_path / "afile").write_text("x")
    torch.save({"g_ema": [1, 2, 3]}, tmp_path / "list.pt")
    cases = [
        (["stylegan2", str(tmp_path), "--out", str(tmp_path / "o1")], "is a folder"),
        (["stylegan2", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o2")], "no such file"),
        (["stylegan2", str(tmp_path / "list.pt"), "--out", str(tmp_path / "o3")], "'g_ema' is a list"),
        (["stylegan2", str(src), "--out", str(tmp_path / "afile")], "not a folder"),
        (["stylegan2", str(src), "--out", str(tmp_path / "afile" / "sub")], "not a folder"),
        (["stylegan2", str(tmp_path / "afile"), "--out", str(tmp_path / "o4")], str(tmp_path / "afile")),
    ]
    for argv, expected in cases:
        assert convert_main(argv) == 2, argv
        assert expected in _error(capsys), argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "list.pt"]


@pytest.mark.skipif(IS_ROOT, reason="root ignores file permissions")
def test_convert_read_only_out_and_unreadable_source(rosinality_pt, tmp_path, capsys):
    src, _ = rosinality_pt
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert convert_main(["stylegan2", str(src), "--out", str(ro / "b")]) == 2
        assert "writable" in _error(capsys)
    finally:
        ro.chmod(0o755)
    locked = tmp_path / "secret.pt"
    locked.write_bytes(src.read_bytes())
    locked.chmod(0)
    assert convert_main(["stylegan2", str(locked), "--out", str(tmp_path / "b")]) == 2
    assert "cannot be read" in _error(capsys)


def test_convert_error_from_the_real_entry_point_is_one_line():
    """As a user runs it: `python -m tools.convert_weights` in a fresh process, no traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-m", "tools.convert_weights", "stylegan2", str(ROOT), "--out", "/nonexistent/x"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"error: {ROOT} is a folder"), r.stderr  # not "no such file"


# --------------------------------------------------------- leftovers of a killed conversion; umask; --help


def test_convert_cleans_leftovers_and_uses_the_umask(rosinality_pt, tmp_path):
    src, _ = rosinality_pt
    stale = tmp_path / ".b.tmp-4242-deadbeef"  # what a kill -9 during bundle.save leaves
    (stale / "params").mkdir(parents=True)
    other = tmp_path / ".other.tmp-1-x"  # another target's temporary: not ours to remove
    other.mkdir()
    old = os.umask(0o027)
    try:
        assert convert_main(["stylegan2", str(src), "--out", str(tmp_path / "b")]) == 0
    finally:
        os.umask(old)
    assert not stale.exists() and other.exists()
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o750  # 0777 & ~umask, not mkdtemp's 0700


def test_convert_help_lists_each_converters_options():
    text = convert_parser().format_help()
    for kind, option in (
        ("stylegan2", "w_avg_samples"),
        ("e4e", "latent_avg_samples"),
        ("e4e", "encoder_type"),
        ("lpips", "net=alex|vgg"),
    ):
        assert re.search(rf"{kind}:.*?--option {re.escape(option)}", text, re.S), (kind, option)


# -------------------------------------------------------------- bundle.load: empty params/, bad weight shape


def test_damaged_bundles_are_messages(models, tmp_path, capsys):
    import shutil

    import orbax.checkpoint as ocp

    empty = tmp_path / "empty"
    shutil.copytree(models["g"], empty)
    shutil.rmtree(empty / "params")
    (empty / "params").mkdir()
    reshaped = tmp_path / "reshaped"
    # params/ written by hand, without checksums.json (tests/test_bundle_checksums.py checks those).
    shutil.copytree(models["g"], reshaped, ignore=shutil.ignore_patterns("params", bundle.CHECKSUMS_FILE))
    _, variables = bundle.load(models["g"], "stylegan2")
    variables["params"]["synthesis"]["conv1"]["weight"] = np.zeros((3, 3, 16, 5), np.float32)
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(reshaped / "params", variables)
    ckpt.wait_until_finished()
    for model, expected in ((empty, "params/ is empty"), (reshaped, "synthesis/conv1/weight has shape (3, 3, 16, 5)")):
        out = tmp_path / f"{model.name}.npy"
        assert cli_main(["synthesize", "--model", str(model), "--latents", str(models["w"]), "--output", str(out)]) == 2
        assert expected in _error(capsys)
        assert not out.exists()


# --------------------------------------------------- listing: unusable entries are reported, float TIFFs


def test_listing_reports_what_it_cannot_use(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    _image(d / "good.png", 0)
    _image(d / "line\nbreak.png", 1)
    (d / "folder.png").mkdir()
    (d / "loop.jpg").symlink_to("loop.jpg")
    (d / "broken.jpg").symlink_to("nowhere.jpg")
    ramp = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    Image.fromarray(ramp, "F").save(d / "float01.tif")
    Image.fromarray(ramp * 1000, "F").save(d / "float_hdr.tif")

    good, skipped = folder.scan_images(d)
    assert (
        [p.name for p in good]
        == ["float01.tif", "float_hdr.tif", "good.png"]
        == [p.name for p in folder.list_images(d)]
    )
    reasons = {s.path.name: s.reason for s in skipped}
    assert sorted(reasons) == ["broken.jpg", "folder.png", "line\nbreak.png", "loop.jpg"]
    assert "line break" in reasons["line\nbreak.png"] and "loop" in reasons["loop.jpg"]
    assert "a folder" in reasons["folder.png"] and "broken symbolic link" in reasons["broken.jpg"]

    x = folder.load_image(d / "float01.tif", (32, 32))
    np.testing.assert_allclose(x[..., 0], ramp * 2 - 1, atol=1 / 127.5)  # scaled, not black
    hdr = folder.load_image(d / "float_hdr.tif", (32, 32))
    assert isinstance(hdr, folder.Skipped) and "[0, 1]" in hdr.reason


# --------------------------------------------------------------- 2: outputs that are or hold an input


def test_outputs_never_replace_inputs(models, tmp_path, capsys):
    w = tmp_path / "w.npy"
    np.save(w, models["latents"])
    before = w.read_bytes()
    assert cli_main(["synthesize", "--model", str(models["g"]), "--latents", str(w), "--output", str(w)]) == 2
    assert "overlaps the input" in _error(capsys)
    inv = tmp_path / "inv"
    inv.mkdir()
    np.save(inv / "latents.npy", models["latents"])
    inv_before = (inv / "latents.npy").read_bytes()
    for out in (inv, inv / "edits", tmp_path):
        assert (
            cli_main(
                [
                    "edit",
                    "--model",
                    str(models["g"]),
                    "--latents",
                    str(inv),
                    "--output",
                    str(out),
                    "--sefa",
                    "0",
                    "--strengths",
                    "1",
                    "--overwrite",
                ]
            )
            == 2
        )
        assert "overlaps the input" in _error(capsys)
    assert w.read_bytes() == before and (inv / "latents.npy").read_bytes() == inv_before
    assert not (inv / "edits").exists()


def test_non_empty_outputs_need_overwrite_which_clears_only_own_files(models, tmp_path, capsys):
    g, w = str(models["g"]), str(models["w"])
    out = tmp_path / "edits"
    edit = ["edit", "--model", g, "--latents", w, "--output", str(out), "--sefa", "0"]
    assert cli_main(edit + ["--strengths", "-1", "1"]) == 0
    (out / "mine.txt").write_text("the user's")
    assert cli_main(edit + ["--strengths", "2"]) == 2
    assert "--overwrite" in _error(capsys)
    assert cli_main(edit + ["--strengths", "2", "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == ["00000_s+2.png", "00001_s+2.png"]  # no stale
    assert np.load(out / "latents.npy").shape[0] == 1 and (out / "mine.txt").exists()

    npy, png = tmp_path / "imgs.npy", tmp_path / "png"
    synth = ["synthesize", "--model", g, "--latents", w, "--output", str(npy), "--png", str(png)]
    assert cli_main(synth) == 0
    assert cli_main(synth) == 2
    assert "exists" in _error(capsys)
    np.save(tmp_path / "one.npy", models["latents"][:1])
    assert cli_main(synth[:4] + [str(tmp_path / "one.npy")] + synth[5:] + ["--overwrite"]) == 0
    assert np.load(npy).shape[0] == 1 and sorted(p.name for p in png.iterdir()) == ["000000.png"]


# ------------------------------------------------------------------- 5: NaN / Inf inputs and outputs


def test_non_finite_inputs_and_outputs_are_refused(models, tmp_path, capsys):
    g = str(models["g"])
    nan = models["latents"].copy()
    nan[1, 2, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    huge = np.full_like(models["latents"], 3e38)  # finite, but the generator overflows on it
    np.save(tmp_path / "huge.npy", huge)
    direction = torch.zeros(1, 512)
    direction[0, 7] = float("inf")
    torch.save(direction, tmp_path / "inf_direction.pt")
    runs = [
        (
            ["synthesize", "--model", g, "--latents", str(tmp_path / "nan.npy"), "--output", str(tmp_path / "a.npy")],
            "NaN or Inf value (the first at index (1, 2, 3))",
        ),
        (
            [
                "synthesize",
                "--model",
                g,
                "--latents",
                str(tmp_path / "huge.npy"),
                "--output",
                str(tmp_path / "b.npy"),
                "--png",
                str(tmp_path / "png"),
            ],
            "images rendered",
        ),
        (
            [
                "edit",
                "--model",
                g,
                "--latents",
                str(tmp_path / "nan.npy"),
                "--output",
                str(tmp_path / "e1"),
                "--sefa",
                "0",
                "--strengths",
                "1",
            ],
            "NaN or Inf",
        ),
        (
            [
                "edit",
                "--model",
                g,
                "--latents",
                str(models["w"]),
                "--output",
                str(tmp_path / "e2"),
                "--interfacegan",
                str(tmp_path / "inf_direction.pt"),
                "--strengths",
                "1",
            ],
            "inf_direction.pt",
        ),
    ]
    for argv, expected in runs:
        assert cli_main(argv) == 2, argv
        assert expected in _error(capsys), argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.npy", "inf_direction.pt", "nan.npy"]
    for argv in (
        ["synthesize", "--model", g, "--latents", "w.npy", "--output", "o.npy", "--truncation", "nan"],
        ["edit", "--model", g, "--latents", "w.npy", "--output", "o", "--sefa", "0", "--strengths", "nan"],
        ["edit", "--model", g, "--latents", "w.npy", "--output", "o", "--sefa", "0", "--strengths", "1", "inf"],
    ):
        _parse_error(argv)


# ------------------------------------------------------------ 6: every number checked at parse time


@pytest.mark.parametrize(
    "argv",
    [
        ["synthesize", "--model", "m", "--latents", "w.npy", "--output", "o.npy", "--batch-size", "-2"],
        ["synthesize", "--model", "m", "--latents", "w.npy", "--output", "o.npy", "--batch-size", "0"],
        [
            "edit",
            "--model",
            "m",
            "--latents",
            "w.npy",
            "--output",
            "o",
            "--sefa",
            "0",
            "--strengths",
            "1",
            "--batch-size",
            "0",
        ],
        [
            "edit",
            "--model",
            "m",
            "--latents",
            "w.npy",
            "--output",
            "o",
            "--sefa",
            "0",
            "--strengths",
            "1",
            "--max-grid-rows",
            "0",
        ],
        ["edit", "--model", "m", "--latents", "w.npy", "--output", "o", "--strengths", "1", "--sefa", "-1"],
    ],
    ids=lambda a: f"{a[0]}{a[-2]}={a[-1]}",
)
def test_numeric_arguments_are_checked_at_parse_time(argv):
    _parse_error(argv)


def test_empty_and_zero_byte_latents(models, tmp_path, capsys):
    (tmp_path / "zero.npy").write_bytes(b"")
    np.save(tmp_path / "none.npy", np.zeros((0, GEN_CFG.n_latent, 512), np.float32))
    for name, expected in (("zero.npy", "empty (0 bytes)"), ("none.npy", "holds no latents")):
        for argv in (
            ["synthesize", "--output", str(tmp_path / "o.npy")],
            ["edit", "--output", str(tmp_path / "e"), "--sefa", "0", "--strengths", "1"],
        ):
            assert cli_main(argv[:1] + ["--model", str(models["g"]), "--latents", str(tmp_path / name)] + argv[1:]) == 2
            assert expected in _error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["none.npy", "zero.npy"]


# ------------------------------------------------------------------- two runs at once; kill leftovers


def test_second_writer_is_refused_and_kill_leftovers_are_cleaned(models, rosinality_pt, tmp_path, capsys):
    out = tmp_path / "edits"
    with outdir.lock(out, "another edit"):
        assert (
            cli_main(
                [
                    "edit",
                    "--model",
                    str(models["g"]),
                    "--latents",
                    str(models["w"]),
                    "--output",
                    str(out),
                    "--sefa",
                    "0",
                    "--strengths",
                    "1",
                ]
            )
            == 2
        )
        assert "in use by" in _error(capsys)
    with outdir.lock_target(tmp_path / "b", "another conversion"):
        assert convert_main(["stylegan2", str(rosinality_pt[0]), "--out", str(tmp_path / "b")]) == 2
        assert "in use by" in _error(capsys)
    leftover = tmp_path / ".imgs.npy.tmp-4242-abcdef"  # a synthesize killed mid-write
    leftover.write_bytes(b"partial")
    assert (
        cli_main(
            [
                "synthesize",
                "--model",
                str(models["g"]),
                "--latents",
                str(models["w"]),
                "--output",
                str(tmp_path / "imgs.npy"),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edits", "imgs.npy"]


# ------------------------------------------------------- 3: evaluate reads exactly the manifest's files


def _invert_output(root: Path, models) -> tuple[Path, Path]:
    """An invert output folder written by hand: originals a.png, b.png; latents, files.txt."""
    images, inv = root / "images", root / "inv"
    (inv / "inversions").mkdir(parents=True)
    images.mkdir()
    files = [_image(images / "a.png", 1), _image(images / "b.png", 2)]
    np.save(inv / "latents.npy", models["latents"])
    (inv / "files.txt").write_text("".join(f"{p}\n" for p in files))
    return images, inv


def _evaluated_l2(models, inv: Path, out: Path) -> dict:
    import json

    assert (
        cli_main(
            [
                "evaluate",
                "--model",
                str(models["e4e"]),
                "--inversions",
                str(inv),
                "--output",
                str(out),
                "--num-samples",
                "0",
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    return {k: v["l2"] for k, v in json.loads((out / "metrics.json").read_text())["distortion"]["per_image"].items()}


def _l2(a: Path, b: Path) -> float:
    return float(np.mean((folder.load_image(a, ENC_HW) - folder.load_image(b, ENC_HW)) ** 2))


def test_evaluate_takes_the_listed_reconstructions_not_stale_ones(models, tmp_path):
    images, inv = _invert_output(tmp_path, models)
    recon = [_image(inv / "inversions" / "00000_a.jpg", 3), _image(inv / "inversions" / "00001_b.webp", 4)]
    _image(inv / "inversions" / "00000_a.png", 5)  # stale: an earlier run's output of the same image
    (inv / "inversions.txt").write_text("inversions/00000_a.jpg\ninversions/00001_b.webp\n")
    l2 = _evaluated_l2(models, inv, tmp_path / "m1")
    assert l2["a.png"] == pytest.approx(_l2(images / "a.png", recon[0]), rel=1e-5)
    assert l2["b.png"] == pytest.approx(_l2(images / "b.png", recon[1]), rel=1e-5)


def test_evaluate_of_an_old_output_takes_exact_names(models, tmp_path):
    images, inv = _invert_output(tmp_path, models)
    _image(inv / "inversions" / "00000_0stale.png", 6)  # sorts first among 00000_*.png
    right = [_image(inv / "inversions" / "00000_a.png", 7), _image(inv / "inversions" / "00001_b.png", 8)]
    l2 = _evaluated_l2(models, inv, tmp_path / "m")
    assert l2["a.png"] == pytest.approx(_l2(images / "a.png", right[0]), rel=1e-5)


def test_evaluate_refuses_an_incomplete_manifest(models, tmp_path, capsys):
    _, inv = _invert_output(tmp_path, models)
    (inv / "inversions.txt").write_text("inversions/00000_a.jpg\n")
    assert (
        cli_main(
            [
                "evaluate",
                "--model",
                str(models["e4e"]),
                "--inversions",
                str(inv),
                "--output",
                str(tmp_path / "m"),
                "--num-samples",
                "0",
            ]
        )
        == 2
    )
    assert "lists 1 reconstructions for 2 inputs" in _error(capsys)
    assert (
        cli_main(
            ["evaluate", "--model", str(models["e4e"]), "--inversions", str(inv), "--output", str(inv / "metrics")]
        )
        == 2
    )
    assert "overlaps the input" in _error(capsys)


def test_evaluate_reports_unusable_entries_as_skipped(models, tmp_path):
    import json

    d = tmp_path / "imgs"
    d.mkdir()
    _image(d / "a.png", 0)
    (d / "b.png").mkdir()
    rc = cli_main(
        [
            "evaluate",
            "--model",
            str(models["e4e"]),
            "--images",
            str(d),
            "--output",
            str(tmp_path / "m"),
            "--num-samples",
            "0",
        ]
    )
    report = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert rc == 3 and report["n_images"] == 1 and [Path(s["file"]).name for s in report["skipped"]] == ["b.png"]


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--model", "m", "--images", "i", "--output", "o", "--batch-size", "0"],
        ["evaluate", "--model", "m", "--images", "i", "--output", "o", "--lec-batch", "0"],
        ["evaluate", "--model", "m", "--images", "i", "--output", "o", "--num-samples", "-1"],
        ["evaluate", "--model", "m", "--images", "i", "--output", "o", "--workers", "-1"],
        ["evaluate", "--model", "m", "--images", "i", "--output", "o", "--factor", "inf"],
        ["quickstart", "--workdir", "w", "--steps", "0"],
        ["quickstart", "--workdir", "w", "--heldout", "-1"],
    ],
    ids=lambda a: f"{a[0]}{a[-2]}={a[-1]}",
)
def test_evaluate_and_quickstart_numbers_are_checked_at_parse_time(argv):
    _parse_error(argv)


def test_evaluate_refuses_an_invert_output_still_being_written(models, tmp_path, capsys):
    _, inv = _invert_output(tmp_path, models)
    with outdir.lock(inv, "e4e-jax invert"):
        assert (
            cli_main(
                ["evaluate", "--model", str(models["e4e"]), "--inversions", str(inv), "--output", str(tmp_path / "m")]
            )
            == 2
        )
        assert "still being written" in _error(capsys)


# --------------------------------------------------------------------------------------------- help texts

FILE_REFERENCE = re.compile(r"(?<![\w/.-])([\w./-]+\.(?:md|py))\b")


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("name", tuple(COMMANDS) + ("convert",))
def test_help_texts(name):
    parser = convert_parser() if name == "convert" else _subparser(name)
    missing = [a.dest for a in parser._actions if not a.help]
    assert not missing, f"{name}: arguments without help: {missing}"
    assert not (parser.description or "").rstrip().endswith(".."), parser.description
    text = parser.format_help()
    absent = [ref for ref in FILE_REFERENCE.findall(text) if not (ROOT / ref).exists()]
    assert not absent, f"{name} --help names files that are not in the repository: {absent}"


def test_edit_and_synthesize_name_bad_side_files(models, tmp_path, capsys):
    """A direction file that is missing or a folder, latents in a zip (.npz / torch file), strengths that
    would write one image name twice: one line each, exit 2, nothing written."""
    g, w = str(models["g"]), str(models["w"])
    np.savez(tmp_path / "w.npz", w=models["latents"])
    (tmp_path / "adir").mkdir()
    edit = ["edit", "--model", g, "--output", str(tmp_path / "o")]
    cases = [
        (
            [*edit, "--latents", w, "--interfacegan", str(tmp_path / "nope.pt"), "--strengths", "1"],
            "nope.pt: cannot read",
        ),
        ([*edit, "--latents", w, "--interfacegan", str(tmp_path / "adir"), "--strengths", "1"], "is a folder"),
        ([*edit, "--latents", w, "--sefa", "0", "--strengths", "1", "1.0000001"], "the same image name"),
        ([*edit, "--latents", str(tmp_path / "w.npz"), "--sefa", "0", "--strengths", "1"], "zip archive"),
        (
            ["synthesize", "--model", g, "--latents", str(tmp_path / "w.npz"), "--output", str(tmp_path / "s.npy")],
            "w.npz is a zip archive",
        ),
    ]
    for argv, expected in cases:
        assert cli_main(argv) == 2, argv
        assert expected in _error(capsys), argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "w.npz"]
