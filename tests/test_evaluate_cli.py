"""`e4e-jax evaluate` end to end vs PyTorch references of calc_losses_on_images.py, metrics/LEC.py and pytorch-fid."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.official_e4e import save_random_e4e
from tests.parity import max_err as _err
from tests.parity import tolerance as _tol  # noqa: E402
from tests.test_evaluation_distances import _nuclear_fid

# ------------------------------------------------------------------------------- `e4e-jax evaluate`
SIZE, N_STYLES = 16, 6  # tiny generator; the encoder is the official IR-SE50 at 256x256


def _load_png(path, hw=(256, 256)):
    """The official test transform: PIL bilinear resize, ToTensor, Normalize(0.5, 0.5). (3, H, W)."""
    img = Image.open(path).convert("RGB")
    if img.size != hw[::-1]:
        img = img.resize(hw[::-1], Image.BILINEAR)
    return ((np.asarray(img, np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    from e4e_jax.cli import main as cli_main
    from tests.refs.inception_ref import FIDInceptionRef
    from tests.refs.perceptual_refs import LPIPSRef, TorchvisionFeatures, randomize_
    from tools.convert_weights.__main__ import main as convert_main

    tmp = tmp_path_factory.mktemp("evaluate")
    ref_models = save_random_e4e(
        tmp / "e4e.pt",
        SIZE,
        {
            "encoder_type": "Encoder4Editing",
            "dataset_type": "ffhq_encode",
            "start_from_latent_avg": True,
            "stylegan_size": SIZE,
        },
    )
    enc, dec, latent_avg = ref_models["enc"], ref_models["dec"], ref_models["latent_avg"]
    assert convert_main(["e4e", str(tmp / "e4e.pt"), "--out", str(tmp / "e4e")]) == 0

    tv = randomize_(TorchvisionFeatures("alex"), seed=1)
    torch.save(tv.state_dict(), tmp / "alexnet.pth")
    heads = Path(__file__).parent / "data" / "lpips_v0.1" / "alex.pth"
    assert convert_main(["lpips", str(heads), str(tmp / "alexnet.pth"), "--out", str(tmp / "lpips")]) == 0
    lpips_ref = LPIPSRef("alex", tv.features)
    for k, w in torch.load(heads, map_location="cpu", weights_only=True).items():
        getattr(lpips_ref, k.split(".")[0]).model[1].weight.data.copy_(w)
    lpips_ref.eval()

    inc = FIDInceptionRef().randomize_(seed=2).eval()
    torch.save(inc.state_dict(), tmp / "pt_inception-2015-12-05-6726825d.pth")
    assert (
        convert_main(["inception", str(tmp / "pt_inception-2015-12-05-6726825d.pth"), "--out", str(tmp / "inception")])
        == 0
    )

    direction = 0.5 * torch.randn(1, 512)
    torch.save(direction, tmp / "age.pt")
    comp = torch.nn.functional.normalize(torch.randn(4, 1, 512), dim=-1)
    pca = {"mean": torch.randn(1, 512), "comp": comp, "std": 0.5 + torch.rand(4)}
    torch.save(pca, tmp / "ffhq_pca.pt")

    imgs = tmp / "images"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):  # smooth colour fields plus noise: something an image-like metric can see
        base = rng.uniform(0, 255, (1, 1, 3)) * np.linspace(0.3, 1, 256)[:, None, None]
        Image.fromarray(np.clip(base + rng.normal(0, 20, (256, 256, 3)), 0, 255).astype(np.uint8)).save(
            imgs / f"img{i}.png"
        )
    (imgs / "broken.png").write_text("not an image")

    out = tmp / "metrics"
    rc = cli_main(
        [
            "evaluate",
            "--model",
            str(tmp / "e4e"),
            "--images",
            str(imgs),
            "--output",
            str(out),
            "--lpips",
            str(tmp / "lpips"),
            "--inception",
            str(tmp / "inception"),
            "--directions",
            str(tmp / "age.pt"),
            "--ganspace",
            str(tmp / "ffhq_pca.pt"),
            "--ganspace-edit",
            "1,0,3,2",
            "--num-samples",
            "2",
            "--batch-size",
            "2",
        ]
    )
    return dict(
        tmp=tmp,
        enc=enc,
        dec=dec,
        latent_avg=latent_avg,
        lpips_ref=lpips_ref,
        inc=inc,
        direction=direction,
        pca=pca,
        imgs=imgs,
        rc=rc,
        report=json.loads((out / "metrics.json").read_text()),
        cli=cli_main,
    )


def _torch_pipeline(e2e, names):
    """x, E(x) (latent_avg added), and the 256x256-pooled reconstruction, as the official code computes them."""
    x = torch.from_numpy(np.stack([_load_png(e2e["imgs"] / n) for n in names]))
    pool = torch.nn.AdaptiveAvgPool2d((256, 256))

    def encode(im):
        return e2e["enc"](im) + e2e["latent_avg"].repeat(im.shape[0], 1, 1)

    def generate(w):
        return pool(e2e["dec"]([w], input_is_latent=True, randomize_noise=False)[0])

    with torch.no_grad():
        codes = encode(x)
        return x, codes, generate(codes), encode, generate


def test_evaluate_cli_matches_official_computations(e2e):
    rep, names = e2e["report"], ["img0.png", "img1.png"]
    assert e2e["rc"] == 3, "a skipped file (broken.png) must give exit status 3"
    assert rep["n_images"] == 2 and [Path(s["file"]).name for s in rep["skipped"]] == ["broken.png"]
    x, codes, recon, encode, generate = _torch_pipeline(e2e, names)

    per = rep["distortion"]["per_image"]
    l2 = [float(torch.nn.MSELoss()(recon[i : i + 1], x[i : i + 1])) for i in range(2)]
    with torch.no_grad():
        lp = [float(e2e["lpips_ref"](recon[i : i + 1], x[i : i + 1])) for i in range(2)]
    ours_l2, ours_lp = [per[n]["l2"] for n in names], [per[n]["lpips"] for n in names]
    print(
        f"L2 max err {_err(ours_l2, l2):.2e} (|ref| {max(l2):.3f}); LPIPS max err {_err(ours_lp, lp):.2e} "
        f"(|ref| {max(lp):.3f})"
    )
    assert _err(ours_l2, l2) <= _tol(l2) and _err(ours_lp, lp) <= _tol(lp)
    assert rep["distortion"]["l2"] == pytest.approx(np.mean(l2), rel=1e-4)
    assert rep["distortion"]["lpips"] == pytest.approx(np.mean(lp), rel=1e-4)

    w = codes.numpy()
    var = np.mean(np.linalg.norm(w - w.mean(1, keepdims=True), axis=-1), axis=1).mean()
    assert rep["latent"]["variation"] == pytest.approx(var, rel=1e-4)

    # metrics/LEC.py: ||codes - f^{-1}(E(G(f(codes))))||, norm over (n, 512); 2 values: none filtered.
    pca, d = e2e["pca"], e2e["direction"]
    gs = torch.zeros(1, N_STYLES, 512)
    gs[:, 0:3] = 2 * pca["std"][1] * pca["comp"][1]
    edits = {
        "age x3": (lambda c: c + 3 * d, lambda c: c - 3 * d),
        "ganspace pc1 0:3 2": (lambda c: c + gs, lambda c: c - gs),
    }
    for name, (f, inv) in edits.items():
        with torch.no_grad():
            dist = (codes - inv(encode(generate(f(codes))))).norm(2, dim=(1, 2)).numpy()
        ours = rep["editability"]["edits"][name]["lec"]
        print(f"LEC {name}: ours {ours:.5f} ref {dist.mean():.5f}")
        assert abs(ours - dist.mean()) <= _tol(dist.mean()) and dist.mean() > 0.1
    assert rep["editability"]["lec"] == pytest.approx(np.mean([v["lec"] for v in rep["editability"]["edits"].values()]))

    # FID of the reference Inception's pool3 features of the same images (2 < 2048: exact nuclear-norm form).
    with torch.no_grad():
        fr, ff = e2e["inc"]((x + 1) / 2)[0].numpy(), e2e["inc"]((recon + 1) / 2)[0].numpy()
    fid = _nuclear_fid(fr.astype(np.float64), ff.astype(np.float64))
    print(f"FID ours {rep['perception']['fid']:.4f} ref {fid:.4f}")
    assert rep["perception"]["fid"] == pytest.approx(fid, rel=1e-4)
    assert "fid_sample_size" in rep["notes"]

    swd = rep["perception"]["swd_per_resolution"]
    assert sorted(swd) == sorted([f"SWDx1e3_{r}" for r in (256, 128, 64, 32, 16)] + ["SWDx1e3_avg"])
    assert rep["perception"]["swd"] == swd["SWDx1e3_avg"] > 0
    assert rep["latent"]["recovery_samples"] == 2 and math.isfinite(rep["latent"]["recovery"])
    assert rep["latent"]["recovery"] > 0


def test_evaluate_cli_on_invert_output(e2e, tmp_path, capsys):
    cli, tmp = e2e["cli"], e2e["tmp"]
    inv = tmp_path / "inv"
    assert (
        cli(
            [
                "invert",
                "--model",
                str(tmp / "e4e"),
                "--images",
                str(e2e["imgs"]),
                "--output",
                str(inv),
                "--batch-size",
                "2",
            ]
        )
        == 3
    )
    out = tmp_path / "metrics"
    rc = cli(
        [
            "evaluate",
            "--model",
            str(tmp / "e4e"),
            "--inversions",
            str(inv),
            "--images",
            str(e2e["imgs"]),
            "--output",
            str(out),
            "--num-samples",
            "0",
            "--name",
            "e4e-tiny",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "e4e-tiny" in printed
    assert "FID needs Inception weights: convert pt_inception-2015-12-05-6726825d.pth" in printed
    rep = json.loads((out / "metrics.json").read_text())
    assert rep["n_images"] == 2 and "fid" not in rep["perception"] and "lpips" in rep["notes"]
    # calc_losses_on_images.py: the saved inversion and the original, both through the test transform.
    # The reconstructions the run's manifest lists (JPEG, invert's default), not whatever lies in the folder.
    pngs = [inv / n for n in (inv / "inversions.txt").read_text().splitlines()]
    assert len(pngs) == 2 and all(p.suffix == ".jpg" and p.is_file() for p in pngs)
    for png, name in zip(pngs, ["img0.png", "img1.png"]):
        ref = float(np.mean((_load_png(png) - _load_png(e2e["imgs"] / name)) ** 2))
        assert rep["distortion"]["per_image"][name]["l2"] == pytest.approx(ref, rel=1e-5)
    w = np.load(inv / "latents.npy")
    var = np.mean(np.linalg.norm(w - w.mean(1, keepdims=True), axis=-1), axis=1).mean()
    assert rep["latent"]["variation"] == pytest.approx(var, rel=1e-5)


def test_evaluate_cli_errors(e2e, tmp_path, capsys):
    cli, tmp = e2e["cli"], e2e["tmp"]
    base = ["evaluate", "--model", str(tmp / "e4e"), "--output", str(tmp_path / "o")]
    assert cli(base) == 2 and "--images" in capsys.readouterr().err
    assert cli(base + ["--images", str(e2e["imgs"]), "--inception", str(tmp / "lpips")]) == 2
    assert "'inception' bundle" in capsys.readouterr().err
    assert cli(base + ["--images", str(e2e["imgs"]), "--ganspace-edit", "0,0,3,1"]) == 2
    assert "--ganspace" in capsys.readouterr().err
    (tmp_path / "inv").mkdir()
    assert cli(base + ["--inversions", str(tmp_path / "inv")]) == 2
    assert "files.txt is missing" in capsys.readouterr().err
    assert cli(base[:-1] + [str(tmp_path / "inv" / "o"), "--inversions", str(tmp_path / "inv")]) == 2
    assert "overlaps the input" in capsys.readouterr().err
    torch.save(torch.zeros(1, N_STYLES + 1, 512), tmp_path / "pose.pt")
    assert cli(base + ["--images", str(e2e["imgs"]), "--directions", str(tmp_path / "pose.pt")]) == 2
    assert "pose.pt: direction of shape (7, 512)" in capsys.readouterr().err
