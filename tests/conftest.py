"""Test-wide settings: run JAX on the CPU (parity tolerances assume fp32 without TF32) unless
E4E_TEST_PLATFORM names another platform."""

import os

os.environ.setdefault("JAX_PLATFORMS", os.environ.get("E4E_TEST_PLATFORM", "cpu"))
# TensorFlow (training input pipeline) must never grab an accelerator in tests.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
