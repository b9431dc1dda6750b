"""Safe reader for PyTorch checkpoints: needs no torch and never runs code from the file.

    obj = load_checkpoint(path)

Formats read (chosen by the file's first bytes, not its name):
  * zip archives written by ``torch.save`` (default since torch 1.6): ``<prefix>/data.pkl`` whose
    persistent ids ``('storage', StorageType, key, location, numel)`` name raw records
    ``<prefix>/data/<key>``; ``<prefix>/byteorder`` says 'little' or 'big' (big is byteswapped).
  * legacy (non-zip) ``torch.save`` files: magic-number pickle, protocol 1001, sys_info pickle,
    the main pickle (persistent ids ``('storage', StorageType, root_key, location, numel[, view])``),
    the pickled list of storage keys, then per key an int64 little-endian element count and the
    raw little-endian bytes. Any location tag ('cpu', 'cuda:0', ...) is accepted and ignored.
  * plain pickles (``pickle.dump``) holding tensors: storages there reduce to
    ``torch.storage._load_from_bytes(bytes)`` whose bytes are themselves a torch.save file,
    parsed recursively. NVlabs stylegan2-ada / stylegan3 network pickles are of this kind.

What comes back:
  * tensors and ``nn.Parameter`` -> ``numpy.ndarray`` with the tensor's shape (storage offset and
    strides honoured). float16 and bfloat16 come back as **float32** (numpy has no bfloat16;
    the conversion is exact). Other dtypes keep theirs (float32/64, int8..64, uint8..64, bool,
    complex64/128). A tensor covering its whole contiguous storage is returned as a writable view
    of the bytes read for that storage (no second copy); other views are copied. So two tensors
    that share one whole storage share memory, as they do in torch.
  * dict / ``collections.OrderedDict`` / list / tuple / set / str / int / float / None ... as is;
    ``argparse.Namespace`` -> `NamespaceDict` (a dict); ``dnnlib.EasyDict`` -> `EasyDict` (a dict);
    ``torch.Size`` -> tuple; ``torch.device`` -> str ('cuda:0'); ``torch.float32`` -> `TorchDtype`.
  * NVlabs persistent objects (``torch_utils.persistence._reconstruct_persistent_obj(meta)``) and
    pickled ``torch.nn.modules.*`` instances -> `PersistentObject`. The embedded ``module_src`` is
    kept as text only: it is never compiled or executed.
  * numpy arrays / scalars pickled through numpy's own reduce functions -> numpy objects.

Safety: unpickling goes through an allow-list of *data constructors*. Any other global
(``os.system``, ``builtins.eval``, unknown classes, ...) raises `UnsafePickleError` before anything
is called; nothing is imported by name from the file. Each pickle is scanned before it is unpickled, and
what a file may make is bounded (`limits`: entries with shared references counted at each use, nesting,
cycles, bytes allocated), so that a small hostile file cannot take minutes or GBs. Corrupt, truncated,
empty, foreign or over-bound files raise `CheckpointError`. Both name the file and are ``ValueError``
subclasses.

Layout: this module holds `load_checkpoint` (import it and the public names from `e4e_jax.torchfile`);
the work is done by
  * `containers` - the file formats above (zip / legacy / plain pickle) and storage reading;
  * `unpickler`  - the restricted unpickler and the per-file state nested unpicklers share;
  * `scan`       - a pickle's shape (entries, depth, cycles) from its opcodes, before it is unpickled;
  * `limits`     - the bounds on what one file may make, and its budget of bytes;
  * `allowlist`  - the allow-list: which globals a pickle may name, and what it gets instead;
  * `tensors`    - storages and tensor rebuilding (bounds-checked numpy views);
  * `dtypes`     - torch dtype / storage names and their raw and returned numpy dtypes;
  * `objects`    - the returned non-tensor objects (`PersistentObject`, `EasyDict`, ...);
  * `errors`     - `CheckpointError`, `UnsafePickleError`.
None of them imports torch or compiles / executes anything from the file.
"""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

from e4e_jax.torchfile.containers import _load_stream
from e4e_jax.torchfile.errors import CheckpointError
from e4e_jax.torchfile.tensors import _PENDING, _Storage
from e4e_jax.torchfile.unpickler import _Context


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, EOFError) or "truncated" in str(exc):
        return f"truncated file ({text}); re-download it"
    return f"not a readable PyTorch checkpoint or pickle ({text})"


def load_checkpoint(path: str | os.PathLike) -> Any:
    """Read a torch.save / pickle checkpoint without torch and without running its code.

    Args:
      path: .pt/.pth/.pkl file (zip torch.save, legacy torch.save, or a plain pickle).
    Returns:
      the saved object with tensors as numpy arrays (see the module docstring for the mapping).
    Raises:
      UnsafePickleError: the pickle references a global outside the allow-list (nothing ran).
      CheckpointError:   the file is empty, truncated, corrupt or not a checkpoint.
      FileNotFoundError / OSError: the file cannot be opened.
    """
    path = str(Path(path))
    with open(path, "rb") as f:
        ctx = _Context(path, _load_stream, os.fstat(f.fileno()).st_size)
        try:
            result = _load_stream(f, ctx, "file")
        except CheckpointError as e:
            raise (e.located(path) if e.path is None else e) from None
        except RecursionError:
            raise CheckpointError("pickle nests too deeply to read", path) from None
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            KeyError,
            IndexError,
            AttributeError,
            struct.error,
            zipfile.BadZipFile,
            OverflowError,
            UnicodeDecodeError,
            MemoryError,
        ) as e:
            raise CheckpointError(_describe(e), path) from None
    if isinstance(result, _Storage):  # torch.save(storage): hand back its values
        return result.numpy()
    if result is _PENDING:
        raise CheckpointError("internal error: unresolved tensor", path)
    return result
