"""Export a checkpoint, a user's state_dict + class, or any nn.Module to ONNX, TorchScript and
torch.export artifacts that describe themselves, validated on real test images right after export.

The module's top level is torch-free (the format table feeds the CLI's choices); torch, onnx and
onnxscript are imported inside the functions that need them.

Every artifact is written into a hidden staging folder beside its final place, validated there,
and only then renamed to its final name; the manifest is written last, atomically. An export that
fails or is interrupted leaves no partial artifact and no manifest listing a missing file.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from ._version import __version__
from .artifacts import MANIFEST_FORMAT, METADATA_FILE, to_onnx_props
from .compare import Comparison, compare, tolerance_for
from .errors import ExportError, InvalidInputError, first_line, raise_if_signalled
from .environment import library_versions
from .fileio import atomic_write_json, check_writable_dir, replace_dir, sha256_file, staging_dir
from .source import EXAMPLE_BATCH, Source, data_for, load_source


@dataclass(frozen=True)
class FormatSpec:
    name: str
    file: str  # file name inside the export folder
    kind: str  # artifact kind (artifacts.KINDS)
    backend: str  # the runtime that validates it
    description: str
    app: bool = False  # uint8 pixels in, normalization inside, logits + probabilities out
    base: str | None = None  # a derived format is made from this float ONNX format ...
    transform: str | None = None  # ... by this transform ("int8", "int8-dynamic", "fp16")


# One table drives dispatch, the CLI's --format choices, validation and the tests.
FORMATS: dict[str, FormatSpec] = {
    f.name: f
    for f in (
        FormatSpec("onnx", "model.onnx", "onnx", "onnxruntime",
                   "ONNX, float32 [N,1,28,28] normalized in, logits out; one self-contained file"),
        FormatSpec("onnx-app", "model-app.onnx", "onnx", "onnxruntime",
                   "app-ready ONNX: uint8 pixels [N,28,28] in, normalization inside, logits + probabilities out",
                   app=True),
        FormatSpec("torchscript", "model.ts", "torchscript", "torchscript",
                   "TorchScript (traced, frozen); deprecated upstream in favour of torch.export"),
        FormatSpec("exported-program", "model.pt2", "exported-program", "exported-program",
                   "torch.export ExportedProgram with a dynamic batch dimension"),
        FormatSpec("onnx-int8", "model-int8.onnx", "onnx", "onnxruntime",
                   "static int8 (QDQ, per-channel weights), calibrated on training images; float32 in, logits out",
                   base="onnx", transform="int8"),
        FormatSpec("onnx-int8-app", "model-int8-app.onnx", "onnx", "onnxruntime",
                   "static int8 app-ready: uint8 pixels in, logits + probabilities out", app=True,
                   base="onnx-app", transform="int8"),
        FormatSpec("onnx-int8-dynamic", "model-int8-dynamic.onnx", "onnx", "onnxruntime",
                   "dynamic int8 (weights int8, activations quantized per call), for comparison",
                   base="onnx", transform="int8-dynamic"),
        FormatSpec("onnx-fp16", "model-fp16.onnx", "onnx", "onnxruntime",
                   "float16 weights, float32 input and output kept; for GPUs", base="onnx", transform="fp16"),
        FormatSpec("onnx-fp16-app", "model-fp16-app.onnx", "onnx", "onnxruntime",
                   "float16 app-ready: uint8 pixels in, float32 logits + probabilities out", app=True,
                   base="onnx-app", transform="fp16"),
    )
}
DEFAULT_ACCURACY_BUDGET = 0.003  # --max-accuracy-drop: 0.3 points of accuracy
FORMAT_CHOICES = (*FORMATS, "all")

# Opsets this exporter writes faithfully: 18+ are the dynamo exporter's own; 17 comes through
# ONNX's version converter; 26 is the newest onnxruntime 1.31 loads (27 fails to load, measured).
# The exporter silently writes 18 for some requests outside its range (7, 9, 13 and 30 were seen),
# so the written opset is checked after every export as well.
OPSET_RANGE = (17, 26)
DEFAULT_OPSET = 18
ONNX_CHECK_BATCHES = (1, 3, 64, 1000)  # the dynamic batch axis is proven at these sizes
BATCH_CHECK_IMAGES = 64  # ... each over at least this many images
VALIDATION_FALLBACK_IMAGES = 1000

TORCHSCRIPT_NOTE = ("TorchScript is deprecated upstream in favour of torch.export (model.pt2); "
                    "model.ts is written for runtimes that still need it")


@dataclass
class Validation:
    format: str
    file: str
    backend: str
    passed: bool
    comparison: Comparison | None
    images: int
    data: str  # what the images were
    batch_sizes: list[int] = field(default_factory=list)  # dynamic batch sizes proven (ONNX)
    error: str | None = None

    def line(self) -> str:
        mark = "✓" if self.passed else "✗"
        if self.comparison is None:
            return f"{mark} {self.format:<17} {self.file:<23} {self.error}"
        c = self.comparison
        tol = "n/a" if c.tolerance.max_abs is None else f"{c.tolerance.max_abs:.0e}"
        s = f"{mark} {self.format:<17} {self.file:<23} max_abs {c.max_abs:.2e} (tol {tol}) top-1 {c.top1_agreement:.2%}"
        if c.tolerance.max_accuracy_drop is not None and c.accuracy is not None:
            enforced = c.n >= c.tolerance.accuracy_min_images
            s += (f" acc {c.accuracy:.4f} ({c.accuracy_delta * 100:+.2f} points, budget "
                  f"-{c.tolerance.max_accuracy_drop * 100:.2f}"
                  + ("" if enforced else f", enforced from {c.tolerance.accuracy_min_images} images") + ")")
        s += f" on {self.images} {self.data}"
        if self.data == "random images":  # never quietly: no accuracy was measured, only agreement
            s += " (NO REAL TEST DATA FOUND: agreement with PyTorch only; pass --dataset/--data-dir)"
        if self.batch_sizes:
            s += f"; batch {'/'.join(map(str, self.batch_sizes))} ok"
        if not self.passed:
            s += " — " + "; ".join(c.failures + ([self.error] if self.error else []))
        return s

    def to_json(self) -> dict:
        d = asdict(self)
        d["comparison"] = self.comparison.to_json() if self.comparison is not None else None
        return d


@dataclass
class ExportResult:
    out_dir: Path
    artifacts: list[dict]
    manifest: Path
    validation: list[Validation]
    app_bundle: Path | None = None

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.validation)

    def to_json(self) -> dict:
        return {
            "artifacts": [{**a, "path": str(self.out_dir / a["file"])} for a in self.artifacts],
            "manifest": str(self.manifest),
            "app_bundle": str(self.app_bundle) if self.app_bundle else None,
            "validation": [v.to_json() for v in self.validation],
            "passed": self.passed,
        }


# ---------------------------------------------------------------------------------------------
# Writers: one function per format, each writing `tmp` and returning facts for the manifest


def app_model(module, mean: float, std: float):
    """`module` behind the app contract: uint8 pixels [N,28,28] -> (logits, probabilities)."""
    import torch

    class AppModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = module
            # the same float32 arithmetic as backends.base.pixels_to_float: p * a + b
            self.register_buffer("scale", torch.tensor(1.0 / (255.0 * std), dtype=torch.float32))
            self.register_buffer("shift", torch.tensor(-mean / std, dtype=torch.float32))

        def forward(self, pixels):
            x = pixels.to(torch.float32).unsqueeze(1) * self.scale + self.shift
            logits = self.model(x)
            return logits, torch.softmax(logits, dim=1)

    return AppModel().eval()


def _common_meta(src: Source, fmt: FormatSpec) -> dict:
    return {
        "mnistkit_version": __version__,
        "format": fmt.name,
        "dataset": src.meta.get("dataset"),
        "labels": src.meta["labels"],
        "normalization": src.meta["normalization"],
        "normalization_source": src.meta.get("normalization_source"),
        "preprocess": src.meta["preprocess"],
        "input": (
            {"name": "pixels", "dtype": "uint8", "shape": ["N", 28, 28], "layout": "NHW", "range": [0, 255]}
            if fmt.app else
            {"name": "input", "dtype": "float32", "shape": ["N", 1, 28, 28], "layout": "NCHW",
             "normalized": "(pixels / 255 - mean) / std"}
        ),
        "outputs": ["logits", "probabilities"] if fmt.app else ["logits"],
        "source_sha256": src.description.get("sha256"),
        "source": src.description,
        "arch": src.meta.get("arch"),
        "test_accuracy": src.meta.get("test_accuracy"),
    }


def _io_entries(meta: dict, num_classes: int) -> tuple[list[dict], list[dict]]:
    inp = meta["input"]
    inputs = [{"name": inp["name"], "dtype": inp["dtype"], "shape": inp["shape"]}]
    outputs = [{"name": n, "dtype": "float32", "shape": ["N", num_classes]} for n in meta["outputs"]]
    return inputs, outputs


@dataclass
class WriteContext:
    """What writers share during one export."""

    opset: int
    log: Callable[[str], None]
    staging: Path
    images: np.ndarray | None = None  # validation images (uint8) and their labels, when validating
    labels: np.ndarray | None = None
    data_desc: str = ""
    data_dir: object = None
    budget: float = DEFAULT_ACCURACY_BUDGET
    _calibration: object = None

    def calibration(self, src: "Source"):
        """Training images for static quantization (drawn once per export)."""
        if self._calibration is None:
            from .data import DATASETS
            from .errors import DataError
            from .quantize import calibration_data

            dataset = src.meta.get("dataset")
            if dataset not in DATASETS:
                raise ExportError("onnx-int8 needs calibration images from the model's training split: "
                                  "the model names no dataset (pass --dataset and --data-dir)")
            try:
                self._calibration = calibration_data(dataset, self.data_dir)
            except DataError as exc:
                raise ExportError(f"onnx-int8 needs calibration images from the {dataset} training split: {exc}") from None
        return self._calibration


def _set_metadata(model, meta: dict) -> None:
    del model.metadata_props[:]
    for k, v in to_onnx_props(meta).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


def write_onnx(src: Source, fmt: FormatSpec, tmp: Path, ctx: WriteContext) -> dict:
    import onnx
    import torch

    from .capture import captured_output

    meta = _common_meta(src, fmt)
    if fmt.app:
        module = app_model(src.module, meta["normalization"]["mean"][0], meta["normalization"]["std"][0])
        example = torch.zeros(EXAMPLE_BATCH, 28, 28, dtype=torch.uint8)
    else:
        module = src.module
        example = torch.zeros(EXAMPLE_BATCH, 1, 28, 28)
    batch = torch.export.Dim("N", min=1, max=1 << 20)  # the contract names the batch axis N
    with captured_output() as cap, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module, (example,), str(tmp), dynamo=True, external_data=False, verbose=False,
                input_names=[meta["input"]["name"]], output_names=meta["outputs"],
                dynamic_shapes=({0: batch},), opset_version=ctx.opset,
            )
        except Exception as exc:
            tail = " | ".join(cap.text.strip().splitlines()[-3:])
            raise ExportError(f"{fmt.name}: torch.onnx.export failed: {exc.__class__.__name__}: "
                              f"{first_line(exc, 200)}" + (f" [{tail[:200]}]" if tail else "")) from None
    if tmp.with_name(tmp.name + ".data").exists():
        raise ExportError(f"{fmt.name}: the exporter wrote an external-data sidecar; expected one self-contained file")
    model = onnx.load(str(tmp))
    written = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)
    if written != ctx.opset:
        lo, hi = OPSET_RANGE
        raise ExportError(f"--opset {ctx.opset}: the exporter wrote opset {written} instead; "
                          f"supported range {lo}-{hi}")
    return _finish_onnx(model, meta, fmt, tmp)


def _finish_onnx(model, meta: dict, fmt: FormatSpec, tmp: Path) -> dict:
    """Stamp metadata and producer, run the full checker and strict shape inference, save; return the
    manifest's facts. Every ONNX artifact, float or derived, goes through here."""
    import onnx

    from .onnx_compat import min_onnxruntime

    _set_metadata(model, meta)
    model.producer_name = "mnistkit"
    model.producer_version = __version__
    model.doc_string = f"mnistkit {fmt.name}: " + fmt.description
    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:
        raise ExportError(f"{fmt.name}: onnx.checker rejected the graph: {first_line(exc, 200)}") from None
    onnx.save(model, str(tmp))
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    inputs, outputs = _io_entries(meta, len(meta["labels"]))
    return {"opset": opset, "ir_version": int(model.ir_version),
            "min_onnxruntime": min_onnxruntime(opset, int(model.ir_version)), "inputs": inputs, "outputs": outputs}


