"""Inception converter against the real `pytorch-fid` package (PyPI 0.3.0): its InceptionV3 and
FIDInceptionA/C/E_1/E_2 blocks, with random weights.

The file a user converts is pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`: the state dict of
torchvision's `Inception3(num_classes=1008, aux_logits=False)`. Here that layout is built and filled with
random weights, saved with torch.save, and handed to the package's own `InceptionV3()` where it would
download the file: `load_state_dict_from_url` is replaced by a local `torch.load` of it (the only
change; the package's `fid_inception_v3` still builds its FID blocks and loads the file strictly, so the
file has exactly the package's keys and shapes). The file is converted by the real CLI and the bundle's
pool3 features are compared with the package's forward at the parity tolerance (tests/parity.py).

pytorch-fid imports torchvision, whose PyPI builds need a different torch than the CPU torch 2.13 installed
here: the package runs on the stand-in of tests/torchvision_standin.py (torchvision's module layout,
written from its published architecture), installed in sys.modules for this module's tests only.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from e4e_jax.models.inception import FIDInceptionV3
from e4e_jax.storage import bundle
from tests.parity import assert_close, max_err
from tests.refs.perceptual_refs import randomize_
from tests.torchvision_standin import standin_torchvision
from tools.convert_weights.__main__ import main as convert_main

# pytorch-fid resizes every input to 299x299 first, so the cost does not depend on the input size; a small
# input keeps the images cheap to make and still varied after the resize.
BATCH, SIDE = 2, 32
FID_CLASSES = 1008  # the TF graph's classifier (pytorch-fid's num_classes)
POOL3 = 2048


@pytest.fixture(scope="module")
def fid_pkg():
    with standin_torchvision():
        yield pytest.importorskip("pytorch_fid.inception")


@pytest.fixture(scope="module")
def setup(fid_pkg, tmp_path_factory):
    """(the package's InceptionV3 loaded from the random file, the file, the converted bundle)."""
    import torchvision  # the stand-in, inside fid_pkg's block

    tmp = tmp_path_factory.mktemp("inception_pkg")
    src = tmp / "pt_inception-2015-12-05-6726825d.pth"
    layout = torchvision.models.inception_v3(
        weights=None, num_classes=FID_CLASSES, aux_logits=False, init_weights=False
    )
    with torch.no_grad():
        randomize_(layout, seed=0)
    torch.save(layout.state_dict(), src)

    def local_file(url, progress=True):  # pytorch-fid's download of the FID weights
        assert url == fid_pkg.FID_WEIGHTS_URL
        return torch.load(src, map_location="cpu", weights_only=True)

    saved, fid_pkg.load_state_dict_from_url = fid_pkg.load_state_dict_from_url, local_file
    try:
        model = fid_pkg.InceptionV3([fid_pkg.InceptionV3.BLOCK_INDEX_BY_DIM[POOL3]]).eval()
    finally:
        fid_pkg.load_state_dict_from_url = saved
    out = tmp / "bundle"
    assert convert_main(["inception", str(src), "--out", str(out)]) == 0
    config, variables = bundle.load(out, "inception")
    return model, src, config, variables


def test_package_builds_its_fid_blocks(setup, fid_pkg):
    model, *_ = setup
    mixed = [type(m).__name__ for m in model.blocks[2]] + [type(m).__name__ for m in model.blocks[3]]
    assert mixed == ["FIDInceptionA"] * 3 + ["InceptionB"] + ["FIDInceptionC"] * 4 + [
        "InceptionD",
        "FIDInceptionE_1",
        "FIDInceptionE_2",
        "AdaptiveAvgPool2d",
    ]
    assert isinstance(model.blocks[2][0], fid_pkg.FIDInceptionA)


def test_pool3_and_logits_match_package(setup):
    model, src, config, variables = setup
    assert config["architecture"]["num_classes"] == FID_CLASSES
    x = np.random.RandomState(1).uniform(0, 1, (BATCH, 3, SIDE, SIDE)).astype(np.float32)
    with torch.no_grad():
        (ref,) = model(torch.from_numpy(x))  # pytorch-fid's input: [0, 1], any size
    assert ref.shape == (BATCH, POOL3, 1, 1)
    ref = ref.numpy().reshape(BATCH, POOL3)
    fid = FIDInceptionV3(num_classes=FID_CLASSES, precision="highest")
    pool, logits = jax.jit(lambda v, a: fid.apply(v, a, return_logits=True))(
        variables, jnp.asarray(x.transpose(0, 2, 3, 1))
    )
    err = max_err(pool, ref)
    print(f"pytorch-fid pool3: max |ours - package| {err:.3g}, relative {err / np.abs(ref).max():.3g}")
    assert float(ref.std()) > 0.05  # informative features, not collapsed by the random weights
    assert_close(pool, ref, "pool3")
    # The package's InceptionV3 stops at pool3; its file's classifier applied with torch gives the logits.
    state = torch.load(src, weights_only=True)
    ref_logits = torch.nn.functional.linear(torch.from_numpy(ref), state["fc.weight"], state["fc.bias"]).numpy()
    assert_close(logits, ref_logits, "logits")
