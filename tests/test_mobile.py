"""ncnn and MNN, the two mobile runtimes: their files, their metadata, their gates, and what their toolchains must
never do (run generated code, install packages, send logs). Parity, batch sizes, bench rows and optimize's search
for them run with every other runtime (test_backends, test_export, test_bench, test_optimize)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

import mnistkit
from mnistkit.artifacts import detect_kind
from mnistkit.errors import ArtifactError
from mnistkit.formats import FORMATS
from conftest import cli_run as run, need_module

NCNN_FILES = FORMATS["ncnn"].files  # model.ncnn.param, model.ncnn.bin, model.ncnn.json


@pytest.fixture(autouse=True)
def _mobile_runtimes():
    """The runtimes and pnnx, under the suite's one policy (skipped locally when absent, required in CI)."""
    need_module("ncnn", "ncnn")
    need_module("MNN", "mnn")
    need_module("pnnx", "edge")


def ncnn_copy(tiny_export, d, param_text=None, name="model.ncnn"):
    """The export's ncnn files copied into `d` (the param replaced by `param_text`), and the param's path."""
    d.mkdir(parents=True, exist_ok=True)
    for f in NCNN_FILES:
        shutil.copy(tiny_export / f, d / f.replace("model.ncnn", name))
    param = d / f"{name}.param"
    if param_text is not None:
        param.write_text(param_text)
    return param


def test_every_file_is_recognised_by_its_bytes(tiny_export, tmp_path):
    """Each format's file is its kind, whatever its name: ncnn's text magic and MNN's flatbuffer layout (no
    identifier) claim no other kind's files, and none of theirs."""
    for fmt in FORMATS.values():
        if fmt.exportable:
            renamed = shutil.copy(tiny_export / fmt.file, tmp_path / f"renamed-{fmt.name}.bin")
            assert detect_kind(renamed) == fmt.kind, fmt.name


def test_the_ncnn_export_is_the_two_ncnn_files_and_bound_metadata(tiny_export):
    """pnnx's side files (its own param/bin, a .py, an .onnx) never reach the folder; the metadata names the exact
    param and weights by sha256, and the manifest lists every file with its own sha256."""
    import hashlib

    names = {p.name for p in tiny_export.iterdir()}
    assert set(NCNN_FILES) <= names
    assert not [n for n in names if "pnnx" in n or n.endswith(".py")], names
    record = json.loads((tiny_export / "model.ncnn.json").read_text())
    sha = {f: hashlib.sha256((tiny_export / f).read_bytes()).hexdigest() for f in NCNN_FILES}
    assert record["param_sha256"] == sha["model.ncnn.param"] and record["bin_sha256"] == sha["model.ncnn.bin"]
    entry = next(a for a in json.loads((tiny_export / "manifest.json").read_text())["artifacts"] if a["format"] == "ncnn")
    assert {c["file"]: c["sha256"] for c in entry["companions"]} == {f: sha[f] for f in NCNN_FILES[1:]}
    assert entry["inputs"][0]["name"] == "in0" and entry["outputs"][0]["name"] == "out0"  # what an app extracts


def test_ncnn_metadata_that_describes_other_weights_is_refused(tiny_export, tmp_path):
    param = ncnn_copy(tiny_export, tmp_path / "stale")
    weights = param.with_suffix(".bin")
    data = bytearray(weights.read_bytes())
    data[-4:] = struct.pack("<f", 0.5)  # other weights, same size
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="describes another model.ncnn.param or model.ncnn.bin"):
        mnistkit.load(param)


def test_an_ncnn_model_without_mnistkits_metadata_runs_with_the_digit_defaults(tiny_export, tmp_path):
    """A param + bin from elsewhere (no model.ncnn.json, or another program's JSON beside it) is described by the
    defaults, as a foreign ONNX file is, and gives the same logits."""
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    with mnistkit.load(tiny_export / "model.ncnn.param") as ours:
        expected = ours.run(x)
        mean, std = ours.info.mean, ours.info.std
    param = ncnn_copy(tiny_export, tmp_path / "foreign")
    param.with_suffix(".json").write_text(json.dumps({"model": "someone else's"}))
    with mnistkit.load(param) as foreign:
        assert not foreign.info.described
        floats = ((x.astype(np.float32) / 255 - mean) / std)[:, None]
        np.testing.assert_allclose(foreign.run(np.ascontiguousarray(floats, np.float32)), expected, atol=1e-5)