def _write_torch_archive(src: Source, fmt: FormatSpec, what: str, save) -> dict:
    """Run `save(example, metadata_json)` for a torch archive format; one ExportError line on failure."""
    import torch

    meta = _common_meta(src, fmt)
    with warnings.catch_warnings():  # torch.jit / torch.export warnings: said once, in our words, if at all
        warnings.simplefilter("ignore")
        try:
            with torch.no_grad():
                save(torch.zeros(EXAMPLE_BATCH, 1, 28, 28), json.dumps(meta))
        except Exception as exc:
            raise ExportError(f"{fmt.name}: {what} failed: {exc.__class__.__name__}: {first_line(exc, 200)}") from None
    inputs, outputs = _io_entries(meta, len(meta["labels"]))
    return {"inputs": inputs, "outputs": outputs}


def write_torchscript(src: Source, fmt: FormatSpec, tmp: Path, ctx: WriteContext) -> dict:
    import torch

    ctx.log(TORCHSCRIPT_NOTE)

    def save(example, meta_json):
        frozen = torch.jit.freeze(torch.jit.trace(src.module, example, check_trace=False).eval())
        torch.jit.save(frozen, str(tmp), _extra_files={METADATA_FILE: meta_json})

    return _write_torch_archive(src, fmt, "tracing", save)


