"""What a model file is and what it says about itself. Torch-free.

Checkpoints, TorchScript and .pt2 files are all zip archives, so the kind is detected from the
archive's member names, never from the suffix. ONNX files are protobuf; they are recognised by
their first field tag and confirmed when a runtime parses them.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ArtifactError
from .fileio import check_input_file
from .formats import KINDS, REFERENCE_KIND, REFERENCE_SOURCES, format_for
from .formats.spec import METADATA_FILE, from_onnx_props, to_onnx_props  # noqa: F401  (the metadata encoding)
from .pixels import DIGITS, FLOAT_FORM, MAX_SIDE, UINT8_FORM, Geometry, geometry_from, geometry_of_input  # noqa: F401

MANIFEST_FORMAT = "mnistkit-manifest"
MAX_METADATA_BYTES = 1 << 20  # mnistkit's own metadata is ~1 KB; a member claiming more is refused


DEFAULT_LABELS = [str(d) for d in range(10)]
# The tutorial's ToTensor scaling: pixels / 255, no mean/std. Used for models that do not say.
DEFAULT_NORMALIZATION = {"mean": [0.0], "std": [1.0]}


@dataclass
class ModelInfo:
    """An artifact's self-description, as backends, predict and verify need it."""

    path: Path
    kind: str
    labels: list[str] = field(default_factory=lambda: list(DEFAULT_LABELS))
    mean: float | tuple[float, ...] = 0.0  # one value, or one per channel
    std: float | tuple[float, ...] = 1.0
    recipe: str = "digits"
    geometry: Geometry = DIGITS  # the images the model takes: C x H x W
    transforms: tuple = ()  # the script's geometric steps before ToTensor (steps.apply_steps), as recorded
    input_form: str = FLOAT_FORM
    input_name: str = "input"
    output_name: str = "logits"
    fixed_batch: int | None = None  # a model that only accepts this batch size (e.g. ONNX zoo mnist-12)
    metadata: dict = field(default_factory=dict)  # everything the artifact recorded
    described: bool = True  # False when the artifact carries no mnistkit metadata (defaults used)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def format(self) -> str:
        """The format it is judged as: the one it records (onnx-app, onnx-int8, ...), else its kind."""
        return format_for(self.kind, self.metadata.get("format") if self.kind != REFERENCE_KIND else None)


def detect_kind(path: str | os.PathLike) -> str:
    """Return one of KINDS by looking at the file's contents. Raises ArtifactError."""
    path = Path(path)
    check_input_file(path, f"a model file ({known_files()})", ArtifactError)
    with open(path, "rb") as f:
        head = f.read(8)
    members = None
    if head[:2] == b"PK":
        try:
            with zipfile.ZipFile(path) as zf:
                members = zf.namelist()
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError):
            raise ArtifactError(f"{path}: corrupt or truncated zip archive (checkpoint, TorchScript or .pt2)") from None
    for kind in KINDS.values():
        if kind.sniff(head, members):
            return kind.name
    if members is not None:
        raise ArtifactError(f"{path}: a zip archive that is neither a checkpoint, TorchScript nor .pt2")
    raise ArtifactError(f"{path}: not a model file this toolkit knows (expected {known_files()}; "
                        f"first bytes {head[:4].hex()})")


def known_files() -> str:
    """The file kinds mnistkit recognises, for messages (from the format table)."""
    return ", ".join(k.description for k in KINDS.values())


def info_from_metadata(path: Path, kind: str, meta: dict | None) -> ModelInfo:
    """Build ModelInfo from a mnistkit metadata dict (checkpoint meta, TorchScript/.pt2 extra file)."""
    if not meta:
        return ModelInfo(path=path, kind=kind, described=False)
    if not isinstance(meta, dict):
        raise ArtifactError(f"{path}: malformed metadata (a {type(meta).__name__}, expected a JSON object)")
    inp = meta.get("input") if isinstance(meta.get("input"), dict) else {}
    geometry = geometry_of_input(inp, path)
    mean, std = normalization_values(meta.get("normalization") or DEFAULT_NORMALIZATION, geometry.channels, path)
    labels = meta.get("labels") or DEFAULT_LABELS
    outputs = meta.get("outputs") if isinstance(meta.get("outputs"), list) and meta.get("outputs") else ["logits"]
    if not isinstance(labels, list) or not 1 <= len(labels) <= 100_000:
        raise ArtifactError(f"{path}: malformed labels metadata (expected a JSON list of class names)")
    if meta.get("preprocess") is not None and not isinstance(meta.get("preprocess"), str):
        raise ArtifactError(f"{path}: malformed preprocess metadata {meta.get('preprocess')!r}")
    return ModelInfo(
        path=path,
        kind=kind,
        labels=[str(x) for x in labels],
        mean=mean,
        std=std,
        recipe=meta.get("preprocess") or "digits",
        geometry=geometry,
        transforms=_transforms(meta.get("transforms"), path),
        input_form=UINT8_FORM if inp.get("dtype") == "uint8" else FLOAT_FORM,
        input_name=str(inp.get("name", "input")),
        output_name=str(outputs[0]),
        metadata=meta,
    )


