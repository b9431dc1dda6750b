"""ArcFace IR-SE50 identity network (TreB1eN's InsightFace port, as used by pSp/e4e's ID loss).

model_irse.Backbone(input_size=112, num_layers=50, mode='ir_se', affine=True), NHWC, inference mode:

    input_layer + body                       e4e_jax.models.irse.IRSEBackbone -> (B, 7, 7, 512)
    output_layer: BatchNorm2d(512) -> Dropout (identity at inference) -> Flatten in torch's C, H, W order
                  -> Linear(512·7·7, 512) -> BatchNorm1d(512)
    l2_norm: x / ||x||_2 (no eps, as the official helper)

Parameter tree (torch name -> ours):
    input_layer.*, body.*              -> backbone/... (see e4e_jax.models.irse)
    output_layer.0 (BatchNorm2d)       -> output_bn        {scale, bias}; batch_stats {mean, var}
    output_layer.3 (Linear)            -> output_linear    {kernel (512·7·7 in C,H,W order, 512), bias}
    output_layer.4 (BatchNorm1d)       -> output_bn1d      {scale, bias}; batch_stats {mean, var}
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from e4e_jax.models.irse import NUM_LAYERS_OF_UNITS, IRSEBackbone

EMBEDDING_DIM = 512  # output_layer's Linear and BatchNorm1d width
# Input side of the output Linear's fan-in (512 channels of a 7x7 or 14x14 map).
INPUT_SIZE_OF_FAN_IN = {512 * 7 * 7: 112, 512 * 14 * 14: 224}


def _bn(name: str, dtype) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=True, epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32, name=name)


class ArcFace(nn.Module):
    """Attributes: num_layers (50|100|152), mode ('ir'|'ir_se'), input_size (112|224), precision, dtype.

    __call__(x): (B, input_size, input_size, 3) face crops in [-1, 1] -> (B, 512) unit-norm embeddings.
    """

    num_layers: int = 50
    mode: str = "ir_se"
    input_size: int = 112
    precision: Any = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        s = self.input_size
        if x.ndim != 4 or x.shape[1:] != (s, s, 3):
            raise ValueError(f"ArcFace expects (B, {s}, {s}, 3) inputs, got {x.shape}")
        x, _ = IRSEBackbone(self.num_layers, self.mode, dtype=self.dtype, precision=self.precision, name="backbone")(x)
        x = _bn("output_bn", self.dtype)(x)
        # torch flattens NCHW: reorder so the Linear's weight columns line up without permuting them.
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
        x = nn.Dense(
            EMBEDDING_DIM, dtype=self.dtype, param_dtype=jnp.float32, precision=self.precision, name="output_linear"
        )(x)
        x = _bn("output_bn1d", self.dtype)(x).astype(jnp.float32)
        return x / jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))


def architecture_of(params: Mapping[str, Any]) -> dict[str, Any]:
    """(num_layers, mode, input_size) of ArcFace `params` (the 'params' collection), from their shapes."""
    bb = params["backbone"]
    units = sum(1 for k in bb if str(k).startswith("body_"))
    if units not in NUM_LAYERS_OF_UNITS:
        raise ValueError(f"ArcFace params have {units} body units; expected 24, 49 or 50")
    fan_in = int(params["output_linear"]["kernel"].shape[0])
    side = INPUT_SIZE_OF_FAN_IN.get(fan_in)
    if side is None:
        raise ValueError(f"ArcFace output_linear has fan-in {fan_in}; expected 512·7·7 (112) or 512·14·14 (224)")
    return {
        "num_layers": NUM_LAYERS_OF_UNITS[units],
        "mode": "ir_se" if "se" in bb["body_0"] else "ir",
        "input_size": side,
    }
