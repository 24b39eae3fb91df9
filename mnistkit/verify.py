"""Parity: every backend x device x artifact against the PyTorch reference, on the real test split.

The loop never switches on a backend's name: it asks the registry which backends open which
artifact kind and runs each through the one contract. Results are values (Comparison), truthy only
when passing; every failure is collected and reported at once.
"""

from __future__ import annotations

import hashlib
import json
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .artifacts import detect_kind, recorded_reference
from .backends import BACKENDS, create_backend, default_devices, reference_backend
from .compare import Comparison, compare
from .errors import BackendUnavailableError, InvalidInputError, UnsupportedModelError, first_line
from .formats import REFERENCE_KIND, tolerance_for
from .modelspec import ModelSpec
from .plan import Case, cases, check_choices, expand, target

# onnx.reference executes operators in Python: the first 500 images keep it to seconds on the MLP.
SLOW_BACKEND_LIMIT = 500
CHUNK = 1000


@dataclass
class PairResult:
    artifact: str
    format: str
    backend: str
    device: str
    provider: str | None
    images: int
    comparison: Comparison | None
    error: str | None = None
    origin: str = "this machine"
    skipped: str | None = None  # why this runtime cannot run this artifact (not a parity failure)
    logits: np.ndarray | None = field(default=None, repr=False)  # kept for --save-outputs

    @property
    def passed(self) -> bool:
        if self.skipped:
            return True
        return self.comparison is not None and bool(self.comparison) and self.error is None

    def label(self) -> str:
        return f"{self.backend}/{self.device} {Path(self.artifact).name}"

    def to_json(self) -> dict:
        return {
            "artifact": self.artifact, "format": self.format, "backend": self.backend, "device": self.device,
            "provider": self.provider, "images": self.images, "passed": self.passed, "error": self.error,
            "origin": self.origin, "skipped": self.skipped,
            "comparison": self.comparison.to_json() if self.comparison is not None else None,
        }


@dataclass
class VerifyReport:
    checkpoint: str
    dataset: str
    images: int
    reference: dict
    pairs: list[PairResult] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)  # why an artifact x backend x device was not compared

    @property
    def compared(self) -> list[PairResult]:
        return [p for p in self.pairs if not p.skipped]

    @property
    def passed(self) -> bool:
        return bool(self.compared) and all(p.passed for p in self.pairs)

    def verdict(self) -> str:
        if not self.compared:
            why = "; ".join(dict.fromkeys(self.not_run)) or "no artifact given besides the reference"
            return f"FAILED | 0 pairs | nothing was compared: {why}"
        skipped = len(self.pairs) - len(self.compared)
        note = f" | {skipped} skipped (runtime cannot run the artifact)" if skipped else ""
        failed = [p for p in self.pairs if not p.passed]
        if not failed:
            # the pair closest to its own tolerance (int8 rows have no max_abs tolerance)
            bounded = [p for p in self.compared if p.comparison.tolerance.max_abs] or self.compared
            worst = max(bounded, key=lambda p: p.comparison.max_abs / (p.comparison.tolerance.max_abs or 1.0))
            tol = worst.comparison.tolerance.max_abs
            return (f"PASSED | {len(self.compared)} pairs | worst max_abs {worst.comparison.max_abs:.2e}"
                    + (f" of {tol:.0e}" if tol else "") + f" ({worst.label()}){note}")
        reasons = []
        for p in failed:
            why = p.error or "; ".join(p.comparison.failures)
            reasons.append(f"{p.label()}: {why}")
        return f"FAILED | {len(failed)} of {len(self.compared)} pairs | " + " | ".join(reasons) + note

    def to_json(self) -> dict:
        return {
            "passed": self.passed, "verdict": self.verdict(), "checkpoint": self.checkpoint,
            "dataset": self.dataset, "images": self.images, "reference": self.reference,
            "pairs": [p.to_json() for p in self.pairs], "not_run": list(dict.fromkeys(self.not_run)),
        }