def test_scores_that_disagree_with_the_metadata_are_refused_at_every_batch_size(tiny_export, tmp_path, monkeypatch):
    """An ncnn graph giving 10 scores where its metadata names 5 labels is one ArtifactError line, not 10 mislabelled
    scores: at load, where the rehearsal ran it (a file that fails there is never loaded); and, for a process where no
    rehearsal runs (the rehearsal's own child, the exporter's fresh files), on run's fast path (batch 1, a per-shape
    call) and on the loop (other sizes)."""
    from mnistkit.gate import REHEARSAL_ENV

    param = ncnn_copy(tiny_export, tmp_path / "five")
    record = json.loads(param.with_suffix(".json").read_text())
    record["mnistkit"]["labels"] = [str(k) for k in range(5)]
    param.with_suffix(".json").write_text(json.dumps(record))
    with pytest.raises(ArtifactError, match=r"refuses to load: the ncnn library failed on it in a rehearsal process "
                                            r"\(gives 10 scores per image; its metadata names 5 labels\)"):
        mnistkit.load(param)
    monkeypatch.setenv(REHEARSAL_ENV, "1")
    x = np.zeros((3, 1, 28, 28), np.float32)
    with mnistkit.load(param) as b:
        assert b.info.described and b.info.num_classes == 5
        for batch in (x[:1], x[:1], x, x):  # twice each: the first call of a shape and the remembered one
            with pytest.raises(ArtifactError, match="gives 10 scores per image; its metadata names 5 labels"):
                b.run(batch)


def _first(lines, layer):
    return next(i for i, line in enumerate(lines) if line.split()[:1] == [layer])


def _swap(lines, old, new):
    i = _first(lines, old)
    return lines[:i] + [lines[i].replace(old, new, 1)] + lines[i + 1:]


def _add(lines, layer, text):
    i = _first(lines, layer)
    return lines[:i] + [lines[i] + text] + lines[i + 1:]


NCNN_ATTACKS = {
    # name: (edit of the param's lines, fragment of the refusal)
    "unknown-layer": (lambda lines: _swap(lines, "InnerProduct", "PythonCall"), "operator PythonCall"),
    "recurrent-layer": (lambda lines: _swap(lines, "InnerProduct", "LSTM"), "control flow"),
    "weights-past-the-bin": (lambda lines: _add(lines, "InnerProduct", " 2=999999999"),
                             "its layers declare weights of at least"),
    "fewer-layers-than-declared": (lambda lines: lines[:-1], "layers; it declares"),
    "malformed-parameter": (lambda lines: _add(lines, "InnerProduct", " 7=x"), "malformed parameter"),
    "too-many-layers": (lambda lines: [lines[0], "20000 20001"] + lines[2:], "at most 10000 layers"),
}


@pytest.mark.parametrize("name", sorted(NCNN_ATTACKS))
def test_hostile_ncnn_params_are_refused_before_ncnn_reads_them(tiny_export, tmp_path, name):
    edit, fragment = NCNN_ATTACKS[name]
    lines = (tiny_export / "model.ncnn.param").read_text().splitlines()
    param = ncnn_copy(tiny_export, tmp_path, "\n".join(edit(lines)) + "\n")
    param.with_suffix(".json").unlink()  # the metadata would refuse the edited file first
    with pytest.raises(ArtifactError, match="refuses to load") as caught:
        mnistkit.load(param)
    assert fragment in str(caught.value)


def _mnn_op_type_at(data: bytes, index: int) -> int:
    """The byte offset of operator `index`'s OpType field in a .mnn file."""
    from mnistkit.gate.flatbuf import Table
    from mnistkit.gate.mnn import NET_OPS, OP_TYPE

    return Table.root(data).tables(NET_OPS)[index]._field(OP_TYPE)


def test_hostile_mnn_models_are_refused_before_mnn_reads_them(tiny_export, tmp_path):
    data = bytearray((tiny_export / "model.mnn").read_bytes())
    at = _mnn_op_type_at(bytes(data), 1)
    assert at, "the MLP's second operator has a type field"
    data[at:at + 4] = struct.pack("<i", 9999)
    (tmp_path / "unknown-op.mnn").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="refuses to load.*OpType #9999.*allowlist"):
        mnistkit.load(tmp_path / "unknown-op.mnn")
    r = run("inspect", tmp_path / "unknown-op.mnn")
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1 and "OpType #9999" in r.stderr
    # external weights beside it count against the model budget (MNN reads <file>.weight by itself)
    shutil.copy(tiny_export / "model.mnn", tmp_path / "big.mnn")
    with open(tmp_path / "big.mnn.weight", "wb") as f:
        f.truncate(2 << 30)  # sparse: 2 GiB claimed, nothing written
    with pytest.raises(ArtifactError, match="refuses to load.*budget"):
        mnistkit.load(tmp_path / "big.mnn")


def test_mnn_metadata_is_the_bizcode_and_other_bizcodes_are_not_metadata(tiny_export):
    from mnistkit.backends.mnn import PROBE, read_metadata

    meta = read_metadata(tiny_export / "model.mnn")
    assert meta["format"] == "mnn" and len(meta["labels"]) == 10 and meta["input"]["shape"] == ["N", 1, 28, 28]
    assert read_metadata(tiny_export / "model-int8.mnn")["format"] == "mnn-int8"
    assert read_metadata(PROBE) is None  # bizCode "mnistkit-probe": not JSON, not metadata