def write_exported_program(src: Source, fmt: FormatSpec, tmp: Path, ctx: WriteContext) -> dict:
    import torch

    def save(example, meta_json):
        batch = torch.export.Dim("N", min=1, max=1 << 20)  # the contract names the batch axis N
        program = torch.export.export(src.module, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(tmp), extra_files={METADATA_FILE: meta_json})

    return _write_torch_archive(src, fmt, "torch.export", save)


def write_derived(src: Source, fmt: FormatSpec, tmp: Path, ctx: WriteContext) -> dict:
    """int8 / fp16 ONNX from the float ONNX of `fmt.base` (written to staging first if needed)."""
    import onnx

    from . import quantize

    base = FORMATS[fmt.base]
    base_path = ctx.staging / base.file
    if not base_path.exists():  # the float model was not asked for: make it, beside, under a hidden name
        base_path = ctx.staging / f".base-{base.file}"
        if not base_path.exists():
            write_onnx(src, base, base_path, ctx)
    meta = _common_meta(src, fmt)
    norm = meta["normalization"]
    input_form = "uint8" if fmt.app else "float"
    if fmt.transform == "int8":
        info = quantize.quantize_static_qdq(base_path, tmp, ctx.calibration(src), meta["input"]["name"], input_form,
                                            norm["mean"][0], norm["std"][0])
    elif fmt.transform == "int8-dynamic":
        info = quantize.quantize_dynamic_int8(base_path, tmp)
    elif fmt.transform == "fp16":
        info = quantize.convert_fp16(base_path, tmp)
    else:  # pragma: no cover - the format table is checked by the tests
        raise ExportError(f"{fmt.name}: unknown transform {fmt.transform!r}")
    model = onnx.load(str(tmp))
    meta["quantization"] = info
    meta["float_test_accuracy"] = src.meta.get("test_accuracy")
    if ctx.labels is not None:  # accuracy measured at export, on the validation (test) images
        meta["test_accuracy"] = quantize.accuracy(tmp, ctx.images, ctx.labels)
        meta["accuracy_data"] = ctx.data_desc
    meta["accuracy_budget"] = ctx.budget
    return {**_finish_onnx(model, meta, fmt, tmp), "quantization": info,
            "test_accuracy": meta.get("test_accuracy"), "float_test_accuracy": meta["float_test_accuracy"],
            "accuracy_budget": ctx.budget}


