"""mnistkit score: one row per input, the same labels as predict, error rows, resume, and Ray's retries."""

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnistkit import score as sc
from mnistkit.data import write_idx
from mnistkit.errors import InvalidInputError, MissingDependencyError
from mnistkit.score import run as score_run
from mnistkit.predict import predict
from conftest import cli_run as run, need_module

import pyarrow as pa  # noqa: E402  (a core dependency: score's Parquet)
import pyarrow.parquet as pq  # noqa: E402


@pytest.fixture
def needs_ray():
    need_module("ray", "scale")


def png_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def pixels_table(images: np.ndarray, row_group: int):
    flat = pa.array(images.reshape(-1), pa.uint8())
    return pa.table({"pixels": pa.FixedSizeListArray.from_arrays(flat, 784),
                     "label": pa.array(np.arange(len(images)) % 10)}), row_group


def read_rows(out: Path) -> dict:
    table = pq.read_table(out)
    assert table.num_rows == len(set(table.column("id").to_pylist()))  # no duplicates
    return {r["id"]: r for r in table.to_pylist()}


def config(model, inputs, out, **kw):
    kw.setdefault("engine", "local")
    return sc.ScoreConfig(model=str(model), inputs=[str(i) for i in inputs], out=str(out), **kw)


@pytest.fixture(scope="module")
def real_inputs(tmp_path_factory, fashion_dir):
    """2,000 real Fashion-MNIST test images as IDX (gzip), .npy, Parquet (uint8 pixels; PNG bytes in the
    Hugging Face {bytes, path} layout) and a folder of PNGs (some enlarged and inverted: the recipe runs)."""
    from mnistkit.data import load_split

    test = load_split("fashion-mnist", "test", fashion_dir)
    root = tmp_path_factory.mktemp("score-inputs")
    imgs = test.images[:2000]
    write_idx(root / "t-idx3-ubyte.gz", imgs[:700], compress=True)
    np.save(root / "arr.npy", imgs[700:1200])
    table, _ = pixels_table(imgs[1200:1700], 0)
    pq.write_table(table, root / "pixels.parquet", row_group_size=128)
    raw = imgs[1200:1700].copy()
    pq.write_table(pa.table({"raw": pa.FixedSizeBinaryArray.from_buffers(pa.binary(784), len(raw),
                                                                         [None, pa.py_buffer(raw.tobytes())])}),
                   root / "raw.parquet", row_group_size=200)
    hf = pa.table({"image": pa.array([{"bytes": png_bytes(a), "path": f"{i}.png"} for i, a in enumerate(imgs[1700:1900])])})
    pq.write_table(hf, root / "hf.parquet", row_group_size=64)
    folder = root / "photos" / "sub"
    folder.mkdir(parents=True)
    for i, a in enumerate(imgs[1900:2000]):
        img = Image.fromarray(255 - a).resize((56, 56)) if i % 3 == 0 else Image.fromarray(a)
        img.save(folder / f"{i:03d}.png")
    return root


def test_plan_reads_headers_and_cuts_shards(tmp_path, real_inputs):
    shards = sc.plan([real_inputs / "t-idx3-ubyte.gz", real_inputs / "arr.npy", real_inputs / "pixels.parquet",
                      real_inputs / "hf.parquet", real_inputs / "photos"], rows=300, image_files=40)
    kinds = [(s.kind, s.size) for s in shards]
    assert kinds[:3] == [("idx", 300), ("idx", 300), ("idx", 100)]
    assert kinds[3:5] == [("npy", 300), ("npy", 200)]
    assert [k for k in kinds if k[0] == "parquet"] == [("parquet", 128)] * 3 + [("parquet", 116)] + \
        [("parquet", 64)] * 3 + [("parquet", 8)]  # a shard per row group
    assert kinds[-3:] == [("images", 40), ("images", 40), ("images", 20)]
    assert {s.column for s in shards if s.kind == "parquet"} == {"pixels", "image"}
    assert len({s.key for s in shards}) == len(shards)
    assert sc.Shard.from_json(shards[0].to_json()) == shards[0]


