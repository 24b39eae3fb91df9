"""Hostile and broken inputs through every command that accepts them.

Each file is built at test time (tests/hostile.py). Every case asserts: the attack's MARKER file
never exists; the exit code is the documented one; stderr is exactly one line; no "Traceback" and no
"internal error" anywhere; nothing left under a final name. A refusal runs the CLI in this process (`run`),
with the process's file descriptors 1 and 2 captured too, so a native library's own print counts against
"one line" as it would in a terminal. A real process (`run(..., process=True)`) is used where the process is what
is tested: peak memory (the child's own rusage, from os.wait4: under 500 MB where the command refuses the input
before importing torch), signals, another user, concurrent commands, colour off a terminal.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import hostile
from conftest import cli_in_process, has_cuda, need, side_by_side

MB = 1024  # ru_maxrss is in KiB on Linux
BOMB_LIMIT_MB = 500


@dataclass
class Run:
    args: list
    rc: int
    out: str
    err: str
    peak_mb: float

    def __str__(self):
        return f"mnistkit {' '.join(map(str, self.args))} -> {self.rc}\nstdout: {self.out[-1500:]}\nstderr: {self.err[-1500:]}"


# A child forked from this (torch-sized) pytest process inherits its peak RSS in ru_maxrss, so the
# command runs under a small launcher (a fresh interpreter) that reports getrusage(RUSAGE_CHILDREN)
# for the command alone, and forwards SIGINT/SIGTERM to it.
LAUNCHER = """
import os, resource, signal, subprocess, sys
p = subprocess.Popen(sys.argv[2:])
for s in (signal.SIGINT, signal.SIGTERM):
    signal.signal(s, lambda signum, frame: p.send_signal(signum))
while True:
    try:
        rc = p.wait()
        break
    except InterruptedError:
        continue
