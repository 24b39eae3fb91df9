"""The export folder: what it may hold, its manifest, the app bundle, and carrying over the same
model's earlier artifacts. Torch-free; the exporter (exporter.py) orchestrates, this module knows
the folder.

An export folder holds one model. It is replaced as a whole (built in staging, swapped in), so it
may hold nothing of the user's; artifacts of an earlier export of the *same* model (same source
bytes, class, labels and normalization) that this export did not rewrite are kept, checked by sha256.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from .artifacts import MANIFEST_FORMAT, check_sha256, read_manifest
from .environment import library_versions
from .errors import InvalidInputError, first_line
from .fileio import check_writable_dir
from .formats import APP_BUNDLE_FILE, FORMATS
from .preprocess import RECIPES

# What an export folder may hold besides its artifacts: anything else is the user's, and a folder
# that is replaced as a whole must not take it along. Hidden leftovers of older mnistkit versions
# (staging folders, temporary files) are ours too.
_OWN_NAMES = {"manifest.json", "app"}


def _is_ours(p: Path) -> bool:
    if p.name in _OWN_NAMES or any(p.name in f.files for f in FORMATS.values()):
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
    try:
        return read_manifest(out_dir)
    except InvalidInputError:  # none, or not ours: nothing to carry over
        return None


def _same_model(previous: dict, src) -> bool:
    old, new = previous.get("source") or {}, src.description
    return (bool(new.get("sha256")) and old.get("sha256") == new.get("sha256")
            and old.get("model_class") == new.get("model_class")
            and old.get("model_args") == new.get("model_args")
            and previous.get("labels") == src.meta["labels"]
            and previous.get("normalization") == src.meta["normalization"])


def carry_over(previous: dict | None, out_dir: Path, staging: Path, src, new: set[str], log) -> list[dict]:
    """The manifest entries of an earlier export of the same model that this export did not rewrite,
    their files linked into `staging` after their sha256 is checked. A different model's artifacts are
    never carried: the folder holds one model."""
    if previous is None or not _same_model(previous, src):
        return []
    kept = []
    for e in previous.get("artifacts") or []:
        if not isinstance(e, dict) or e.get("format") not in FORMATS or e["format"] in new:
            continue
        files = [(FORMATS[e["format"]].file, e.get("sha256"))] + [
            (c.get("file"), c.get("sha256")) for c in e.get("companions") or [] if isinstance(c, dict)]
        try:
            for name, sha in files:
                f = out_dir / str(name)
                check_sha256(f, str(sha), out_dir / "manifest.json")
                try:
                    os.link(f, staging / f.name)
                except OSError:
                    shutil.copy2(f, staging / f.name)
        except (InvalidInputError, OSError) as exc:
            for name, _ in files:
                (staging / str(name)).unlink(missing_ok=True)
            log(f"not keeping {files[0][0]} from the earlier export: {first_line(exc)}")
            continue
        kept.append(e)
    return kept


def manifest(src, artifacts: list[dict]) -> dict:
    """The export folder's manifest.json for a source.Source and its artifacts' entries."""
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

- `model.onnx`: input `pixels` uint8 [{shape}] ({layout}, 0-255, {polarity}); outputs `logits` and
  `probabilities` float32 [N,{c}] (softmax). Normalization (mean {mean}, std {std}) is inside the graph.{transforms}
- `labels.json`: the class labels in output order, and the contract below (ONNX Runtime's JavaScript
  API cannot read model metadata).
- Preprocessing recipe: `{recipe}` — {recipe_text}
- Loads in onnxruntime >= {min_ort} (opset {opset}, IR version {ir}).
"""


def write_app_bundle(folder: Path, src, entry: dict) -> Path:
    """app/ inside `folder` (the staged export): the app-ready ONNX of `entry`, labels.json and a README
    of the contract."""
    bundle = folder / "app"
    bundle.mkdir()
    shutil.copyfile(folder / entry["file"], bundle / APP_BUNDLE_FILE)
    from .artifacts import geometry_of_input
    from .steps import steps_text

    meta = src.meta
    geometry = geometry_of_input(meta.get("input") or {}, folder)
    classes = len(meta["labels"])
    contract = {
        "labels": meta["labels"],
        "dataset": meta.get("dataset"),
        "preprocess": meta["preprocess"],
        "normalization": meta["normalization"],
        "input": {"name": "pixels", "dtype": "uint8", "shape": ["N", *geometry.pixel_tail]},
        "transforms": meta.get("transforms"),
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["N", classes]},
                    {"name": "probabilities", "dtype": "float32", "shape": ["N", classes]}],
        "min_onnxruntime": entry.get("min_onnxruntime"),
        "opset": entry.get("opset"),
        "sha256": entry["sha256"],
    }
    (bundle / "labels.json").write_text(json.dumps(contract, indent=2) + "\n")
    (bundle / "README.md").write_text(APP_README.format(
        shape=",".join(map(str, ["N", *geometry.pixel_tail])), layout="gray" if geometry.channels == 1 else
        "RGB, channels last", polarity="white ink/object on black, as in the dataset" if meta["preprocess"] != "image"
        else "as the training images", c=classes,
        mean=", ".join(f"{v:g}" for v in meta["normalization"]["mean"]),
        std=", ".join(f"{v:g}" for v in meta["normalization"]["std"]),
        transforms=f"\n  Before it, images go through the training script's transforms: {steps_text(meta['transforms'])}."
        if meta.get("transforms") else "",
        recipe=meta["preprocess"], recipe_text=RECIPES.get(meta["preprocess"], ""),
        min_ort=entry.get("min_onnxruntime"), opset=entry.get("opset"), ir=entry.get("ir_version")))
    return bundle