def test_same_labels_as_predict_on_real_images(tmp_path, real_inputs, fashion_export):
    model = fashion_export / "model.onnx"
    inputs = [real_inputs / "t-idx3-ubyte.gz", real_inputs / "arr.npy", real_inputs / "pixels.parquet",
              real_inputs / "hf.parquet", real_inputs / "photos", real_inputs / "raw.parquet"]
    summary = sc.score(config(model, inputs, tmp_path / "out", batch_size=256, shard_rows=300))
    assert summary["images"] == summary["rows"] == 2500 and summary["errors"] == 0
    assert summary["check"]["ok"] and summary["engine"] == "in-process"
    assert json.loads((tmp_path / "out" / sc.SUMMARY).read_text())["rows"] == 2500
    rows = read_rows(tmp_path / "out")
    assert len(rows) == 2500
    # predict names array rows file[index] and images by path: the ids are the same
    files = [real_inputs / "t-idx3-ubyte.gz", real_inputs / "arr.npy"] + sorted((real_inputs / "photos").rglob("*.png"))
    expected = predict(str(model), [str(f) for f in files])["predictions"]
    assert len(expected) == 1300
    for p in expected:
        r = rows[p["input"]]
        assert r["label"] == p["label"] and r["class_index"] == p["index"] and r["error"] is None
        assert r["top_k_labels"] == [t["label"] for t in p["top_k"]]
        assert np.allclose(r["probabilities"], list(p["probabilities"].values()), atol=1e-5)
    # the Parquet rows: the same images as the IDX test split's, so the same labels as predict on them
    from mnistkit.data import load_split

    test = load_split("fashion-mnist", "test", None)
    np.save(tmp_path / "same.npy", test.images[1200:1900])
    again = predict(str(model), [str(tmp_path / "same.npy")])["predictions"]
    pix = [rows[f"{real_inputs / 'pixels.parquet'}[{i}]"]["label"] for i in range(500)]
    assert [rows[f"{real_inputs / 'raw.parquet'}[{i}]"]["label"] for i in range(500)] == pix
    hf = [rows[f"{real_inputs / 'hf.parquet'}[{i}]"]["label"] for i in range(200)]
    assert pix + hf == [p["label"] for p in again]
    accuracy = np.mean([rows[f"{real_inputs / 't-idx3-ubyte.gz'}[{i}]"]["class_index"] == test.labels[i]
                        for i in range(700)])
    assert accuracy > 0.8  # real images, a real model
    one = rows[f"{real_inputs / 'arr.npy'}[3]"]
    assert one["source"] == str(real_inputs / "arr.npy") and one["index"] == 3
    assert one["model_sha256"] == summary["model_sha256"] and len(one["probabilities"]) == 10


