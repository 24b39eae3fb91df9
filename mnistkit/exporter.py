"""Export a checkpoint, a user's state_dict + class, or any nn.Module to every format of the format
table, validated on real test images right after export. Orchestration only: the formats package
writes each file, validate.py judges it, exportdir.py knows the folder and its manifest.

(The module is `exporter.py`, not `export.py`, so importing it never shadows `mnistkit.export`.)

The new folder is built whole in a hidden staging folder beside its final place and swapped in at
the end: after any export (done, failed, interrupted, killed) the folder is entirely the old export
or entirely the new one, and no manifest lists a missing file.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import exportdir
from .errors import ExportError, InvalidInputError
from .signals import publishing, raise_if_signalled
from .fileio import atomic_write_json, replace_dir, sha256_file, staging_dir
from .formats import (APP_FORMAT, DEFAULT_ACCURACY_BUDGET, DEFAULT_FORMAT, DEFAULT_OPSET, FORMAT_CHOICES, FORMATS,
                      KINDS, OPSET_RANGE, REFERENCE_SOURCES,
                      WriteContext, parse_formats)
from .gate import written_here
from .modelspec import ModelSpec
from .preprocess import RECIPES
from .validate import Validation, validate_artifact


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

    def failures(self) -> str | None:
        """One line listing every failed validation, or None."""
        failed = [v for v in self.validation if not v.passed]
        if not failed:
            return None
        parts = [f"{v.format} ({'; '.join(v.comparison.failures) if v.comparison is not None else v.error})"
                 for v in failed]
        return f"validation failed for {len(failed)} of {len(self.validation)} artifacts: " + ", ".join(parts)

    def to_json(self) -> dict:
        return {
            "artifacts": [{**a, "path": str(self.out_dir / a["file"])} for a in self.artifacts],
            "manifest": str(self.manifest),
            "app_bundle": str(self.app_bundle) if self.app_bundle else None,
            "validation": [v.to_json() for v in self.validation],
            "passed": self.passed,
        }


def export_model(
    source,
    formats=(DEFAULT_FORMAT,),
    out_dir=None,
    spec: ModelSpec | None = None,
    opset: int = DEFAULT_OPSET,
    validate: bool = True,
    data_dir=None,
    validation_limit: int | None = None,
    log: Callable[[str], None] | None = None,
    raise_on_failure: bool = True,
    max_accuracy_drop: float = DEFAULT_ACCURACY_BUDGET * 100,
) -> ExportResult:
    """Export `source` (checkpoint path, state_dict path + `spec.model_class`, or nn.Module).

    `spec` (modelspec.ModelSpec) describes a user's model beyond its weights: the class and its keyword
    arguments, the images it takes ("C,H,W"; default: what its script's transforms say, else the first of 1x28x28,
    1x32x32, 3x32x32, 3x28x28 it accepts, said), labels, mean/std (one value, or one per channel), recipe, dataset.

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
    spec = spec or ModelSpec()
    if spec.recipe is not None and spec.recipe not in RECIPES:
        raise InvalidInputError(f"--recipe {spec.recipe!r}: expected one of {', '.join(RECIPES)}")
    if spec.dataset is not None:
        from .data import dataset_spec

        dataset_spec(spec.dataset)  # an unknown name fails before anything is loaded
    from .source import data_for, load_source

    src = load_source(source, spec, data_dir, log)
    data_dir = data_for(src, data_dir, log)
    out_dir = _out_dir(out_dir, src)
    previous = exportdir.check_export_target(out_dir)

    ctx = WriteContext(int(opset), log, Path(), data_dir=data_dir, budget=budget)
    reference = None
    if validate:
        reference = _reference(src, ctx, validation_limit)
    if src.description.get("kind") in REFERENCE_SOURCES:
        src.description["dataset"] = src.meta.get("dataset")
        src.description["data_dir"] = str(Path(data_dir).resolve()) if data_dir else None

    ctx.staging = staging_dir(out_dir)
    entries: list[dict] = []
    validations: list[Validation] = []
    bundle = None
    try:
        for name in names:
            raise_if_signalled()  # a library may have swallowed the signal's exception
            entry, validation = _write_one(src, FORMATS[name], ctx, reference)
            if validation is not None:
                validations.append(validation)
            if entry is not None:
                entries.append(entry)
        raise_if_signalled()  # past here only mnistkit's own file operations run: a signal raises at once
        for leftover in ctx.staging.glob(".base-*"):
            leftover.unlink()
        kept = exportdir.carry_over(previous, out_dir, ctx.staging, src, {e["format"] for e in entries}, log)
        entries = kept + entries
        if entries:
            atomic_write_json(ctx.staging / "manifest.json", exportdir.manifest(src, entries))
            app_entry = next((e for e in entries if e["format"] == APP_FORMAT), None)
            had_bundle = previous is not None and (out_dir / "app").is_dir() and bool(kept)
            if app_entry is not None and (APP_FORMAT in names or had_bundle):
                exportdir.write_app_bundle(ctx.staging, src, app_entry)
                bundle = out_dir / "app"
            with publishing(str(out_dir)):  # the commit point: after it, out_dir is the new export
                replace_dir(ctx.staging, out_dir)
    finally:
        shutil.rmtree(ctx.staging, ignore_errors=True)

    result = ExportResult(out_dir, entries, out_dir / "manifest.json", validations, bundle)
    failures = result.failures()
    if raise_on_failure and failures:
        raise ExportError(failures)
    return result