WRITERS: dict[str, Callable] = {
    "onnx": write_onnx,
    "onnx-app": write_onnx,
    "torchscript": write_torchscript,
    "exported-program": write_exported_program,
    **{name: write_derived for name, f in FORMATS.items() if f.transform},
}


# ---------------------------------------------------------------------------------------------
# Validation images


def validation_images(meta: dict, data_dir=None, limit: int | None = None, log=None):
    """(uint8 images, labels or None, description): the dataset's real test split when it is on this
    machine (never downloaded here), else seeded random images (labels None) and a note saying so."""
    from .data import DATASETS, load_split
    from .errors import DataError

    name = meta.get("dataset")
    if name in DATASETS:
        try:
            split = load_split(name, "test", data_dir, download=False)
            n = len(split) if limit is None else min(limit, len(split))
            return split.images[:n], split.labels[:n], f"{name} test images"
        except DataError as exc:
            if data_dir is not None:
                raise
            if log:
                log(f"validating on random images: {exc}")
    elif log:
        log("validating on random images: the model names no dataset (pass --dataset/--data-dir)")
    rng = np.random.default_rng(0)
    n = VALIDATION_FALLBACK_IMAGES if limit is None else min(limit, VALIDATION_FALLBACK_IMAGES)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), None, "random images"


