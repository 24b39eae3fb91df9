import contextlib
import json
import os
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

import mnistkit
from conftest import swap_writer
from mnistkit import AssumptionWarning, ModelSpec
from mnistkit.artifacts import detect_kind
from mnistkit.backends import create_backend
from mnistkit.cli import cli
from mnistkit.data import load_split
from mnistkit.errors import CheckpointError, ExportError, InvalidInputError
from mnistkit.exporter import export_model
from mnistkit.formats import DEFAULT_OPSET, FORMAT_CHOICES, FORMATS, OPSET_RANGE, exportable, tolerance_for
from mnistkit.model import MLP, load_checkpoint, save_checkpoint
from conftest import cli_run

FIXTURES = Path(__file__).parent / "fixtures"
TUTORIAL = FIXTURES / "tutorial_net.py"


def test_format_table_drives_the_cli_choices():
    assert set(FORMAT_CHOICES) == set(exportable()) | {"all"}
    assert set(exportable()) == {n for n, f in FORMATS.items() if f.writer is not None} == set(FORMATS) - {"checkpoint"}
    r = cli_run("export", "--help")
    text = re.sub(r"-\s+", "-", " ".join(r.output.split()))  # click wraps long option help at hyphens
    for name in exportable():
        assert name in text
    r = CliRunner().invoke(cli, ["export", "x.pt", "--format", "onnx,checkpoint"])
    assert r.exit_code == 2 and "unknown format 'checkpoint'" in r.output


def test_all_formats_written_validated_and_described(tiny_export, tiny_ckpt):
    manifest = json.loads((tiny_export / "manifest.json").read_text())
    assert manifest["format"] == "mnistkit-manifest"
    files = {a["format"]: a for a in manifest["artifacts"]}
    assert set(files) == set(exportable())
    for fmt, entry in files.items():
        path = tiny_export / entry["file"]
        assert path.exists() and entry["bytes"] == path.stat().st_size
        assert detect_kind(path) == FORMATS[fmt].kind
        # float formats agree on every image; int8 and fp16 by their tolerance (their kernels, and so a near-tie's
        # answer, differ by CPU: VNNI, AVX-512, AVX2)
        assert entry["validation"]["passed"] is True
        assert entry["validation"]["top1_agreement"] >= tolerance_for(fmt, "cpu").min_agreement
        assert entry["inputs"][0]["dtype"] == ("uint8" if FORMATS[fmt].app else "float32")
    onnx_entry = files["onnx"]
    assert onnx_entry["opset"] == DEFAULT_OPSET and onnx_entry["ir_version"] >= 8
    assert onnx_entry["min_onnxruntime"] == "1.18"
    assert manifest["source"]["sha256"] == mnistkit.model.sha256_file(tiny_ckpt)
    assert manifest["labels"] == list("0123456789") and manifest["preprocess"] == "digits"
    assert set(manifest["versions"]) >= {"torch", "onnx", "onnxruntime", "mnistkit"}
    assert manifest["normalization"] == {"mean": [0.1307], "std": [0.3081]}
    # no leftovers from staging
    assert not [p for p in tiny_export.iterdir() if p.name.startswith(".")]


def test_onnx_is_one_self_contained_file_with_metadata(tiny_export):
    path = tiny_export / "model.onnx"
    assert not (tiny_export / "model.onnx.data").exists()
    model = onnx.load(str(path))
    assert all(not t.HasField("data_location") or t.data_location == 0 for t in model.graph.initializer)
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["labels"]) == list("0123456789")
    assert json.loads(props["normalization"]) == {"mean": [0.1307], "std": [0.3081]}
    assert props["preprocess"] == "digits" and props["dataset"] == "mnist"
    assert props["mnistkit_version"] == mnistkit.__version__
    assert len(props["source_sha256"]) == 64 and float(props["test_accuracy"]) > 0
    assert json.loads(props["input"])["layout"] == "NCHW"
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.HasField("dim_value")  # a dynamic batch axis