def _out_dir(out_dir, src) -> Path:
    if out_dir is None:  # the default folder (models/<stem>/) is ours to create
        out_dir = src.default_out
        try:
            out_dir.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInputError(f"cannot create {out_dir.parent} ({exc.strerror or exc}); pass --out-dir") from None
    return Path(out_dir)


def _reference(src, ctx: WriteContext, limit: int | None):
    """Validation images into `ctx` and the reference logits on them (a user's model gets its accuracy
    measured on them too)."""
    from .backends import reference_backend
    from .imagesets import validation_images

    ctx.images, ctx.labels, ctx.data_desc = validation_images(src.meta.get("dataset"), ctx.data_dir, limit, ctx.log,
                                                              src.meta)
    with reference_backend(src) as ref:
        reference = ref.run_chunked(ctx.images)
    if src.meta.get("test_accuracy") is None and ctx.labels is not None:  # a user's model: measure it
        src.meta["test_accuracy"] = float((reference.argmax(1) == ctx.labels).mean())
        src.meta["test_accuracy_measured_on"] = ctx.data_desc
    return reference


def _write_one(src, fmt, ctx: WriteContext, reference) -> tuple[dict | None, Validation | None]:
    """Write one format into staging and validate it: (its manifest entry or None, its validation or None).
    A format that cannot be made, or fails validation, leaves no file under its name."""
    tmp = ctx.staging / fmt.file
    if fmt.notice:
        ctx.log(fmt.notice)
    n = 0 if ctx.images is None else len(ctx.images)
    try:
        facts = fmt.write(src, tmp, ctx)
        written_here(tmp)  # validated below without a rehearsal: this process just made it (gate.rehearse)
    except ExportError as exc:  # this format cannot be made: a ✗ row beside the others
        _remove(ctx.staging, fmt)
        return None, Validation(fmt.name, fmt.file, KINDS[fmt.kind].default_backend, False, None, n, ctx.data_desc,
                                error=str(exc))
    entry = {"format": fmt.name, "file": fmt.file, "kind": fmt.kind, "sha256": sha256_file(tmp),
             "bytes": tmp.stat().st_size, "app": fmt.app, **facts}
    if fmt.companions:
        entry["companions"] = [{"file": name, "sha256": sha256_file(ctx.staging / name),
                                "bytes": (ctx.staging / name).stat().st_size} for name in fmt.companions]
    if reference is None:
        return entry, None
    v = validate_artifact(tmp, fmt, ctx.images, ctx.labels, reference, ctx.data_desc, ctx.budget)
    entry["validation"] = v.manifest_entry()
    c = v.comparison
    if fmt.gated and c is not None and c.accuracy_delta is not None:
        entry["accuracy_budget_points"] = ctx.budget * 100
        entry["accuracy_drop_points"] = -c.accuracy_delta * 100
    if not v.passed:
        _remove(ctx.staging, fmt)  # a failing artifact never appears under its final name
        return None, v
    return entry, v


def _remove(staging, fmt) -> None:
    for name in fmt.files:
        (staging / name).unlink(missing_ok=True)
