"""The format table is the single source: these tests hold everything else to it.

- every format x backend that opens it x device has a tolerance, with the reason it was chosen;
- every such combination is run here, on the tiny export, against the PyTorch reference (the matrix is
  derived from the tables, so a new row is tested the day it is added, CUDA rows skip without a GPU);
- the README's formats table is the one generated from the table;
- --format is parsed once, by the table's parser.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from mnistkit.backends import BACKENDS, backends_for, create_backend, reference_backend
from mnistkit.compare import compare
from mnistkit.errors import InvalidInputError, UnsupportedModelError
from mnistkit.formats import (DEVICES, FORMAT_CHOICES, FORMATS, KINDS, exportable, format_for, parse_formats,
                              tolerance_for)

ROOT = Path(__file__).resolve().parent.parent

# (format, backend, device) for every backend that opens the format's kind, on every device it runs on
MATRIX = [(f.name, b, d) for f in FORMATS.values() for b in backends_for(f.kind) for d in BACKENDS[b].devices]
# Combinations a runtime declares it cannot run (UnsupportedModelError, reported as "skipped" by verify):
# onnx.reference implements no DequantizeLinear for opset 18.
UNSUPPORTED = {("onnx-int8", "onnx-reference"), ("onnx-int8-app", "onnx-reference")}


def test_every_format_backend_device_has_a_tolerance_with_its_reason():
    assert MATRIX, "the matrix is empty"
    for fmt, _backend, device in MATRIX:
        tol = tolerance_for(fmt, device)
        assert tol.why, f"{fmt} on {device}: a tolerance without its reason"
    for f in FORMATS.values():
        assert set(f.tolerance) == set(DEVICES), f"{f.name}: tolerances for {sorted(f.tolerance)}, devices {DEVICES}"
        assert f.kind in KINDS and backends_for(f.kind), f"{f.name}: no backend opens kind {f.kind}"
        assert f.base is None or (FORMATS[f.base].exportable and FORMATS[f.base].input_form == f.input_form)


def test_every_format_and_backend_is_in_the_matrix():
    assert {m[0] for m in MATRIX} == set(FORMATS)
    assert {m[1] for m in MATRIX} == set(BACKENDS)  # a backend opening no format's kind would be untested


def test_no_fallback_hides_a_gap():
    with pytest.raises(InvalidInputError, match="no tolerance for format 'onnx-int4'"):
        tolerance_for("onnx-int4", "cpu")
    with pytest.raises(InvalidInputError, match="no tolerance"):
        tolerance_for("onnx", "tpu")
    # a file recording a format this mnistkit does not know, or one of another kind, is judged as its kind
    assert format_for("onnx", "onnx-int4") == "onnx" and format_for("onnx", "torchscript") == "onnx"
    assert format_for("onnx", "onnx-int8") == "onnx-int8" and format_for("onnx", None) == "onnx"


@pytest.fixture(scope="module")
def reference(tiny_ckpt, tiny_data):
    from mnistkit.data import load_split
    from mnistkit.source import load_source

    split = load_split("mnist", "test", tiny_data)
    with reference_backend(load_source(tiny_ckpt)) as ref:
        return split.images, split.labels, ref.run(split.images)


@pytest.mark.parametrize("fmt, backend, device", [
    pytest.param(*m, marks=[pytest.mark.cuda] if m[2] == "cuda" else [], id="-".join(m)) for m in MATRIX])
def test_matrix(fmt, backend, device, tiny_export, tiny_ckpt, reference):
    images, labels, expected = reference
    path = Path(tiny_ckpt) if fmt == "checkpoint" else tiny_export / FORMATS[fmt].file
    try:
        with create_backend(path, backend, device) as b:
            assert b.info.format == fmt  # the file says what it is, and is judged as that
            logits = b.run(images)
    except UnsupportedModelError:
        assert (fmt, backend) in UNSUPPORTED, f"{backend} cannot run {fmt}"
        return
    assert (fmt, backend) not in UNSUPPORTED, f"{backend} now runs {fmt}: remove it from UNSUPPORTED"
    c = compare(expected, logits, tolerance_for(fmt, device), labels)
    assert c, c.failures


def test_the_readme_formats_table_is_generated_from_the_table():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import formats_table
    finally:
        sys.path.pop(0)
    current = formats_table.readme_block((ROOT / "README.md").read_text())
    assert current is not None, "README.md lost its formats markers"
    assert current == formats_table.block(), "README.md's formats table is stale: python scripts/formats_table.py --write"


def test_parse_formats_is_the_one_parser():
    assert parse_formats("onnx") == ["onnx"]
    assert parse_formats(["onnx,onnx-app", "onnx", " torchscript "]) == ["onnx", "onnx-app", "torchscript"]
    assert parse_formats("all") == exportable() and "checkpoint" not in exportable()
    assert set(FORMAT_CHOICES) == {*exportable(), "all"}
    for bad in ("checkpoint", "onnx,tflite"):
        with pytest.raises(InvalidInputError, match="unknown format"):
            parse_formats(bad)


def test_kinds_are_told_apart_by_their_bytes(tiny_export, tiny_ckpt):
    from mnistkit.artifacts import detect_kind

    for f in FORMATS.values():
        path = Path(tiny_ckpt) if not f.exportable else tiny_export / f.file
        head = path.read_bytes()[:8]
        assert detect_kind(path) == f.kind
        import zipfile

        members = zipfile.ZipFile(path).namelist() if head[:2] == b"PK" else None
        claims = [k.name for k in KINDS.values() if k.sniff(head, members)]
        assert claims == [f.kind], f"{f.file}: claimed by {claims}"


def test_batch_checks_are_data_with_reasons():
    for f in FORMATS.values():
        if f.batch_check is not None:
            assert f.batch_check.why and 1 in f.batch_check.sizes and f.batch_check.images >= 64
    assert np.isclose(FORMATS["onnx-int8-dynamic"].batch_check.min_agreement, 0.95)


def test_what_a_format_computes_in_is_a_field_of_its_row():
    """precision ("fp32", "fp16", "int8") is data in the table, and its tolerances agree with it: float rows are
    held to a max abs difference at full agreement, fp16 and int8 rows are judged by top-1 and accuracy (the
    exporter's accuracy gate); optimize reads quantized/fp16 from here, never from a format's name."""
    from mnistkit.formats import FORMATS

    assert {f.precision for f in FORMATS.values()} == {"fp32", "fp16", "int8"}
    for name, f in FORMATS.items():
        cpu = f.tolerance["cpu"]
        assert f.quantized == (f.precision == "int8"), name
        if f.precision == "fp32":
            assert cpu.max_abs is not None and cpu.min_agreement == 1.0 and cpu.max_accuracy_drop is None, name
        else:
            assert cpu.max_accuracy_drop is not None and cpu.min_agreement < 1.0, name
        if f.precision == "int8":
            assert cpu.max_abs is None, name  # int8 logits move by ~1: no max abs bound
