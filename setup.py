"""e4e-jax: a JAX/Flax reimplementation of e4e (Tov et al., 2021)."""

from setuptools import find_packages, setup

setup(
    name="e4e-jax",
    version="0.1.0",
    description="Encoder for StyleGAN image manipulation (e4e) in JAX/Flax, with safe PyTorch weight converters",
    # The converters live in tools/convert_weights/ (run from the repository as `python -m tools.convert_weights`)
    # and install as e4e_jax_tools.convert_weights: no generic top-level `tools` package in site-packages.
    packages=find_packages(include=["e4e_jax", "e4e_jax.*"]) + ["e4e_jax_tools", "e4e_jax_tools.convert_weights"],
    package_dir={"e4e_jax_tools": "tools"},
    python_requires=">=3.11",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
    ],
    install_requires=[
        "jax>=0.10",
        "flax>=0.12",
        "optax>=0.2",
        "orbax-checkpoint>=0.11",
        "numpy>=1.26",
        "ml-collections>=0.1.1",
        "pillow>=10",
        "tqdm>=4.60",
    ],
    extras_require={
        # torch builds the PyTorch reference models of the parity tests; nothing else needs it. The tests
        # against the real lpips / pytorch-fid packages need them too, but both require torchvision (and so
        # a torch of its choosing): .ci/run installs them with --no-deps instead of listing them here.
        "test": ["pytest>=8", "pytest-xdist>=3.6", "torch>=2.2"],
        # Training input pipeline and metric writers; inversion and conversion need neither.
        "train": ["tensorflow-cpu", "tensorflow-datasets", "clu", "tensorboard"],
        # Face alignment of real photos (`e4e-jax align`, `invert --align`): dlib's binary wheel and
        # its 68-point landmark model; scipy for the padding blur (jax depends on it anyway).
        # Imported only by e4e_jax/inference/alignment.py, lazily.
        "align": ["dlib-bin>=19.24", "face-recognition-models>=0.1.3", "scipy>=1.9"],
        # `e4e-jax studio`, the interactive editing page (imported only by e4e_jax/studio/app.py and its
        # command, lazily); gradio_client drives its endpoints. Pinned: the page is tested against it.
        "studio": ["gradio==6.31.0", "gradio_client==2.7.2"],
    },
    entry_points={
        "console_scripts": [
            "e4e-jax=e4e_jax.cli:entry",
            "e4e-convert=e4e_jax_tools.convert_weights:entry",
        ]
    },
)