STEP_KINDS = ("pad", "resize", "crop", "gray")


def _transforms(steps, path) -> tuple:
    """The recorded transforms, checked: [[kind, value], ...] with kind one of STEP_KINDS and small positive
    values (a file from elsewhere may claim anything; a Resize to 10^9 pixels must not be attempted)."""
    if steps is None:
        return ()
    ok = isinstance(steps, list) and len(steps) <= 16
    out = []
    for step in steps if ok else ():
        kind, value = (step[0], step[1]) if isinstance(step, list) and len(step) == 2 else (None, None)
        sizes = value if isinstance(value, list) else [value]
        if kind not in STEP_KINDS or not (1 <= len(sizes) <= 2) or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_SIDE for v in sizes):
            ok = False
            break
        out.append((kind, tuple(value) if isinstance(value, list) else value))
    if not ok:
        raise ArtifactError(f"{path}: malformed transforms metadata {str(steps)[:120]} (expected [[kind, size], ...] "
                            f"with kind one of {', '.join(STEP_KINDS)})")
    return tuple(out)


def normalization_values(norm, channels: int, path) -> tuple:
    """(mean, std) of a normalization record ({"mean": [...], "std": [...]}): floats when one value serves
    every channel, tuples of `channels` values otherwise. Raises ArtifactError on a malformed record."""
    try:
        mean = [float(v) for v in norm["mean"]]
        std = [float(v) for v in norm["std"]]
    except (KeyError, TypeError, ValueError):
        raise ArtifactError(f"{path}: malformed normalization metadata {norm!r}") from None
    if len(mean) not in (1, channels) or len(std) not in (1, channels) or not mean or not std:
        raise ArtifactError(f"{path}: normalization {norm!r}: expected 1 or {channels} values each")
    if not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
        raise ArtifactError(f"{path}: normalization mean {mean} / std {std}: std must be > 0")
    one = lambda v: v[0] if len(set(v)) == 1 else tuple(v)  # noqa: E731
    return one(mean), one(std)


def output_text(name: str, dtype: str | None, shape: list | None) -> str:
    if dtype is None or shape is None:
        return f"{name} ({dtype or 'not a tensor'})"
    dims = ",".join("N" if i == 0 and not (isinstance(d, int) and d > 0) else
                    (str(d) if isinstance(d, int) and d > 0 else "?") for i, d in enumerate(shape))
    return f"{name} {dtype} [{dims}]"


def onnx_signature(value_info) -> tuple:
    """(name, dtype, shape) of an ONNX graph input/output (a ValueInfoProto), as pick_output reads them."""
    import onnx

    if value_info.type.WhichOneof("value") != "tensor_type":
        return value_info.name, onnx.helper.printable_type(value_info.type).replace("Unknown type ", ""), None
    tt = value_info.type.tensor_type
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
    except (KeyError, ValueError, TypeError):
        dtype = f"element type {tt.elem_type}"
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
    return value_info.name, dtype, dims if tt.HasField("shape") else None