with open(sys.argv[1], "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(rc if rc >= 0 else 128 - rc)
"""


def _in_process(args, cwd: Path, env: dict) -> Run:
    r = cli_in_process(*args, cwd=cwd, env=env)
    return Run(list(args), r.returncode, r.stdout, r.stderr, float("nan"))


def run(*args, cwd: Path, timeout: float = 300, env: dict | None = None, signal_after: tuple | None = None,
        process: bool = False) -> Run:
    """`mnistkit ARGS`: in this process (peak_mb is NaN, so a memory assertion on it fails), or, with `process`
    or `signal_after`, as `python -m mnistkit ARGS` in a real process, with its peak RSS.

    `signal_after=(seconds, signum)` sends a signal once the process has run that long; a third item, a
    path, delays it further until that file exists (a moment that does not depend on the machine's speed).
    """
    cwd.mkdir(parents=True, exist_ok=True)
    if not process and signal_after is None:
        return _in_process(args, cwd, {"MNISTKIT_DATA": str(cwd / ".no-cache"), **(env or {})})
    stamp = time.time_ns()
    out_f, err_f, rss_f = (cwd / f".{what}.{stamp}" for what in ("out", "err", "rss"))
    environ = {**os.environ, "MNISTKIT_DATA": str(cwd / ".no-cache"), **(env or {})}
    environ.pop("MNISTKIT_DEBUG", None)
    with open(out_f, "w") as o, open(err_f, "w") as e:
        p = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(rss_f), sys.executable, "-m", "mnistkit",
                              *map(str, args)], stdout=o, stderr=e, cwd=cwd, env=environ, stdin=subprocess.DEVNULL)
    start, sent = time.monotonic(), False
    while p.poll() is None:
        elapsed = time.monotonic() - start
        if signal_after and not sent and elapsed >= signal_after[0] and (
                len(signal_after) < 3 or Path(signal_after[2]).exists()):
            p.send_signal(signal_after[1])
            sent = True
        if elapsed > timeout:
            p.kill()
            p.wait()
            pytest.fail(f"mnistkit {' '.join(map(str, args))} hung for {timeout} s")
        time.sleep(0.02)
    peak = int(rss_f.read_text()) / MB if rss_f.exists() else float("nan")
    r = Run(list(args), p.returncode, out_f.read_text(), err_f.read_text(), peak)
    for f in (out_f, err_f, rss_f):
        f.unlink(missing_ok=True)
    return r


def assert_clean(r: Run) -> None:
    both = r.out + r.err
    assert "Traceback" not in both and "internal error" not in both and "Logging error" not in both, str(r)


def assert_refused(r: Run, *fragments: str, code: int = 1) -> None:
    """The documented exit code, exactly one line on stderr holding every fragment."""
    assert_clean(r)
    assert r.rc == code, str(r)
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1, str(r)
    for f in fragments:
        assert f in lines[0], str(r)


# ---------------------------------------------------------------------------------------------
# Fixtures: the hostile files, built from a real export


@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_export, tiny_ckpt, tiny_data):
    """A folder with the tiny model's export, its checkpoint and data, an input image and the attacks."""
    d = tmp_path_factory.mktemp("hostile")
    marker = d / "MARKER"
    shutil.copytree(tiny_export, d / "export")
    shutil.copy(tiny_ckpt, d / "tiny.pt")
    from PIL import Image

    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    Image.fromarray(digit).save(d / "digit.png")
    files = {
        "pt2": hostile.evil_pt2(tiny_export / "model.pt2", d / "evil.pt2", marker),
        "ts": hostile.evil_ts(tiny_export / "model.ts", d / "evil.ts", marker),
        "checkpoint": hostile.evil_checkpoint(d / "evil-ckpt.pt", marker),
    }
    files["pt2-named-pt"] = Path(shutil.copy(files["pt2"], d / "looks-like-a-checkpoint.pt"))
    return {"dir": d, "marker": marker, "files": files, "data": tiny_data, "ckpt": d / "tiny.pt",
            "export": d / "export", "image": d / "digit.png"}


@pytest.fixture(autouse=True)
def _no_marker(request):
    """After every test of this module, the attack's marker must not exist."""
    yield
    if "lab" in request.fixturenames:
        lab = request.getfixturevalue("lab")
        assert not lab["marker"].exists(), "a pickle inside a model file ran code"


def test_the_attack_is_real_torch_export_load_runs_it(lab, tmp_path):
    """Without the gate, torch.export.load runs the payload: the test files are real attacks."""
    import torch

    marker = tmp_path / "RAN"
    evil = hostile.evil_pt2(lab["export"] / "model.pt2", tmp_path / "e.pt2", marker)
    code = f"import torch, logging; logging.raiseExceptions=False\ntry: torch.export.load({str(evil)!r})\nexcept Exception: pass"
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert marker.exists(), "torch.export.load no longer unpickles sample inputs unsafely: revisit safeload"
    del torch


# ---------------------------------------------------------------------------------------------
# 1. No code from any artifact runs


@pytest.mark.parametrize("kind", ["pt2", "pt2-named-pt", "ts", "checkpoint"])
def test_hostile_archives_are_refused_by_every_command(lab, kind):
    evil, d = lab["files"][kind], lab["dir"]
    refusal = ("refuses to load", "calls posix.system")
    if kind == "pt2-named-pt":
        refusal = ("refuses to load",)
    assert_refused(run("predict", evil, lab["image"], cwd=d), *refusal)
    assert_refused(run("inspect", evil, cwd=d), *refusal)
    # a checkpoint is bench's parity reference: refused up front; an artifact is a row that could not be timed
    nothing = () if kind == "checkpoint" else ("nothing could be timed",)
    assert_refused(run("bench", evil, "--batch-sizes", "1", "--min-time", "0.05", "--warmup", "0",
                       "--out-dir", d / "bench-out", cwd=d), *nothing, *refusal)
    assert not (d / "bench-out").exists()
    if kind == "checkpoint":
        assert_refused(run("verify", evil, lab["export"], "--data-dir", lab["data"], cwd=d), *refusal)
    else:
        assert_refused(run("verify", lab["ckpt"], evil, "--data-dir", lab["data"], cwd=d), "FAILED", *refusal)
    if kind in ("checkpoint", "pt2-named-pt"):
        r = run("export", evil, "--out-dir", d / "never", cwd=d)
        assert_refused(r, "refuses to load" if kind == "checkpoint" else "is a torch.export program")
        assert not (d / "never").exists()


def test_hostile_state_dict_with_a_model_class_is_refused(lab):
    d = lab["dir"]
    (d / "net.py").write_text("import torch.nn as nn\nclass Net(nn.Module):\n    def __init__(self):\n"
                              "        super().__init__()\n        self.fc = nn.Linear(784, 10)\n"
                              "    def forward(self, x):\n        return self.fc(x.flatten(1))\n")
    r = run("export", lab["files"]["checkpoint"], "--model-class", "net.py:Net", "--out-dir", d / "never2", cwd=d)
    assert_refused(r, "refuses to load", "posix.system")


@pytest.mark.parametrize("kind", ["pt2", "ts", "checkpoint"])
def test_hostile_archives_through_the_python_api(lab, kind):
    from mnistkit.backends import create_backend
    from mnistkit.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="refuses to load: .* calls posix.system"):
        with create_backend(lab["files"][kind]):
            pass


def test_swapped_file_in_an_export_folder_is_noticed(lab, tmp_path):
    folder = tmp_path / "export"
    shutil.copytree(lab["export"], folder)
    shutil.copy(lab["files"]["pt2"], folder / "model.pt2")  # the attack, under the exported name
    hostile.nan_onnx(folder / "model.onnx")  # a different (valid) model, under the exported name
    for args in (("predict", folder / "model.pt2", lab["image"]), ("predict", folder / "model.onnx", lab["image"]),
                 ("verify", lab["ckpt"], folder, "--data-dir", lab["data"]),
                 ("bench", folder, "--batch-sizes", "1", "--min-time", "0.05", "--out-dir", tmp_path / "b"),
                 ("inspect", folder)):
        r = run(*args, cwd=tmp_path)
        assert_refused(r, "does not match", "manifest.json")
        assert "expected" in r.err and "sha256" in r.err


# ---------------------------------------------------------------------------------------------
# 2. Bounded memory whatever a file claims


def test_idx_gzip_bomb(lab, tmp_path):
    bomb_dir = tmp_path / "bomb-data"
    shutil.copytree(lab["data"], bomb_dir)
    # 1 MB each, inflating to 1 GiB (twice BOMB_LIMIT_MB); the headers declare the 128 images the labels files have
    for split in ("train", "t10k"):
        hostile.gzip_bomb(bomb_dir / f"{split}-images-idx3-ubyte.gz", declared=(128, 28, 28))
    # verify imports torch (~0.9 GB of RSS on the CUDA build, mostly library pages): the bomb may cost no more than a
    # clean run of the same command. Four real processes (each one's own peak), side by side.
    ckpt, onnx = lab["ckpt"], lab["export"] / "model.onnx"
    commands = {"train": ("train", "--data-dir", bomb_dir, "--epochs", "1", "--out", tmp_path / "x.pt"),
                "predict": ("predict", onnx, bomb_dir / "train-images-idx3-ubyte.gz"),
                "clean verify": ("verify", ckpt, onnx, "--data-dir", lab["data"]),
                "verify": ("verify", ckpt, onnx, "--data-dir", bomb_dir)}
    ran = dict(zip(commands, side_by_side(lambda args: run(*args, cwd=tmp_path, process=True), commands.values())))
    assert_refused(ran["train"], "trailing bytes", "train-images-idx3-ubyte.gz")
    assert not (tmp_path / "x.pt").exists()
    assert_refused(ran["predict"], "trailing bytes")
    assert ran["train"].peak_mb < BOMB_LIMIT_MB and ran["predict"].peak_mb < BOMB_LIMIT_MB, ran
    clean = ran["clean verify"]
    assert clean.rc == 0, str(clean)
    assert_refused(ran["verify"], "trailing bytes", "t10k-images-idx3-ubyte.gz")
    assert ran["verify"].peak_mb < clean.peak_mb + 50, (ran["verify"].peak_mb, clean.peak_mb)


def test_idx_header_that_claims_too_much(lab, tmp_path):
    p = hostile.gzip_bomb(tmp_path / "huge-idx3-ubyte.gz", declared=(60000, 28, 28 * 200), inflated=1 << 24)
    r = run("predict", lab["export"] / "model.onnx", p, cwd=tmp_path, process=True)
    assert_refused(r, "over the", "limit", "MNISTKIT_MAX_INPUT_BYTES")
    assert r.peak_mb < BOMB_LIMIT_MB


@pytest.mark.parametrize("width, height, rows", [(30000, 30000, 4), (11000, 11000, None)])
def test_pixel_bombs_are_refused_before_decoding(lab, tmp_path, width, height, rows):
    p = hostile.png_bomb(tmp_path / "bomb.png", width, height, rows)
    assert p.stat().st_size < 200_000  # 121 megapixels in ~120 KB
    r = run("predict", lab["export"] / "model.onnx", p, cwd=tmp_path, process=True)
    assert_refused(r, "megapixel limit", "bomb.png")
    assert r.peak_mb < BOMB_LIMIT_MB, r.peak_mb


def test_npy_whose_header_lies_about_its_size(lab, tmp_path):
    import io

    from numpy.lib import format as npy_format

    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": (10_000_000, 28, 28)})
    (tmp_path / "lie.npy").write_bytes(buf.getvalue() + bytes(784))
    r = run("predict", lab["export"] / "model.onnx", tmp_path / "lie.npy", cwd=tmp_path, process=True)
    assert_refused(r, "header declares", "lie.npy")
    assert r.peak_mb < BOMB_LIMIT_MB


@pytest.mark.realdata
def test_big_real_photos_still_work_in_bounded_memory(tmp_path, digits_export, mnist_sample_dir):
    """4000x3000 JPEGs (phone photos of digits on paper) are decoded at a reduced scale: the answers are
    those of the same photos at 1000x750, in bounded memory."""
    import json

    from PIL import Image

    from mnistkit.data import load_split
    from mnistkit.predict import predict

    split = load_split("mnist", "test", mnist_sample_dir)
    big, small = [], []
    for i in range(6):
        paper = np.full((3000, 4000), 235, np.uint8)
        ink = np.asarray(Image.fromarray(255 - split.images[i]).resize((2000, 2000), Image.Resampling.BICUBIC))
        paper[500:2500, 1000:3000] = np.minimum(paper[500:2500, 1000:3000], ink)
        photo = Image.fromarray(paper).convert("RGB")
        photo.save(tmp_path / f"photo{i}.jpg", quality=90)
        photo.resize((1000, 750), Image.Resampling.LANCZOS).save(tmp_path / f"small{i}.png")
        big.append(tmp_path / f"photo{i}.jpg")
        small.append(tmp_path / f"small{i}.png")
    r = run("predict", digits_export / "model.onnx", *big, "--json", cwd=tmp_path, process=True)
    assert r.rc == 0, str(r)
    assert r.peak_mb < BOMB_LIMIT_MB, r.peak_mb
    got = [p["label"] for p in json.loads(r.out)["predictions"]]
    expected = [p["label"] for p in predict(digits_export / "model.onnx", small)["predictions"]]
    assert sum(g == e for g, e in zip(got, expected)) >= 5, (got, expected)
    assert sum(g == str(t) for g, t in zip(got, split.labels[:6])) >= 4, (got, split.labels[:6])


# ---------------------------------------------------------------------------------------------
# 3. Outputs are checked


def test_nan_outputs_never_become_an_answer(lab, tmp_path):
    nan = hostile.nan_onnx(tmp_path / "nan.onnx")
    r = run("predict", nan, lab["image"], "--json", cwd=tmp_path)
    assert_refused(r, "not finite", "nan.onnx", "digit.png")
    assert r.out == ""
    assert_refused(run("verify", lab["ckpt"], nan, "--data-dir", lab["data"], cwd=tmp_path), "FAILED", "NaN")
    r = run("bench", nan, lab["ckpt"], "--backends", "onnxruntime", "--batch-sizes", "1", "--min-time", "0.05",
            "--data-dir", lab["data"], "--out-dir", tmp_path / "b", cwd=tmp_path)
    assert_refused(r, "parity-failed")

    from mnistkit.errors import InvalidInputError
    from mnistkit.predict import predict

    with pytest.raises(InvalidInputError, match="not finite"):
        predict(nan, [lab["image"]])


# ---------------------------------------------------------------------------------------------
# 4. Truncated and garbage files of every kind: exit 1, one line


MODEL_KINDS = {"onnx": "model.onnx", "pt2": "model.pt2", "ts": "model.ts", "checkpoint": None, "ncnn": "model.ncnn.param",
               "mnn": "model.mnn"}


@pytest.mark.parametrize("kind", list(MODEL_KINDS))
def test_truncated_models_everywhere(lab, tmp_path, kind):
    src = lab["ckpt"] if MODEL_KINDS[kind] is None else lab["export"] / MODEL_KINDS[kind]
    bad = hostile.truncated(src, tmp_path / f"cut-{src.name}")
    assert_refused(run("predict", bad, lab["image"], cwd=tmp_path))
    assert_refused(run("inspect", bad, cwd=tmp_path))
    assert_refused(run("bench", bad, "--batch-sizes", "1", "--min-time", "0.05", "--out-dir", tmp_path / "b",
                       cwd=tmp_path))
    assert not (tmp_path / "b").exists()
    if kind == "checkpoint":
        assert_refused(run("verify", bad, lab["export"] / "model.onnx", "--data-dir", lab["data"], cwd=tmp_path))
    else:
        assert_refused(run("verify", lab["ckpt"], bad, "--data-dir", lab["data"], cwd=tmp_path), bad.name)


def test_external_data_outside_the_folder(lab, tmp_path):
    ext = hostile.external_data_onnx(tmp_path / "ext.onnx", "../../../../etc/passwd")
    assert_refused(run("predict", ext, lab["image"], cwd=tmp_path), "escapes")
    r = run("inspect", ext, cwd=tmp_path)  # inspect reads the graph, never the external weights
    assert_clean(r)
    assert r.rc == 0, str(r)
    assert_refused(run("bench", ext, "--batch-sizes", "1", "--min-time", "0.05", "--out-dir", tmp_path / "b",
                       cwd=tmp_path), "nothing could be timed")


@pytest.mark.parametrize("name, head", [("garbage.onnx", b"\x08\x09"), ("garbage.pt", b"PK\x03\x04"),
                                        ("garbage.bin", b"")])
def test_garbage_models(lab, tmp_path, name, head):
    bad = hostile.garbage(tmp_path / name, head=head)
    assert_refused(run("predict", bad, lab["image"], cwd=tmp_path))
    assert_refused(run("inspect", bad, cwd=tmp_path))


@pytest.mark.parametrize("name", ["digit.png", "images-idx3-ubyte.gz", "digits.npy", "photo.jpg"])
def test_truncated_and_garbage_inputs(lab, tmp_path, name):
    from PIL import Image

    from mnistkit.data import write_idx

    good = tmp_path / f"good-{name}"
    pixels = np.zeros((3, 28, 28), np.uint8)
    pixels[:, 5:20, 10:15] = 200
    if name.endswith(".png") or name.endswith(".jpg"):
        Image.fromarray(np.kron(pixels[0], np.ones((8, 8), np.uint8))).save(good)
    elif name.endswith(".gz"):
        write_idx(good, pixels)
    else:
        np.save(good, pixels)
    assert run("predict", lab["export"] / "model.onnx", good, cwd=tmp_path).rc == 0
    for bad in (hostile.truncated(good, tmp_path / f"cut-{name}", 0.6), hostile.garbage(tmp_path / name, 3000)):
        assert_refused(run("predict", lab["export"] / "model.onnx", bad, cwd=tmp_path), bad.name)


# ---------------------------------------------------------------------------------------------
# 5. Images of every mode: by their real range


def _modes_of(gray8: np.ndarray, folder: Path) -> dict[str, Path]:
    """The same dark-on-light picture saved in every mode Pillow opens."""
    from PIL import Image

    base = Image.fromarray(gray8)
    files = {}
    files["L"] = folder / "L.png"
    base.save(files["L"])
    files["I;16"] = folder / "I16.png"
    Image.fromarray(gray8.astype(np.uint16) * 257).save(files["I;16"])  # a 16-bit scan of the same page
    files["RGB"] = folder / "RGB.png"
    base.convert("RGB").save(files["RGB"])
    files["RGBA"] = folder / "RGBA.png"
    base.convert("RGBA").save(files["RGBA"])
    files["LA"] = folder / "LA.png"
    base.convert("LA").save(files["LA"])
    files["P"] = folder / "P.png"
    base.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(files["P"])
    files["1"] = folder / "one.png"
    base.point(lambda v: 255 if v > 190 else 0).convert("1").save(files["1"])
    files["CMYK"] = folder / "CMYK.jpg"
    base.convert("CMYK").save(files["CMYK"], quality=95)
    files["I"] = folder / "I.tif"
    Image.fromarray(gray8.astype(np.int32) * 1000).save(files["I"])  # 32-bit integers, their own range
    files["F"] = folder / "F.tif"
    Image.fromarray(gray8.astype(np.float32) / 255).save(files["F"])  # floats in 0-1
    return files


@pytest.mark.realdata
def test_every_image_mode_gives_the_same_answer(tmp_path, digits_export, mnist_sample_dir):
    from PIL import Image

    from mnistkit.data import load_split
    from mnistkit.predict import predict

    split = load_split("mnist", "test", mnist_sample_dir)
    checked = 0
    for i in range(6):
        # a faint pencil digit on grey paper: ink 40 levels darker than the paper
        ink = np.asarray(Image.fromarray(split.images[i]).resize((140, 140), Image.Resampling.BICUBIC), np.float32)
        page = np.clip(200 - ink * (40 / 255), 0, 255).astype(np.uint8)
        folder = tmp_path / str(i)
        folder.mkdir()
        files = _modes_of(page, folder)
        opened = {m: Image.open(f).mode for m, f in files.items()}
        assert opened["I;16"].startswith("I;16") and opened["CMYK"] == "CMYK" and opened["F"] == "F"
        result = predict(digits_export / "model.onnx", list(files.values()))["predictions"]
        labels = {m: p["label"] for m, p in zip(files, result)}
        # every mode that keeps the picture (all but "1", which binarizes it) gives the same answer
        assert len({v for m, v in labels.items() if m != "1"}) == 1, labels
        checked += labels["L"] == str(split.labels[i])
    assert checked >= 4


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    """The audit's case: a faint 16-bit scan was clipped to white and refused as blank."""
    from PIL import Image

    from mnistkit.preprocess import load_inputs

    page = np.full((60, 60), 52000, np.uint16)
    page[15:45, 27:33] = 46000  # faint ink on a 16-bit page
    Image.fromarray(page).save(tmp_path / "scan16.png")
    Image.fromarray((page // 257).astype(np.uint8)).save(tmp_path / "scan8.png")
    a = load_inputs(tmp_path / "scan16.png", "digits")[0].array
    b = load_inputs(tmp_path / "scan8.png", "digits")[0].array
    assert a.max() > 200 and np.abs(a.astype(int) - b.astype(int)).max() <= 2


# ---------------------------------------------------------------------------------------------
# 6. Exit codes: one table


def test_bench_exits_1_when_nothing_could_be_timed(lab, tmp_path):
    if has_cuda():
        pytest.skip("CUDA is usable here: the cuda rows would be timed")
    out, model = tmp_path / "b", tmp_path / "model.onnx"  # a file alone: no reference to load and say (a note line)
    model.write_bytes((lab["export"] / "model.onnx").read_bytes())
    quick = ("--batch-sizes", "1", "--min-time", "0.05", "--no-baselines")
    r = run("bench", model, "--devices", "cuda", *quick, "--out-dir", out, cwd=tmp_path)
    assert_refused(r, "nothing could be timed", "onnxruntime/cuda model.onnx (unavailable")
    assert not out.exists()
    r = run("bench", model, "--devices", "cpu,cuda", *quick, "--out-dir", out, cwd=tmp_path)
    assert_refused(r, "1 requested case(s) could not be timed", "--allow-missing")
    assert (out / "results.json").exists()  # what was timed is kept, and says what was not
    r = run("bench", model, "--devices", "cpu,cuda", *quick, "--allow-missing", "--out-dir", out, "--json", cwd=tmp_path)
    assert r.rc == 0 and r.err.strip() == "", str(r)


@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated")])
def test_signals_give_their_exit_codes(lab, tmp_path, signum, code, word):
    ckpt = tmp_path / "long.pt"
    r = run("train", "--data-dir", lab["data"], "--epochs", "100000", "--out", ckpt, "--json", cwd=tmp_path,
            signal_after=(1.0, signum, ckpt))  # once the first epoch's checkpoint is written
    assert_clean(r)
    assert r.rc == code, str(r)
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1 and word in lines[0], str(r)
    from mnistkit.model import load_checkpoint

    load_checkpoint(ckpt)  # the last completed epoch, intact
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".long.pt")] == []


def test_no_colour_codes_off_a_terminal(lab, tmp_path):
    r = run("predict", tmp_path / "missing.onnx", lab["image"], cwd=tmp_path, process=True,
            env={"FORCE_COLOR": "1", "TERM": "xterm-256color", "CLICOLOR_FORCE": "1"})
    assert_refused(r, "no such file")
    assert "\x1b" not in r.err and "\x1b" not in r.out


# ---------------------------------------------------------------------------------------------
# 7. serve-demo


@contextlib.contextmanager
def demo_server(lab):
    """`serve-demo` on the lab's app bundle, in this process; yields its port."""
    from mnistkit.serve import WEB_DIR, serve_in_background

    need((WEB_DIR / "vendor" / "ort-wasm-simd-threaded.wasm").exists(),
         "the web example's vendor files are not installed (make setup)")
    server, _ = serve_in_background(lab["export"] / "app")
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.node
def test_serve_demo_answers_malformed_paths_without_tracebacks(lab, capfd):
    import http.client
    import socket

    with demo_server(lab) as port:
        for path, status in (("/%00", 400), ("/%ff%fe", 400), ("/a%0Ab", 400), ("/no-such-file.js", 404),
                             ("/../../etc/passwd", 404), ("/", 200)):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", path)
            assert conn.getresponse().status == status, path
            conn.close()
        for _ in range(5):  # clients that hang up mid-response
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /vendor/ort-wasm-simd-threaded.wasm HTTP/1.1\r\nHost: x\r\n\r\n")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        time.sleep(0.5)
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out


def test_serve_demo_refuses_a_swapped_app_model(lab, tmp_path):
    from mnistkit.errors import ArtifactError
    from mnistkit.serve import resolve_model

    folder = tmp_path / "export"
    shutil.copytree(lab["export"], folder)
    assert resolve_model(folder)[0] == folder / "app" / "model.onnx"
    shutil.copy(folder / "model-int8-app.onnx", folder / "app" / "model.onnx")  # valid, but not the exported one
    with pytest.raises(ArtifactError, match=r"app/model.onnx: sha256 .* does not match .*labels.json"):
        resolve_model(folder / "app")
    shutil.copy(folder / "model-int8-app.onnx", folder / "model-app.onnx")
    with pytest.raises(ArtifactError, match=r"model-app.onnx: sha256 .* does not match .*manifest.json"):
        resolve_model(folder / "model-app.onnx")


@pytest.mark.parametrize("how, fragment", [("guards", "carries guard code"), ("expr", "not plain arithmetic"),
                                           ("target", "calls torch.serialization.os.system")])
def test_program_json_that_would_run_code_is_refused(lab, tmp_path, how, fragment):
    """torch.export.load evaluates shape expressions with sympy and .module() execs guard code: both ran
    `touch MARKER` in torch 2.14 (checked by test_the_program_attacks_are_real); the gate refuses them."""
    evil = hostile.evil_pt2_program(lab["export"] / "model.pt2", tmp_path / f"{how}.pt2", lab["marker"], how)
    assert_refused(run("predict", evil, lab["image"], cwd=tmp_path), "refuses to load", fragment)
    assert_refused(run("inspect", evil, cwd=tmp_path), "refuses to load")
    assert_refused(run("verify", lab["ckpt"], evil, "--data-dir", lab["data"], cwd=tmp_path), "FAILED", fragment)


def test_the_program_attacks_are_real(lab, tmp_path):
    def attack(how):  # a fresh torch loads each file, side by side
        marker = tmp_path / f"RAN-{how}"
        evil = hostile.evil_pt2_program(lab["export"] / "model.pt2", tmp_path / f"{how}.pt2", marker, how)
        code = ("import torch, logging; logging.raiseExceptions=False\n"
                f"try: torch.export.load({str(evil)!r}).module()(torch.zeros(2, 1, 28, 28))\nexcept Exception: pass")
        subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
        return how, marker

    for how, marker in side_by_side(attack, ("guards", "expr")):
        assert marker.exists(), f"torch no longer runs the {how} attack: revisit safeload's program checks"


def test_program_checks_admit_what_torch_export_writes_and_nothing_else():
    from mnistkit.safeload import _expr_ok, _target_ok

    for ok in ("Symbol('s77', positive=True, integer=True)", "s0 + 2*s1", "Max(1, s0)", "FloorDiv(s0, 2) - 1",
               "Eq(Mod(s0, 4), 0)", "1.5e-3*s2"):
        assert _expr_ok(ok), ok
    for bad in ("__import__('os').system('x')", "Symbol('s1').func", "open('f')", "s0.__class__", "lambda: 1",
                "Symbol('a b')", "exec('1')", "[s0 for s0 in ()]"):
        assert not _expr_ok(bad), bad
    for ok in ("torch.ops.aten.linear.default", "_operator.getitem", "torch.sym_max", "math.ceil"):
        assert _target_ok(ok), ok
    for bad in ("torch.serialization.os.system", "builtins.eval", "torch.ops.__class__", "_operator.attrgetter",
                "#custom", "os.system", "torch.load"):
        assert not _target_ok(bad), bad


# ---------------------------------------------------------------------------------------------
# The second trust audit (issue 20): each finding refused in one line, exit 1, <= 500 MB, <= 10 s, nothing run,
# read or written. Each builder reproduces the audit's file (tests/hostile.py); on the code of that audit every
# one of these ran code, touched a file, or took gigabytes.

HUGE = (1 << 30) + (128 << 20)  # a raw tensor record just over the 1 GiB budget (the audit's was 2 GiB)

AUDIT = {
    # name: (builder(lab, dst) -> path, suffix, fragments of the one line)
    "pt2-codecs-stack-global": (lambda lab, d: hostile.pt2_codecs_attack(lab["export"] / "model.pt2", d, lab["marker"]),
                                ".pt2", ("data/sample_inputs/model.pt", "not a pickle the gate can check to its end")),
    "pt2-decoy-config": (lambda lab, d: hostile.pt2_decoy_config(lab["export"] / "model.pt2", d, lab["marker"]),
                         ".pt2", ("stored as a pickle",)),
    "pt2-raw-and-pickled": (lambda lab, d: hostile.pt2_raw_and_pickled(lab["export"] / "model.pt2", d, lab["marker"]),
                            ".pt2", ("stored as a pickle",)),
    "ts-from-file-writes": (lambda lab, d: hostile.ts_from_file(d, lab["victim"]), ".ts", ("torch.from_file",)),
    "ts-from-file-reads": (lambda lab, d: hostile.ts_from_file(d, Path("/etc/passwd"), write=False), ".ts",
                           ("torch.from_file",)),
    "pt2-aten-from-file": (lambda lab, d: hostile.pt2_target(lab["export"] / "model.pt2", d,
                                                             "torch.ops.aten.from_file.default"),
                           ".pt2", ("aten.from_file", "allowlist")),
    "onnx-constant-of-shape": (lambda lab, d: hostile.onnx_constant_of_shape(d), ".onnx", ("16.0 GiB", "budget")),
    "onnx-endless-loop": (lambda lab, d: hostile.onnx_endless_loop(d), ".onnx", ("operator Loop", "control flow")),
    "pt2-huge-raw-record": (lambda lab, d: hostile.archive_with_huge_member(lab["export"] / "model.pt2", d,
                                                                            "data/weights/weight_0", HUGE),
                            ".pt2", ("archive members", "budget")),
    "ts-huge-raw-record": (lambda lab, d: hostile.archive_with_huge_member(lab["export"] / "model.ts", d,
                                                                           "constants/0", HUGE),
                           ".ts", ("archive members", "budget")),
    "checkpoint-huge-raw-record": (lambda lab, d: hostile.archive_with_huge_member(lab["ckpt"], d, "data/0", HUGE),
                                   ".pt", ("archive members", "budget")),
    "pt2-power-tower": (lambda lab, d: hostile.pt2_expression(lab["export"] / "model.pt2", d, "s77*0+2**2**34"),
                        ".pt2", ("not plain arithmetic",)),
    "pte-4gib-plan": (lambda lab, d: hostile.pte_planning(lab["export"] / "model.pte", d), ".pte",
                      ("planned buffers", "4.0 GiB")),
    "tflite-2e30-tensor": (lambda lab, d: hostile.tflite_big_tensor(lab["export"] / "model.tflite", d), ".tflite",
                           ("4.0 GiB", "budget")),
}


@pytest.fixture(scope="module")
def audit(lab, tmp_path_factory):
    d = tmp_path_factory.mktemp("audit")

    def make(name):
        build, suffix, _ = AUDIT[name]
        return name, build(lab, d / f"{name}{suffix}")

    # the three 1.1 GiB deflated records side by side (zlib lets go of the GIL), then the rest
    huge = [name for name in AUDIT if name.endswith("huge-raw-record")]
    return dict(side_by_side(make, huge) + [make(name) for name in AUDIT if name not in huge])


@pytest.fixture(scope="module", autouse=True)
def _victim(lab):
    lab["victim"] = lab["dir"] / "victim.txt"
    lab["victim"].write_text("a user's file\n")
    yield
    assert lab["victim"].read_text() == "a user's file\n", "a model wrote into a user's file"


@pytest.mark.parametrize("name", sorted(AUDIT))
def test_every_audit_finding_is_refused_in_one_line_and_bounded(lab, audit, tmp_path, name):
    start = time.monotonic()
    r = run("predict", audit[name], lab["image"], cwd=tmp_path, timeout=60, process=True)
    elapsed = time.monotonic() - start
    assert_refused(r, "refuses to load", *AUDIT[name][2])
    assert r.peak_mb < BOMB_LIMIT_MB, (name, r.peak_mb)
    assert elapsed < 10, (name, elapsed)
    assert lab["victim"].read_text() == "a user's file\n"


@pytest.mark.parametrize("name", sorted(AUDIT))
def test_every_audit_finding_is_refused_through_the_python_api(lab, audit, name):
    import mnistkit
    from mnistkit.errors import ArtifactError

    with pytest.raises(ArtifactError, match="refuses to load"):
        mnistkit.load(audit[name])


@pytest.mark.parametrize("name", ["pt2-codecs-stack-global", "pt2-decoy-config", "ts-from-file-writes"])
def test_the_code_running_findings_are_refused_by_every_command(lab, audit, tmp_path, name):
    evil, d = audit[name], tmp_path
    for args in (("inspect", evil), ("verify", lab["ckpt"], evil, "--data-dir", lab["data"]),
                 ("bench", evil, "--batch-sizes", "1", "--min-time", "0.05", "--warmup", "0", "--out-dir", d / "b"),
                 ("score", evil, lab["image"], "--out", d / "scores")):
        r = run(*args, cwd=d)
        assert_refused(r, "refuses to load")
    assert not (d / "scores").exists() and not (d / "b").exists()


def test_the_audit_attacks_are_real(lab, audit, tmp_path):
    """Without the gate, torch runs them: the sample-input and config pickles call os.system, and the TorchScript
    file writes into the user's file. (One subprocess for all four: each is a fresh torch import otherwise.)"""
    victim = tmp_path / "victim.txt"
    victim.write_text("a user's file\n")
    writer = hostile.ts_from_file(tmp_path / "w.ts", victim)
    code = (
        "import logging, sys, torch\nlogging.raiseExceptions = False\n"
        "for f in sys.argv[1:4]:\n"
        "    try: torch.export.load(f)\n"
        "    except Exception: pass\n"
        "torch.jit.load(sys.argv[4])(torch.zeros(1, 1, 28, 28))\n")
    markers = [tmp_path / f"RAN-{i}" for i in range(3)]
    files = [hostile.pt2_codecs_attack(lab["export"] / "model.pt2", tmp_path / "a.pt2", markers[0]),
             hostile.pt2_decoy_config(lab["export"] / "model.pt2", tmp_path / "b.pt2", markers[1]),
             hostile.pt2_raw_and_pickled(lab["export"] / "model.pt2", tmp_path / "c.pt2", markers[2])]
    subprocess.run([sys.executable, "-c", code, *map(str, files), str(writer)], capture_output=True, timeout=180)
    assert [m.exists() for m in markers] == [True, True, True], "torch no longer runs these: revisit the gate"
    assert victim.read_text().startswith("PWNED"), "torch.from_file no longer writes: revisit the TorchScript gate"


def test_no_fallback_even_with_the_gate_switched_off(lab, audit, monkeypatch):
    """The guard under the gate: with safeload's checks replaced by no-ops, loading the poisoned archives raises
    instead of running code (torch's weights_only=False retry and its pickled payloads hit no_unsafe_loads)."""
    import mnistkit.safeload
    from mnistkit.backends import create_backend
    from mnistkit.errors import ArtifactError

    monkeypatch.setattr(mnistkit.safeload, "check_archive", lambda *a, **k: None)
    for name in ("pt2-codecs-stack-global", "pt2-decoy-config", "pt2-raw-and-pickled"):
        with pytest.raises(ArtifactError, match="without weights_only"):
            create_backend(audit[name]).load()
    assert not lab["marker"].exists()


def test_the_guard_refuses_unsafe_unpickling_and_restores_everything():
    import pickle

    import torch

    from mnistkit.gate import UnsafeLoad, no_unsafe_loads

    before = (torch.load, pickle.loads, pickle.load)
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)
    with no_unsafe_loads():
        assert torch.load(io.BytesIO(buf.getvalue()))["w"].sum() == 2  # weights-only loads still work
        for call in (lambda: torch.load(io.BytesIO(buf.getvalue()), weights_only=False),
                     lambda: pickle.loads(pickle.dumps(1)), lambda: pickle.load(io.BytesIO(pickle.dumps(1)))):
            with pytest.raises(UnsafeLoad):
                call()
        with no_unsafe_loads():  # re-entrant
            pass
        with pytest.raises(UnsafeLoad):
            pickle.loads(b"")
    assert (torch.load, pickle.loads, pickle.load) == before


