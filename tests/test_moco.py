"""MoCo-v2 ResNet-50: converter on the official checkpoint layout, features, head, and e4e's MoCo loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from e4e_jax.losses import moco_features, moco_loss
from e4e_jax.models.resnet import ProjectionHead, ResNet, architecture_of
from e4e_jax.storage import bundle
from tests.parity import tolerance as _tol  # noqa: E402
from tests.refs.perceptual_refs import (
    DDPWrapper,
    MoCo,
    assert_gradient_close,
    calibrate_bn_,
    e4e_moco_loss,
    moco_extract_feats,
    moco_feature_net,
    randomize_,
    reference_loss_and_grad,
    smooth_images,
)
from tools.convert_weights import moco as moco_conv
from tools.convert_weights.__main__ import main as convert_main

HI = "highest"


def _nhwc(t):
    return jnp.asarray(np.ascontiguousarray(t.detach().numpy().transpose(0, 2, 3, 1)))


@pytest.fixture(scope="module")
def moco_ckpt(tmp_path_factory):
    """A MoCo-v2 model with random weights, saved as main_moco.py does (DDP 'module.' keys)."""
    moco = MoCo(dim=128, K=64)
    randomize_(moco.encoder_q, seed=1)
    # Data-derived BN statistics and slightly negative biases: discriminative features (see calibrate_bn_).
    calibrate_bn_(moco.encoder_q, torch.nn.functional.interpolate(smooth_images(9, 8, 64), size=224), -0.25)
    randomize_(moco.encoder_k, seed=2)
    path = tmp_path_factory.mktemp("moco") / "moco_v2_test.pth.tar"
    torch.save(
        {
            "epoch": 200,
            "arch": "resnet50",
            "state_dict": DDPWrapper(moco).state_dict(),
            "optimizer": {
                "state": {},
                "param_groups": [{"lr": 0.03, "momentum": 0.9, "weight_decay": 1e-4, "params": list(range(161))}],
            },
        },
        path,
    )
    return moco.eval(), path


@pytest.fixture(scope="module")
def converted(moco_ckpt):
    _, path = moco_ckpt
    return moco_conv.convert([path])


@pytest.fixture(scope="module")
def images():
    # Structured (smooth) images: iid noise images all look alike to a random net.
    return smooth_images(0, 2, 64), smooth_images(1, 2, 64), smooth_images(2, 2, 64)


def test_converter_layout(moco_ckpt, converted):
    moco, _ = moco_ckpt
    arch, variables, extra = converted
    assert arch == {"stage_sizes": [3, 4, 6, 3], "head": "mlp", "head_dims": [2048, 128]}
    assert architecture_of(variables["params"]) == arch
    assert extra["bundle_kind"] == "moco"
    p, s = variables["params"], variables["batch_stats"]
    np.testing.assert_array_equal(
        p["layer2_0"]["conv2"]["kernel"], moco.encoder_q.layer2[0].conv2.weight.detach().numpy().transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(s["layer4_2"]["bn3"]["var"], moco.encoder_q.layer4[2].bn3.running_var.numpy())
    np.testing.assert_array_equal(p["head"]["fc_2"]["kernel"], moco.encoder_q.fc[2].weight.detach().numpy().T)
    assert "layer1_1" in p and "downsample_conv" not in p["layer1_1"]


def test_features_and_head_parity(moco_ckpt, converted, images):
    moco, _ = moco_ckpt
    arch, variables, _ = converted
    y_hat = images[0]
    x224 = torch.nn.functional.interpolate(y_hat, size=224)
    with torch.no_grad():
        ref_pool = moco_feature_net(moco)(x224).flatten(1).numpy()
        ref_head = moco.encoder_q.fc(torch.from_numpy(ref_pool)).numpy()
        ref_feats = moco_extract_feats(moco_feature_net(moco), y_hat).numpy()
    model = ResNet(stage_sizes=tuple(arch["stage_sizes"]), precision=HI)
    pool = np.asarray(jax.jit(model.apply)(variables, _nhwc(x224)))
    assert pool.shape == (2, 2048)
    assert np.abs(pool - ref_pool).max() <= _tol(ref_pool), np.abs(pool - ref_pool).max()
    head = ProjectionHead("mlp", (2048, 128), precision=HI).apply({"params": variables["params"]["head"]}, pool)
    assert np.abs(np.asarray(head) - ref_head).max() <= _tol(ref_head)
    feats = np.asarray(jax.jit(lambda v, a: moco_features(v, a, HI))(variables, _nhwc(y_hat)))
    assert np.abs(feats - ref_feats).max() <= 1e-5, np.abs(feats - ref_feats).max()
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)
    cos = float(ref_feats[0] @ ref_feats[1])
    assert cos < 0.95, cos  # the features discriminate between images (the loss below is not ~0)


def test_loss_logs_and_gradient_match_reference(moco_ckpt, converted, images):
    moco, _ = moco_ckpt
    _, variables, _ = converted
    y_hat, y, x = images
    net = moco_feature_net(moco)
    ref_loss, ref_sim, ref_logs, ref_grad = reference_loss_and_grad(e4e_moco_loss, net, y_hat, y, x)

    def f(v, a, b, c):
        return moco_loss(v, a, b, c, with_logs=True, precision=HI)

    (loss, logs), grad = jax.jit(jax.value_and_grad(f, argnums=1, has_aux=True))(
        variables, _nhwc(y_hat), _nhwc(y), _nhwc(x)
    )
    assert ref_loss > 0.05, ref_loss  # the images are told apart: a meaningful loss
    assert abs(float(loss) - ref_loss) <= _tol(ref_loss)
    assert abs(float(logs["sim_improvement"]) - ref_sim) <= 1e-4
    for key in ("diff_target", "diff_input", "diff_views"):
        np.testing.assert_allclose(np.asarray(logs[key]), [d[key] for d in ref_logs], atol=1e-4)
    err = assert_gradient_close(grad, ref_grad, rtol_l2=3e-2)  # kink noise floor ~1.5e-2, see the helper
    print(f"moco_loss gradient: relative L2 error {err:.2e}")


def test_converter_errors_and_cli(moco_ckpt, converted, tmp_path):
    moco, path = moco_ckpt
    q = {f"module.encoder_q.{k}": v for k, v in moco.encoder_q.state_dict().items()}
    tiny = {"module.encoder_q.conv1.weight": torch.zeros(64, 3, 7, 7)}
    cases = [  # (state_dict or whole checkpoint, error type, message)
        ({**q, "module.encoder_q.extra.weight": torch.zeros(1)}, KeyError, "module.encoder_q.extra.weight"),
        (
            {k: v for k, v in q.items() if k != "module.encoder_q.layer3.4.bn2.running_var"},
            KeyError,
            "layer3.4.bn2.running_var",
        ),
        ({**tiny, "module.predictor.weight": torch.zeros(1)}, KeyError, "module.predictor.weight"),
        ({"arch": "resnet18", "state_dict": tiny}, ValueError, "resnet18"),
        ({"model": tiny}, ValueError, "expected a MoCo checkpoint"),
    ]
    for i, (obj, err, msg) in enumerate(cases):
        ckpt = obj if ("arch" in obj or "model" in obj) else {"state_dict": obj, "arch": "resnet50"}
        torch.save(ckpt, tmp_path / f"bad{i}.pth")
        with pytest.raises(err, match=msg):
            moco_conv.convert([tmp_path / f"bad{i}.pth"])
    # Saved without DDP (no 'module.' prefix) converts the same.
    torch.save({"state_dict": {k[len("module.") :]: v for k, v in q.items()}}, tmp_path / "plain.pth")
    _, plain, _ = moco_conv.convert([tmp_path / "plain.pth"])
    ref = converted[1]
    jax.tree_util.tree_map(np.testing.assert_array_equal, plain, ref)
    out = tmp_path / "bundle"
    assert convert_main(["moco", str(path), "--out", str(out)]) == 0
    config, loaded = bundle.load(out, "moco")
    assert config["architecture"] == converted[0]
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, ref)