def pick_output(path, outputs: list[tuple]) -> str:
    """The output holding the class scores: the one named logits, else the first float tensor [N,C].

    `outputs`: (name, dtype, shape) per output; dtype is a numpy name ("float32", "int64") or a
    non-tensor type's text (scikit-learn's ZipMap gives a sequence of maps), shape a list or None.
    A classical classifier from skl2onnx has a `label` int64 [N] output first and `probabilities`
    float32 [N,C] second: the scores are the second. No [N,C] float output is one line listing them all.
    """
    names = [o[0] for o in outputs]
    if "logits" in names:
        return "logits"
    scores = [n for n, dtype, shape in outputs
              if dtype in ("float32", "float16", "float64") and shape is not None and len(shape) == 2]
    if scores:
        return scores[0]
    found = "; ".join(output_text(*o) for o in outputs) or "none"
    hint = ""
    if any(isinstance(o[1], str) and o[1].startswith(("seq", "map", "sequence")) for o in outputs):
        hint = (" (scikit-learn's ZipMap writes the probabilities as a list of dicts: convert the model with "
                "skl2onnx options {'zipmap': False} to get them as a float [N,C] tensor)")
    raise ArtifactError(f"{path}: no output holds class scores as float [N,C]; its outputs: {found}{hint}")


def onnx_io_info(path: Path, meta: dict, input_name: str, input_dtype: str, input_shape: list,
                 outputs: list, kind: str) -> ModelInfo:
    """ModelInfo for an ONNX model (or an OpenVINO IR, `kind`) from its metadata and its input signature.

    `input_dtype` is "uint8" or "float32"; `input_shape` holds ints or None/str for symbolic dims.
    `outputs`: (name, dtype, shape) per output; the class scores are found among them (pick_output). A model
    from elsewhere (no mnistkit metadata) gets labels 0-9 and
    ToTensor scaling; its input must still fit one of the two contracts.
    """
    info = info_from_metadata(path, kind, meta if meta.get("labels") or meta.get("normalization") else None)
    shape = list(input_shape)
    fixed = shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else None

    form, geometry = input_contract(path, input_name, input_dtype, shape, info.geometry if info.described else None)
    info.geometry = geometry
    if isinstance(info.mean, tuple) and len(info.mean) != geometry.channels:
        raise ArtifactError(f"{path}: normalization has {len(info.mean)} values for {geometry.channels} channel(s)")
    info.input_form = form
    info.input_name = input_name
    info.fixed_batch = fixed
    info.metadata = {**info.metadata, "input_shape": shape}
    info.output_name = pick_output(path, outputs)
    return info


def input_contract(path, input_name: str, dtype: str, shape: list, recorded: Geometry | None) -> tuple[str, Geometry]:
    """(input form, geometry) of a model input `dtype` `shape` (ints; None or text for dynamic dims).

    The two contracts at any C x H x W: float32 [N,C,H,W] (C 1 or 3) and uint8 [N,H,W] (gray) or [N,H,W,C]
    (colour); a float32 input flattened to [N,C*H*W] (or [N,H,W] for gray) too, as classical classifiers take
    it. The shape's static dims decide; dims it leaves open come from the recorded geometry (the artifact's
    metadata), else MNIST's 1x28x28. A recorded geometry that the static dims contradict is an error."""
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape[1:]]
    base = recorded or DIGITS
    geometry = None
    if dtype == "uint8" and len(dims) in (2, 3):
        c = dims[2] if len(dims) == 3 else 1
        h, w = dims[0] or base.height, dims[1] or base.width
        geometry = Geometry(c if c is not None else base.channels, h, w) if c in (1, 3, None) else None
        form = UINT8_FORM
    elif dtype == "float32" and len(dims) == 3 and dims[0] in (1, 3, None):
        geometry = Geometry(dims[0] or base.channels, dims[1] or base.height, dims[2] or base.width)
        form = FLOAT_FORM
    elif dtype == "float32" and len(dims) == 2:  # [N,H,W] gray, or a gray one flattened by a model from elsewhere
        geometry = Geometry(1, dims[0] or base.height, dims[1] or base.width) if base.channels == 1 else None
        form = FLOAT_FORM
    elif dtype == "float32" and len(dims) == 1 and dims[0] in (None, base.size):
        geometry = base
        form = FLOAT_FORM
    if geometry is not None and recorded is not None and geometry != recorded:
        raise ArtifactError(f"{path}: input {input_name!r} is {dtype} {_shown(shape)} but its metadata records "
                            f"{recorded} images")
    if geometry is None or not (1 <= geometry.height <= MAX_SIDE and 1 <= geometry.width <= MAX_SIDE):
        raise ArtifactError(
            f"{path}: input {input_name!r} is {dtype} {_shown(shape)}, which fits neither contract "
            f"(float32 [N,C,H,W] normalized, or uint8 [N,H,W] / [N,H,W,C] pixels; C 1 or 3)")
    return form, geometry