def test_every_mnistkit_export_passes_the_gate(tiny_export):
    """The allowlists and budgets admit everything mnistkit writes (export validation loads every file through the
    gate too, so an export of the CNN, in test_export, proves it for convolutions)."""
    from mnistkit.artifacts import _CHECKED, check_model, detect_kind
    from mnistkit.formats import FORMATS

    _CHECKED.clear()
    for fmt in FORMATS.values():
        if fmt.exportable:
            path = tiny_export / fmt.file
            assert check_model(path) == detect_kind(path), fmt.name


# ---------------------------------------------------------------------------------------------
# The audit's exit codes and lines (issue 20 item 4): one line, the table's code, for each


def test_bench_on_a_file_no_requested_backend_opens_exits_1(lab, tmp_path):
    r = run("bench", lab["export"] / "model.onnx", "--backends", "torchscript", "--batch-sizes", "1",
            "--out-dir", tmp_path / "b", "--json", cwd=tmp_path)
    assert_refused(r, "nothing could be timed", "not on --backends torchscript")
    assert r.out.strip() == "" and not (tmp_path / "b").exists()


@pytest.mark.parametrize("target", ["fifo", "/dev/zero"])
def test_a_fifo_or_a_device_is_not_called_an_empty_file(lab, tmp_path, target):
    if target == "fifo":
        target = tmp_path / "pipe"
        os.mkfifo(target)
    for args in (("predict", target, lab["image"]), ("predict", lab["export"] / "model.onnx", target)):
        r = run(*args, cwd=tmp_path, timeout=60)
        assert_refused(r, "not a regular file")
        assert "empty" not in r.err