def reference_logits(module, images: np.ndarray, mean: float, std: float, chunk: int = 1000) -> np.ndarray:
    """PyTorch eager logits on uint8 images, through the same conversion every backend uses."""
    import torch

    from .backends.base import pixels_to_float

    outs = []
    with torch.inference_mode():
        for i in range(0, len(images), chunk):
            x = torch.from_numpy(pixels_to_float(images[i:i + chunk], mean, std))
            outs.append(module(x).float().numpy())
    return np.concatenate(outs)


def validate_artifact(path: Path, fmt: FormatSpec, images, labels, reference, data_desc: str,
                      budget: float = DEFAULT_ACCURACY_BUDGET) -> Validation:
    import dataclasses

    from .backends import create_backend

    tol = tolerance_for(fmt.name, "cpu")
    if tol.max_accuracy_drop is not None:
        tol = dataclasses.replace(tol, max_accuracy_drop=budget)
        if labels is None:
            return Validation(fmt.name, path.name, fmt.backend, False, None, len(images), data_desc,
                              error="the accuracy gate needs labelled test images (pass --dataset/--data-dir)")
    try:
        with create_backend(path, fmt.backend, "cpu", kind=fmt.kind) as backend:
            logits = backend.run_chunked(images)
            proven = []
            if fmt.kind == "onnx":  # the dynamic batch axis, at the sizes users hit
                for b in ONNX_CHECK_BATCHES:
                    # at least BATCH_CHECK_IMAGES images, in calls of b: one image at batch 1 would make
                    # dynamic int8's agreement a coin flip on a near-tie (seen on a weakly trained CNN)
                    calls = max(1, -(-BATCH_CHECK_IMAGES // b))
                    idx = np.arange(b * calls) % len(images)
                    out = np.concatenate([backend.run(images[idx[i:i + b]]) for i in range(0, len(idx), b)])
                    expected = logits[idx]  # the same artifact, run in chunks of 1000
                    if out.shape != expected.shape:
                        raise ExportError(f"batch {b}: output {list(out.shape)}, expected {list(expected.shape)}")
                    # A graph must not depend on the batch (float, static int8 and fp16 match exactly,
                    # measured). Dynamic int8 takes activation scales from each call's whole batch: its
                    # logits move by ~0.1 with the batch and 99.5 % of top-1 answers stay; hold it to 95 %.
                    agree = (out.argmax(1) == expected.argmax(1)).mean()
                    same = (agree >= 0.95 if fmt.transform == "int8-dynamic"
                            else np.allclose(out, expected, atol=1e-4, rtol=0))
                    if not same:
                        raise ExportError(f"batch {b}: outputs differ from the same model's at batch 1000 "
                                          f"(top-1 agreement {agree:.1%} over {len(idx)} images)")
                    proven.append(b)
    except Exception as exc:  # a validation failure is a result, reported with all the others
        msg = first_line(exc)
        return Validation(fmt.name, path.name, fmt.backend, False, None, len(images), data_desc, error=msg[:300])
    comparison = compare(reference, logits, tol, labels)
    return Validation(fmt.name, path.name, fmt.backend, bool(comparison), comparison, len(images), data_desc, proven)


# ---------------------------------------------------------------------------------------------
# The manifest


# What an export folder may hold besides its artifacts: anything else is the user's, and a folder
# that is replaced as a whole must not take it along. Hidden leftovers of older mnistkit versions
# (staging folders, temporary files) are ours too.
_OWN_NAMES = {"manifest.json", "app"}


def _is_ours(p: Path) -> bool:
    if p.name in _OWN_NAMES or p.name in {f.file for f in FORMATS.values()}:
        return True
    return p.name.startswith((".export.", ".app.", ".base-")) or (p.name.startswith(".") and p.name.endswith(".tmp"))


def check_export_target(out_dir: Path) -> dict | None:
    """Check that `out_dir` can be replaced by a new export; return its current manifest, if any.

    The folder must be new, empty, or a mnistkit export folder (nothing of the user's would be lost
    when it is replaced), and its parent must be writable (the new folder is built beside it).
    """
    if out_dir.exists():
        if not out_dir.is_dir():
            raise InvalidInputError(f"--out-dir {out_dir}: exists and is not a directory")
        check_writable_dir(out_dir, "--out-dir")
        foreign = sorted(p.name for p in out_dir.iterdir() if not _is_ours(p))
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise InvalidInputError(
                f"--out-dir {out_dir}: holds {shown}, which an export did not write; an export replaces its "
                "folder as a whole, so pass a new or empty folder (or an earlier export's)")
    elif not out_dir.parent.exists():
        raise InvalidInputError(f"--out-dir {out_dir}: parent directory {out_dir.parent} does not exist")
    check_writable_dir(out_dir.parent, f"the folder holding --out-dir {out_dir.name} (the export is built there)")
    from .artifacts import read_manifest

    try:
        return read_manifest(out_dir)
    except InvalidInputError:  # none, or not ours: nothing to carry over
        return None


def _same_model(previous: dict, src: Source) -> bool:
    old, new = previous.get("source") or {}, src.description
    return (bool(new.get("sha256")) and old.get("sha256") == new.get("sha256")
            and old.get("model_class") == new.get("model_class")
            and previous.get("labels") == src.meta["labels"]
            and previous.get("normalization") == src.meta["normalization"])


def _carry_over(previous: dict | None, out_dir: Path, staging: Path, src: Source, new: set[str], log) -> list[dict]:
    """Artifacts of an earlier export of the *same* model (same source bytes, class, labels and
    normalization) that this export did not rewrite: linked into the new folder after their sha256
    is checked. A different model's artifacts are never carried: the folder holds one model."""
    if previous is None or not _same_model(previous, src):
        return []
    from .artifacts import check_sha256

    kept = []
    for e in previous.get("artifacts") or []:
        if not isinstance(e, dict) or e.get("format") not in FORMATS or e["format"] in new:
            continue
        f = out_dir / FORMATS[e["format"]].file
        try:
            check_sha256(f, str(e.get("sha256")), out_dir / "manifest.json")
            try:
                os.link(f, staging / f.name)
            except OSError:
                shutil.copy2(f, staging / f.name)
        except (InvalidInputError, OSError) as exc:
            log(f"not keeping {f.name} from the earlier export: {first_line(exc)}")
            continue
        kept.append(e)
    return kept


def _manifest(src: Source, artifacts: list[dict]) -> dict:
    return {
        "format": MANIFEST_FORMAT,
        "format_version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": src.description,
        "model": {"arch": src.meta.get("arch"), "arch_args": src.meta.get("arch_args"),
                  "num_classes": len(src.meta["labels"])},
        "dataset": src.meta.get("dataset"),
        "labels": src.meta["labels"],
        "normalization": src.meta["normalization"],
        "normalization_source": src.meta.get("normalization_source"),
        "preprocess": src.meta["preprocess"],
        "test_accuracy": src.meta.get("test_accuracy"),
        "versions": library_versions(),
        "artifacts": artifacts,
    }


APP_README = """# mnistkit app bundle

Everything an app needs to embed this model; see the Embedding section of mnistkit's README.

- `model.onnx`: input `pixels` uint8 [N,28,28] (0-255, {polarity}); outputs `logits` and
  `probabilities` float32 [N,{c}] (softmax). Normalization (mean {mean}, std {std}) is inside the graph.
- `labels.json`: the class labels in output order, and the contract below (ONNX Runtime's JavaScript
  API cannot read model metadata).
- Preprocessing recipe: `{recipe}` — {recipe_text}
- Loads in onnxruntime >= {min_ort} (opset {opset}, IR version {ir}).
"""

RECIPE_TEXT = {
    "digits": "grayscale; invert dark-on-light images; crop to the ink; fit a 20x20 box keeping the "
              "aspect ratio; place in 28x28 by centre of mass (the MNIST recipe)",
    "objects": "grayscale; invert light-background images; crop to the object; fit the longest edge "
               "to 28; centre (the Fashion-MNIST recipe)",
}


def _write_app_bundle(out_dir: Path, app_file: Path, src: Source, entry: dict) -> Path:
    """app/: the app-ready ONNX, labels.json and a README of the contract (inside the staged folder)."""
    bundle = out_dir / "app"
    bundle.mkdir()
    shutil.copyfile(app_file, bundle / "model.onnx")
    contract = {
        "labels": src.meta["labels"],
        "dataset": src.meta.get("dataset"),
        "preprocess": src.meta["preprocess"],
        "normalization": src.meta["normalization"],
        "input": {"name": "pixels", "dtype": "uint8", "shape": ["N", 28, 28]},
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["N", len(src.meta["labels"])]},
                    {"name": "probabilities", "dtype": "float32", "shape": ["N", len(src.meta["labels"])]}],
        "min_onnxruntime": entry.get("min_onnxruntime"),
        "opset": entry.get("opset"),
        "sha256": entry["sha256"],
    }
    (bundle / "labels.json").write_text(json.dumps(contract, indent=2) + "\n")
    (bundle / "README.md").write_text(APP_README.format(
        polarity="white ink/object on black, as in the dataset", c=len(src.meta["labels"]),
        mean=src.meta["normalization"]["mean"][0], std=src.meta["normalization"]["std"][0],
        recipe=src.meta["preprocess"], recipe_text=RECIPE_TEXT.get(src.meta["preprocess"], ""),
        min_ort=entry.get("min_onnxruntime"), opset=entry.get("opset"), ir=entry.get("ir_version")))
    return bundle


