"""What a model comes from: a mnistkit checkpoint, a user's state_dict + their class, or a live nn.Module.

One `Source` is the PyTorch model every artifact is exported from and every runtime is compared
with. The checkpoint's bytes are read once, before any user code, and hashed: the manifest's sha256
is of exactly the bytes the weights were loaded from. An export folder records its source (paths,
sha256 of the checkpoint and of the class file, normalization and where it came from, data), so
`verify export/` and `bench export/` rebuild the same reference, or say in one line what changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artifacts import DEFAULT_LABELS, geometry_of_input
from .errors import CheckpointError, InvalidInputError, first_line
from .fileio import check_input_file, sha256_file
from .formats import REFERENCE_KIND, REFERENCE_SOURCES
from .formats.spec import EXAMPLE_BATCH
from .modelspec import ModelSpec
from .pixels import DIGITS, Geometry



@dataclass
class Source:
    module: Any  # torch.nn.Module in eval mode, on the CPU
    meta: dict  # the metadata every artifact records
    description: dict  # what it came from (manifest "source")
    default_out: Path
    data_dir: str | None = None  # where its data was found (recorded at training or export)
    data_origin: str = "recorded with the model"


def _state_dict_mismatch(model, state_dict: dict, limit: int = 3) -> str | None:
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {list(state_dict[k].shape)} vs model {list(own[k].shape)}"
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:limit])}" + (" ..." if len(missing) > limit else ""))
    if unexpected:
        parts.append(f"unexpected {', '.join(unexpected[:limit])}" + (" ..." if len(unexpected) > limit else ""))
    if shapes:
        parts.append(f"shape {', '.join(shapes[:limit])}" + (" ..." if len(shapes) > limit else ""))
    return "; ".join(parts) or None


def user_meta(labels, norm, recipe, dataset, num_classes, geometry: Geometry = DIGITS, steps=()) -> dict:
    labels = list(labels) if labels else (DEFAULT_LABELS if num_classes == 10 else [str(i) for i in range(num_classes)])
    if len(labels) != num_classes:
        raise InvalidInputError(f"--labels: {len(labels)} labels given but the model has {num_classes} outputs")
    record = norm.record()
    if min(record["std"]) <= 0:
        raise InvalidInputError(f"--std {norm.std}: expected > 0")
    for key in ("mean", "std"):
        if len(record[key]) not in (1, geometry.channels):
            raise InvalidInputError(f"--{key} {norm.text()}: {len(record[key])} values for {geometry.channels} "
                                    "channel(s); expected one, or one per channel")
    return {
        "arch": None,
        "dataset": dataset,
        "labels": [str(x) for x in labels],
        "normalization": record,
        "normalization_source": norm.origin,
        "preprocess": recipe or ("digits" if geometry == DIGITS else "image"),
        "input": float_input(geometry),
        "transforms": [list(step) for step in steps] or None,
        "test_accuracy": None,
    }


def float_input(geometry: Geometry) -> dict:
    """The float model's input record (metadata "input")."""
    return {"name": "input", "dtype": "float32", "shape": ["N", *geometry.float_tail], "layout": "NCHW",
            "normalized": "(pixels / 255 - mean) / std"}


def probe_module(module, where: str, geometry: Geometry = DIGITS) -> int:
    """Run the module on a [2,C,H,W] batch of zeros; return its number of classes. Raises InvalidInputError if it
    does not fit."""
    import torch

    shown = f"[N,{','.join(map(str, geometry.float_tail))}]"
    try:
        with torch.no_grad():
            out = module(torch.zeros(EXAMPLE_BATCH, *geometry.float_tail))
    except Exception as exc:
        hint = "; pass its input shape as --input-shape C,H,W (e.g. 3,32,32)" if geometry == DIGITS else ""
        raise InvalidInputError(f"{where}: the model does not accept float {shown} input "
                                f"({exc.__class__.__name__}: {first_line(exc, 160)}){hint}") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != EXAMPLE_BATCH:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InvalidInputError(f"{where}: the model maps {shown} to {shape}; expected [N,C] logits")
    return int(out.shape[1])


# Shapes tried, in order, when neither --input-shape nor the script says: MNIST's, MNIST padded to LeNet-5's 32x32,
# CIFAR's. The first the model accepts is taken, and said as an assumption (an adaptive-pooling net accepts all).
COMMON_GEOMETRIES = (DIGITS, Geometry(1, 32, 32), Geometry(3, 32, 32), Geometry(3, 28, 28))