def test_a_path_with_control_characters_stays_one_line(lab, tmp_path):
    r = run("predict", tmp_path / "no\nsuch\tfile.onnx", lab["image"], cwd=tmp_path)
    assert_refused(r, "no\\nsuch\\tfile.onnx", "no such file")


def test_an_unreadable_model_or_image_exits_1_not_click_usage(lab, tmp_path):
    """As another user (root reads everything): the file's own line, exit 1, not click's three-line usage error."""
    import shutil as sh

    need(os.geteuid() == 0 and sh.which("setpriv") is not None,
         "needs root and setpriv (util-linux) to run the command as an unprivileged user")
    shared = Path(f"/tmp/mnistkit-unreadable-{os.getpid()}")  # pytest's own tmp_path is root's alone
    shared.mkdir(mode=0o777, exist_ok=True)
    try:
        os.chmod(shared, 0o777)
        model, image = shared / "model.onnx", shared / "digit.png"
        sh.copy(lab["export"] / "model.onnx", model)
        sh.copy(lab["image"], image)
        for locked, other in ((model, image), (image, model)):
            os.chmod(locked, 0)
            os.chmod(other, 0o644)
            args = ["predict", model, image]
            p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                                "mnistkit", *map(str, args)], capture_output=True, text=True, timeout=120, cwd=shared,
                               env={**os.environ, "HOME": str(shared), "MNISTKIT_DATA": str(shared / ".cache")})
            lines = [line for line in p.stderr.splitlines() if line.strip()]
            assert p.returncode == 1 and len(lines) == 1, (p.returncode, p.stderr)
            assert str(locked) in lines[0] and "cannot read" in lines[0] and "Usage" not in p.stderr, p.stderr
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_score_into_a_folder_it_cannot_write_is_one_line(lab, tmp_path):
    for out in ("/proc/mnistkit-cannot-write-here", "/sys/kernel/mnistkit"):
        r = run("score", lab["export"] / "model.onnx", lab["image"], "--out", out, cwd=tmp_path)
        assert_refused(r, "cannot write there")


