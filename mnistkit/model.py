"""Models (the tutorial MLP and a small CNN), a registry by name, and self-describing checkpoints.

A checkpoint is a torch.save'd dict {"mnistkit": META, "state_dict": WEIGHTS}. META holds only plain
JSON types so that torch.load(weights_only=True) reads it without executing pickled code: format key
and version, architecture and its arguments, dataset, labels, normalization, preprocessing recipe,
test accuracy, seed, training config and library versions.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError, InvalidInputError, first_line
from .fileio import atomic_path, check_input_file, sha256_file  # noqa: F401  (re-exported)

CHECKPOINT_FORMAT = "mnistkit-checkpoint"
CHECKPOINT_VERSION = 1


class MLP(nn.Module):
    """The PyTorch tutorial's network, exactly: 784-256-128-64-C with ReLU, returns logits."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.flatten = nn.Flatten()
        self.layers = nn.Sequential(
            nn.Linear(28 * 28, 256), nn.ReLU(),
            nn.Linear(256, 128), nn.ReLU(),
            nn.Linear(128, 64), nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.flatten(x))


class CNN(nn.Module):
    """A small conv net: two 3x3 conv + max-pool stages, then a 128-unit hidden layer.

    Widths 32/64 reach >= 0.91 on Fashion-MNIST in 10 epochs (benchmarks/README.md) while staying
    cheap enough to train on 2 CPU cores in minutes.
    """

    def __init__(self, num_classes: int = 10, channels: tuple[int, int] = (32, 64), hidden: int = 128):
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * 7 * 7, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


MODELS: dict[str, type[nn.Module]] = {"mlp": MLP, "cnn": CNN}


def build_model(arch: str, **arch_args: Any) -> nn.Module:
    try:
        cls = MODELS[arch]
    except KeyError:
        raise InvalidInputError(
            f"unknown model {arch!r}; expected one of: {', '.join(MODELS)}"
        ) from None
    if "channels" in arch_args:  # JSON turns tuples into lists
        arch_args = {**arch_args, "channels": tuple(arch_args["channels"])}
    return cls(**arch_args)


# ---------------------------------------------------------------------------------------------
# Checkpoints


@dataclass
class Checkpoint:
    path: Path | None
    meta: dict
    state_dict: dict

    @property
    def arch(self) -> str:
        return self.meta["arch"]

    def build(self) -> nn.Module:
        """The model with its weights loaded, in eval mode, on the CPU."""
        model = build_model(self.meta["arch"], **self.meta.get("arch_args", {}))
        model.load_state_dict(self.state_dict)
        return model.eval()