# ---------------------------------------------------------------------------------------------
# The entry point


def parse_formats(formats) -> list[str]:
    if isinstance(formats, str):
        formats = [formats]
    names: list[str] = []
    for f in formats:
        for part in str(f).split(","):
            part = part.strip()
            if not part:
                continue
            if part == "all":
                names.extend(FORMATS)
            elif part in FORMATS:
                names.append(part)
            else:
                raise InvalidInputError(f"unknown format {part!r}; expected one of: {', '.join(FORMAT_CHOICES)}")
    return list(dict.fromkeys(names))


def export_model(
    source,
    formats=("onnx",),
    out_dir=None,
    opset: int = DEFAULT_OPSET,
    validate: bool = True,
    model_class: str | None = None,
    labels=None,
    mean: float | None = None,
    std: float | None = None,
    recipe: str | None = None,
    dataset: str | None = None,
    data_dir=None,
    validation_limit: int | None = None,
    log: Callable[[str], None] | None = None,
    raise_on_failure: bool = True,
    max_accuracy_drop: float = DEFAULT_ACCURACY_BUDGET * 100,
) -> ExportResult:
    """Export `source` (checkpoint path, state_dict path + model_class, or nn.Module).

    `max_accuracy_drop` (in points of accuracy, 0.3 = 0.3 %) is the accuracy gate of the int8 and fp16
    formats: measured on the full test split against the float model.

    Returns an ExportResult. When a validation fails, the passing artifacts are kept and listed in
    the manifest, failing ones are not written, and (with raise_on_failure) ExportError lists every
    failure at once.
    """
    log = log or (lambda message: None)
    names = parse_formats(formats)
    if not names:
        raise InvalidInputError("no format given; expected one of: " + ", ".join(FORMAT_CHOICES))
    lo, hi = OPSET_RANGE
    if not lo <= int(opset) <= hi:
        raise InvalidInputError(f"--opset {opset}: supported range is {lo}-{hi}")
    if not 0 <= max_accuracy_drop <= 100:
        raise InvalidInputError(f"--max-accuracy-drop {max_accuracy_drop}: expected 0-100 points")
    budget = max_accuracy_drop / 100
    if recipe is not None and recipe not in RECIPE_TEXT:
        raise InvalidInputError(f"--recipe {recipe!r}: expected one of {', '.join(RECIPE_TEXT)}")
    if dataset is not None:
        from .data import dataset_spec

        dataset_spec(dataset)  # an unknown name fails before anything is loaded
    src = load_source(source, model_class, labels, mean, std, recipe, dataset, data_dir, log)
    data_dir = data_for(src, data_dir, log)
    if out_dir is None:  # the default folder (models/<stem>/) is ours to create
        out_dir = src.default_out
        try:
            out_dir.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInputError(f"cannot create {out_dir.parent} ({exc.strerror or exc}); pass --out-dir") from None
    out_dir = Path(out_dir)
    previous = check_export_target(out_dir)

    images = labels_arr = reference = None
    data_desc = ""
    if validate:
        images, labels_arr, data_desc = validation_images(src.meta, data_dir, validation_limit, log)
        norm = src.meta["normalization"]
        reference = reference_logits(src.module, images, norm["mean"][0], norm["std"][0])
        if src.meta.get("test_accuracy") is None and labels_arr is not None:  # a user's model: measure it
            src.meta["test_accuracy"] = float((reference.argmax(1) == labels_arr).mean())
            src.meta["test_accuracy_measured_on"] = data_desc
    if src.description.get("kind") in ("checkpoint", "state_dict"):
        src.description["dataset"] = src.meta.get("dataset")
        src.description["data_dir"] = str(Path(data_dir).resolve()) if data_dir else None

    # The new folder is built whole in staging and swapped in at the end: after any export (done,
    # failed, interrupted, killed) out_dir is entirely the old export or entirely the new one.
    staging = staging_dir(out_dir)
    ctx = WriteContext(int(opset), log, staging, images, labels_arr, data_desc, data_dir, budget)
    entries: list[dict] = []
    validations: list[Validation] = []
    bundle = None
    try:
        for name in names:
            raise_if_signalled()  # a library may have swallowed the signal's exception
            fmt = FORMATS[name]
            tmp = staging / fmt.file
            try:
                facts = WRITERS[name](src, fmt, tmp, ctx)
            except ExportError as exc:  # this format cannot be made: a ✗ row beside the others
                validations.append(Validation(name, fmt.file, fmt.backend, False, None,
                                              0 if images is None else len(images), data_desc, error=str(exc)))
                tmp.unlink(missing_ok=True)
                continue
            entry = {"format": name, "file": fmt.file, "kind": fmt.kind, "sha256": sha256_file(tmp),
                     "bytes": tmp.stat().st_size, "app": fmt.app, **facts}
            if validate:
                v = validate_artifact(tmp, fmt, images, labels_arr, reference, data_desc, budget)
                validations.append(v)
                c = v.comparison
                entry["validation"] = {"passed": v.passed, "max_abs": c.max_abs if c is not None else None,
                                       "top1_agreement": c.top1_agreement if c is not None else None,
                                       "accuracy": c.accuracy if c is not None else None,
                                       "reference_accuracy": c.reference_accuracy if c is not None else None,
                                       "images": v.images, "data": data_desc}
                if fmt.transform and c is not None and c.accuracy_delta is not None:
                    entry["accuracy_budget_points"] = budget * 100
                    entry["accuracy_drop_points"] = -c.accuracy_delta * 100
                if not v.passed:
                    tmp.unlink(missing_ok=True)  # a failing artifact never appears under its final name
                    continue
            entries.append(entry)
        raise_if_signalled()  # past here only mnistkit's own file operations run: a signal raises at once
        for leftover in staging.glob(".base-*"):
            leftover.unlink()
        kept = _carry_over(previous, out_dir, staging, src, {e["format"] for e in entries}, log)
        manifest = _manifest(src, kept + entries)
        manifest_path = out_dir / "manifest.json"
        if kept or entries:
            atomic_write_json(staging / "manifest.json", manifest)
            app_entry = next((e for e in kept + entries if e["format"] == "onnx-app"), None)
            had_bundle = previous is not None and (out_dir / "app").is_dir() and bool(kept)
            if app_entry is not None and (set(FORMATS) <= set(names) or had_bundle):
                _write_app_bundle(staging, staging / app_entry["file"], src, app_entry)
                bundle = out_dir / "app"
            replace_dir(staging, out_dir)  # the commit point: after it, out_dir is the new export
        entries = kept + entries
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    result = ExportResult(out_dir, entries, manifest_path, validations, bundle)
    failures = export_failures(result)
    if failures and raise_on_failure:
        raise ExportError(failures)
    return result


def export_failures(result: ExportResult) -> str | None:
    """One line listing every failed validation, or None."""
    failed = [v for v in result.validation if not v.passed]
    if not failed:
        return None
    parts = []
    for v in failed:
        why = "; ".join(v.comparison.failures) if v.comparison is not None else v.error
        parts.append(f"{v.format} ({why})")
    return f"validation failed for {len(failed)} of {len(result.validation)} artifacts: " + ", ".join(parts)