def test_a_corrupt_image_is_an_error_row_and_strict_fails(tmp_path, tiny_export):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (folder / "notes.txt").write_text("not an image: ignored")
    blobs = [png_bytes(rng.integers(0, 255, (28, 28), dtype=np.uint8)), b"not a png", None]
    pq.write_table(pa.table({"img": pa.array(blobs, pa.binary())}), tmp_path / "b.parquet")
    pq.write_table(pa.table({"px": pa.array([list(range(784)), [1] * 784], pa.list_(pa.int32()))}),
                   tmp_path / "wide.parquet")
    raw = pa.FixedSizeBinaryArray.from_buffers(pa.binary(784), 2, [None, pa.py_buffer(bytes(784 * 2))])
    pq.write_table(pa.table({"raw": pa.concat_arrays([raw, pa.nulls(1, pa.binary(784))])}), tmp_path / "raw.parquet")
    model = tiny_export / "model.onnx"
    s = sc.score(config(model, [folder, tmp_path / "b.parquet", tmp_path / "wide.parquet", tmp_path / "raw.parquet"],
                        tmp_path / "out"))
    assert s["rows"] == 13 and s["errors"] == 5
    rows = read_rows(tmp_path / "out")
    bad = {k: r["error"] for k, r in rows.items() if r["error"]}
    assert set(bad) == {str(folder / "2.png"), f"{tmp_path / 'b.parquet'}[1]", f"{tmp_path / 'b.parquet'}[2]",
                        f"{tmp_path / 'wide.parquet'}[0]", f"{tmp_path / 'raw.parquet'}[2]"}
    assert "unreadable image" in bad[str(folder / "2.png")] and "null" in bad[f"{tmp_path / 'b.parquet'}[2]"]
    assert "expected 784 pixels in [0, 255]" in bad[f"{tmp_path / 'wide.parquet'}[0]"]
    for k in bad:
        assert rows[k]["label"] is None and rows[k]["probabilities"] is None
    assert rows[f"{tmp_path / 'wide.parquet'}[1]"]["error"] is None
    r = run("score", model, folder, "--out", tmp_path / "strict", "--strict", "--in-process")
    assert r.exit_code == 1 and "2.png" in r.output and "--strict" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "strict" / sc.SUMMARY).exists()
    assert not [p for p in (tmp_path / "strict").iterdir() if p.name.endswith(".tmp")]


def test_resume_scores_only_what_is_missing_and_never_duplicates(tmp_path, tiny_export, tiny_data):
    model = tiny_export / "model.onnx"
    images = np.random.default_rng(1).integers(0, 255, (1000, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "a.npy", images)
    out = tmp_path / "out"
    first = sc.score(config(model, [tmp_path / "a.npy"], out, shard_rows=100))
    assert first["shards"] == 10 and first["scored_now"] == 1000
    before = read_rows(out)
    parts = sorted(out.glob("part-*.parquet"))
    parts[3].unlink()  # as if the run had been killed before its last shard
    (out / sc.SUMMARY).unlink()
    (out / f".{parts[5].name}.123.tmp").write_bytes(b"half a part")  # an interrupted run's leftover
    with pytest.raises(InvalidInputError, match="--resume to finish it"):
        sc.score(config(model, [tmp_path / "a.npy"], out, shard_rows=100))
    again = sc.score(config(model, [tmp_path / "a.npy"], out, shard_rows=100, resume=True))
    assert again["scored_now"] == 100 and again["skipped_by_resume"] == 900 and again["rows"] == 1000
    assert read_rows(out) == before
    assert not list(out.glob("*.tmp"))
    with pytest.raises(InvalidInputError, match="already holds a complete run"):
        sc.score(config(model, [tmp_path / "a.npy"], out, shard_rows=100))
    # another model's parts are never mixed in
    other = tiny_export / "model-int8.onnx"
    with pytest.raises(InvalidInputError, match="scored with another model"):
        sc.score(config(other, [tmp_path / "a.npy"], out, shard_rows=100, resume=True))
    # other inputs' parts neither
    np.save(tmp_path / "b.npy", images[:10])
    with pytest.raises(InvalidInputError, match="not a part of these inputs"):
        sc.score(config(model, [tmp_path / "b.npy"], out, resume=True))
    assert sc.score(config(model, [tmp_path / "b.npy"], out, overwrite=True))["rows"] == 10
    assert len(list(out.glob("part-*"))) == 1


def test_the_completeness_check_catches_a_bad_part(tmp_path, tiny_export):
    model = tiny_export / "model.onnx"
    np.save(tmp_path / "a.npy", np.zeros((300, 28, 28), np.uint8))
    out = tmp_path / "out"
    sc.score(config(model, [tmp_path / "a.npy"], out, shard_rows=100))
    shards = sc.plan([tmp_path / "a.npy"], rows=100)
    part = out / shards[1].part_name
    table = pq.read_table(part)
    pq.write_table(pa.concat_tables([table, table.slice(0, 1)]), part)  # a duplicated row
    with pytest.raises(InvalidInputError, match="exactly one row per input"):
        sc.check_output(out, shards)
    pq.write_table(table.slice(1), part)  # a lost row
    with pytest.raises(InvalidInputError, match="299 rows for 300 inputs"):
        sc.check_output(out, shards)


def lying_npy(path):
    """A .npy header that claims 99,999,999 images over 10 bytes of data."""
    from numpy.lib import format as npy_format

    with open(path, "wb") as f:
        npy_format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (99999999, 28, 28)})
        f.write(b"\0" * 10)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"\x00\x00\x08\x03" + np.array([10, 28, 28], ">u4").tobytes() + b"\0" * 784),
     "truncated"),
    (lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + np.array([2, 28, 28], ">u4").tobytes() + b"\0" * 99)),
     "truncated"),
    (lambda p: p.write_bytes(b"\x00\x00\x08\x01" + np.array([5], ">u4").tobytes() + b"\0" * 5), "expected uint8 images"),
    (lambda p: np.save(p, np.zeros((3, 32, 32), np.uint8)), "expected uint8 [N,28,28]"),
    (lambda p: lying_npy(p), "header declares"),
    (lambda p: pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), p), "which column holds the images"),
    (lambda p: p.write_bytes(b"PAR1 this is not parquet"), "not a readable Parquet file"),
    (lambda p: p.write_text("hello"), "not an input mnistkit scores"),
])
def test_bad_inputs_fail_before_anything_runs(tmp_path, tiny_export, make, message):
    bad = tmp_path / ("idx-file" if "idx" in message else "input.bin")
    make(bad)
    if not bad.exists():  # np.save added .npy
        bad = bad.with_name(bad.name + ".npy")
    r = run("score", tiny_export / "model.onnx", bad, "--out", tmp_path / "out", "--in-process")
    assert r.exit_code == 1, r.output
    assert message in r.output and str(bad) in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "out" / sc.SUMMARY).exists()


