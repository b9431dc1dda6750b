"""Every checkpoint form that docs/converters.md lists as accepted, for the converters whose sources are
other repositories' checkpoints: ArcFace (`model_ir_se50.pth`), MoCo (`main_moco.py`) and NVlabs network
pickles; and the training-state entries that rosinality's train.py saves next to the generator (e4e's
coach's: test_encoder_parity.py). Each form is written as its source writes it (torch.save of the state
dict, DataParallel's 'module.' keys, {'state_dict': ...} wrappers; NVlabs pickles through the persistence
pickler) and converted by the real converter.

Every form must give exactly the variables of the canonical form, whose numerics the parity tests check
against the PyTorch references (test_arcface.py, test_moco.py, test_stylegan2_nvlabs.py). DataParallel
is torch's own nn.DataParallel (on CPU it only wraps: its state dict has the 'module.' keys of DDP too).
"""

import argparse
import copy

import jax
import numpy as np
import pytest
import torch
from torch import nn

from tests.refs import nvlabs_pickle
from tests.refs.perceptual_refs import ArcFaceBackbone, MoCo
from tests.refs.rosinality_stylegan2 import Generator as RosinalityGenerator
from tools.convert_weights import arcface as arcface_conv
from tools.convert_weights import moco as moco_conv
from tools.convert_weights import stylegan2 as stylegan2_conv

SEED = 0
# Training-state entries that sit next to 'state_dict' in real checkpoints and must be ignored.
TRAINING_STATE = {"epoch": 200, "optimizer": {"state": {}, "param_groups": [{"lr": 0.03, "params": [0, 1]}]}}


def _assert_same_variables(ours, ref):
    assert jax.tree.structure(ours) == jax.tree.structure(ref)
    jax.tree.map(np.testing.assert_array_equal, ours, ref)


def _dataparallel(module: nn.Module) -> dict:
    return nn.DataParallel(module).state_dict()


# ---------------------------------------------------------------------------------------------- ArcFace
@pytest.fixture(scope="module")
def arcface(tmp_path_factory):
    """(random IR-SE50 Backbone, converted canonical form: the plain state dict, as released).

    Each form is saved in its test's own tmp_path, removed when the test passes (pytest.ini): a form is
    ~170 MB, and the CI machine may have little disk."""
    torch.manual_seed(SEED)
    net = ArcFaceBackbone(50, "ir_se").eval()
    path = tmp_path_factory.mktemp("arcface_forms") / "model_ir_se50.pth"
    torch.save(net.state_dict(), path)
    converted = arcface_conv.convert([path])
    path.unlink()
    return net, converted


ARCFACE_FORMS = {
    # Saved by torch < 0.4.1 (BatchNorm had no num_batches_tracked buffer yet), as TreB1eN's 2018 weights.
    "before_torch_0.4.1": lambda net: {
        k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")
    },
    "dataparallel": lambda net: _dataparallel(net),
    "wrapped": lambda net: {"state_dict": net.state_dict(), **TRAINING_STATE},
    "wrapped_dataparallel": lambda net: {"state_dict": _dataparallel(net), **TRAINING_STATE},
}


@pytest.mark.parametrize("form", sorted(ARCFACE_FORMS))
def test_arcface_forms(arcface, form, tmp_path):
    net, (arch, ref, _) = arcface
    torch.save(ARCFACE_FORMS[form](net), tmp_path / f"{form}.pth")
    got_arch, got, extra = arcface_conv.convert([tmp_path / f"{form}.pth"])
    assert got_arch == arch == {"num_layers": 50, "mode": "ir_se", "input_size": 112}
    assert extra["bundle_kind"] == "arcface"
    _assert_same_variables(got, ref)


def test_arcface_bn1d_without_affine(arcface, tmp_path):
    """IR_SE_50()'s output BatchNorm1d(affine=False): running statistics only -> scale 1, bias 0."""
    net, (_, ref, _) = arcface
    sd = {k: v for k, v in net.state_dict().items() if k not in ("output_layer.4.weight", "output_layer.4.bias")}
    torch.save(sd, tmp_path / "no_affine.pth")
    _, got, _ = arcface_conv.convert([tmp_path / "no_affine.pth"])
    bn1d = got["params"].pop("output_bn1d")
    np.testing.assert_array_equal(bn1d["scale"], np.ones(512, np.float32))
    np.testing.assert_array_equal(bn1d["bias"], np.zeros(512, np.float32))
    _assert_same_variables(
        got,
        {"params": {k: v for k, v in ref["params"].items() if k != "output_bn1d"}, "batch_stats": ref["batch_stats"]},
    )


