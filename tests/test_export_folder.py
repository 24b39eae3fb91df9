"""An export folder always holds exactly one model's files, each listed in its manifest.

The new folder is built whole beside the old one and swapped in, so after any export (done, failed,
interrupted, killed) the folder is entirely the old export or entirely the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import side_by_side, swap_writer
from mnistkit.errors import ExportError, InvalidInputError
from mnistkit.exporter import export_model
from mnistkit.formats import exportable


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_model(folder: Path, source_sha: str | None = None) -> dict:
    """Every file is listed in the manifest with its sha256 (an artifact's companions, like OpenVINO IR's
    model.bin, in its entry; app/ mirrors onnx-app); one source."""
    manifest = json.loads((folder / "manifest.json").read_text())
    listed = {a["file"]: a["sha256"] for a in manifest["artifacts"]}
    listed.update({c["file"]: c["sha256"] for a in manifest["artifacts"] for c in a.get("companions", [])})
    files = snapshot(folder)
    for name, sha in files.items():
        if name == "manifest.json" or name.startswith("app/"):
            continue
        assert name in listed, f"{name} is in {folder} but not in its manifest"
        assert listed[name] == sha, f"{name} does not match its manifest entry"
    assert set(listed) <= set(files), "the manifest lists a file that is not there"
    if "app/model.onnx" in files:
        assert files["app/model.onnx"] == listed["model-app.onnx"]
        assert json.loads((folder / "app" / "labels.json").read_text())["sha256"] == listed["model-app.onnx"]
    if source_sha:
        assert manifest["source"]["sha256"] == source_sha
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")], "staging left behind"
    return manifest


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def full_export(tmp_path, tiny_export) -> Path:
    """A copy of the tiny MLP's --format all export (with app/)."""
    folder = tmp_path / "export"
    shutil.copytree(tiny_export, folder)
    return folder


def test_reexporting_another_model_with_fewer_formats_replaces_the_folder(full_export, tiny_cnn_ckpt, tiny_ckpt):
    assert_one_model(full_export, sha(tiny_ckpt))
    assert (full_export / "app").is_dir() and (full_export / "model.ts").exists()
    export_model(tiny_cnn_ckpt, "onnx", out_dir=full_export, validate=False)
    assert sorted(os.listdir(full_export)) == ["manifest.json", "model.onnx"]
    assert_one_model(full_export, sha(tiny_cnn_ckpt))


def test_same_model_keeps_its_other_formats(full_export, tiny_ckpt):
    before = snapshot(full_export)
    export_model(tiny_ckpt, "onnx", out_dir=full_export, validate=False)
    manifest = assert_one_model(full_export, sha(tiny_ckpt))
    assert {a["format"] for a in manifest["artifacts"]} == set(exportable())
    after = snapshot(full_export)
    assert {k: v for k, v in after.items() if k != "model.onnx" and k != "manifest.json"} == \
        {k: v for k, v in before.items() if k != "model.onnx" and k != "manifest.json"}


def test_partial_failure_gives_the_new_model_only(full_export, tiny_cnn_ckpt, monkeypatch):
    def broken(src, fmt, tmp, ctx):
        raise ExportError("this format cannot be made here")

    swap_writer(monkeypatch, "torchscript", broken)
    result = export_model(tiny_cnn_ckpt, "onnx,torchscript,exported-program", out_dir=full_export, validate=False,
                          raise_on_failure=False)
    assert not result.passed
    assert sorted(os.listdir(full_export)) == ["manifest.json", "model.onnx", "model.pt2"]
    assert_one_model(full_export, sha(tiny_cnn_ckpt))


def test_total_failure_leaves_the_old_folder_untouched(full_export, tiny_cnn_ckpt, monkeypatch):
    before = snapshot(full_export)

    def broken(src, fmt, tmp, ctx):
        raise ExportError("nothing can be made")

    for name in ("onnx", "torchscript"):
        swap_writer(monkeypatch, name, broken)
    with pytest.raises(ExportError):
        export_model(tiny_cnn_ckpt, "onnx,torchscript", out_dir=full_export, validate=False)
    assert snapshot(full_export) == before
    assert_one_model(full_export)