def test_out_must_be_a_score_folder_and_usage_errors(tmp_path, tiny_export):
    model = tiny_export / "model.onnx"
    np.save(tmp_path / "a.npy", np.zeros((3, 28, 28), np.uint8))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("precious")
    r = run("score", model, tmp_path / "a.npy", "--out", tmp_path / "home", "--in-process")
    assert r.exit_code == 1 and "holds files score did not write" in r.output
    assert (tmp_path / "home" / "thesis.tex").read_text() == "precious"
    r = run("score", model, tmp_path / "a.npy", "--out", tmp_path / "o", "--resume", "--overwrite")
    assert r.exit_code == 2 and "contradict" in r.output
    r = run("score", model, tmp_path / "missing.npy", "--out", tmp_path / "o", "--in-process")
    assert r.exit_code == 1 and "no such file" in r.output
    r = run("score", tmp_path / "a.npy", tmp_path / "a.npy", "--out", tmp_path / "o", "--in-process")
    assert r.exit_code == 1 and "Traceback" not in r.output


@pytest.mark.usefixtures("needs_ray")
def test_an_unreachable_cluster_fails_in_seconds(tmp_path, tiny_export):
    np.save(tmp_path / "a.npy", np.zeros((3, 28, 28), np.uint8))
    t0 = time.monotonic()
    r = run("score", tiny_export / "model.onnx", tmp_path / "a.npy", "--out", tmp_path / "o", "--address", "127.0.0.1:1")
    assert r.exit_code == 1 and "no Ray cluster answers there" in r.output and time.monotonic() - t0 < 30
    r = run("score", tiny_export / "model.onnx", tmp_path / "a.npy", "--out", tmp_path / "o", "--address", "nonsense")
    assert r.exit_code == 1 and "expected auto, HOST:PORT or ray://HOST:PORT" in r.output
    r = run("score", tiny_export / "model.onnx", tmp_path / "a.npy", "--out", tmp_path / "o", "--address", "auto",
            "--in-process")
    assert r.exit_code == 2 and "contradict" in r.output