def exact_contract(path, input_name: str, dtype: str, shape: list, recorded: Geometry | None) -> tuple[str, Geometry]:
    """input_contract for runtimes whose input must be the contract's own rank (LiteRT, ExecuTorch): float32
    [N,C,H,W] or uint8 [N,H,W] / [N,H,W,C], nothing flattened."""
    form, geometry = input_contract(path, input_name, dtype, shape, recorded)
    tail = geometry.float_tail if form == FLOAT_FORM else geometry.pixel_tail
    if [int(d) if isinstance(d, int) and d > 0 else None for d in shape[1:]] != list(tail):
        raise ArtifactError(f"{path}: input {input_name!r} is {dtype} {_shown(shape)}, which fits neither contract "
                            f"(float32 [N,C,H,W] normalized, or uint8 [N,H,W] / [N,H,W,C] pixels; C 1 or 3)")
    return form, geometry


def _shown(shape) -> str:
    return "[" + ",".join("N" if i == 0 or not isinstance(d, int) or d <= 0 else str(d)
                          for i, d in enumerate(shape)) + "]"


def read_manifest(path: str | os.PathLike) -> dict:
    """Read and check a manifest.json (or the manifest of an export folder)."""
    from .fileio import read_json

    path, manifest = read_json(path, "manifest.json", "an export folder with manifest.json", ArtifactError)
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ArtifactError(f"{path}: not a mnistkit manifest (no {MANIFEST_FORMAT!r} format tag)")
    _entries(manifest, path)
    return manifest


def _entries(manifest: dict, where: Path) -> list[dict]:
    entries = manifest.get("artifacts")
    if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("file"), str) and isinstance(e.get("sha256"), str)
            for e in entries):
        raise ArtifactError(f"{where}: malformed manifest (artifacts must list file and sha256)")
    for e in entries:
        companions = e.get("companions", [])
        if not isinstance(companions, list) or not all(
                isinstance(c, dict) and isinstance(c.get("file"), str) and isinstance(c.get("sha256"), str)
                for c in companions):
            raise ArtifactError(f"{where}: malformed manifest (an artifact's companions must list file and sha256)")
        for name in [e["file"], *(c["file"] for c in companions)]:
            parts = Path(name).parts
            if Path(name).is_absolute() or ".." in parts or not parts:
                raise ArtifactError(f"{where}: manifest lists {name!r}, outside its folder")
    return entries


def _check_entry(folder: Path, entry: dict, manifest_path: Path) -> None:
    """An artifact's file and its companions (OpenVINO IR's weights) must be the files exported."""
    for name, sha in [(entry["file"], entry["sha256"]), *((c["file"], c["sha256"]) for c in entry.get("companions", []))]:
        f = folder / name
        if not f.is_file():
            raise ArtifactError(f"{f}: listed in {manifest_path} but missing")
        check_sha256(f, sha, manifest_path)


def check_sha256(file: Path, expected: str, manifest_path: Path) -> None:
    """Raise ArtifactError when `file` is not the file the manifest recorded."""
    from .fileio import sha256_file

    found = sha256_file(file)
    if found != expected:
        raise ArtifactError(f"{file}: sha256 {found[:16]}… does not match {manifest_path} "
                            f"(expected {expected[:16]}…): the file was changed or replaced since export")