def _accepts(module, geometry: Geometry) -> bool:
    try:
        probe_module(module, "", geometry)
    except InvalidInputError:
        return False
    return True


def steps_geometry(steps, channels: int | None, base: tuple[int, int] | None) -> tuple:
    """(channels, height, width) after a script's transforms (ScriptTransforms.steps) from a `base` size (the
    dataset's, None when unknown); None where the steps do not say."""
    from .steps import resized_size
    h, w = base if base else (None, None)
    for kind, value in steps:
        if kind == "pad":
            h, w = (h + 2 * value if h else None), (w + 2 * value if w else None)
        elif kind == "resize":
            h, w = resized_size(h, w, value) if (h and w) or not isinstance(value, int) else (None, None)
        elif kind == "crop":
            h, w = value
        elif kind == "gray":
            channels = value
    return channels, h, w


def input_geometry(module, where: str, given, script_steps, dataset: str | None, log) -> tuple[Geometry, list, str]:
    """(geometry, the script's geometric steps, where the geometry came from) of a user's model: --input-shape,
    else the script's transforms from its dataset's 28x28, else the first of COMMON_GEOMETRIES it accepts."""
    from .errors import assumed

    if given is not None:  # load_source probes it, and says why it does not fit
        return given, list(script_steps.steps) if script_steps else [], "--input-shape"
    if script_steps is not None:
        c0 = 1 if dataset is not None else None  # mnistkit's datasets are gray 28x28
        c, h, w = steps_geometry(script_steps.steps, c0, (28, 28) if dataset is not None else None)
        if h and w:
            for channels in ([c] if c else [1, 3]):
                g = Geometry(channels, h, w)
                if _accepts(module, g):
                    log(f"input: {g} (from the transforms at {script_steps.origin})")
                    return g, list(script_steps.steps), f"{script_steps.origin}"
    for g in COMMON_GEOMETRIES:
        if _accepts(module, g):
            if g != DIGITS:
                assumed(log, f"input: {g} assumed (the first of {', '.join(map(str, COMMON_GEOMETRIES))} the model "
                             "accepts); pass --input-shape C,H,W if it was trained on another size")
            return g, [], "default" if g == DIGITS else "probed"
    probe_module(module, where, DIGITS)  # raises, naming the failure and --input-shape
    raise AssertionError("unreachable")


def _read_once(path: Path) -> tuple[bytes, str]:
    """The file's bytes and their sha256, read before any user code can touch the file."""
    check_input_file(path, "a checkpoint or state_dict file", CheckpointError)
    data = path.read_bytes()
    if not data:
        raise CheckpointError(f"{path}: empty file, expected a checkpoint or state_dict")
    return data, hashlib.sha256(data).hexdigest()


def load_weights(data: bytes, path: Path):
    """The weights (model.Weights) in a state_dict or checkpoint file's bytes, through the loading gate and
    weights_only."""
    from .model import find_weights, load_torch_bytes

    return find_weights(load_torch_bytes(data, path, "state_dict or checkpoint"), path)


def fit_weights(model, tensors: dict, path: Path, name: str, log) -> dict:
    """`tensors` as `model` takes them: as they are, or with the key prefix a saver added stripped (Lightning's
    attribute, `model.`; DataParallel's `module.`; torch.compile's `_orig_mod.`), saying so. Raises
    CheckpointError with what is missing, unexpected or of another shape when no prefix makes them fit."""
    mismatch = _state_dict_mismatch(model, tensors)
    if mismatch is None:
        return tensors
    own = set(model.state_dict())
    prefixes = sorted({k[:i + 1] for k in tensors for i, ch in enumerate(k) if ch == "."}, key=lambda p: (len(p), p))
    for prefix in prefixes:
        sub = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if set(sub) == own and _state_dict_mismatch(model, sub) is None:
            left = [k for k in tensors if not k.startswith(prefix)]
            log(f"weights: the prefix {prefix!r} stripped from their keys to fit {name}"
                + (f"; {len(left)} other entries not used ({', '.join(left[:3])}{' ...' if len(left) > 3 else ''})"
                   if left else ""))
            return sub
    raise CheckpointError(f"{path}: state_dict does not fit {name}: {mismatch}")