def test_a_second_score_on_the_same_output_is_refused_while_the_first_runs(lab, tmp_path):
    from mnistkit.score import output_lock
    from mnistkit.errors import InvalidInputError

    out = tmp_path / "out"
    with output_lock(out):
        (out / ".part-abc.parquet.tmp").write_bytes(b"a live run's part")
        r = run("score", lab["export"] / "model.onnx", lab["image"], "--out", out, "--resume", cwd=tmp_path, process=True)
        assert_refused(r, "another mnistkit score is writing into it")
        assert (out / ".part-abc.parquet.tmp").exists()  # the live run's part survives
        with pytest.raises(InvalidInputError, match="another mnistkit score"):
            with output_lock(out):
                pass
    r = run("score", lab["export"] / "model.onnx", lab["image"], "--out", out, "--resume", cwd=tmp_path, process=True)
    assert r.rc == 0, str(r)


def test_a_parquet_value_that_inflates_past_the_limit_is_refused_from_its_footer(lab, tmp_path):
    bomb = hostile.parquet_bomb(tmp_path / "bomb.parquet")
    assert bomb.stat().st_size < 100_000
    r = run("score", lab["export"] / "model.onnx", bomb, "--out", tmp_path / "o", cwd=tmp_path, process=True)
    assert_refused(r, "row group 0", "input limit", "MNISTKIT_MAX_INPUT_BYTES")
    assert r.peak_mb < BOMB_LIMIT_MB, r.peak_mb
    assert not (tmp_path / "o" / "_SUCCESS.json").exists()