def test_app_variant_contract_and_same_logits(tiny_export, tiny_data):
    model = onnx.load(str(tiny_export / "model-app.onnx"))
    inp = model.graph.input[0].type.tensor_type
    assert model.graph.input[0].name == "pixels" and inp.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in inp.shape.dim][1:] == [28, 28]
    assert [o.name for o in model.graph.output] == ["logits", "probabilities"]
    import onnxruntime as ort

    images = load_split("mnist", "test", tiny_data).images
    app = ort.InferenceSession(str(tiny_export / "model-app.onnx"), providers=["CPUExecutionProvider"])
    logits, probs = app.run(None, {"pixels": images})
    with create_backend(tiny_export / "model.onnx") as b:
        float_logits = b.run(images)
    np.testing.assert_allclose(logits, float_logits, atol=1e-5, rtol=0)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(1, keepdims=True), atol=1e-6)


@pytest.mark.parametrize("batch", [1, 3, 64, 1000])
def test_onnx_dynamic_batch_against_pytorch(tiny_export, tiny_ckpt, batch):
    rng = np.random.default_rng(batch)
    x = rng.integers(0, 256, (batch, 28, 28), dtype=np.uint8)
    with create_backend(tiny_ckpt) as ref, create_backend(tiny_export / "model.onnx") as ort_b, \
            create_backend(tiny_export / "model-app.onnx") as app:
        expected = ref.run(x)
        for b in (ort_b, app):
            out = b.run(x)
            assert out.shape == (batch, 10)
            np.testing.assert_allclose(out, expected, atol=tolerance_for("onnx", "cpu").max_abs, rtol=0)


def test_reference_evaluator_agrees_with_onnxruntime(tiny_export):
    x = np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    for name in ("model.onnx", "model-app.onnx"):
        with create_backend(tiny_export / name, "onnx-reference") as ref, create_backend(tiny_export / name) as rt:
            np.testing.assert_allclose(ref.run(x), rt.run(x), atol=1e-5, rtol=0)


def test_torchscript_and_exported_program_carry_metadata(tiny_export):
    for name in ("model.ts", "model.pt2"):
        with zipfile.ZipFile(tiny_export / name) as zf:
            meta_name = next(n for n in zf.namelist() if n.endswith("extra/mnistkit.json"))
            meta = json.loads(zf.read(meta_name))
        assert meta["labels"] == list("0123456789") and meta["preprocess"] == "digits"


def test_exported_program_wrong_shape_is_a_clear_error(tiny_export):
    from mnistkit.errors import InvalidInputError as IIE

    with create_backend(tiny_export / "model.pt2") as b:
        with pytest.raises(IIE, match=r"expected uint8 pixels \[N,28,28\] or normalized float32 \[N,1,28,28\]"):
            b.run(np.zeros((2, 1, 32, 32), np.float32))
        # even a direct call of the program's module with a bad shape is translated
        with pytest.raises(IIE, match=r"takes float32 \[N,1,28,28\] with N >= 1; got float32 \[2, 3, 28, 28\]") as info:
            b._infer(np.zeros((2, 3, 28, 28), np.float32))
        assert "Guard failed" not in str(info.value)


def test_python_api_exports_any_module(tmp_path, tiny_data):
    from fixtures.tutorial_net import NeuralNetwork

    torch.manual_seed(0)
    with pytest.warns(AssumptionWarning) as said:
        result = mnistkit.export(NeuralNetwork(), formats=["onnx", "exported-program"], out_dir=tmp_path,
                                 labels=[f"c{i}" for i in range(10)])
    assert {str(w.message).split(":")[0] for w in said} == {"normalization", "validating on random images"}
    assert result.passed and {a["format"] for a in result.artifacts} == {"onnx", "exported-program"}
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["labels"][0] == "c0" and manifest["normalization"] == {"mean": [0.0], "std": [1.0]}
    assert manifest["source"]["kind"] == "module"
    assert result.validation[0].data == "random images"  # the module names no dataset