def manifest_artifacts(path: str | os.PathLike) -> list[Path]:
    """The artifact files a manifest (or export folder) lists, each checked to exist and to be the file
    that was exported (sha256)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    manifest = read_manifest(path)
    files = []
    for entry in _entries(manifest, folder / "manifest.json"):
        _check_entry(folder, entry, folder / "manifest.json")
        files.append(folder / entry["file"])
    return files


def check_against_manifest(path: str | os.PathLike) -> None:
    """A file listed in a manifest.json beside it must still be the file that was exported.

    Files with no manifest beside them, or not listed in it, are not checked (there is nothing to
    check against); a manifest that is not a mnistkit manifest is ignored.
    """
    listed = manifest_listing(path)
    if listed is not None:
        path = Path(path)
        _check_entry(path.parent, listed[1], path.parent / "manifest.json")


def manifest_listing(path: str | os.PathLike) -> tuple[dict, dict] | None:
    """(manifest, the file's entry) when a mnistkit manifest.json beside `path` lists it; else None (no
    manifest, not listed, or a manifest.json that is not mnistkit's). The file itself is not checked here."""
    path = Path(path)
    manifest_path = path.parent / "manifest.json"
    if path.name == "manifest.json" or not manifest_path.is_file():
        return None
    from .fileio import read_json

    try:
        _, manifest = read_json(manifest_path, "manifest.json", "a mnistkit manifest", ArtifactError)
    except ArtifactError:
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return None
    entry = next((e for e in _entries(manifest, manifest_path) if e["file"] == path.name), None)
    return None if entry is None else (manifest, entry)


def recorded_reference(path: str | os.PathLike) -> Path | None:
    """The export folder of an artifact whose manifest lists it and records the PyTorch source it came from
    (a checkpoint, or a state_dict and its class): verify and bench take their reference from there."""
    listed = manifest_listing(path)
    if listed is None or (listed[0].get("source") or {}).get("kind") not in REFERENCE_SOURCES:
        return None
    return Path(path).parent


def archive_metadata(path: str | os.PathLike) -> dict | None:
    """The mnistkit metadata of a TorchScript / .pt2 archive (its extra/mnistkit.json member), read
    without torch; None when it has none. Raises ArtifactError on an oversized or malformed member."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename
                if name.endswith(f"/extra/{METADATA_FILE}") or name == f"extra/{METADATA_FILE}":
                    if info.file_size > MAX_METADATA_BYTES:
                        raise ArtifactError(f"{path}: metadata entry {name} claims {info.file_size} bytes; "
                                            f"expected at most {MAX_METADATA_BYTES}")
                    meta = json.loads(zf.read(info))
                    if not isinstance(meta, dict):
                        raise ArtifactError(f"{path}: metadata entry {name} is not a JSON object")
                    return meta
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise ArtifactError(f"{path}: unreadable metadata ({exc.__class__.__name__}: {str(exc)[:120]})") from None
    return None


def onnx_metadata(path: str | os.PathLike) -> dict:
    """An ONNX file's metadata_props, decoded, read with onnx's protobuf parser (no runtime session,
    no graph initialisation, external data left unread). Needs the `onnx` package."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ArtifactError(f"{path}: not a readable ONNX model ({str(exc)[:120]})") from None
    return from_onnx_props({p.key: p.value for p in model.metadata_props})


_CHECKED: dict[tuple, str] = {}  # (path, size, sha256) -> kind, for files the gate let through in this process


def check_model(path: str | os.PathLike, kind: str | None = None) -> str:
    """Run the loading gate of the file's kind (formats.KINDS[kind].gate; see mnistkit.gate) before any
    runtime reads it; returns the kind. Raises ArtifactError, one line, when the file is refused.

    Once per file content and process: a file is known by its path, size and sha256 (~1 ms for a model of a few
    MB), so a file changed since it was checked is checked again, however quickly it was rewritten (modification
    times tick in milliseconds: a same-size rewrite within one tick kept its time, found in a fuzzing run)."""
    from .fileio import sha256_file
    from .formats.spec import resolve

    path = Path(path)
    kind = kind or detect_kind(path)
    try:
        key = (str(path.resolve()), path.stat().st_size, sha256_file(path))
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if _CHECKED.get(key) == kind:
        return kind
    gate = KINDS[kind].gate
    if gate is not None:
        resolve(gate)(path, str(path))
    if len(_CHECKED) > 1024:
        _CHECKED.clear()
    _CHECKED[key] = kind
    return kind


def kind_metadata(path: str | os.PathLike, kind: str) -> dict | None:
    """mnistkit's metadata of a file, read by its kind's reader (formats.KINDS[kind].metadata) once the
    loading gate let it through; None for kinds without one (checkpoints carry theirs in the pickle, read by
    model.load_checkpoint)."""
    from .formats.spec import resolve

    check_model(path, kind)
    reader = KINDS[kind].metadata
    return resolve(reader)(path) if reader else None


def recorded_format(path: str | os.PathLike, kind: str) -> str:
    """The format an artifact is judged as (formats.format_for), read without running it."""
    try:
        recorded = (kind_metadata(path, kind) or {}).get("format")
    except (ArtifactError, ImportError):  # unreadable files are reported by the backend that loads them
        recorded = None
    return format_for(kind, recorded if isinstance(recorded, str) else None)