def parse_model_args(value) -> dict | None:
    """--model-args: a JSON object of plain values (strings, numbers, booleans, null, lists and objects of them),
    given as text (the CLI) or a dict (the API). Raises InvalidInputError."""
    import json

    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"--model-args {value!r}: not JSON ({exc.msg} at character {exc.pos}); "
                                    "expected an object such as '{\"hidden\": 256}'") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise InvalidInputError(f"--model-args {value!r}: expected a JSON object of keyword arguments, "
                                "such as '{\"hidden\": 256}'")
    if not _plain(value):
        raise InvalidInputError(f"--model-args {value!r}: only plain values (strings, numbers, booleans, null, lists "
                                "and objects of them)")
    return dict(value)


def _plain(v) -> bool:
    if v is None or isinstance(v, (str, bool, int, float)):
        return True
    if isinstance(v, (list, tuple)):
        return all(_plain(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x) for k, x in v.items())
    return False


def call_text(name: str, args: dict) -> str:
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in args.items())})"


def _keyword_params(builder) -> dict:
    """The parameters of a class or function that can be passed by name ({} when Python cannot say)."""
    import inspect

    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return {}
    return {n: p for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def model_arguments(builder, given: dict | None, hyper_parameters: dict | None, log) -> tuple[dict, str]:
    """The keyword arguments the model is built with, and where they came from: a Lightning checkpoint's
    hyper_parameters that the class or function takes by name (plain values only), then --model-args over them."""
    args: dict = {}
    origins = []
    if hyper_parameters:
        named = _keyword_params(builder)
        taken = {k: v for k, v in hyper_parameters.items() if k in named and _plain(v)}
        if taken:
            args.update(taken)
            origins.append("the checkpoint's hyper_parameters")
            log(f"model arguments from the checkpoint's hyper_parameters: {call_text(builder.__name__, taken)}")
    if given:
        args.update(given)
        origins.append("--model-args")
    return args, " and ".join(origins) or "defaults"


def _defaults_hint(builder, args: dict) -> str:
    """What to add to a refusal when the model was built with (some of) its defaults."""
    open_ = [n for n, p in _keyword_params(builder).items() if n not in args and p.default is not p.empty]
    if not open_:
        return ""
    example = ", ".join(f'"{n}": ...' for n in open_[:2])
    built = "its defaults" if not args else f"defaults for {', '.join(open_[:4])}"
    return (f" (built as {call_text(builder.__name__, args)}, with {built}: pass the arguments it was trained "
            f"with as --model-args '{{{example}}}')")


def _folder_labels(data_dir, num_classes: int, log) -> list[str] | None:
    """The class names of an image folder (its sub-folders, sorted: torchvision's ImageFolder order) when they are
    as many as the model's classes; said."""
    from .imagesets import class_names

    names = class_names(data_dir) if data_dir else None
    if names and len(names) == num_classes:
        log(f"labels: the class folders of {data_dir} ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})")
        return names
    return None


def _dataset_defaults(dataset, labels, recipe):
    """A known dataset supplies the labels and preprocessing recipe not given otherwise."""
    if dataset is None:
        return labels, recipe
    from .data import dataset_spec

    spec = dataset_spec(dataset)
    return labels or list(spec.labels), recipe or spec.recipe


def _build(builder, args: dict, spec: str):
    """The user's class (or factory function) called with `args`, as an nn.Module in eval mode."""
    import torch

    try:
        model = builder(**args)
    except Exception as exc:
        raise InvalidInputError(f"--model-class {spec}: {call_text(builder.__name__, args)} failed: "
                                f"{exc.__class__.__name__}: {first_line(exc, 160)}"
                                + ("" if args else "; pass its arguments with --model-args '{\"name\": value}'")) from None
    if not isinstance(model, torch.nn.Module):
        raise InvalidInputError(f"--model-class {spec}: {call_text(builder.__name__, args)} returned a "
                                f"{type(model).__name__}; expected a torch.nn.Module")
    return model


@dataclass
class ScriptFacts:
    """What the script that defines the model says about its training: dataset, data folder, normalization."""

    dataset: str | None
    data_dir: str | None
    data_origin: str | None
    norm: Any  # usercode.Normalization
    transforms: Any = None  # usercode.ScriptTransforms: the steps that size the input, or None


def _module_origin(module):
    """Where a live module's class is defined (its script, read for Normalize(...) and the dataset), or None for
    classes of installed packages (torch.nn.Sequential, torchvision's models): their files say nothing of training."""
    import inspect
    import sysconfig

    from .usercode import ClassSource

    cls = type(module)
    try:
        file = inspect.getsourcefile(cls)
    except (TypeError, OSError):  # a module loaded from a path without a sys.modules entry: its methods' code says
        file = next((f.__code__.co_filename for f in vars(cls).values() if hasattr(f, "__code__")), None)
    if not file or not Path(file).is_file():
        return None
    installed = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib", "stdlib")}
    resolved = Path(file).resolve()
    if any(resolved.is_relative_to(root) for root in installed):
        return None
    return ClassSource(f"{resolved}:{type(module).__name__}", resolved, sha256_file(resolved))


def _script_facts(origin, dataset, data_dir, mean, std, log, flags: str) -> ScriptFacts:
    """The dataset and data folder the script trains on (unless given) and the normalization (flags, else the
    script's Normalize(...), else pixels / 255: an assumption, said through `log` and warned as an
    AssumptionWarning so a library caller sees it as the CLI user does)."""
    from .errors import assumed
    from .usercode import DEFAULT_ORIGIN, find_dataset, find_transforms, user_normalization

    data_origin = None
    if origin is not None and origin.file is not None and (dataset is None or data_dir is None):
        found = find_dataset(origin.file)
        if found is not None and dataset in (None, found.dataset):
            if dataset is None:
                dataset = found.dataset
                log(f"dataset from {found.origin}: {found.dataset}")
            if data_dir is None and found.root is not None:
                data_dir = str(found.root)
                data_origin = f"from {found.origin}"
    norm = user_normalization(origin, mean, std)
    if mean is None and std is None:
        if norm.origin == DEFAULT_ORIGIN:
            where = origin.file.name if origin is not None and origin.file else "the model's source"
            assumed(log, f"normalization: pixels / 255 (ToTensor; no Normalize(...) in {where}); "
                         f"pass {flags} if the model was trained otherwise")
        else:
            log(f"normalization from {norm.origin}: {norm.text()}")
    steps = find_transforms(origin.file) if origin is not None and origin.file is not None else None
    return ScriptFacts(dataset, data_dir, data_origin, norm, steps)


def parse_input_shape(value) -> Geometry | None:
    """--input-shape "C,H,W" (or a Geometry, or [C, H, W]); None when not given. Raises InvalidInputError."""
    from .pixels import geometry_from

    if value is None or isinstance(value, Geometry):
        return value
    parts = value.replace("x", ",").split(",") if isinstance(value, str) else value
    try:
        return geometry_from(parts)
    except ValueError as exc:
        shown = value if isinstance(value, str) else ",".join(map(str, value))
        raise InvalidInputError(f"--input-shape {shown}: {exc}") from None


def load_source(source, spec: ModelSpec | None = None, data_dir=None, log=None) -> Source:
    """The PyTorch model to export or compare with: `source` is a checkpoint path, a state_dict path (with
    `spec.model_class`) or an nn.Module, described further by `spec` (modelspec.py: its keyword arguments, input
    shape, labels, normalization, recipe, dataset; each None is what the checkpoint or script says). Raises
    CheckpointError / InvalidInputError."""
    import torch

    from .model import load_checkpoint
    from .usercode import load_class, user_normalization

    spec = spec or ModelSpec()
    model_class, model_args, labels, mean, std = spec.model_class, spec.model_args, spec.labels, spec.mean, spec.std
    recipe, dataset = spec.recipe, spec.dataset
    labels = list(labels) if labels is not None else None
    log = log or (lambda m: None)
    given = parse_input_shape(spec.input_shape)
    if isinstance(source, torch.nn.Module):
        module = source.eval().cpu()
        facts = _script_facts(_module_origin(source), dataset, data_dir, mean, std, log, "mean=/std=")
        geometry, steps, _ = input_geometry(module, type(source).__name__, given, facts.transforms, facts.dataset, log)
        c = probe_module(module, type(source).__name__, geometry)
        labels, recipe = _dataset_defaults(facts.dataset, labels, recipe)
        meta = user_meta(labels, facts.norm, recipe, facts.dataset, c, geometry, steps)
        meta["arch"] = type(source).__name__
        return Source(module, meta, {"kind": "module", "class": type(source).__qualname__}, Path("models") / "export",
                      str(facts.data_dir) if facts.data_dir else None)

    path = Path(source)
    data, sha = _read_once(path)
    default_out = path.parent / path.stem if path.parent.name == "models" else Path("models") / path.stem
    described = {"path": str(path), "abspath": str(path.resolve()), "sha256": sha}

    if model_class is None:
        if model_args is not None:
            raise InvalidInputError("--model-args goes with --model-class (the class or function they are passed to)")
        if given is not None:
            raise InvalidInputError("--input-shape goes with --model-class: a mnistkit checkpoint records its input")
        ckpt = load_checkpoint(path, data=data)  # clear error, with the --model-class hint, for a bare state_dict
        meta = {k: ckpt.meta.get(k) for k in
                ("arch", "arch_args", "dataset", "labels", "normalization", "preprocess", "input", "transforms",
                 "test_accuracy")}
        module = ckpt.build()
        geometry = geometry_of_input(meta.get("input") or {}, path)
        defaults = user_meta(None, user_normalization(None, None, None), None, None,
                             probe_module(module, str(path), geometry), geometry)
        meta = {k: v if v is not None else defaults.get(k) for k, v in meta.items()}
        meta["normalization_source"] = "the checkpoint"
        recorded = ckpt.meta.get("data_source") or (ckpt.meta.get("train_config") or {}).get("data_dir")
        return Source(module, meta, {"kind": REFERENCE_KIND, **described}, default_out,
                      str(data_dir) if data_dir else recorded)

    weights = load_weights(data, path)  # the bytes read above: the script cannot have changed them
    if weights.key is not None:
        log(f"weights: {weights.kind}, the state_dict under {weights.key!r}")
    data_origin = "--data-dir"
    cls, origin = load_class(model_class)
    args, args_origin = model_arguments(cls, parse_model_args(model_args), weights.hyper_parameters, log)
    model = _build(cls, args, model_class)
    try:
        state = fit_weights(model, weights.tensors, path, cls.__name__, log)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}{_defaults_hint(cls, args)}") from None
    model.load_state_dict(state)
    model.eval()
    where = f"--model-class {model_class}" + (f" built as {call_text(cls.__name__, args)}" if args else "")
    facts = _script_facts(origin, dataset, data_dir, mean, std, log, "--mean/--std")
    geometry, steps, geometry_origin = input_geometry(model, where, given, facts.transforms, facts.dataset, log)
    c = probe_module(model, where, geometry)
    dataset, data_dir = facts.dataset, facts.data_dir
    if facts.data_origin:
        data_origin = facts.data_origin
    labels, recipe = _dataset_defaults(dataset, labels, recipe)
    labels = labels or _folder_labels(data_dir, c, log)
    norm = facts.norm
    meta = user_meta(labels, norm, recipe, dataset, c, geometry, steps)
    meta["arch"] = cls.__name__
    if args:
        meta["arch_args"] = args
    described.update(kind="state_dict", model_class=model_class, model_args=args or None,
                     model_args_origin=args_origin if args else None, weights_key=weights.key,
                     input_shape=geometry.to_json(), input_shape_origin=geometry_origin,
                     class_file=str(origin.file) if origin.file else None, class_sha256=origin.sha256)
    return Source(model, meta, described, default_out, str(data_dir) if data_dir else None, data_origin)