def test_a_model_spec_is_one_value_and_its_fields_are_keywords_of_the_python_api():
    """ModelSpec carries the model's description through export, verify and bench; `mnistkit.export` also takes
    its fields as keywords, which win over a spec given beside them."""
    spec = ModelSpec(model_class="a.py:Net", mean=0.5)
    given, rest = ModelSpec.split({"labels": ["a"], "mean": 0.1, "opset": 17})
    assert given == ModelSpec(labels=["a"], mean=0.1) and rest == {"opset": 17}
    assert given.over(spec) == ModelSpec(model_class="a.py:Net", labels=["a"], mean=0.1)
    assert spec.with_options(recipe="image", dataset=None) == ModelSpec(model_class="a.py:Net", mean=0.5, recipe="image")
    assert ModelSpec.split({"opset": 17}) == (None, {"opset": 17})


def test_the_python_api_takes_a_spec_and_keywords_beside_it(tmp_path):
    from fixtures.tutorial_net import Net

    torch.save(Net().state_dict(), tmp_path / "sd.pt")
    spec = ModelSpec(model_class=f"{TUTORIAL}:Net", labels=tuple("abcdefghij"), mean=0.2, std=0.4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AssumptionWarning)  # what it assumes is another test's
        r = mnistkit.export(tmp_path / "sd.pt", ["onnx"], tmp_path / "o", spec, std=0.5, validate=False)
    manifest = json.loads(r.manifest.read_text())
    assert manifest["labels"] == list("abcdefghij") and manifest["source"]["model_class"].endswith("tutorial_net.py:Net")
    assert manifest["normalization"] == {"mean": [0.2], "std": [0.5]}  # the keyword won over the spec's std


def test_model_class_from_a_package_module(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))
    torch.save(__import__("tutorial_net").NeuralNetwork().state_dict(), tmp_path / "model.pth")
    with pytest.warns(AssumptionWarning) as said:
        result = export_model(tmp_path / "model.pth", "onnx", out_dir=tmp_path / "o",
                              spec=ModelSpec(model_class="tutorial_net:NeuralNetwork"))
    assert {str(w.message).split(":")[0] for w in said} == {"normalization", "validating on random images"}
    assert result.passed


@pytest.mark.parametrize(
    "model_class, fragment",
    [
        (f"{TUTORIAL}:NeuralNetwork", "does not fit NeuralNetwork: missing linear_relu_stack.0.weight"),
        (f"{TUTORIAL}:Missing", "defines no class or function 'Missing'"),
        ("no_such_module_xyz:Net", "importing no_such_module_xyz failed"),
        ("nocolon", "expected FILE.py:Class"),
        (f"{FIXTURES}/absent.py:Net", "is not a file"),
    ],
)
def test_bad_model_classes(tmp_path, model_class, fragment):
    from fixtures.tutorial_net import Net

    torch.save(Net().state_dict(), tmp_path / "sd.pt")
    with pytest.raises((InvalidInputError, CheckpointError), match=fragment):
        export_model(tmp_path / "sd.pt", "onnx", out_dir=tmp_path / "o", spec=ModelSpec(model_class=model_class))


def test_shape_mismatch_names_the_tensor(tmp_path):
    sd = MLP().state_dict()
    sd["layers.0.weight"] = torch.zeros(256, 100)
    torch.save(sd, tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match=r"shape layers\.0\.weight \[256, 100\] vs model \[256, 784\]"):
        export_model(tmp_path / "sd.pt", "onnx", out_dir=tmp_path / "o", spec=ModelSpec(model_class="mnistkit.model:MLP"))


def test_module_with_wrong_output_contract(tmp_path):
    from fixtures.tutorial_net import WrongOutput

    with pytest.raises(InvalidInputError, match=r"maps \[N,1,28,28\] to \[1, 2, 10\]; expected \[N,C\] logits"), \
            pytest.warns(AssumptionWarning, match="pixels / 255"):
        mnistkit.export(WrongOutput(), out_dir=tmp_path)