def test_arcface_form_errors(tmp_path):
    # (Keys are checked before any tensor is used: a few stand for the whole state dict.)
    sd = {"input_layer.0.weight": torch.zeros(64, 3, 3, 3), "output_layer.3.weight": torch.zeros(512, 512 * 7 * 7)}
    half = {
        "input_layer.0.weight": sd["input_layer.0.weight"],
        "module.output_layer.3.weight": sd["output_layer.3.weight"],
    }
    torch.save(half, tmp_path / "half_prefixed.pth")  # 'module.' on some keys only: not a DataParallel save
    with pytest.raises(KeyError, match="half_prefixed.pth: missing key output_layer.3.weight"):
        arcface_conv.convert([tmp_path / "half_prefixed.pth"])
    torch.save({"model": sd}, tmp_path / "other_wrapper.pth")
    with pytest.raises(KeyError, match="output_layer.3.weight"):
        arcface_conv.convert([tmp_path / "other_wrapper.pth"])


# ---------------------------------------------------------------------------------------------- MoCo
@pytest.fixture(scope="module")
def moco(tmp_path_factory):
    """(random MoCo-v2 model, converted canonical form: main_moco.py's checkpoint). Forms: as arcface's."""
    torch.manual_seed(SEED)
    model = MoCo(dim=128, K=64).eval()
    path = tmp_path_factory.mktemp("moco_forms") / "checkpoint.pth.tar"
    torch.save({"arch": "resnet50", "state_dict": _dataparallel(model), **TRAINING_STATE}, path)
    converted = moco_conv.convert([path])
    path.unlink()
    return model, converted


MOCO_FORMS = {
    "wrapped_no_prefix": lambda m: {"arch": "resnet50", "state_dict": m.state_dict(), **TRAINING_STATE},
    "wrapped_without_arch": lambda m: {"state_dict": _dataparallel(m)},
    "bare_dataparallel": lambda m: _dataparallel(m),
    "bare": lambda m: m.state_dict(),
}


@pytest.mark.parametrize("form", sorted(MOCO_FORMS))
def test_moco_forms(moco, form, tmp_path):
    model, (arch, ref, _) = moco
    torch.save(MOCO_FORMS[form](model), tmp_path / f"{form}.pth")
    got_arch, got, extra = moco_conv.convert([tmp_path / f"{form}.pth"])
    assert got_arch == arch == {"stage_sizes": [3, 4, 6, 3], "head": "mlp", "head_dims": [2048, 128]}
    assert extra["bundle_kind"] == "moco"
    _assert_same_variables(got, ref)


def test_moco_v1_linear_head(moco, tmp_path):
    """MoCo-v1 checkpoints (moco_v1_200ep_pretrain.pth.tar): encoder fc is one Linear(2048, 128)."""
    model, (_, ref, _) = moco
    v1 = copy.deepcopy(model)
    for enc in (v1.encoder_q, v1.encoder_k):
        enc.fc = enc.fc[2]
    torch.save({"arch": "resnet50", "state_dict": _dataparallel(v1), **TRAINING_STATE}, tmp_path / "v1.pth.tar")
    arch, got, _ = moco_conv.convert([tmp_path / "v1.pth.tar"])
    assert arch == {"stage_sizes": [3, 4, 6, 3], "head": "linear", "head_dims": [128]}
    np.testing.assert_array_equal(got["params"].pop("head")["fc"]["kernel"], ref["params"]["head"]["fc_2"]["kernel"])
    _assert_same_variables(
        got, {"params": {k: v for k, v in ref["params"].items() if k != "head"}, "batch_stats": ref["batch_stats"]}
    )


def test_moco_form_errors(tmp_path):
    conv1 = torch.zeros(64, 3, 7, 7)  # (keys are checked before any tensor is used)
    torch.save({"model": {"module.encoder_q.conv1.weight": conv1}}, tmp_path / "other_wrapper.pth")
    with pytest.raises(ValueError, match="expected a MoCo checkpoint"):
        moco_conv.convert([tmp_path / "other_wrapper.pth"])
    # MoCo-v3's main_moco.py names its encoders base_encoder / momentum_encoder; main_lincls.py saves a plain ResNet.
    for name, key in (("v3", "module.base_encoder.conv1.weight"), ("lincls", "module.conv1.weight")):
        torch.save({"arch": "resnet50", "state_dict": {key: conv1}}, tmp_path / f"{name}.pth.tar")
        with pytest.raises(KeyError, match="no 'module.encoder_q"):
            moco_conv.convert([tmp_path / f"{name}.pth.tar"])