# ---------------------------------------------------------------------------------------------
# An export folder's source, rebuilt


@dataclass
class Recorded:
    """What an export folder says its model came from, checked against the files on disk."""

    checkpoint: Path
    spec: ModelSpec  # as it was exported: its class, arguments, labels, normalization, recipe, dataset, input shape
    data_dir: str | None


def recorded_source(folder: Path, manifest: dict) -> Recorded:
    """The source an export folder records, after checking it is still the same file (sha256).

    Raises InvalidInputError naming what moved or changed and what to pass instead.
    """
    src = manifest.get("source") or {}
    kind = src.get("kind")
    hint = "pass the checkpoint" + (" and --model-class" if kind == "state_dict" else "") + " explicitly"
    if kind not in REFERENCE_SOURCES:
        raise InvalidInputError(f"{folder}: its manifest records no checkpoint to compare with (exported from "
                                f"{kind or 'an unknown source'}); {hint}")
    candidates = [Path(p) for p in (src.get("path"), src.get("abspath")) if p]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise InvalidInputError(f"{folder}: its source {src.get('path')} is gone (moved or deleted since export); "
                                f"{hint}")
    sha = sha256_file(found)
    if sha != src.get("sha256"):
        raise InvalidInputError(f"{folder}: its source {found} changed since export (sha256 {sha[:16]}…, recorded "
                                f"{str(src.get('sha256'))[:16]}…); re-export it, or {hint}")
    model_class = src.get("model_class")
    if kind == "state_dict":
        class_file = src.get("class_file")
        if class_file:
            if not Path(class_file).is_file():
                raise InvalidInputError(f"{folder}: the class file {class_file} is gone since export; {hint}")
            csha = sha256_file(class_file)
            if csha != src.get("class_sha256"):
                raise InvalidInputError(f"{folder}: {class_file} changed since export (sha256 {csha[:16]}…, recorded "
                                        f"{str(src.get('class_sha256'))[:16]}…); re-export, or {hint}")
            where, name = str(model_class).rsplit(":", 1)
            if where.endswith(".py") or "/" in where or "\\" in where:
                model_class = f"{class_file}:{name}"
    from .artifacts import normalization_values
    from .errors import ArtifactError

    shape = src.get("input_shape")
    try:
        geometry = parse_input_shape(shape) if shape is not None else DIGITS
        mean, std = normalization_values(manifest.get("normalization") or {}, geometry.channels, folder)
    except (ArtifactError, InvalidInputError):
        mean = std = None
    labels = manifest.get("labels")
    if not model_class:  # a mnistkit checkpoint records its own input and normalization
        mean = std = shape = None
    spec = ModelSpec(model_class, src.get("model_args") or None, tuple(labels) if labels else None, mean, std,
                     shape, manifest.get("preprocess"), manifest.get("dataset"))
    return Recorded(found, spec, src.get("data_dir"))