def test_opset_is_checked_after_export(tmp_path, tiny_ckpt, monkeypatch):
    r = export_model(tiny_ckpt, "onnx", out_dir=tmp_path / "a", opset=17, validate=False)
    assert r.artifacts[0]["opset"] == 17
    model = onnx.load(str(tmp_path / "a" / "model.onnx"))
    assert [o.version for o in model.opset_import if o.domain == ""] == [17]

    real_load = onnx.load

    def wrong_opset_load(*a, **k):  # simulate the exporter silently writing opset 18
        m = real_load(*a, **k)
        for o in m.opset_import:
            if o.domain == "":
                o.version = 18
        return m

    monkeypatch.setattr(onnx, "load", wrong_opset_load)
    with pytest.raises(ExportError, match=r"--opset 20: the exporter wrote opset 18 instead; supported range 17-26"):
        export_model(tiny_ckpt, "onnx", out_dir=tmp_path / "b", opset=20, validate=False)
    assert not (tmp_path / "b" / "model.onnx").exists()


@pytest.mark.parametrize("opset", [OPSET_RANGE[0] - 1, OPSET_RANGE[1] + 1, 7, 30])
def test_opset_outside_the_range(tmp_path, tiny_ckpt, opset):
    with pytest.raises(InvalidInputError, match=f"supported range is {OPSET_RANGE[0]}-{OPSET_RANGE[1]}"):
        export_model(tiny_ckpt, "onnx", out_dir=tmp_path, opset=opset)
    r = cli_run("export", tiny_ckpt, "--opset", opset, "--out-dir", tmp_path)
    assert r.exit_code == 2 and "17<=x<=26" in r.output


@pytest.mark.parametrize("failure", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_export_leaves_nothing_half_written(tmp_path, tiny_ckpt, monkeypatch, failure):
    out = tmp_path / "out"

    def broken(src, fmt, tmp, ctx):
        tmp.write_bytes(b"partial")
        raise failure

    swap_writer(monkeypatch, "exported-program", broken)
    with pytest.raises(type(failure)):
        export_model(tiny_ckpt, "all", out_dir=out, validate=False)
    # onnx was written first, but nothing reached its final name: no folder, no staging left beside it
    assert list(tmp_path.iterdir()) == []


def test_failing_validation_keeps_passing_artifacts_and_lists_all_failures(tmp_path, tiny_ckpt, tiny_data, monkeypatch):
    """Two of four formats fail validation (a float, an app variant and a torch archive pass): every failure is
    listed in the last line, the passing artifacts are kept and in the manifest, the failing ones never written."""
    from mnistkit.compare import Tolerance

    import mnistkit.validate

    real = mnistkit.validate.tolerance_for
    monkeypatch.setattr(mnistkit.validate, "tolerance_for",
                        lambda fmt, device: Tolerance(-1.0) if fmt in ("onnx", "torchscript") else real(fmt, device))
    formats = ["onnx", "onnx-app", "torchscript", "exported-program"]
    r = cli_run("export", tiny_ckpt, "--format", ",".join(formats), "--out-dir", tmp_path, "--data-dir", tiny_data)
    assert r.exit_code == 1
    assert "✗ onnx " in r.output and "✗ torchscript" in r.output and "✓ onnx-app" in r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith(f"error: validation failed for 2 of {len(formats)} artifacts: onnx (")
    assert "torchscript (" in last
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {a["format"] for a in manifest["artifacts"]} == {"onnx-app", "exported-program"}
    assert not (tmp_path / "model.onnx").exists() and not (tmp_path / "model.ts").exists()


def test_manifest_merges_later_exports_of_the_same_source(tmp_path, tiny_ckpt):
    export_model(tiny_ckpt, "onnx", out_dir=tmp_path, validate=False)
    export_model(tiny_ckpt, "torchscript", out_dir=tmp_path, validate=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [a["format"] for a in manifest["artifacts"]] == ["onnx", "torchscript"]


def test_export_json_and_default_out_dir(tmp_path, tiny_ckpt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["export", str(tiny_ckpt), "--json", "--no-validate"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["validation"] == [] and obj["artifacts"][0]["format"] == "onnx"
    assert Path(obj["artifacts"][0]["path"]) == Path("models") / Path(tiny_ckpt).stem / "model.onnx"
    assert (tmp_path / obj["artifacts"][0]["path"]).exists()
    assert set(obj["artifacts"][0]) >= {"format", "path", "sha256", "bytes"}


def test_missing_out_dir_is_created_when_its_parent_exists(tmp_path, tiny_ckpt):
    export_model(tiny_ckpt, "onnx", out_dir=tmp_path / "new", validate=False)
    assert (tmp_path / "new" / "model.onnx").exists()
    with pytest.raises(InvalidInputError, match="parent directory .* does not exist"):
        export_model(tiny_ckpt, "onnx", out_dir=tmp_path / "a" / "b", validate=False)


@pytest.mark.parametrize("where", ["/proc", "/proc/mnistkit-new"])
def test_unwritable_out_dir(tiny_ckpt, where):
    # /proc refuses new files even to root, where permission bits would not
    r = cli_run("export", tiny_ckpt, "--out-dir", where)
    assert r.exit_code == 1 and ("not writable" in r.output or "cannot create" in r.output), r.output
    assert "internal error" not in r.output


def test_out_dir_that_is_a_file(tmp_path, tiny_ckpt):
    (tmp_path / "f").write_text("x")
    r = cli_run("export", tiny_ckpt, "--out-dir", tmp_path / "f")
    assert r.exit_code in (1, 2) and "internal error" not in r.output


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"\x80\x02garbage"), "not a pickle the gate can check to its end"),
        (lambda p: torch.save(MLP().state_dict(), p),
         "bare state_dict; name the class it was saved from with --model-class your_script.py:Net"),
        (lambda p: torch.save({"weights": [1, 2]}, p), "not a mnistkit checkpoint"),
    ],
)
def test_bad_checkpoints_exit_1_with_one_line(tmp_path, make, fragment):
    p = tmp_path / "ckpt.pt"
    make(p)
    r = cli_run("export", p, "--out-dir", tmp_path / "out")
    assert r.exit_code == 1, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0] and "internal error" not in r.output
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_truncated_checkpoint(tmp_path, tiny_ckpt):
    p = tmp_path / "t.pt"
    p.write_bytes(Path(tiny_ckpt).read_bytes()[:5000])
    r = cli_run("export", p, "--out-dir", tmp_path / "o")
    assert r.exit_code == 1 and "corrupt or truncated" in r.output


