"""PyTorch reference of the ReStyle encoders and of ReStyle's iterative inference.

Written for the parity tests from the published architecture (ReStyle, Alaluf et al. 2021; torchvision's
ResNet-34) with the module and parameter names of the official code (`yuval-alaluf/restyle-encoder`,
models/encoders/restyle_{psp,e4e}_encoders.py), so that `state_dict()` has the official keys
(`input_layer.0.weight`, `body.3.res_layer.5.fc1.weight`, `conv1.weight`, `relu.weight`,
`body.3.downsample.0.weight`, `styles.0.convs.6.weight`, `styles.0.linear.weight`, ...):

  BackboneEncoder / ProgressiveBackboneEncoder            IR-SE50 input_layer + body (opts.input_nc channels)
  ResNetBackboneEncoder / ResNetProgressiveBackboneEncoder conv1 7x7/2, bn1, PReLU `relu`, no max-pool, then
                                                           torchvision resnet34's layer1..4 as one `body`
  every style: GradualStyleBlock(512, 512, 16) on the last map; progressive: w_0 + styles[i] for i <= stage

`ReStyleNet` is the pSp / e4e wrapper's forward (codes + latent_avg at the first iteration, + the previous
latent after it; decoder at input_is_latent; face_pool to 256) and `run_on_batch` / `get_average_image`
the official inference loop of utils/inference_utils.py, with `--resize_outputs` (the framing official
training uses; without it the official loop crops rows 64:448, i.e. assumes a 512 cars generator).
"""

from __future__ import annotations

import torch
from torch import nn

from tests.refs.psp_encoders import GradualStyleBlock, body, input_layer

RESNET34_LAYERS = ((64, 3), (128, 4), (256, 6), (512, 3))  # (width, blocks) of layer1..layer4


class BasicBlock(nn.Module):
    """torchvision's BasicBlock (expansion 1), its attribute names."""

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


def resnet34_blocks():
    """torchvision resnet34's layer1..layer4 blocks, in order (its `_make_layer`)."""
    blocks, inplanes = [], 64
    for l, (planes, n) in enumerate(RESNET34_LAYERS):
        for i in range(n):
            stride = 2 if (l > 0 and i == 0) else 1
            down = None
            if stride != 1 or inplanes != planes:
                down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
            blocks.append(BasicBlock(inplanes, planes, stride, down))
            inplanes = planes
    return blocks


class _Styles(nn.Module):
    """The style head shared by the four classes: n GradualStyleBlock(512, 512, 16) on the last map."""

    def _make_styles(self, n_styles, progressive):
        self.styles = nn.ModuleList([GradualStyleBlock(512, 512, 16) for _ in range(n_styles)])
        self.style_count = n_styles
        self.progressive = progressive
        self.progressive_stage = 18  # ProgressiveStage.Inference

    def head(self, x):
        if not self.progressive:
            return torch.stack([s(x) for s in self.styles], dim=1)
        w0 = self.styles[0](x)
        w = w0.repeat(self.style_count, 1, 1).permute(1, 0, 2)
        for i in range(1, min(self.progressive_stage + 1, self.style_count)):
            w[:, i] += self.styles[i](x)
        return w


class BackboneEncoder(_Styles):
    """ReStyle-pSp over IR-SE (progressive=False); ProgressiveBackboneEncoder: ReStyle-e4e."""

    def __init__(self, num_layers=50, mode="ir_se", n_styles=18, input_nc=6, progressive=False):
        super().__init__()
        self.input_layer = input_layer(input_nc)
        self.body = body(num_layers, mode)
        self._make_styles(n_styles, progressive)

    def forward(self, x):
        return self.head(self.body(self.input_layer(x)))


class ProgressiveBackboneEncoder(BackboneEncoder):
    def __init__(self, num_layers=50, mode="ir_se", n_styles=18, input_nc=6):
        super().__init__(num_layers, mode, n_styles, input_nc, progressive=True)


class ResNetBackboneEncoder(_Styles):
    """ReStyle-pSp over ResNet-34 (progressive=False); ResNetProgressiveBackboneEncoder: ReStyle-e4e."""

    def __init__(self, n_styles=18, input_nc=6, progressive=False):
        super().__init__()
        self.conv1 = nn.Conv2d(input_nc, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.PReLU(64)
        self.body = nn.Sequential(*resnet34_blocks())
        self._make_styles(n_styles, progressive)

    def forward(self, x):
        return self.head(self.body(self.relu(self.bn1(self.conv1(x)))))


class ResNetProgressiveBackboneEncoder(ResNetBackboneEncoder):
    def __init__(self, n_styles=18, input_nc=6):
        super().__init__(n_styles, input_nc, progressive=True)


class ReStyleNet(nn.Module):
    """Official pSp / e4e (ReStyle's models/psp.py, models/e4e.py): encoder, decoder, latent_avg
    (n_styles, 512), face_pool; `forward` as theirs for the arguments inference uses."""

    def __init__(self, encoder, decoder, latent_avg):
        super().__init__()
        self.encoder, self.decoder, self.latent_avg = encoder, decoder, latent_avg
        self.face_pool = nn.AdaptiveAvgPool2d((256, 256))

    def forward(self, x, latent=None, resize=True, input_code=False, randomize_noise=True, return_latents=False):
        if input_code:
            codes = x
        else:
            codes = self.encoder(x)
            if x.shape[1] == 6 and latent is not None:
                codes = codes + latent  # residual step with respect to the previous iteration
            else:
                codes = codes + self.latent_avg.repeat(codes.shape[0], 1, 1)  # first iteration
        images, result_latent = self.decoder(
            [codes], input_is_latent=True, randomize_noise=randomize_noise, return_latents=return_latents
        )
        if resize:
            images = self.face_pool(images)
        return (images, result_latent) if return_latents else images


def get_average_image(net, dataset_type):
    """utils/inference_utils.get_average_image: (3, h, w)."""
    avg = net(net.latent_avg.unsqueeze(0), input_code=True, randomize_noise=False, return_latents=False)[0]
    return avg[:, 32:224, :] if dataset_type == "cars_encode" else avg


def run_on_batch(inputs, net, dataset_type, n_iters, avg_image):
    """utils/inference_utils.run_on_batch with opts.resize_outputs=True: (y_hat per iteration, latent per
    iteration), each a list of n_iters tensors (B, 3, h, w) / (B, n_styles, 512)."""
    y_hat, latent = None, None
    images, latents = [], []
    for it in range(n_iters):
        if it == 0:
            x_input = torch.cat([inputs, avg_image.unsqueeze(0).repeat(inputs.shape[0], 1, 1, 1)], dim=1)
        else:
            x_input = torch.cat([inputs, y_hat], dim=1)
        y_hat, latent = net.forward(x_input, latent=latent, randomize_noise=False, return_latents=True, resize=True)
        if dataset_type == "cars_encode":
            y_hat = y_hat[:, :, 32:224, :]
        images.append(y_hat)
        latents.append(latent)
        # resize input to 256 before feeding into next iteration
        y_hat = nn.AdaptiveAvgPool2d((192, 256))(y_hat) if dataset_type == "cars_encode" else net.face_pool(y_hat)
    return images, latents
