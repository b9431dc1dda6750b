"""Safe reader of PyTorch files (torch.save zip and legacy files, plain and NVlabs pickles): no torch
needed, no code from the file run. Formats, returned types and safety rules: `reader`'s docstring.

    from e4e_jax.torchfile import load_checkpoint
    obj = load_checkpoint("e4e_ffhq_encode.pt")   # tensors come back as numpy arrays

Used by the library (`.pt` direction files of e4e_jax/editing.py) and by the converters of
tools/convert_weights/.
"""

from e4e_jax.torchfile.dtypes import TorchDtype
from e4e_jax.torchfile.errors import CheckpointError, UnsafePickleError, short_repr
from e4e_jax.torchfile.objects import PERSISTENT_MODULE, EasyDict, NamespaceDict, PersistentObject
from e4e_jax.torchfile.reader import load_checkpoint

__all__ = [
    "load_checkpoint",
    "CheckpointError",
    "UnsafePickleError",
    "short_repr",
    "PersistentObject",
    "NamespaceDict",
    "EasyDict",
    "TorchDtype",
    "PERSISTENT_MODULE",
]
