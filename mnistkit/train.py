"""The trainer: `train(config) -> TrainResult`. No click, no printing: progress goes to a callback.

Why it is fast (benchmarks/README.md has the numbers): each split is one uint8 tensor on the
training device; a batch is an index slice of it, converted and normalized in two in-place ops; the
optimizer is the fused single-kernel variant where torch has one. At batch 64 the per-op overhead of
the framework, not arithmetic, is what a step costs, so every op cut from the step counts.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .data import dataset_spec, load_split
from .environment import library_versions
from .errors import InvalidInputError, TrainingInterrupted
from .model import MODELS, build_model, save_checkpoint
from .tables import LOSSES, OPTIMIZERS, TRAIN_DEFAULTS, TRAIN_DEVICES as DEVICES



@dataclass
class TrainConfig:
    """Everything that defines a training run. Defaults are the PyTorch tutorial's."""

    dataset: str = TRAIN_DEFAULTS["dataset"]
    data_dir: str | None = None
    model: str = TRAIN_DEFAULTS["model"]
    optimizer: str = TRAIN_DEFAULTS["optimizer"]
    momentum: float = TRAIN_DEFAULTS["momentum"]  # sgd only
    loss: str = TRAIN_DEFAULTS["loss"]
    epochs: int = TRAIN_DEFAULTS["epochs"]
    batch_size: int = TRAIN_DEFAULTS["batch_size"]
    lr: float = TRAIN_DEFAULTS["lr"]
    seed: int = TRAIN_DEFAULTS["seed"]
    device: str = TRAIN_DEFAULTS["device"]
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    out: str | None = None  # checkpoint path; default models/<model>-<dataset>.pt
    train_limit: int | None = None  # use only the first N training images (tests, quick demos)

    def validate(self) -> None:
        dataset_spec(self.dataset)
        if self.model not in MODELS:
            raise InvalidInputError(f"--model {self.model!r}: expected one of {', '.join(MODELS)}")
        if self.optimizer not in OPTIMIZERS:
            raise InvalidInputError(f"--optimizer {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
        if self.loss not in LOSSES:
            raise InvalidInputError(f"--loss {self.loss!r}: expected one of {', '.join(LOSSES)}")
        if self.device not in DEVICES:
            raise InvalidInputError(f"--device {self.device!r}: expected one of {', '.join(DEVICES)}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise InvalidInputError(f"--lr {self.lr}: expected a number > 0")
        if self.momentum < 0:
            raise InvalidInputError(f"--momentum {self.momentum}: expected >= 0")
        if int(self.epochs) != self.epochs or self.epochs < 1:
            raise InvalidInputError(f"--epochs {self.epochs}: expected an integer >= 1")
        if int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise InvalidInputError(f"--batch-size {self.batch_size}: expected an integer >= 1")
        if self.threads is not None and self.threads < 1:
            raise InvalidInputError(f"--threads {self.threads}: expected an integer >= 1")
        if self.train_limit is not None and self.train_limit < 1:
            raise InvalidInputError(f"train_limit {self.train_limit}: expected >= 1")

    def checkpoint_path(self) -> Path:
        return Path(self.out) if self.out else Path("models") / f"{self.model}-{self.dataset}.pt"


@dataclass
class EpochStats:
    epoch: int
    loss: float  # mean training loss over the epoch
    test_accuracy: float
    seconds: float  # training only: no evaluation, no checkpoint write


@dataclass
class TrainResult:
    checkpoint: str
    dataset: str
    model: str
    epochs: int
    test_accuracy: float
    seconds_per_epoch: float
    device: str
    history: list[EpochStats] = field(default_factory=list)
    data_source: str = ""

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


class Callback:
    """Progress hooks; the CLI renders them with rich. All methods are optional no-ops."""

    def start(self, config: TrainConfig, steps_per_epoch: int, device: str) -> None: ...
    def step(self, steps: int) -> None: ...
    def epoch_end(self, stats: EpochStats) -> None: ...


def resolve_device(device: str) -> torch.device:
    """--device auto|cpu|cuda (one resolution for training and the torch backends)."""
    from .backends.torch_common import torch_device

    return torch_device(device, auto=True)


def make_optimizer(name: str, params, lr: float, momentum: float = 0.0) -> torch.optim.Optimizer:
    """The optimizer by name, as its fused single-kernel variant where this torch has one.

    Fused Adam cut the MLP's CPU epoch by ~25 % against the default foreach variant (measured).
    """
    params = list(params)
    classes = {
        "adam": (torch.optim.Adam, {}),
        "sgd": (torch.optim.SGD, {"momentum": momentum}),
        "adagrad": (torch.optim.Adagrad, {}),
        "rmsprop": (torch.optim.RMSprop, {}),
    }
    cls, kwargs = classes[name]
    try:
        return cls(params, lr=lr, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this optimizer/device
        return cls(params, lr=lr, **kwargs)


def compute_loss(name: str, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if name == "cross-entropy":
        return F.cross_entropy(logits, targets)
    # "mse": the tutorial's alternative, softmax probabilities against one-hot targets
    onehot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
    return F.mse_loss(F.softmax(logits, dim=1), onehot)


class Normalizer:
    """uint8 [B,28,28] -> normalized float32 [B,1,28,28] in two fused in-place ops (pixels.scale_shift)."""

    def __init__(self, mean: float, std: float):
        from .pixels import scale_shift

        scale, shift = scale_shift(mean, std)
        self.scale, self.shift = float(scale), float(shift)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.unsqueeze(1).to(torch.float32).mul_(self.scale).add_(self.shift)


@torch.inference_mode()
def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
             norm: Normalizer, batch_size: int = 1000) -> float:
    """Top-1 accuracy of `model` on uint8 images (already on the model's device)."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch_size):
        logits = model(norm(images[i:i + batch_size]))
        correct += int((logits.argmax(1) == labels[i:i + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(labels))


def train(config: TrainConfig, callback: Callback | None = None, log: Callable[[str], None] | None = None,
          splits: tuple | None = None) -> TrainResult:
    """Train `config.model` on `config.dataset`, writing a checkpoint after every epoch.

    `splits` (train, test) may be loaded beforehand with data.load_split (the CLI does, before torch
    is imported, so a bad or hostile data file is refused at the memory cost of the reader alone).

    The checkpoint on disk always holds the last completed epoch (atomic writes); Ctrl-C during an
    epoch raises TrainingInterrupted and leaves that file intact. Same seed, threads and device on
    CPU -> bit-identical weights.
    """
    config.validate()
    cb = callback or Callback()
    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    spec = dataset_spec(config.dataset)
    out = config.checkpoint_path()
    from .fileio import check_writable_dir
    check_writable_dir(out.parent if str(out.parent) else Path("."), "--out folder")

    if splits is None:
        splits = (load_split(config.dataset, "train", config.data_dir, log=log),
                  load_split(config.dataset, "test", config.data_dir, download=False))
    train_split, test_split = splits
    n_train = len(train_split) if config.train_limit is None else min(config.train_limit, len(train_split))
    x_train = torch.from_numpy(train_split.images[:n_train]).to(device)
    y_train = torch.from_numpy(train_split.labels[:n_train]).to(device)
    x_test = torch.from_numpy(test_split.images).to(device)
    y_test = torch.from_numpy(test_split.labels).to(device)

    torch.manual_seed(config.seed)
    arch_args = {"num_classes": len(spec.labels)}
    model = build_model(config.model, **arch_args).to(device)
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr, config.momentum)
    norm = Normalizer(spec.mean, spec.std)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    bs = config.batch_size
    steps = math.ceil(n_train / bs)
    cb.start(config, steps, str(device))

    history: list[EpochStats] = []
    base_meta = {
        "arch": config.model,
        "arch_args": arch_args,
        "dataset": spec.name,
        "labels": list(spec.labels),
        "normalization": {"mean": [spec.mean], "std": [spec.std]},
        "preprocess": spec.recipe,
        "input": {"name": "input", "dtype": "float32", "shape": ["N", 1, 28, 28], "layout": "NCHW"},
        "seed": config.seed,
        # where the data was found: export, verify and bench use it when given no data flags
        "data_source": str(Path(train_split.source).resolve()),
        "train_config": dataclasses.asdict(config),
        "versions": library_versions(("torch", "numpy", "onnxruntime")),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    progress_every = max(1, steps // 50)
    try:
        for epoch in range(1, config.epochs + 1):
            model.train()
            total = torch.zeros((), device=device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            perm = torch.randperm(n_train, generator=gen, device=device)
            for s in range(steps):
                idx = perm[s * bs:(s + 1) * bs]
                loss = compute_loss(config.loss, model(norm(x_train[idx])), y_train[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                # Accumulated on-device; a .item() per step would force a sync on CUDA.
                total += loss.detach()
                if s % progress_every == 0:
                    cb.step(s)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            acc = evaluate(model, x_test, y_test, norm)
            stats = EpochStats(epoch, float(total) / steps, acc, seconds)
            if not math.isfinite(stats.loss):
                raise InvalidInputError(
                    f"training diverged at epoch {epoch} (loss {stats.loss}); lower --lr (now {config.lr})"
                )
            history.append(stats)
            meta = {
                **base_meta,
                "test_accuracy": acc,
                "epochs_completed": epoch,
                "history": [dataclasses.asdict(h) for h in history],
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            save_checkpoint(out, model.state_dict(), meta)
            cb.epoch_end(stats)
    except KeyboardInterrupt:
        done = len(history)
        where = f"{out} holds epoch {done}" if done else "no checkpoint was written"
        raise TrainingInterrupted(f"interrupted during epoch {done + 1}; {where}") from None

    return TrainResult(
        checkpoint=str(out),
        dataset=spec.name,
        model=config.model,
        epochs=config.epochs,
        test_accuracy=history[-1].test_accuracy,
        seconds_per_epoch=sum(h.seconds for h in history) / len(history),
        device=str(device),
        history=history,
        data_source=str(train_split.source),
    )