def test_unknown_format_is_a_usage_error(tiny_ckpt, tmp_path):
    r = cli_run("export", tiny_ckpt, "--format", "tflite", "--out-dir", tmp_path)
    assert r.exit_code == 2 and "tflite" in r.output


def test_torchscript_deprecation_said_in_one_line(tiny_ckpt, tmp_path):
    r = CliRunner().invoke(cli, ["export", str(tiny_ckpt), "--format", "torchscript", "--out-dir", str(tmp_path),
                                 "--no-validate"], catch_exceptions=False)
    assert r.exit_code == 0
    assert r.stderr.count("deprecated") == 1 and "FutureWarning" not in r.output


def test_cnn_exports_every_format(tiny_cnn_export):
    manifest = json.loads((tiny_cnn_export / "manifest.json").read_text())
    assert [a["format"] for a in manifest["artifacts"]] == exportable()
    assert all(a["validation"]["passed"] and (tiny_cnn_export / a["file"]).is_file() for a in manifest["artifacts"])
    assert {a["validation"]["images"] for a in manifest["artifacts"]} == {128}  # the tiny test split, every image


def test_checkpoint_metadata_survives_into_artifacts(tiny_export, tiny_ckpt):
    meta = load_checkpoint(tiny_ckpt).meta
    with create_backend(tiny_export / "model-app.onnx") as b:
        assert b.info.labels == meta["labels"] and b.info.recipe == meta["preprocess"]
        assert b.info.mean == pytest.approx(0.1307) and b.info.input_form == "uint8"


@pytest.mark.realdata
def test_fashion_onnx_matches_pytorch_on_the_full_test_set(fashion_export, fashion_ckpt):
    """Done-when of the Export issue: <= 1e-4 max abs, 100 % top-1 on all 10,000 images, < 1.2 MB."""
    split = load_split("fashion-mnist", "test")
    assert len(split) == 10000
    with create_backend(fashion_ckpt) as ref, create_backend(fashion_export / "model.onnx") as rt:
        expected, got = ref.run(split.images), rt.run(split.images)
    assert np.abs(expected - got).max() <= tolerance_for("onnx", "cpu").max_abs == 1e-4  # the promise
    assert (expected.argmax(1) == got.argmax(1)).all()
    assert (fashion_export / "model.onnx").stat().st_size < 1.2e6
    with create_backend(fashion_export / "model.onnx", "onnx-reference") as ref_eval:
        np.testing.assert_allclose(ref_eval.run(split.images[:500]), got[:500], atol=1e-4, rtol=0)