def test_a_folder_with_the_users_files_is_never_replaced(tmp_path, tiny_ckpt):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    shutil.copy(tiny_ckpt, folder / "ckpt.pt")
    with pytest.raises(InvalidInputError, match=r"holds ckpt.pt, notes.txt, which an export did not write"):
        export_model(folder / "ckpt.pt", "onnx", out_dir=folder, validate=False)
    assert sorted(os.listdir(folder)) == ["ckpt.pt", "notes.txt"]


def test_staging_of_a_killed_export_is_cleaned_up(tmp_path, tiny_ckpt):
    out = tmp_path / "out"
    stale = tmp_path / ".out.export.999999999.abcd"  # a process that no longer exists
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"partial")
    export_model(tiny_ckpt, "onnx", out_dir=out, validate=False)
    assert not stale.exists()
    assert_one_model(out)


# The export runs in a real interpreter whose format writers announce themselves on stderr ("step <format>"): the
# test sends SIGTERM the moment a chosen step begins, so each point lands where it is meant to (inside a native
# converter, between writers) on any machine's speed, and each run ends there instead of running a whole export
# first to time it.
ANNOUNCED_EXPORT = r"""
import sys
from mnistkit.formats import spec
write = spec.FormatSpec.write
def announced(self, *args):
    print("step", self.name, file=sys.stderr, flush=True)
    return write(self, *args)
spec.FormatSpec.write = announced
from mnistkit.cli import main
sys.argv = ["mnistkit", *sys.argv[1:]]
main()
"""


def _export_until(step: str, formats: str, ckpt, out, data) -> tuple[int, str]:
    """`mnistkit export CKPT --format FORMATS` into `out`, sent SIGTERM when `step` begins; (exit code, stderr)."""
    p = subprocess.Popen([sys.executable, "-c", ANNOUNCED_EXPORT, "export", str(ckpt), "--format", formats,
                          "--out-dir", str(out), "--data-dir", str(data)], stderr=subprocess.PIPE, text=True)
    lines = []
    for line in p.stderr:
        lines.append(line)
        if line.strip() == f"step {step}":
            p.send_signal(signal.SIGTERM)
            break
    lines += p.stderr.readlines()
    p.wait(timeout=600)
    return p.returncode, "".join(lines)


# Inside each native converter (PT2E int8 calibration and ExecuTorch's lowering, LiteRT's, OpenVINO's) and between
# two writers, each as the format's own export so the step comes seconds after start-up (the writers' order within
# `--format all` does not change what a signal there meets). Signals at the swap, just before it and just after it
# are tests/test_signals.py's.
STEPS = [("litert", "litert"), ("executorch-int8", "executorch-int8"), ("onnx,torchscript,openvino", "openvino")]


def test_sigterm_at_any_step_leaves_the_old_model(tmp_path, tiny_export, tiny_ckpt, tiny_cnn_ckpt, tiny_data):
    """SIGTERM during a re-export with another model: exit 143, one line, and the old folder whole (each step's
    export in its own folder and process, side by side)."""
    def case(i):
        formats, step = STEPS[i]
        folder = tmp_path / f"export-{i}"
        shutil.copytree(tiny_export, folder)
        before = snapshot(folder)
        code, err = _export_until(step, formats, tiny_cnn_ckpt, folder, tiny_data)
        return step, folder, before, code, err

    for step, folder, before, code, err in side_by_side(case, range(len(STEPS))):
        assert f"step {step}" in err.splitlines(), err  # the step was reached and the signal sent there
        assert "Traceback" not in err
        assert code == 143 and err.strip().splitlines()[-1] == "error: terminated (SIGTERM)", (step, err)
        assert snapshot(folder) == before
        assert_one_model(folder, sha(tiny_ckpt))
