"""ModelSpec: what a user says about their model beyond its weights, as one value.

A mnistkit checkpoint records all of it; a user's state_dict or training checkpoint needs the class (or factory)
it was saved from and may need the rest: the class's keyword arguments, the images it takes, its labels, its
normalization, the preprocessing recipe apps follow, the dataset it was trained on. Each field left None means
"what the checkpoint, the script's transforms or the dataset says" (source.load_source decides, and says so).

    spec = ModelSpec(model_class="train.py:Net", input_shape="3,32,32", mean=(0.49, 0.48, 0.45))
    mnistkit.export("cifar.pth", ["onnx"], spec=spec)

The export, verify and bench commands build one from their --model-class, --model-args, --labels, --mean,
--std and --input-shape options (cli.model_class_options); an export folder's manifest gives back the one it was
exported with (source.recorded_source). Imports nothing heavy: the CLI builds it before torch is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class ModelSpec:
    model_class: str | None = None  # "FILE.py:Class", "package.module:Class" or a factory function
    model_args: dict | str | None = None  # keyword arguments for model_class (a dict of plain values, or its JSON)
    labels: tuple[str, ...] | list[str] | None = None  # one per class
    mean: float | tuple[float, ...] | None = None  # normalization: one value, or one per channel
    std: float | tuple[float, ...] | None = None
    input_shape: str | tuple[int, ...] | list[int] | None = None  # "C,H,W" or [C, H, W]
    recipe: str | None = None  # preprocessing apps follow: digits, objects, image
    dataset: str | None = None  # what it was trained on: labels, recipe and validation images

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def split(cls, options: dict) -> tuple[ModelSpec | None, dict]:
        """(a spec of the ModelSpec fields among keyword `options` (None when there are none), the other
        options): the keyword form of the Python API, `mnistkit.export(net, ["onnx"], labels=[...])`."""
        names = cls.names()
        given = {k: v for k, v in options.items() if k in names}
        return (cls(**given) if given else None), {k: v for k, v in options.items() if k not in names}

    def over(self, recorded: ModelSpec) -> ModelSpec:
        """This spec, with `recorded`'s value wherever this one says nothing (None)."""
        return replace(self, **{name: getattr(recorded, name) for name in self.names() if getattr(self, name) is None})

    def with_options(self, **values) -> ModelSpec:
        """This spec with the given fields set, those given as None left as they are."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})