def _check_json(meta: dict) -> dict:
    try:
        return json.loads(json.dumps(meta, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"checkpoint metadata must be plain JSON types: {exc}") from None


def save_checkpoint(path: str | os.PathLike, state_dict: dict, meta: dict) -> Path:
    """Write a checkpoint atomically (temp file + rename): the final name is never half-written."""
    meta = _check_json({"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **meta})
    payload = {"mnistkit": meta, "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


# Where training scripts keep the weights inside a checkpoint dict, in the order they are looked for: PyTorch
# Lightning and many repos ("state_dict"), PyTorch's "general checkpoint" tutorial ("model_state_dict"),
# torchvision's reference scripts and timm ("model"), and other common names.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "model_state", "weights")


@dataclass
class Weights:
    """The tensors found in a file, and how: for the log and the manifest."""

    tensors: dict
    key: str | None = None  # where inside the checkpoint (None: the file is the state_dict)
    kind: str = "state_dict"  # "state_dict", "Lightning checkpoint", "training checkpoint"
    hyper_parameters: dict | None = None  # Lightning's saved __init__ arguments


def _all_tensors(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def find_weights(obj, path: Path) -> Weights:
    """The state_dict in what torch.load returned: the object itself, or a checkpoint dict's entry under one of
    STATE_DICT_KEYS. Raises CheckpointError naming the keys found when there is none."""
    if _all_tensors(obj):
        return Weights(obj)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state_dict (a dict of tensors) or a checkpoint dict holding one, "
                              f"found a {type(obj).__name__}")
    if "mnistkit" in obj and _all_tensors(obj.get("state_dict")):  # a mnistkit checkpoint through a user's class
        return Weights(obj["state_dict"], "state_dict", "mnistkit checkpoint")
    lightning = "pytorch-lightning_version" in obj or "lightning_version" in obj
    for key in STATE_DICT_KEYS:
        if _all_tensors(obj.get(key)):
            hp = obj.get("hyper_parameters")
            return Weights(obj[key], key, "Lightning checkpoint" if lightning else "training checkpoint",
                           hp if isinstance(hp, dict) else None)
    keys = [str(k) for k in list(obj)[:8]]
    more = " ..." if len(obj) > 8 else ""
    raise CheckpointError(f"{path}: no state_dict found: expected a dict of tensors, or a checkpoint holding one under "
                          f"{', '.join(repr(k) for k in STATE_DICT_KEYS)}; its keys: {', '.join(keys)}{more}")


BARE_STATE_DICT_HINT = (
    "it looks like a bare state_dict; name the class it was saved from with "
    "--model-class your_script.py:Net (export, verify and bench take it; e.g. "
    "`mnistkit export FILE --model-class your_script.py:Net`)"
)


def load_torch_bytes(data: bytes, path: Path, what: str = "mnistkit checkpoint"):
    """torch.load(weights_only=True) on a file's bytes, after the loading gate (mnistkit.safeload).

    One CheckpointError line for a hostile, truncated or foreign file; `what` names what was expected.
    """
    import io

    from .errors import ArtifactError
    from .safeload import check_archive

    try:  # the loading gate first: one clear line naming the entry and the global it asks for
        check_archive(None, str(path), _data=data)
    except ArtifactError as exc:
        raise CheckpointError(str(exc)) from None
    from .gate import UnsafeLoad, no_unsafe_loads

    try:
        with warnings.catch_warnings(), no_unsafe_loads():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except UnsafeLoad as exc:
        raise CheckpointError(f"{path}: refuses to load: it asked for an unsafe unpickling ({exc.what})") from None
    except pickle.UnpicklingError as exc:
        first = first_line(exc)
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise CheckpointError(
                f"{path}: holds pickled Python objects that a safe (weights_only) load refuses; "
                f"not a {what}"
            ) from None
        raise CheckpointError(f"{path}: not a PyTorch file ({first[:120]})") from None
    except Exception as exc:  # torch.load raises many types on bad bytes (KeyError, RuntimeError, ...)
        first = first_line(exc)
        looks_zip = data[:2] == b"PK"  # a torch.save zip whose end (central directory) is missing
        if looks_zip or isinstance(exc, (RuntimeError, EOFError)):
            raise CheckpointError(f"{path}: corrupt or truncated PyTorch file ({first[:120]})") from None
        raise CheckpointError(f"{path}: not a PyTorch file ({type(exc).__name__}: {first[:100]})") from None


def load_checkpoint(path: str | os.PathLike, data: bytes | None = None) -> Checkpoint:
    """Load a mnistkit checkpoint with torch.load(weights_only=True): no pickled code runs.

    `data`: the file's bytes, already read (the exporter hashes exactly what it loads).
    Raises CheckpointError for a missing, empty, truncated or foreign file, naming what it found.
    """
    import io

    path = Path(path)
    if data is None:
        check_input_file(path, "a mnistkit checkpoint", CheckpointError)
        data = path.read_bytes()
    if not data:
        raise CheckpointError(f"{path}: empty file, expected a mnistkit checkpoint")
    names: list[str] = []
    if data[:2] == b"PK" and zipfile.is_zipfile(io.BytesIO(data)):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:
            raise CheckpointError(f"{path}: corrupt or truncated PyTorch file ({first_line(exc, 120)})") from None
        if any("/code/" in n for n in names):
            raise CheckpointError(f"{path}: is a TorchScript archive, not a mnistkit checkpoint")
        if any(n.endswith("/archive_format") or "/models/" in n for n in names):
            raise CheckpointError(f"{path}: is a torch.export program (.pt2), not a mnistkit checkpoint")
    obj = load_torch_bytes(data, path)
    if isinstance(obj, dict) and "mnistkit" in obj and "state_dict" in obj:
        meta = obj["mnistkit"]
        if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path}: has a 'mnistkit' key but no {CHECKPOINT_FORMAT!r} format tag")
        version = meta.get("format_version")
        if not isinstance(version, int) or version > CHECKPOINT_VERSION:
            raise CheckpointError(
                f"{path}: checkpoint format version {version!r}; this mnistkit reads up to "
                f"{CHECKPOINT_VERSION} (upgrade mnistkit)"
            )
        return Checkpoint(path, meta, obj["state_dict"])
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a mnistkit checkpoint: {BARE_STATE_DICT_HINT}")
    try:
        weights = find_weights(obj, path)
    except CheckpointError:
        weights = None
    if weights is not None:
        raise CheckpointError(f"{path}: not a mnistkit checkpoint: a {weights.kind} (its weights under "
                              f"{weights.key!r}); name the class it was saved from with --model-class your_script.py:Net "
                              "(and its arguments with --model-args '{\"hidden\": 256}' if it takes any)")
    raise CheckpointError(
        f"{path}: not a mnistkit checkpoint (found a {type(obj).__name__}; expected a dict with "
        f"'mnistkit' metadata and a 'state_dict')"
    )

