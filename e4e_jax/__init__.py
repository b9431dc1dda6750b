"""e4e-jax: Designing an Encoder for StyleGAN Image Manipulation, in JAX/Flax."""

__version__ = "0.1.0"
