"""The ReStyle converter's refusals (`python -m tools.convert_weights restyle`): each is one `error:` line
naming the file and the key or option. The checkpoints are official-format ResNet-34 ReStyle files (random
weights, tests/official_restyle.py) with an 8x8 decoder (4 styles, ~0.25 GB), changed one entry at a time.
"""

from __future__ import annotations

import pytest
import torch

from e4e_jax.storage import bundle
from tests.official_restyle import build_reference, checkpoint_dict, official_opts
from tools.convert_weights.__main__ import main as convert_main

SIZE = 8
ETYPE = "ResNetBackboneEncoder"


@pytest.fixture(scope="module")
def reference():
    enc, dec, latent_avg = build_reference(ETYPE, SIZE, seed=5)
    return checkpoint_dict(ETYPE, enc, dec, latent_avg, official_opts(ETYPE, SIZE, dataset_type="church_encode"))


def _convert(tmp_path, capsys, ckpt, *options):
    src = tmp_path / "restyle.pt"
    torch.save(ckpt, src)
    out = tmp_path / "bundle"
    code = convert_main(["restyle", str(src), "--out", str(out), *[f"--option={o}" for o in options]])
    src.unlink()
    err = capsys.readouterr().err
    return code, err, out


def _with(reference, *, state=None, drop=(), opts=None, **top):
    s = {k: v for k, v in reference["state_dict"].items() if k not in drop}
    s.update(state or {})
    ckpt = {**reference, "state_dict": s, **top}
    if opts is not None:
        ckpt["opts"] = opts
    return ckpt


def test_converts_with_the_options(reference, tmp_path, capsys):
    opts = {k: v for k, v in reference["opts"].items() if k != "encoder_type"}
    code, err, out = _convert(tmp_path, capsys, _with(reference, opts=opts), f"encoder_type={ETYPE}", "iterations=3")
    assert code == 0, err
    config = bundle.read_config(out, "restyle")
    arch = config["architecture"]
    assert arch["iterations"] == 3 and arch["domain"] == "church" and arch["encoder"]["encoder_type"] == ETYPE
    assert arch["encoder"]["n_styles"] == 4 and arch["generator"]["size"] == SIZE
    assert config["latent_avg_source"] == "checkpoint latent_avg"


@pytest.mark.parametrize(
    "change, options, message",
    [
        (
            dict(drop=("encoder.body.3.downsample.1.running_var",)),
            (),
            "missing key 'encoder.body.3.downsample.1.running_var'",
        ),
        (
            dict(state={"encoder.fc.weight": torch.zeros(3)}),
            (),
            "unexpected keys not matched by the converter: encoder.fc.weight",
        ),
        (dict(state={"latent_avg": torch.zeros(3)}), (), "state_dict keys outside encoder.*/decoder.*: latent_avg"),
        (
            dict(state={"encoder.body.5.conv2.weight": torch.zeros(128, 128, 1, 1)}),
            (),
            "encoder.body.5.conv2.weight has shape (128, 128, 1, 1), expected (128, 128, 3, 3)",
        ),
        (
            dict(opts_update={"encoder_type": "BackboneEncoder"}),
            (),
            "missing key 'encoder.input_layer.0.weight': opts.encoder_type BackboneEncoder has an IR-SE backbone (it has encoder.conv1.weight",
        ),
        (dict(opts_update={"encoder_type": "Encoder4Editing"}), (), "convert it with the e4e converter"),
        (dict(opts_update={"encoder_type": None}), (), "its opts name no encoder_type; pass --option encoder_type="),
        (
            {},
            ("encoder_type=BackboneEncoder",),
            "contradicts the checkpoint's opts (encoder_type='ResNetBackboneEncoder')",
        ),
        (dict(opts_update={"input_nc": 3}), (), "opts.input_nc is 3 but the weights have input channels 6"),
        (
            dict(opts_update={"output_size": 1024}),
            (),
            "opts.output_size is 1024 but the weights have a decoder of size 8",
        ),
        (dict(latent_avg=None), (), "no 'latent_avg'"),
        (
            dict(latent_avg=torch.zeros(3, 512)),
            (),
            "latent_avg has shape (3, 512); expected (512,), (1, 512) or (4, 512)",
        ),
    ],
)
def test_refusals_name_the_problem(reference, tmp_path, capsys, change, options, message):
    change = dict(change)
    opts = dict(reference["opts"])
    opts.update(change.pop("opts_update", {}))
    if opts.get("encoder_type") is None:
        opts.pop("encoder_type")
    code, err, out = _convert(tmp_path, capsys, _with(reference, opts=opts, **change), *options)
    assert code == 2 and err.startswith("error: ") and message in err, err
    assert err.count("\n") == 1 and not out.exists()


def test_three_channel_encoder_is_refused(reference, tmp_path, capsys):
    """An encoder that reads only the image cannot take ReStyle's iterations."""
    conv1 = reference["state_dict"]["encoder.conv1.weight"][:, :3].clone()
    opts = {**reference["opts"], "input_nc": 3}
    code, err, _ = _convert(tmp_path, capsys, _with(reference, state={"encoder.conv1.weight": conv1}, opts=opts))
    assert code == 2 and "the encoder reads 3 channels; ReStyle's iterations feed it" in err, err


def test_generator_checkpoint_points_to_its_converter(reference, tmp_path, capsys):
    g_ema = {k[len("decoder.") :]: v for k, v in reference["state_dict"].items() if k.startswith("decoder.")}
    code, err, _ = _convert(tmp_path, capsys, {"g_ema": g_ema})
    assert code == 2 and "is a StyleGAN2 generator checkpoint" in err and "convert_weights stylegan2" in err


def test_e4e_converter_points_to_this_one(reference, tmp_path, capsys):
    src = tmp_path / "restyle.pt"
    torch.save(reference, src)
    assert convert_main(["e4e", str(src), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert (
        f"encoder_type 'ResNetBackboneEncoder' is a ReStyle encoder: convert it with `python -m tools.convert_weights restyle {src}"
        in err
    ), err


def test_bad_option_values_are_refused_before_reading(tmp_path, capsys):
    src = tmp_path / "missing.pt"
    assert convert_main(["restyle", str(src), "--out", str(tmp_path / "o"), "--option", "iterations=0"]) == 2
    assert "--option iterations=0" in capsys.readouterr().err
    assert (
        convert_main(
            ["restyle", str(src), "--out", str(tmp_path / "o"), "--option", "encoder_type=GradualStyleEncoder"]
        )
        == 2
    )
    assert "--option encoder_type=GradualStyleEncoder" in capsys.readouterr().err