def test_saved_checkpoint_without_dataset_validates_on_random_images(tmp_path):
    save_checkpoint(tmp_path / "c.pt", MLP().state_dict(), {"arch": "mlp", "arch_args": {"num_classes": 10},
                                                            "labels": list("0123456789")})
    messages = []
    with pytest.warns(AssumptionWarning, match="random images"):
        r = export_model(tmp_path / "c.pt", "onnx", out_dir=tmp_path / "o", log=messages.append)
    assert r.passed and r.validation[0].data == "random images"
    assert any("random images" in m for m in messages)


def test_an_export_with_the_app_format_writes_the_app_bundle(tmp_path, tiny_ckpt):
    """app/ (what the Node and browser examples embed) comes with onnx-app, not only with --format all."""
    export_model(tiny_ckpt, "onnx-app", out_dir=tmp_path / "app-only", validate=False)
    assert sorted(os.listdir(tmp_path / "app-only" / "app")) == ["README.md", "labels.json", "model.onnx"]
    export_model(tiny_ckpt, "onnx", out_dir=tmp_path / "float-only", validate=False)
    assert not (tmp_path / "float-only" / "app").exists()


NORMALIZED_SCRIPT = '''
import torch.nn as nn
from torchvision import datasets, transforms

transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


if __name__ == "__main__":
    train_set = datasets.MNIST("data", train=True, download=True, transform=transform)
'''


def _user_module(folder, text, name):
    import importlib.util

    (folder / f"{name}.py").write_text(text)
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    return module.Net()


def test_the_python_api_reads_the_script_of_a_live_module_as_the_cli_reads_a_class_file(tmp_path, mnist_sample_dir):
    """Issue 23: `mnistkit.export(module)` on a model trained with Normalize((0.5,), (0.5,)) recorded pixels / 255
    and validated on random images, silently. The module's own script says both, as a --model-class file does."""
    import shutil
    import warnings

    shutil.copytree(mnist_sample_dir, tmp_path / "data" / "MNIST" / "raw")  # torchvision's layout, as the script has
    net = _user_module(tmp_path, NORMALIZED_SCRIPT, "normalized_user_script")
    with warnings.catch_warnings():
        warnings.simplefilter("error", mnistkit.AssumptionWarning)  # nothing is assumed: it would raise
        with contextlib.chdir(tmp_path):
            result = mnistkit.export(net, formats=["onnx"], out_dir=tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["normalization"] == {"mean": [0.5], "std": [0.5]} and manifest["dataset"] == "mnist"
    assert result.passed and result.validation[0].data == "mnist test images"


def test_the_python_api_warns_what_it_assumes_and_a_caller_can_make_it_an_error(tmp_path):
    import warnings

    net = _user_module(tmp_path, NORMALIZED_SCRIPT.replace(", transforms.Normalize((0.5,), (0.5,))", "")
                       .replace("datasets.MNIST", "datasets.FakeData"), "plain_user_script")
    with pytest.warns(AssumptionWarning) as caught:
        mnistkit.export(net, formats=["onnx"], out_dir=tmp_path / "a")
    said = [str(w.message) for w in caught if issubclass(w.category, mnistkit.AssumptionWarning)]
    assert any("pixels / 255" in m and "plain_user_script.py" in m and "mean=/std=" in m for m in said)
    assert any("validating on random images" in m for m in said)
    assert caught[0].filename == __file__  # points at the caller's line, not at mnistkit's insides
    with warnings.catch_warnings():
        warnings.simplefilter("error", mnistkit.AssumptionWarning)
        with pytest.raises(mnistkit.AssumptionWarning, match="pixels / 255"):
            mnistkit.export(net, formats=["onnx"], out_dir=tmp_path / "b")
    assert not (tmp_path / "b").exists()  # stopped before anything was written
