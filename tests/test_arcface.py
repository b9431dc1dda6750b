"""ArcFace IR-SE50: converter on model_ir_se50.pth's layout, embeddings, and e4e's ID loss vs PyTorch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from e4e_jax.losses import id_features, id_loss
from e4e_jax.models.arcface import ArcFace, architecture_of
from e4e_jax.storage import bundle
from tests.parity import tolerance as _tol  # noqa: E402
from tests.refs.perceptual_refs import (
    ArcFaceBackbone,
    assert_gradient_close,
    calibrate_bn_,
    e4e_id_loss,
    id_extract_feats,
    randomize_,
    reference_loss_and_grad,
    smooth_images,
)
from tools.convert_weights import arcface as arcface_conv
from tools.convert_weights.__main__ import main as convert_main

HI = "highest"
ARCH = {"num_layers": 50, "mode": "ir_se", "input_size": 112}


def _nhwc(t):
    return jnp.asarray(np.ascontiguousarray(t.detach().numpy().transpose(0, 2, 3, 1)))


@pytest.fixture(scope="module")
def facenet(tmp_path_factory):
    """Random IR-SE50 ArcFace saved as a plain state dict, like model_ir_se50.pth."""
    net = randomize_(ArcFaceBackbone(50, "ir_se"), seed=3)
    # Data-derived BN statistics keep 24 random units well-conditioned (uncalibrated, activations reach
    # ~1e4 and fp32 gradients lose most digits, in PyTorch too).
    calib = F.adaptive_avg_pool2d(smooth_images(9, 8, 256)[:, :, 35:223, 32:220], (112, 112))
    calibrate_bn_(net, calib)
    path = tmp_path_factory.mktemp("arcface") / "model_ir_se50.pth"
    torch.save(net.state_dict(), path)
    return net.eval(), path


@pytest.fixture(scope="module")
def converted(facenet):
    return arcface_conv.convert([facenet[1]])


@pytest.fixture(scope="module")
def images():
    """y_hat, y, x: (2, 3, 256, 256) structured images in [-1, 1]."""
    return smooth_images(0, 2, 256), smooth_images(1, 2, 256), smooth_images(2, 2, 256)


def test_converter_layout(facenet, converted):
    net, _ = facenet
    arch, variables, extra = converted
    assert arch == ARCH and extra["bundle_kind"] == "arcface"
    assert architecture_of(variables["params"]) == ARCH
    p, s = variables["params"], variables["batch_stats"]
    np.testing.assert_array_equal(p["output_linear"]["kernel"], net.output_layer[3].weight.detach().numpy().T)
    np.testing.assert_array_equal(s["output_bn1d"]["var"], net.output_layer[4].running_var.numpy())
    np.testing.assert_array_equal(p["output_bn"]["scale"], net.output_layer[0].weight.detach().numpy())
    np.testing.assert_array_equal(
        s["backbone"]["body_23"]["bn2"]["mean"], net.body[23].res_layer[4].running_mean.numpy()
    )


def test_embedding_parity(facenet, converted, images):
    net, _ = facenet
    _, variables, _ = converted
    x = F.adaptive_avg_pool2d(images[0][:, :, 35:223, 32:220], (112, 112))
    with torch.no_grad():
        ref = net(x).numpy()
        ref_id = id_extract_feats(net, torch.cat(images)).numpy()
    emb = np.asarray(jax.jit(ArcFace(**ARCH, precision=HI).apply)(variables, _nhwc(x)))
    assert emb.shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    # Unit vectors of 512 entries (|e| ~ 0.04): check both the absolute and a relative bound.
    err = np.abs(emb - ref).max()
    assert err <= _tol(ref) and err <= 1e-3 * np.abs(ref).max(), err
    # The full ID-loss feature path from 256x256 images (crop, 188 -> 112 adaptive pool, ArcFace).
    feats = np.asarray(jax.jit(lambda v, a: id_features(v, a, HI))(variables, _nhwc(torch.cat(images))))
    assert np.abs(feats - ref_id).max() <= 1e-3 * np.abs(ref_id).max()
    cos = ref_id @ ref_id.T
    assert cos[0, 1] < 0.9 and cos[0, 2] < 0.9  # different images give different identities


def test_id_loss_logs_and_gradient_match_reference(facenet, converted, images):
    net, _ = facenet
    _, variables, _ = converted
    y_hat, y, x = images
    ref_loss, ref_sim, ref_logs, ref_grad = reference_loss_and_grad(e4e_id_loss, net, y_hat, y, x)

    def f(v, a, b, c):
        return id_loss(v, a, b, c, with_logs=True, precision=HI)

    (loss, logs), grad = jax.jit(jax.value_and_grad(f, argnums=1, has_aux=True))(
        variables, _nhwc(y_hat), _nhwc(y), _nhwc(x)
    )
    assert ref_loss > 0.1, ref_loss
    assert abs(float(loss) - ref_loss) <= _tol(ref_loss)
    assert abs(float(logs["sim_improvement"]) - ref_sim) <= 1e-4
    for key in ("diff_target", "diff_input", "diff_views"):
        np.testing.assert_allclose(np.asarray(logs[key]), [d[key] for d in ref_logs], atol=1e-4)
    grad = np.asarray(grad)
    # Pixels outside the crop get no gradient, as officially.
    assert np.abs(grad[:, :35]).max() == 0 and np.abs(grad[:, :, 220:]).max() == 0
    err = assert_gradient_close(grad, ref_grad, rtol_l2=1e-2)  # kink noise floor ~5e-3, see the helper
    print(f"id_loss gradient: relative L2 error {err:.2e}")
    # Without x the loss is the same and logs carry only diff_target.
    loss2, logs2 = jax.jit(lambda v, a, b: id_loss(v, a, b, with_logs=True, precision=HI))(
        variables, _nhwc(y_hat), _nhwc(y)
    )
    assert float(loss2) == pytest.approx(float(loss), abs=1e-6) and sorted(logs2) == ["diff_target"]


def test_converter_variants_and_errors(facenet, converted, tmp_path):
    net, path = facenet
    sd = net.state_dict()
    # DataParallel prefix + {'state_dict': ...} wrapper + IR_SE_50()'s affine=False BatchNorm1d.
    no_affine = {f"module.{k}": v for k, v in sd.items() if k not in ("output_layer.4.weight", "output_layer.4.bias")}
    torch.save({"state_dict": no_affine}, tmp_path / "wrapped.pth")
    _, wrapped, _ = arcface_conv.convert([tmp_path / "wrapped.pth"])
    np.testing.assert_array_equal(wrapped["params"]["output_bn1d"]["scale"], np.ones(512, np.float32))
    np.testing.assert_array_equal(wrapped["params"]["output_bn1d"]["bias"], np.zeros(512, np.float32))

    def without_bn1d(v):  # (copies: the converted fixture is shared)
        return {"params": {k: x for k, x in v["params"].items() if k != "output_bn1d"}, "batch_stats": v["batch_stats"]}

    jax.tree_util.tree_map(np.testing.assert_array_equal, without_bn1d(wrapped), without_bn1d(converted[1]))
    cases = [
        ({**sd, "output_layer.5.weight": torch.zeros(1)}, KeyError, "output_layer.5.weight"),
        (
            {k: v for k, v in sd.items() if k != "body.7.res_layer.5.fc2.weight"},
            KeyError,
            "body.7.res_layer.5.fc2.weight",
        ),
        ({**sd, "output_layer.3.weight": torch.zeros(512, 512 * 8 * 8)}, ValueError, "output_layer.3.weight has shape"),
        ({"input_layer.0.weight": torch.zeros(64, 3, 3, 3)}, KeyError, "output_layer.3.weight"),
    ]
    for i, (bad, err, msg) in enumerate(cases):
        torch.save(bad, tmp_path / f"bad{i}.pth")
        with pytest.raises(err, match=msg):
            arcface_conv.convert([tmp_path / f"bad{i}.pth"])
    out = tmp_path / "bundle"
    assert convert_main(["arcface", str(path), "--out", str(out)]) == 0
    config, loaded = bundle.load(out, "arcface")
    assert config["architecture"] == ARCH
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, converted[1])