def _images_fingerprint(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()[:16]


def verify(checkpoint, artifacts=(), backends=None, devices=None, dataset: str | None = None,
           data_dir=None, limit: int | None = None, save_outputs=None, load_outputs=None,
           allow_fallback: bool = False, log: Callable[[str], None] | None = None,
           on_pair: Callable[[PairResult], None] | None = None, spec: ModelSpec | None = None) -> VerifyReport:
    """Compare every (artifact, backend, device) with PyTorch eager on CPU over the test split.

    `checkpoint`: a mnistkit checkpoint, a state_dict with `spec.model_class` (and the spec's mean/std/labels
    when the script does not say), or an export folder, whose manifest names its source; with an
    export folder and no `artifacts`, the folder's artifacts are verified.
    """
    from .imagesets import model_split
    from .source import data_for, reference_for

    log = log or (lambda m: None)
    if limit is not None and limit < 1:
        raise InvalidInputError(f"--limit {limit}: expected >= 1")
    check_choices(backends, devices)
    explicit_devices = devices is not None
    devices = list(devices) if devices else default_devices()

    spec = spec or ModelSpec()
    listed_in = recorded_reference(checkpoint) if Path(checkpoint).is_file() and spec.model_class is None else None
    if listed_in is not None and detect_kind(checkpoint) != REFERENCE_KIND:  # an artifact of an export folder
        log(f"{checkpoint} is listed in {listed_in / 'manifest.json'}: verifying it against the source recorded there")
        artifacts, checkpoint = [checkpoint, *artifacts], listed_in
    src, ref_path, folder = reference_for(checkpoint, spec, log=log)
    if folder is not None and not artifacts:
        artifacts = [folder]
    targets, _ = expand(artifacts)  # bad paths fail before any data is loaded
    from .imagesets import has_image_data

    data_dir = data_for(src, data_dir, log)
    dataset = dataset or src.meta.get("dataset") or ("images" if has_image_data(data_dir) else "mnist")
    split = model_split("test", dataset if dataset != "images" else None, data_dir, src.meta, limit, log=log,
                        download=True)
    images, labels_arr = split.images, split.labels
    n = len(images)

    with reference_backend(src) as ref_backend:
        reference = ref_backend.run_chunked(images, CHUNK)
        ref_info = {"backend": ref_backend.name, "device": "cpu", "provider": ref_backend.provider,
                    "accuracy": float((reference.argmax(1) == labels_arr).mean()),
                    "threads": ref_backend.threads, "source": src.description}
    report = VerifyReport(str(ref_path), dataset, n, ref_info)

    with tempfile.TemporaryDirectory(prefix="mnistkit-verify-") as tmp:
        if not artifacts:
            targets = _export_everything(src, tmp, data_dir, backends, log)
        ref_target = target(ref_path)
        planned, not_run = cases([ref_target], backends, devices)
        planned = [c for c in planned if not (BACKENDS[c.backend].reference and c.device == "cpu")]  # itself
        more, why = cases([t for t in targets if t.path != ref_target.path], backends, devices)  # given twice
        report.not_run.extend(r for r in not_run if "--backends" not in r)
        report.not_run.extend(why)
        saved: dict[str, np.ndarray] = {}
        for case in planned + more:
            m = min(n, SLOW_BACKEND_LIMIT) if BACKENDS[case.backend].slow else n
            pair = _run_pair(case, images[:m], labels_arr[:m], reference[:m], allow_fallback, explicit_devices,
                             src if case.target is ref_target else None)
            if pair is None:
                continue
            report.pairs.append(pair)
            if on_pair:
                on_pair(pair)
            if save_outputs and pair.comparison is not None:
                saved[f"{len(report.pairs) - 1}"] = pair.logits
    if save_outputs:
        _save_outputs(save_outputs, report, reference, images, saved)
    if load_outputs:
        for pair in _load_outputs(load_outputs, reference, images, labels_arr):
            report.pairs.append(pair)
            if on_pair:
                on_pair(pair)
    return report


def _export_everything(src, folder, data_dir, backends, log):
    """Every format of `src` that one of `backends` (None: any) opens, unvalidated, into a temporary folder
    (verify validates them itself): `--backends onnxruntime` exports the ONNX formats only."""
    from .backends import backends_for
    from .exporter import export_model
    from .formats import FORMATS, exportable

    every = exportable()
    names = [f for f in every if backends is None or set(backends) & set(backends_for(FORMATS[f].kind))]
    if not names:  # the named backends open no exportable format (e.g. only the PyTorch reference)
        return []
    log(f"no artifacts given: exporting {'every format' if names == every else ', '.join(names)} "
        "to a temporary folder first")
    meta, norm = src.meta, src.meta["normalization"]
    spec = ModelSpec(labels=tuple(meta["labels"]), mean=tuple(norm["mean"]), std=tuple(norm["std"]),
                     input_shape=tuple(meta["input"]["shape"][1:]), recipe=meta["preprocess"], dataset=meta.get("dataset"))
    exported = export_model(src.module, names, out_dir=folder, spec=spec, validate=False, data_dir=data_dir,
                            raise_on_failure=False)
    return [target(Path(folder) / a["file"]) for a in exported.artifacts]


def _run_pair(case: Case, images, labels, reference, allow_fallback, explicit_devices, source=None):
    path, fmt, name, device = case.target.path, case.target.format, case.backend, case.device
    options = {"allow_fallback": True} if allow_fallback else {}
    if source is not None:
        options["source"] = source
    try:
        with create_backend(path, name, device, kind=case.target.kind, **options) as b:
            fmt = b.info.format
            logits = b.run_chunked(images, CHUNK)
            provider = b.provider
            actual_device = b.device
    except UnsupportedModelError as exc:
        return PairResult(str(path), fmt, name, device, None, len(images), None, skipped=str(exc))
    except BackendUnavailableError as exc:
        if not explicit_devices and device != "cpu":
            return None  # cuda was only implied ("auto"); its absence is not a failure
        return PairResult(str(path), fmt, name, device, None, len(images), None, error=str(exc))
    except Exception as exc:  # a failing pair is a result, listed with all the others
        return PairResult(str(path), fmt, name, device, None, len(images), None, error=first_line(exc)[:300])
    comparison = compare(reference, logits, tolerance_for(fmt, device), labels)
    return PairResult(str(path), fmt, name, actual_device, provider, len(images), comparison, logits=logits)


def _save_outputs(path, report: VerifyReport, reference, images, saved) -> None:
    """An .npz any machine can compare against its own reference (e.g. GPU results on a CPU box)."""
    from .fileio import atomic_path

    header = {
        "format": "mnistkit-outputs", "format_version": 1, "dataset": report.dataset, "images": report.images,
        "images_sha": _images_fingerprint(images), "machine": platform.node(), "platform": platform.platform(),
        "pairs": [{k: v for k, v in p.to_json().items() if k != "comparison"} | {"key": k}
                  for k, p in ((k, report.pairs[int(k)]) for k in saved)],
    }
    arrays = {f"pair_{k}": v for k, v in saved.items()}
    path = Path(path)
    with atomic_path(path, "--save-outputs") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, header=np.frombuffer(json.dumps(header).encode(), np.uint8),
                                reference=reference, **arrays)


