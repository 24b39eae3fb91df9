"""`mnistkit optimize`: the folders it reads and writes. The export folder it searches (a checkpoint's default one
gets the formats it is missing) and the deploy folder, built whole beside its place and swapped in."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..deploy import DEPLOY_FILE
from ..errors import InvalidInputError, MnistkitError
from ..formats import FORMATS, REFERENCE_KIND, exportable
from ..signals import publishing
from .report import markdown, plot


def export_folder(path: Path, data_dir, log) -> tuple[Path, list[str]]:
    """(the export folder to search, formats exported now). A folder is used as it is; a checkpoint's default
    export folder (models/<name>/) gets the formats it is missing (those already there are kept)."""
    from ..artifacts import read_manifest

    if path.is_dir() or path.name == "manifest.json":
        folder = path if path.is_dir() else path.parent
        read_manifest(folder)  # not an export folder: one line
        return folder, []
    if not path.exists():
        raise InvalidInputError(f"{path}: no such file or folder; expected a checkpoint or an export folder")
    from ..artifacts import detect_kind

    if detect_kind(path) != REFERENCE_KIND:
        raise InvalidInputError(f"{path}: optimize takes a checkpoint or an export folder (the PyTorch reference "
                                "checks every candidate), not a single artifact")
    from ..exporter import export_model
    from ..source import load_source

    src = load_source(path, data_dir=data_dir, log=log)
    folder = src.default_out
    present: set[str] = set()
    try:
        manifest = read_manifest(folder)
        if (manifest.get("source") or {}).get("sha256") == src.description.get("sha256"):
            present = {a.get("format") for a in manifest.get("artifacts") or []}
    except MnistkitError:
        pass
    missing = [f for f in exportable() if f not in present and FORMATS[f].precision != "fp16"]
    if missing:
        log(f"exporting {', '.join(missing)} to {folder} (the formats it does not have yet)")
        folder.parent.mkdir(parents=True, exist_ok=True)
        export_model(path, missing, out_dir=folder, data_dir=data_dir, log=log, raise_on_failure=False)
    return folder, missing


def check_deploy_target(out_dir: Path, overwrite: bool) -> None:
    """A deploy folder is new, empty, or an earlier deploy folder (replaced whole); never a folder of the user's."""
    from ..fileio import check_writable_dir

    if out_dir.exists():
        if not out_dir.is_dir():
            raise InvalidInputError(f"--out-dir {out_dir}: exists and is not a directory")
        entries = [p.name for p in out_dir.iterdir()]
        if entries and not (out_dir / DEPLOY_FILE).is_file():
            raise InvalidInputError(f"--out-dir {out_dir}: holds {', '.join(sorted(entries)[:3])}"
                                    f"{' and more' if len(entries) > 3 else ''} and no {DEPLOY_FILE}; pass a new or "
                                    "empty folder (or an earlier deploy folder)")
        if entries and not overwrite:
            raise InvalidInputError(f"--out-dir {out_dir}: already holds a deployment; --overwrite replaces it")
    elif not out_dir.parent.exists():
        raise InvalidInputError(f"--out-dir {out_dir}: parent directory {out_dir.parent} does not exist")
    check_writable_dir(out_dir.parent, f"the folder holding --out-dir {out_dir.name}")


def write_deploy(out_dir: Path, folder: Path, result: dict, table: dict) -> None:
    """Build the deploy folder beside `out_dir` and swap it in whole."""
    from ..artifacts import read_manifest
    from ..fileio import atomic_write_json, replace_dir, sha256_file, staging_dir

    manifest = read_manifest(folder)
    chosen = {c["file"] for c in result["choices"].values()}
    entries = [a for a in manifest.get("artifacts") or [] if a.get("file") in chosen]
    staging = staging_dir(out_dir, "deploy")
    try:
        copied = []
        for e in entries:
            for name in [e["file"], *[c["file"] for c in e.get("companions") or []]]:
                shutil.copy2(folder / name, staging / name)
                copied.append(name)
        for c in result["choices"].values():
            c["sha256"] = sha256_file(staging / c["file"])
        result["files"] = copied
        atomic_write_json(staging / "manifest.json", {**manifest, "artifacts": entries})
        atomic_write_json(staging / DEPLOY_FILE, result)
        atomic_write_json(staging / "candidates.json", table)
        drawn = plot(staging / "tradeoff.png", table, result)
        (staging / "report.md").write_text(markdown(result, table, drawn is not None))
        with publishing(str(out_dir)):  # a signal from here on does not turn a complete deploy folder into "terminated"
            replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
