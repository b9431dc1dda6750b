"""Write network pickles the way NVlabs stylegan2-ada-pytorch's training loop does (`network-snapshot-*.pkl`).

The official `torch_utils/persistence.py` makes every network pickle as a call
`torch_utils.persistence._reconstruct_persistent_obj(meta)` with
`meta = dict(type='class', version=6, module_src=<source of the defining module>, class_name=..., state=<__dict__>)`;
tensors inside `state` go through ordinary torch pickling (storages as `torch.storage._load_from_bytes`).
The file is a plain `pickle.dump` of
`{'G', 'D', 'G_ema', 'training_set_kwargs' (dnnlib.EasyDict), 'augment_pipe'}`.

Stand-ins for `torch_utils.persistence` and `dnnlib.util.EasyDict` are registered in `sys.modules` (only
if no real ones are importable) so that pickle can name them as globals; loading such a pickle with plain
`pickle.load` would *not* rebuild the networks (the stand-in refuses to exec source) - converters must
read it with the safe reader.
"""

from __future__ import annotations

import inspect
import pickle
import sys
import types
from pathlib import Path

import torch
from torch import nn

from tests.refs import nvlabs_stylegan2

PERSISTENCE_VERSION = 6


def _reconstruct_persistent_obj(meta):  # pragma: no cover - only named in pickles, never called by tests
    raise RuntimeError("test stand-in: NVlabs persistent objects are not rebuilt by executing their source")


class EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict: a dict with attribute access (pickled by class name)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)

    def __setattr__(self, name, value):
        self[name] = value


def _install_fake_modules() -> None:
    """Register torch_utils.persistence and dnnlib.util so pickle can reference their globals."""
    if "torch_utils.persistence" not in sys.modules:
        tu = types.ModuleType("torch_utils")
        tu.__path__ = []
        pers = types.ModuleType("torch_utils.persistence")
        _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"  # pickle names it by __module__
        pers._reconstruct_persistent_obj = _reconstruct_persistent_obj
        tu.persistence = pers
        sys.modules["torch_utils"] = tu
        sys.modules["torch_utils.persistence"] = pers
    if "dnnlib.util" not in sys.modules:
        dn = types.ModuleType("dnnlib")
        dn.__path__ = []
        util = types.ModuleType("dnnlib.util")
        EasyDict.__module__ = "dnnlib.util"
        EasyDict.__qualname__ = "EasyDict"
        util.EasyDict = EasyDict
        dn.util = util
        dn.EasyDict = EasyDict
        sys.modules["dnnlib"] = dn
        sys.modules["dnnlib.util"] = util


_install_fake_modules()
dnnlib = sys.modules["dnnlib"]


@nvlabs_stylegan2.persistent_class
class Discriminator(nn.Module):
    """Tiny stand-in for the pickled discriminator (the converter must ignore 'D')."""

    def __init__(self, c_dim=0, img_resolution=32, img_channels=3):
        super().__init__()
        self.fromrgb = nn.Linear(img_channels, 4)
        self.register_buffer("resample_filter", nvlabs_stylegan2.setup_filter([1, 3, 3, 1]))


_SOURCES: dict[str, str] = {}


def _module_src(cls) -> str:
    name = cls.__module__
    if name not in _SOURCES:
        _SOURCES[name] = inspect.getsource(sys.modules[name])
    return _SOURCES[name]


class _PersistentPickler(pickle.Pickler):
    """Pickles every nn.Module as the official persistent-object reconstruct call."""

    def reducer_override(self, obj):
        if isinstance(obj, nn.Module) and hasattr(obj, "_init_kwargs"):
            meta = dict(
                type="class",
                version=PERSISTENCE_VERSION,
                module_src=_module_src(type(obj)),
                class_name=type(obj).__name__,
                state=obj.__getstate__(),
            )
            return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,))
        return NotImplemented


def save_network_pickle(path: str | Path, G, G_ema, D=None, training_set_kwargs=None, augment_pipe=None) -> Path:
    """Write {'G', 'D', 'G_ema', 'training_set_kwargs', 'augment_pipe'} as NVlabs' training loop does."""
    path = Path(path)
    if training_set_kwargs is None:
        training_set_kwargs = dnnlib.EasyDict(
            class_name="training.dataset.ImageFolderDataset",
            path="datasets/tiny.zip",
            use_labels=False,
            max_size=None,
            xflip=False,
            resolution=G_ema.img_resolution,
        )
    data = dict(G=G, D=D, G_ema=G_ema, training_set_kwargs=training_set_kwargs, augment_pipe=augment_pipe)
    with open(path, "wb") as f:
        _PersistentPickler(f, protocol=pickle.DEFAULT_PROTOCOL).dump(data)
    return path


def make_generator(seed=0, **kwargs) -> nvlabs_stylegan2.Generator:
    """Reference Generator with random non-default weights; kwargs as the official constructor's.

    mapping_kwargs / synthesis_kwargs are wrapped in dnnlib.EasyDict like train.py does.
    """
    kwargs = dict(kwargs)
    for k in ("mapping_kwargs", "synthesis_kwargs"):
        kwargs[k] = dnnlib.EasyDict(kwargs.get(k, {}))
    torch.manual_seed(seed)
    return nvlabs_stylegan2.Generator(**kwargs).eval().randomize_(seed)