# ---------------------------------------------------------------------------------------------- NVlabs
NVLABS_KWARGS = dict(
    z_dim=32,
    w_dim=32,
    img_resolution=32,
    img_channels=3,
    c_dim=0,
    mapping_kwargs=dict(num_layers=2),
    synthesis_kwargs=dict(channel_base=1024, channel_max=64, num_fp16_res=4, conv_clamp=256),
)


@pytest.fixture(scope="module")
def nvlabs(tmp_path_factory):
    """(G_ema, directory, converted canonical form: a stylegan2-ada-pytorch training snapshot)."""
    g_ema = nvlabs_pickle.make_generator(seed=SEED, **copy.deepcopy(NVLABS_KWARGS))
    tmp = tmp_path_factory.mktemp("nvlabs_forms")
    pkl = nvlabs_pickle.save_network_pickle(
        tmp / "network-snapshot-000000.pkl", copy.deepcopy(g_ema), g_ema, D=nvlabs_pickle.Discriminator()
    )
    return g_ema, tmp, stylegan2_conv.convert([pkl])


def _g_ema_only(g_ema, path):
    with open(path, "wb") as f:  # a pickle trimmed to the generator
        nvlabs_pickle._PersistentPickler(f).dump({"G_ema": g_ema})
    return path


def _stylegan3_repo(g_ema, path):
    """stylegan3's training.networks_stylegan2: synthesis kwargs recorded flat, next to z_dim etc."""
    g = copy.deepcopy(g_ema)
    kw = g._init_kwargs
    kw.update(kw.pop("synthesis_kwargs"), fused_modconv_default="inference_only")
    return nvlabs_pickle.save_network_pickle(path, g, g, D=nvlabs_pickle.Discriminator())


NVLABS_FORMS = {"g_ema_only": _g_ema_only, "stylegan3_repo": _stylegan3_repo}


@pytest.mark.parametrize("form", sorted(NVLABS_FORMS))
def test_nvlabs_forms(nvlabs, form):
    g_ema, tmp, (arch, ref, extra) = nvlabs
    path = NVLABS_FORMS[form](g_ema, tmp / f"{form}.pkl")
    got_arch, got, got_extra = stylegan2_conv.convert([path])
    assert got_arch == arch and arch["conv_clamp"] == 256 and arch["size"] == 32
    assert got_extra == extra == {"source_format": "nvlabs-stylegan2-ada-pytorch"}
    _assert_same_variables(got, ref)


def test_nvlabs_state_dict_is_refused(nvlabs, tmp_path):
    """A torch.save of G_ema.state_dict() lacks the constructor kwargs (conv_clamp, mapping lr): refused."""
    g_ema, _, _ = nvlabs
    torch.save(g_ema.state_dict(), tmp_path / "g_ema_state.pt")
    with pytest.raises(ValueError, match="not a StyleGAN2 generator checkpoint"):
        stylegan2_conv.convert([tmp_path / "g_ema_state.pt"])


# ---------------------------------------------------------------------------------------------- rosinality
SMALL_SIZE, SMALL_STYLE, SMALL_WIDTH = 16, 16, 8  # a tiny generator: only key handling is tested here


def test_rosinality_train_py_checkpoint(tmp_path):
    """stylegan2-pytorch's train.py saves {'g', 'd', 'g_ema', 'g_optim', 'd_optim', 'args' (Namespace)}."""
    torch.manual_seed(SEED)
    g_ema = RosinalityGenerator(
        SMALL_SIZE, style_dim=SMALL_STYLE, n_mlp=2, channels={r: SMALL_WIDTH for r in (4, 8, 16)}
    ).randomize_()
    latent_avg = torch.randn(SMALL_STYLE)
    torch.save({"g_ema": g_ema.state_dict(), "latent_avg": latent_avg}, tmp_path / "minimal.pt")
    w = next(iter(g_ema.parameters()))
    adam = {
        "state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros_like(w), "exp_avg_sq": torch.ones_like(w)}},
        "param_groups": [{"lr": 0.002, "betas": (0.0, 0.99), "eps": 1e-8, "params": [0]}],
    }  # Adam's state_dict()
    torch.save(
        {
            "g": copy.deepcopy(g_ema).state_dict(),
            "d": {"convs.0.0.weight": torch.zeros(4, 3, 1, 1)},
            "g_ema": g_ema.state_dict(),
            "latent_avg": latent_avg,
            "g_optim": adam,
            "d_optim": adam,
            "args": argparse.Namespace(size=SMALL_SIZE, n_mlp=2, batch=4),
        },
        tmp_path / "train.pt",
    )
    ref = stylegan2_conv.convert([tmp_path / "minimal.pt"])
    got = stylegan2_conv.convert([tmp_path / "train.pt"])
    assert got[0] == ref[0] and got[2] == ref[2]
    _assert_same_variables(got[1], ref[1])