def test_pte_commands_print_one_line_not_torchs_warning(lab, tmp_path):
    r = run("predict", lab["export"] / "model.pte", tmp_path / "missing.png", cwd=tmp_path)
    assert_refused(r, "missing.png")
    r = run("predict", lab["export"] / "model.pte", lab["image"], "--json", cwd=tmp_path)
    assert r.rc == 0 and r.err.strip() == "", str(r)


def test_openvino_errors_say_what_happened_not_where(lab, tmp_path):
    from mnistkit.errors import first_line

    text = ("Exception from src/inference/src/cpp/core.cpp:84:\nCheck 'res.status == pugi::status_ok' failed at "
            "src/frontends/ir/src/input_model.cpp:219:\nStart-end tags mismatch at offset 2999\n")
    assert first_line(RuntimeError(text)) == "Start-end tags mismatch at offset 2999"
    assert first_line(RuntimeError("Exception from src/x.cpp:1:")) == "Exception from src/x.cpp:1:"


def test_serve_demo_serves_the_page_and_nothing_else(lab):
    import http.client

    with demo_server(lab) as port:
        for path, status in (("/", 200), ("/index.html", 200), ("/app.mjs", 200), ("/vendor/ort.wasm.bundle.min.mjs", 200),
                             ("/model/labels.json", 200), ("/package.json", 404), ("/package-lock.json", 404),
                             ("/node_modules/", 404), ("/node_modules/playwright-core/package.json", 404),
                             ("/vendor/", 404), ("/bench.html", 404), ("/e2e.mjs", 404)):
            for method in ("GET", "HEAD"):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request(method, path)
                assert conn.getresponse().status == status, (method, path)
                conn.close()


