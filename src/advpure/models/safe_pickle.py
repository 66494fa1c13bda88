"""Read an EDM network pickle without executing anything it contains.

EDM snapshots (``network-snapshot-*.pkl``) are pickles of ``torch_utils.persistence`` objects:
each module is ``_reconstruct_persistent_obj(meta)`` whose ``meta`` embeds the source code of
its class, which the normal unpickler ``exec``s. Here every global is looked up in a short
allow-list: persistent objects and ``ModuleDict``s become inert ``Record``s holding their state
dict, tensor storages are read with ``torch.load(..., weights_only=True)``, numpy scalars are
rebuilt from their bytes. Anything else is refused by name. No code from the file runs.
"""
from __future__ import annotations

import collections
import io
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass
class Record:
    """An object of the pickle, kept as data: its class name and its ``__dict__``."""

    class_name: str
    state: dict[str, Any] = field(default_factory=dict)

    def __setstate__(self, state: dict[str, Any]) -> None:   # BUILD of a NEWOBJ-made object
        self.state = state

    @property
    def children(self) -> dict[str, Record]:
        return dict(self.state.get("_modules") or {})

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Parameters and (non-None) buffers of this module and its children, by dotted name,
        in ``state_dict`` order."""
        found = {prefix + k: v.detach() for part in ("_parameters", "_buffers")
                 for k, v in (self.state.get(part) or {}).items() if v is not None}
        for name, child in self.children.items():
            found.update(child.tensors(f"{prefix}{name}."))
        return found


def _persistent_object(meta: dict[str, Any]) -> Record:
    return Record(str(meta.get("class_name")), dict(meta.get("state") or {}))


class _ModuleDict(Record):
    def __init__(self) -> None:
        super().__init__("ModuleDict")


def _storage_from_bytes(blob: bytes) -> Any:
    return torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")


def _numpy_scalar(dtype: np.dtype, data: bytes | str) -> Any:
    raw = data.encode("latin1") if isinstance(data, str) else data
    return np.frombuffer(raw, dtype=dtype)[0].item()


ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_object,
    ("torch.nn.modules.container", "ModuleDict"): _ModuleDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,     # pickled with numpy 1.x
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,    # pickled with numpy 2.x
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of ``ALLOWED``; any other global is an error naming it."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: not one of the objects an EDM network "
                "pickle is expected to hold (nothing from the file is executed)") from None


def read_edm_pickle(path: str | Path) -> dict[str, Any]:
    """The top-level dict of an EDM snapshot, modules as ``Record``s."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"EDM pickle: expected a file, found none at {path}")
    if zipfile.is_zipfile(path):
        raise ValueError(f"EDM pickle {path}: expected an EDM snapshot pickle, found a torch.save "
                         "zip archive (a PyTorch checkpoint of another family?)")
    try:
        with path.open("rb") as f:
            content = RestrictedUnpickler(f).load()
    except Exception as err:     # a refused global, truncated, or not a pickle at all
        raise ValueError(f"EDM pickle {path}: could not be read as an EDM network pickle "
                         f"(truncated or another format?): {type(err).__name__}: "
                         f"{str(err)[:200]}") from None
    if not isinstance(content, dict) or not isinstance(content.get("ema"), Record):
        raise ValueError(f"EDM pickle {path}: expected a dict with an 'ema' network "
                         f"(an EDM training snapshot), found {type(content).__name__}")
    return content