def test_cli_json_summary_and_other_runtimes(tmp_path, tiny_export):
    np.save(tmp_path / "a.npy", np.random.default_rng(2).integers(0, 255, (50, 28, 28), dtype=np.uint8))
    r = run("score", tiny_export / "model.onnx", tmp_path / "a.npy", "--out", tmp_path / "o", "--in-process", "--json",
            "--top-k", "2")
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["rows"] == 50 and s["check"]["ok"] and s["backend"] == "onnxruntime"
    onnx_rows = read_rows(tmp_path / "o")
    assert all(len(v["top_k_labels"]) == 2 for v in onnx_rows.values())
    r = run("score", tiny_export / "model.onnx", tmp_path / "a.npy", "--out", tmp_path / "o2", "--in-process")
    assert r.exit_code == 0 and "50 rows for 50 images" in r.output and "one row per input" in r.output
    need_module("ai_edge_litert", "litert")  # another runtime, the same contract
    r = run("score", tiny_export / "model.tflite", tmp_path / "a.npy", "--out", tmp_path / "o3", "--in-process",
            "--json")
    assert r.exit_code == 0, r.output
    lite = read_rows(tmp_path / "o3")
    assert [v["label"] for v in lite.values()] == [v["label"] for v in onnx_rows.values()]


@pytest.mark.usefixtures("needs_ray")
def test_ray_gives_the_in_process_rows(tmp_path, tiny_export):
    model = tiny_export / "model.onnx"
    np.save(tmp_path / "a.npy", np.random.default_rng(3).integers(0, 255, (3000, 28, 28), dtype=np.uint8))
    local = sc.score(config(model, [tmp_path / "a.npy"], tmp_path / "local", shard_rows=500))
    remote = sc.score(config(model, [tmp_path / "a.npy"], tmp_path / "ray", shard_rows=500, engine="ray", workers=2))
    assert remote["engine"] == "ray" and remote["workers"] == 2 and remote["rows"] == local["rows"] == 3000
    assert read_rows(tmp_path / "ray") == read_rows(tmp_path / "local")


KILLER = r"""
import sys, numpy as np
from mnistkit import score as sc
cfg = sc.ScoreConfig(model=sys.argv[1], inputs=[sys.argv[2]], out=sys.argv[3], engine="ray", workers=2,
                     shard_rows=2000, batch_size=64)
print("SUMMARY", __import__("json").dumps(sc.score(cfg)), flush=True)
"""


def _actor_pids() -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "ray::" in line and "MapWorker" in line]


@pytest.mark.usefixtures("needs_ray")
def test_a_killed_worker_is_retried_and_the_output_stays_complete(tmp_path, tiny_export):
    """SIGKILL one Ray actor mid-run: Ray restarts it and re-runs its shard; the part it was writing is
    rewritten whole, so the output has exactly one row per input."""
    model = tiny_export / "model.onnx"
    n = 60_000
    np.save(tmp_path / "a.npy", np.random.default_rng(4).integers(0, 255, (n, 28, 28), dtype=np.uint8))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", KILLER, str(model), str(tmp_path / "a.npy"), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        done = len(list(out.glob("part-*.parquet"))) if out.exists() else 0
        pids = _actor_pids()
        if done >= 2 and pids:
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.05)
    output, _ = proc.communicate(timeout=300)
    assert killed is not None, f"no actor to kill before the run ended:\n{output[-2000:]}"
    assert proc.returncode == 0, output[-3000:]
    summary = json.loads(output.split("SUMMARY", 1)[1])
    assert summary["rows"] == n and summary["check"]["ok"] and summary["errors"] == 0
    rows = pq.read_table(out, columns=["id"]).column("id").to_pylist()
    assert len(rows) == n and len(set(rows)) == n