def reference_for(model, spec: ModelSpec | None = None, data_dir=None,
                  log=None) -> tuple[Source, Path, Path | None]:
    """The PyTorch reference for verify and bench: (Source, its file, the export folder or None).

    `model` is a checkpoint, a state_dict (with `spec.model_class`), or an export folder, whose manifest
    names its source (checked by sha256: a moved or changed source is one line saying what to pass) and the
    spec it was exported with (what `spec` says still wins for labels, normalization, recipe and dataset).
    """
    from .artifacts import read_manifest

    spec = spec or ModelSpec()
    path = Path(model)
    if path.is_dir() or path.name == "manifest.json":
        folder = path if path.is_dir() else path.parent
        if spec.model_class is not None or spec.model_args is not None or spec.input_shape is not None:
            raise InvalidInputError(f"--model-class, --model-args and --input-shape go with a checkpoint file, not the "
                                    f"export folder {folder}; an export folder remembers its class, arguments and "
                                    "input shape")
        rec = recorded_source(folder, read_manifest(folder))
        model_class = rec.spec.model_class
        if log:
            log(f"reference: {rec.checkpoint}" + (f" through {model_class}" if model_class else "")
                + " (recorded in the export's manifest, sha256 checked)")
        src = load_source(rec.checkpoint, spec.over(rec.spec), data_dir or rec.data_dir)
        if model_class:
            src.meta["normalization_source"] = "the export's manifest"
        if rec.data_dir and not data_dir:
            src.data_origin = "recorded in the export's manifest"
        return src, rec.checkpoint, folder
    not_a_reference(path)
    return load_source(path, spec, data_dir, log), path, None


def not_a_reference(path: Path) -> None:
    """Raise InvalidInputError when `path` is an artifact (ONNX, TorchScript, LiteRT...) rather than the PyTorch
    model artifacts are compared with; files of no known kind are left to the checkpoint loader's message."""
    from .artifacts import detect_kind
    from .errors import ArtifactError
    from .formats import KINDS

    try:
        kind = detect_kind(path)
    except ArtifactError:
        return
    if kind != REFERENCE_KIND:
        raise InvalidInputError(
            f"{path}: is {KINDS[kind].description}, not a PyTorch reference; verify compares artifacts with the "
            "PyTorch model they were exported from: pass that checkpoint (or its state_dict with --model-class), or its "
            f"export folder first, then the artifact (e.g. `mnistkit verify model.pt {path.name}`)")


def data_for(src: Source, data_dir, log=None):
    """--data-dir, else the folder the source was trained or exported with (when it is still there)."""
    if data_dir is not None or not src.data_dir:
        return data_dir
    if Path(src.data_dir).is_dir():
        if log:
            log(f"data: {src.data_dir} ({src.data_origin})")
        return src.data_dir
    if log:
        log(f"the model's recorded data folder {src.data_dir} is not here; looking for its dataset elsewhere")
    return None