def test_a_file_rewritten_in_place_is_checked_again(lab, tmp_path):
    """The gate runs once per file *content*: a same-size rewrite that keeps the modification time (two writes
    within one timestamp tick; found by the fuzzer) is checked again."""
    from mnistkit.artifacts import check_model
    from mnistkit.errors import ArtifactError

    f = tmp_path / "model.onnx"
    good = (lab["export"] / "model.onnx").read_bytes()
    assert b"Relu" in good
    f.write_bytes(good)
    st = f.stat()
    assert check_model(f) == "onnx"
    with open(f, "r+b") as out:  # the same inode, the same size
        out.write(good.replace(b"Relu", b"Loop"))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_mtime_ns == st.st_mtime_ns and f.stat().st_ino == st.st_ino
    with pytest.raises(ArtifactError, match="operator Loop"):
        check_model(f)


def test_the_gate_admits_what_users_bring(tmp_path):
    """Files mnistkit did not make pass the allowlists: a scripted (not traced) module with BatchNorm, Dropout and
    log_softmax (its TorchScript has loops, ops.prim.RaiseException, getattr on submodules), the same model through
    torch.export and through ONNX's older TorchScript-based exporter with a dynamic batch (Shape -> Gather ->
    Concat -> Reshape, whose output size only data propagation knows), and a torchvision ResNet-18."""
    import warnings

    import torch
    import torch.nn.functional as F
    import torchvision

    from mnistkit.artifacts import check_model

    class UserNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)
            self.seq = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Dropout(0.1))
            self.fc = torch.nn.Linear(4 * 13 * 13, 10)

        def forward(self, x):
            x = F.max_pool2d(self.seq(self.bn(self.conv(x))), 2)
            return F.log_softmax(self.fc(x.view(x.size(0), -1)), dim=1)

    net, x = UserNet().eval(), torch.randn(2, 1, 28, 28)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(net).save(str(tmp_path / "scripted.ts"))
        torch.export.save(torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim("N")},)),
                          str(tmp_path / "exported.pt2"))
        torch.onnx.export(net, (x,), str(tmp_path / "legacy.onnx"), dynamo=False, input_names=["input"],
                          dynamic_axes={"input": {0: "batch"}})
        resnet = torchvision.models.resnet18(num_classes=10)
        resnet.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
        torch.onnx.export(resnet.eval(), (x,), str(tmp_path / "resnet18.onnx"), dynamo=False, input_names=["input"],
                          dynamic_axes={"input": {0: "batch"}})
    for name, kind in (("scripted.ts", "torchscript"), ("exported.pt2", "exported-program"), ("legacy.onnx", "onnx"),
                       ("resnet18.onnx", "onnx")):
        assert check_model(tmp_path / name) == kind, name