def _load_outputs(path, reference, images, labels) -> list[PairResult]:
    path = Path(path)
    try:
        import zipfile

        with zipfile.ZipFile(path) as zf:  # members are read whole: bound what they may claim
            big = [i.filename for i in zf.infolist() if i.file_size > 1 << 28]
        if big:
            raise ValueError(f"member {big[0]} claims more than 256 MiB")
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(bytes(z["header"]).decode())
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, EOFError, MemoryError, zipfile.BadZipFile) as exc:
        raise InvalidInputError(f"--load-outputs {path}: not a mnistkit outputs file ({first_line(exc, 160)})") from None
    if not isinstance(header, dict) or header.get("format") != "mnistkit-outputs":
        raise InvalidInputError(f"--load-outputs {path}: not a mnistkit outputs file")
    try:
        if header["images_sha"] != _images_fingerprint(images):
            raise InvalidInputError(
                f"--load-outputs {path}: saved for {header['images']} {header['dataset']} images that differ from "
                f"this run's {len(images)}; use the same --dataset and --limit")
        origin = header.get("machine", "another machine")
        pairs = []
        for entry in header["pairs"]:
            logits = arrays[f"pair_{entry['key']}"]
            m = len(logits)
            if logits.ndim != 2 or m > len(reference):
                raise ValueError(f"pair {entry['key']}: logits {list(logits.shape)} do not fit {len(reference)} images")
            comparison = compare(reference[:m], logits, tolerance_for(entry["format"], entry["device"]), labels[:m])
            pairs.append(PairResult(entry["artifact"], entry["format"], entry["backend"], entry["device"],
                                    entry.get("provider"), m, comparison, origin=f"loaded from {origin}"))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidInputError(f"--load-outputs {path}: malformed outputs file ({first_line(exc, 160)})") from None
    return pairs