def test_the_toolchains_run_no_generated_code_install_nothing_and_send_nothing(tiny_ckpt, tmp_path):
    """An ncnn and MNN export in a fresh interpreter: MNN's Python tool wrappers (which pip-install a log SDK and post
    the machine id) are never imported, nor pnnx's generated module; nothing is written beside the checkpoint."""
    code = (
        "import sys, mnistkit\n"
        "from mnistkit.exporter import export_model\n"
        f"export_model({str(tiny_ckpt)!r}, ['ncnn', 'mnn'], {str(tmp_path / 'out')!r}, validate=False)\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('MNN.tools', 'aliyun', 'p_pnnx', 'm_ncnn')))\n"
        "print('BAD', bad)\n")
    before = sorted(p.name for p in tiny_ckpt.parent.iterdir())
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "BAD []" in r.stdout, r.stdout
    assert sorted(p.name for p in tiny_ckpt.parent.iterdir()) == before
    assert {p.name for p in (tmp_path / "out").iterdir()} >= set(NCNN_FILES) | {"model.mnn"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # pnnx wrote nothing in the working folder


def dies_without_the_rehearsal(path, shape) -> int:
    """The return code of a child process that loads `path` with the gate's rehearsal off and runs zeros of `shape`
    (proof that the attack is real: a negative code is the signal that killed it)."""
    import os

    from mnistkit.gate import REHEARSAL_ENV

    code = f"import sys, numpy as np, mnistkit\nmnistkit.load(sys.argv[1]).run(np.zeros({tuple(shape)!r}, np.uint8))"
    return subprocess.run([sys.executable, "-c", code, str(path)], env={**os.environ, REHEARSAL_ENV: "1"},
                          capture_output=True, timeout=120).returncode


def _mnn_with_a_bad_reshape(tiny_export, dst):
    """The export's model.mnn with its first Reshape's shape constant [-1, 784] made [-1, 7]: consistent bytes,
    inconsistent values. MNN 3.6.1 prints "Compute Shape Error" and segfaults on it."""
    from mnistkit.gate.flatbuf import Table
    from mnistkit.gate.mnn import NET_OPS, OP_TYPE

    data = bytearray((tiny_export / "model.mnn").read_bytes())
    ops = Table.root(bytes(data)).tables(NET_OPS)
    producers = {out: op for op in ops for out in op.scalars(4, "<i")}
    reshape = next(op for op in ops if op.scalar(OP_TYPE, "<i") == 73)  # OpType Reshape
    blob = producers[reshape.scalars(0, "<i")[1]].table(2)  # the Const's Blob
    assert blob.scalars(5, "<i")[-1] == 784, "the MLP's flatten: int32s [-1, 784]"
    vector = blob._indirect(blob._field(5))  # Blob.int32s
    struct.pack_into("<i", data, vector + 8, 7)
    dst.write_bytes(bytes(data))
    return dst


def test_an_mnn_model_that_crashes_mnn_is_refused_by_a_rehearsal(tiny_export, tmp_path):
    """No static check covers every operator's values, and MNN segfaults instead of raising on some: the gate first
    runs an MNN file in a child process. The attack is real (a child without the rehearsal dies by SIGSEGV); this
    process gets one line and never runs the file; the CLI exits 1."""
    import signal

    bad = _mnn_with_a_bad_reshape(tiny_export, tmp_path / "bad-reshape.mnn")
    assert dies_without_the_rehearsal(bad, (2, 28, 28)) == -signal.SIGSEGV
    with pytest.raises(ArtifactError, match=r"refuses to load: MNN crashed \(SIGSEGV\)"):
        mnistkit.load(bad)
    r = run("inspect", bad)
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1 and "SIGSEGV" in r.stderr


def test_an_ncnn_param_that_crashes_ncnn_is_refused_by_a_rehearsal(tiny_cnn_export, tmp_path):
    """ncnn segfaults on a pooling pad no window fits (mutation testing found it): the gate's rehearsal in a child
    process turns that into one line, and this process never runs the file."""
    import re
    import signal

    lines = (tiny_cnn_export / "model.ncnn.param").read_text().splitlines()
    i = _first(lines, "Pooling")
    pooled = re.sub(r" 13=\S+", "", lines[i]) + " 13=7"  # pad bottom 7 around a 2x2 window
    param = ncnn_copy(tiny_cnn_export, tmp_path, "\n".join(lines[:i] + [pooled] + lines[i + 1:]) + "\n")
    param.with_suffix(".json").unlink()
    assert dies_without_the_rehearsal(param, (3, 28, 28)) == -signal.SIGSEGV
    with pytest.raises(ArtifactError, match=r"refuses to load: the ncnn library crashed \(SIGSEGV\)"):
        mnistkit.load(param)
