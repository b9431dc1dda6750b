"""Editability losses (Eq. 1-3), R1 (jax.grad vs finite differences and torch autograd), and the
optimizers (Ranger vs a PyTorch reference of the official algorithm, Adam vs torch.optim.Adam)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn.functional as F

from e4e_jax import losses as obj
from e4e_jax.models.latent_discriminator import LatentCodesDiscriminator
from e4e_jax.training import optim

HI = "highest"


def _tol(ref, got, rel=1e-4):
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    assert np.max(np.abs(ref - got)) <= rel * max(1.0, np.max(np.abs(ref))), np.max(np.abs(ref - got))


# ----------------------------------------------------------------------------- Eq. 1-3


def test_delta_reg_matches_official_loop_and_is_differentiable_at_zero():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(3, 6, 16)).astype(np.float32)
    codes[:, 4:] = codes[:, :1]  # deltas 4, 5 are exactly zero (inactive layers of a progressive stage)
    stage = 3
    t = torch.from_numpy(codes)
    want = sum(torch.norm(t[:, i] - t[:, 0], 2, dim=1).mean() for i in range(1, stage + 1))
    active = jnp.arange(6) <= stage
    total, per = obj.delta_reg_loss(jnp.asarray(codes), active)
    _tol(float(want), total)
    assert per.shape == (6,) and float(per[0]) == 0 and float(per[5]) == 0
    g = jax.grad(lambda c: obj.delta_reg_loss(c, None)[0])(jnp.asarray(codes))
    assert np.all(np.isfinite(g))  # torch's subgradient 0 at ||Δ|| = 0, not NaN
    np.testing.assert_array_equal(np.asarray(g)[:, 4:], 0.0)


def test_adversarial_losses_match_official():
    rng = np.random.default_rng(1)
    fake = rng.normal(size=(4, 5, 1)).astype(np.float32) * 3
    real = rng.normal(size=(4, 1)).astype(np.float32) * 3
    dims = [0, 1, 2]
    ft = torch.from_numpy(fake)
    want = sum(F.softplus(-ft[:, i]).mean() for i in dims) / len(dims)  # coach.calc_loss
    _tol(float(want), obj.encoder_adv_loss(jnp.asarray(fake), jnp.arange(5) < 3))
    _tol(float(sum(F.softplus(-ft[:, i]).mean() for i in range(5)) / 5), obj.encoder_adv_loss(jnp.asarray(fake)))
    d_loss, parts = obj.discriminator_adv_loss(jnp.asarray(real), jnp.asarray(fake[:, 0]))
    want_d = F.softplus(-torch.from_numpy(real)).mean() + F.softplus(ft[:, 0]).mean()
    _tol(float(want_d), d_loss)
    _tol(float(d_loss), parts["d_real_loss"] + parts["d_fake_loss"])


# ----------------------------------------------------------------------------- R1


def _small_disc(dim=16, seed=0):
    d = LatentCodesDiscriminator(style_dim=dim, precision=HI)
    p = d.init(jax.random.key(seed), jnp.zeros((1, dim)))["params"]
    p = jax.tree.map(lambda a: a * 4.0, p)  # larger weights: a less flat D
    p["mlp_6"] = {"kernel": jax.random.normal(jax.random.key(9), (dim, 1)) * 0.5, "bias": jnp.zeros((1,))}
    return d, p


def test_r1_matches_finite_differences():
    dim = 16
    d, p = _small_disc(dim)
    real_w = jax.random.normal(jax.random.key(1), (3, dim))
    f = lambda w: d.apply({"params": p}, w)  # noqa: E731
    penalty = float(obj.r1_penalty(f, real_w))
    # Central differences of D (piecewise linear: exact away from kinks) per sample and coordinate.
    w = np.asarray(real_w, np.float64)
    eps = 1e-3
    grads = np.zeros_like(w)
    for b in range(w.shape[0]):
        for j in range(dim):
            e = np.zeros_like(w)
            e[b, j] = eps
            up = float(jnp.sum(f(jnp.asarray(w + e, jnp.float32))))
            dn = float(jnp.sum(f(jnp.asarray(w - e, jnp.float32))))
            grads[b, j] = (up - dn) / (2 * eps)
    fd = float(np.mean(np.sum(grads**2, axis=1)))
    assert abs(penalty - fd) <= 2e-3 * max(1.0, fd), (penalty, fd)
    assert penalty > 0.1
    _tol(10 / 2 * penalty * 16, obj.r1_loss(f, real_w, 10.0, 16))


def test_r1_loss_and_its_parameter_gradient_match_torch_autograd():
    dim = 16
    d, p = _small_disc(dim, seed=3)
    real_w = np.asarray(jax.random.normal(jax.random.key(2), (4, dim)))
    # torch reference with the same weights, official discriminator_r1_loss + r1/2 * loss * d_reg_every.
    layers = []
    for i in range(4):
        lin = torch.nn.Linear(dim if i < 3 else dim, dim if i < 3 else 1).double()
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.asarray(p[f"mlp_{2 * i}"]["kernel"]).T.astype(np.float64)))
            lin.bias.copy_(torch.from_numpy(np.asarray(p[f"mlp_{2 * i}"]["bias"]).astype(np.float64)))
        layers += [lin] + ([torch.nn.LeakyReLU(0.2)] if i < 3 else [])
    ref = torch.nn.Sequential(*layers)
    rw = torch.from_numpy(real_w.astype(np.float64)).requires_grad_(True)
    pred = ref(rw)
    (g,) = torch.autograd.grad(pred.sum(), rw, create_graph=True)
    penalty = g.pow(2).reshape(g.shape[0], -1).sum(1).mean()
    loss = 10.0 / 2 * penalty * 16
    loss.backward()
    want_grad_last = ref[6].weight.grad.numpy().T

    val, grads = jax.value_and_grad(
        lambda q: obj.r1_loss(lambda w: d.apply({"params": q}, w), jnp.asarray(real_w), 10.0, 16)
    )(p)
    _tol(loss.item(), val)
    _tol(want_grad_last, grads["mlp_6"]["kernel"])
    _tol(ref[0].weight.grad.numpy().T, grads["mlp_0"]["kernel"])


# ----------------------------------------------------------------------------- optimizers


class TorchRanger:
    """Reference of the official Ranger (RAdam + Lookahead + GC) written from the algorithm description:
    per parameter, GC over dims 1.. for dim > 1, moments, N_sma rectification (> 5), lookahead every k."""

    def __init__(self, params, lr, alpha=0.5, k=6, betas=(0.95, 0.999), eps=1e-5):
        self.params, self.lr, self.alpha, self.k, self.betas, self.eps = params, lr, alpha, k, betas, eps
        self.state = [
            dict(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p), slow=p.detach().clone()) for p in params
        ]

    @torch.no_grad()
    def step(self):
        b1, b2 = self.betas
        for p, s in zip(self.params, self.state):
            g = p.grad.clone()
            if g.dim() > 1:
                g -= g.mean(dim=tuple(range(1, g.dim())), keepdim=True)
            s["step"] += 1
            t = s["step"]
            s["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
            s["m"].mul_(b1).add_(g, alpha=1 - b1)
            b2t = b2**t
            n_max = 2 / (1 - b2) - 1
            n = n_max - 2 * t * b2t / (1 - b2t)
            if n > 5:
                size = math.sqrt((1 - b2t) * (n - 4) / (n_max - 4) * (n - 2) / n * n_max / (n_max - 2)) / (1 - b1**t)
                p.addcdiv_(s["m"], s["v"].sqrt().add(self.eps), value=-size * self.lr)
            else:
                p.add_(s["m"], alpha=-self.lr / (1 - b1**t))
            if t % self.k == 0:
                s["slow"].add_(p - s["slow"], alpha=self.alpha)
                p.copy_(s["slow"])


def _quadratic_grads(params_t, c, d):
    """g = c * p + d for each tensor (elementwise), so gradients follow the trajectory."""
    for p, ci, di in zip(params_t, c, d):
        p.grad = ci * p.detach() + di


def test_ranger_matches_reference_over_lookahead_syncs():
    rng = np.random.default_rng(0)
    conv_t = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)  # torch (O, I, kh, kw)
    lin_t = rng.normal(size=(5, 4)).astype(np.float32)  # torch (out, in)
    bias = rng.normal(size=(5,)).astype(np.float32)
    to_ours = [lambda a: a.transpose(2, 3, 1, 0), lambda a: a.T, lambda a: a]
    tensors = [conv_t, lin_t, bias]
    cs = [rng.uniform(0.1, 2.0, size=a.shape).astype(np.float32) for a in tensors]
    ds = [rng.normal(size=a.shape).astype(np.float32) for a in tensors]

    tp = [torch.tensor(a, requires_grad=False) for a in tensors]
    ref = TorchRanger(tp, lr=1e-2)
    keys = ("conv", "lin", "bias")
    params = {k: jnp.asarray(f(a)) for k, f, a in zip(keys, to_ours, tensors)}
    c = {k: jnp.asarray(f(a)) for k, f, a in zip(keys, to_ours, cs)}
    dd = {k: jnp.asarray(f(a)) for k, f, a in zip(keys, to_ours, ds)}
    tx = optim.ranger(1e-2)
    lp = optax.LookaheadParams.init_synced(params)
    st = tx.init(lp)
    upd = jax.jit(tx.update)
    for step in range(14):  # crosses the rectification threshold (t = 6) and two lookahead syncs
        _quadratic_grads(tp, [torch.from_numpy(a) for a in cs], [torch.from_numpy(a) for a in ds])
        ref.step()
        g = jax.tree.map(lambda ci, di, p: ci * p + di, c, dd, lp.fast)
        u, st = upd(g, st, lp)
        lp = optax.apply_updates(lp, u)
        for k, f, p in zip(keys, to_ours, tp):
            np.testing.assert_allclose(
                np.asarray(lp.fast[k]), f(p.numpy()), rtol=2e-5, atol=2e-6, err_msg=f"{k} after step {step + 1}"
            )
    assert optim.first_rectified_step(0.999, 5.0) == 6


def test_discriminator_adam_matches_torch():
    rng = np.random.default_rng(3)
    w0 = rng.normal(size=(6, 3)).astype(np.float32)
    c = rng.uniform(0.5, 2, size=w0.shape).astype(np.float32)
    tw = torch.tensor(w0.copy(), requires_grad=True)
    topt = torch.optim.Adam([tw], lr=2e-2)
    tx = optim.discriminator_optimizer(2e-2)
    w = jnp.asarray(w0)
    st = tx.init(w)
    for _ in range(5):
        topt.zero_grad()
        (0.5 * (torch.from_numpy(c) * tw**2).sum()).backward()
        topt.step()
        u, st = tx.update(jnp.asarray(c) * w, st, w)
        w = optax.apply_updates(w, u)
    np.testing.assert_allclose(np.asarray(w), tw.detach().numpy(), rtol=1e-5, atol=1e-6)
