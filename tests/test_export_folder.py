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
import time
from pathlib import Path

import pytest

from conftest import swap_writer
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


def _export_cmd(ckpt, out, data) -> list[str]:
    return [sys.executable, "-m", "mnistkit", "export", str(ckpt), "--format", "all", "--out-dir", str(out),
            "--data-dir", str(data)]


def test_sigterm_at_any_moment_leaves_one_model(tmp_path, tiny_export, tiny_ckpt, tiny_cnn_ckpt, tiny_data):
    """SIGTERM during a re-export with another model: exit 143 and the old folder, or exit 0 and the new."""
    t0 = time.monotonic()
    done = subprocess.run(_export_cmd(tiny_cnn_ckpt, tmp_path / "timing", tiny_data), capture_output=True, timeout=600)
    total = time.monotonic() - t0
    assert done.returncode == 0, done.stderr.decode()
    outcomes = []
    for fraction in (0.35, 0.55, 0.75, 0.9):
        folder = tmp_path / f"at-{fraction}"
        shutil.copytree(tiny_export, folder)
        before = snapshot(folder)
        p = subprocess.Popen(_export_cmd(tiny_cnn_ckpt, folder, tiny_data), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        time.sleep(total * fraction)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=600)
        err = err.decode()
        assert "Traceback" not in err
        if p.returncode in (143, -signal.SIGTERM):
            # 143: mnistkit's handler; -15: the signal came while the interpreter was already shutting
            # down (Python restores the default handlers there), i.e. after the command had finished
            if p.returncode == 143:
                assert err.strip().splitlines()[-1] == "error: terminated (SIGTERM)"
            if snapshot(folder) != before:  # the signal came after the swap: entirely the new export
                assert_one_model(folder, sha(tiny_cnn_ckpt))
            else:
                assert p.returncode == 143
                assert_one_model(folder, sha(tiny_ckpt))
        else:
            assert p.returncode == 0, err
            assert_one_model(folder, sha(tiny_cnn_ckpt))
        outcomes.append(p.returncode)
    assert 143 in outcomes  # at least one signal landed mid-export