# ---------------------------------------------------------------------------------------------
# Tensors torch would read out of bounds (found by the fuzz hunt: a .ts with one constant's record emptied passed
# the gate, and running it was a segfault: the process died without a line)


def test_a_storage_shorter_than_its_tensor_is_refused_before_torch_reads_it(lab, tmp_path):
    short = hostile.ts_short_storage(lab["export"] / "model.ts", tmp_path / "short.ts")
    for args in (("predict", short, lab["image"]), ("inspect", short)):
        assert_refused(run(*args, cwd=tmp_path), "refuses to load", "constants.pkl: its tensor storage",
                       "bytes of the", "torch would read past the data")
    payload = hostile.pt2_short_payload(lab["export"] / "model.pt2", tmp_path / "short.pt2")
    assert_refused(run("predict", payload, lab["image"], cwd=tmp_path), "refuses to load", "its payload data/weights/",
                   "holds 0 bytes of the")
    view = hostile.checkpoint_view_past_storage(tmp_path / "view.pt")
    assert_refused(run("inspect", view, cwd=tmp_path), "refuses to load", "data.pkl: a tensor of size [1000]",
                   "of a storage of 4")


def test_the_short_storage_attack_is_real(lab, tmp_path):
    """Without the gate, TorchScript's loader accepts the file and the forward pass segfaults."""
    short = hostile.ts_short_storage(lab["export"] / "model.ts", tmp_path / "short.ts")
    code = "import torch; m = torch.jit.load(__import__('sys').argv[1]); m(torch.zeros(1, 1, 28, 28))"
    done = subprocess.run([sys.executable, "-c", code, str(short)], capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGSEGV, "torch no longer crashes on it: the gate's storage check may be relaxed"