def test_without_ray_it_runs_in_process_and_says_so(tmp_path, tiny_export, monkeypatch):
    np.save(tmp_path / "a.npy", np.zeros((20, 28, 28), np.uint8))
    monkeypatch.setattr(score_run, "ray_installed", lambda: False)
    said = []
    s = sc.score(config(tiny_export / "model.onnx", [tmp_path / "a.npy"], tmp_path / "o", engine="auto"), log=said.append)
    assert s["engine"] == "in-process" and s["rows"] == 20
    assert any("Ray is not installed" in m and "mnistkit[scale]" in m for m in said)
    with pytest.raises(MissingDependencyError, match="mnistkit\\[scale\\]"):
        sc.score(config(tiny_export / "model.onnx", [tmp_path / "a.npy"], tmp_path / "o2", engine="ray"))


@pytest.mark.usefixtures("needs_ray")
def test_one_shard_runs_in_process_unless_a_cluster_is_named(tmp_path, tiny_export):
    np.save(tmp_path / "a.npy", np.zeros((20, 28, 28), np.uint8))
    said = []
    s = sc.score(config(tiny_export / "model.onnx", [tmp_path / "a.npy"], tmp_path / "o", engine="auto"), log=said.append)
    assert s["engine"] == "in-process" and any("one shard" in m for m in said)


def test_a_model_zoo_file_with_a_fixed_batch_scores_every_row(tmp_path, tiny_ckpt):
    """An ONNX file from elsewhere: batch fixed at 1, no metadata, its own names: the backend splits."""
    from test_backends import _foreign_onnx

    path, _ = _foreign_onnx(tmp_path, tiny_ckpt, "mnist-12-like.onnx", (1, 1, 28, 28))
    images = np.random.default_rng(5).integers(0, 256, (300, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "a.npy", images)
    s = sc.score(config(path, [tmp_path / "a.npy"], tmp_path / "o", batch_size=128))
    assert s["rows"] == 300 and s["errors"] == 0 and s["kind"] == "onnx"
    rows = read_rows(tmp_path / "o")
    expected = predict(str(path), [str(tmp_path / "a.npy")])["predictions"]
    assert [rows[p["input"]]["label"] for p in expected] == [p["label"] for p in expected]
    assert rows[f"{tmp_path / 'a.npy'}[0]"]["top_k_labels"][0] in list("0123456789")


def test_an_idx_gzip_that_inflates_past_its_header_is_refused_in_bounded_memory(tmp_path, tiny_export):
    """Header: 2 images (1,584 bytes); the gzip inflates to 200 MB. Planning streams and stops at the excess."""
    import resource

    bomb = tmp_path / "bomb-idx3-ubyte.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        f.write(b"\x00\x00\x08\x03" + np.array([2, 28, 28], ">u4").tobytes())
        zeros = bytes(1 << 20)
        for _ in range(200):
            f.write(zeros)
    assert bomb.stat().st_size < 1_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InvalidInputError, match="has trailing bytes"):
        sc.plan([bomb])
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KB: never inflated whole


@pytest.mark.usefixtures("needs_ray")
def test_sigterm_during_a_ray_run_is_the_tables_exit_and_line(tmp_path, tiny_export):
    """Ray's driver installs its own SIGTERM handler (exit 15, no line); score puts the command's back."""
    np.save(tmp_path / "a.npy", np.random.default_rng(5).integers(0, 255, (60_000, 28, 28), dtype=np.uint8))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "mnistkit", "score", str(tiny_export / "model.onnx"),
                             str(tmp_path / "a.npy"), "--out", str(out), "--address", "local", "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not _actor_pids():
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before Ray's workers started"
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 143 and lines == ["error: terminated (SIGTERM)"], (proc.returncode, err)
    assert not (out / "_SUCCESS.json").exists()
    deadline = time.time() + 30
    while _actor_pids() and time.time() < deadline:  # Ray was shut down with the command
        time.sleep(0.2)
    assert not _actor_pids()
