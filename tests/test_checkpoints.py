"""Checkpoints as people save them (issue 23): a PyTorch Lightning .ckpt, PyTorch's "general checkpoint"
({"model_state_dict": ..., "optimizer_state_dict": ...}), a DataParallel state_dict; constructor arguments from
--model-args or Lightning's hyper_parameters; a factory function instead of a class. Every file goes through the
loading gate and weights_only, as a bare state_dict does."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import FIXTURES, cli_in_process

SCRIPT = FIXTURES / "lit_script.py"


def _net(hidden: int, seed: int = 0):
    import importlib.util

    spec = importlib.util.spec_from_file_location("lit_script_for_tests", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(seed)
    return module, module.Net(hidden=hidden).eval()


def _adam_state(net) -> dict:
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.rand(4, 1, 28, 28)).sum().backward()
    opt.step()
    return opt.state_dict()


def lightning_ckpt(dst, net, hyper_parameters: dict):
    """What Lightning's Trainer.save_checkpoint writes for a LightningModule holding `net` as self.model."""
    torch.save({
        "epoch": 3, "global_step": 2811, "pytorch-lightning_version": "2.5.1",
        "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4, "completed": 3}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {
            "monitor": "val_loss", "best_model_score": torch.tensor(0.21), "dirpath": "/runs/ckpts"}},
        "optimizer_states": [_adam_state(net)], "lr_schedulers": [],
        "hparams_name": "kwargs", "hyper_parameters": hyper_parameters,
    }, dst)
    return dst


def general_ckpt(dst, net):
    """PyTorch's tutorial "Saving & loading a general checkpoint"."""
    torch.save({"epoch": 5, "model_state_dict": net.state_dict(), "optimizer_state_dict": _adam_state(net),
                "loss": 0.31}, dst)
    return dst


def _logits(path, images):
    from mnistkit.backends import create_backend

    with create_backend(path, "onnxruntime", "cpu") as b:
        return b.run(images)


def test_a_lightning_checkpoint_exports_with_its_hyper_parameters_and_verifies(tmp_path, mnist_sample_dir):
    _, net = _net(hidden=32)
    ckpt = lightning_ckpt(tmp_path / "last.ckpt", net, {"hidden": 32, "lr": 1e-3, "batch_size": 64})
    r = cli_in_process("export", ckpt, "--model-class", f"{SCRIPT}:Net",
                       "--format", "onnx,torchscript", "--out-dir", tmp_path / "export", "--data-dir", mnist_sample_dir,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Lightning checkpoint, the state_dict under 'state_dict'" in r.stderr
    assert "prefix 'model.' stripped" in r.stderr and "Net(hidden=32)" in r.stderr  # what was done, said
    source = json.loads((tmp_path / "export" / "manifest.json").read_text())["source"]
    assert source["model_args"] == {"hidden": 32} and source["weights_key"] == "state_dict"
    assert source["model_args_origin"] == "the checkpoint's hyper_parameters"
    images = np.random.default_rng(0).integers(0, 256, (16, 28, 28), dtype=np.uint8)
    with torch.no_grad():
        expected = net(torch.from_numpy(images.astype(np.float32) / 255).unsqueeze(1)).numpy()
    np.testing.assert_allclose(_logits(tmp_path / "export" / "model.onnx", images), expected, atol=1e-5)
    r = cli_in_process("verify", tmp_path / "export", "--backends", "onnxruntime", "--json", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["passed"], r.stdout + r.stderr


def test_a_general_checkpoint_takes_model_args_and_records_them(tmp_path):
    _, net = _net(hidden=48)
    ckpt = general_ckpt(tmp_path / "checkpoint.tar", net)
    r = cli_in_process("export", ckpt, "--model-class", f"{SCRIPT}:Net", "--model-args", '{"hidden": 48}',
                       "--format", "onnx", "--out-dir", tmp_path / "export", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert manifest["source"]["model_args"] == {"hidden": 48}
    assert manifest["source"]["model_args_origin"] == "--model-args"
    assert manifest["source"]["weights_key"] == "model_state_dict"
    images = np.random.default_rng(1).integers(0, 256, (8, 28, 28), dtype=np.uint8)
    with torch.no_grad():
        expected = net(torch.from_numpy(images.astype(np.float32) / 255).unsqueeze(1)).numpy()
    np.testing.assert_allclose(_logits(tmp_path / "export" / "model.onnx", images), expected, atol=1e-5)


def test_built_with_defaults_the_refusal_says_so_and_how_to_pass_arguments(tmp_path):
    _, net = _net(hidden=48)
    ckpt = general_ckpt(tmp_path / "checkpoint.tar", net)
    r = cli_in_process("export", ckpt, "--model-class", f"{SCRIPT}:Net", "--format", "onnx", cwd=tmp_path)
    assert r.returncode == 1
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr
    line = errors[0]
    assert "does not fit Net: shape fc1.weight [48, 784] vs model [64, 784]" in line
    assert "built as Net(), with its defaults" in line and "--model-args '{\"hidden\": ..., \"num_classes\": ...}'" in line


def test_a_data_parallel_state_dict_fits_once_its_prefix_is_stripped(tmp_path):
    _, net = _net(hidden=64)
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "dp.pth")
    r = cli_in_process("export", tmp_path / "dp.pth", "--model-class", f"{SCRIPT}:Net", "--format", "onnx",
                       "--out-dir", tmp_path / "export", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "prefix 'module.' stripped" in r.stderr


def test_a_factory_function_builds_the_model(tmp_path):
    module, _ = _net(hidden=64)
    torch.manual_seed(0)
    model = module.make_model(hidden=20)
    torch.save(model.state_dict(), tmp_path / "seq.pth")
    r = cli_in_process("export", tmp_path / "seq.pth", "--model-class", f"{SCRIPT}:make_model", "--model-args",
                       '{"hidden": 20}', "--format", "onnx", "--out-dir", tmp_path / "export", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "export" / "manifest.json").read_text())["source"]["model_args"] == {"hidden": 20}
    r = cli_in_process("export", tmp_path / "seq.pth", "--model-class", f"{SCRIPT}:not_a_model", cwd=tmp_path)
    assert r.returncode == 1 and "not_a_model() returned a str; expected a torch.nn.Module" in r.stderr


@pytest.mark.parametrize("args, code, fragment", [
    (("--model-args", "[1, 2]"), 2, "expected a JSON object of keyword arguments"),
    (("--model-args", "{hidden: 1}"), 2, "not JSON"),
    (("--model-args", '{"hidden": 1}'), 1, "--model-args goes with --model-class"),
])
def test_model_args_mistakes_are_one_line(tmp_path, tiny_ckpt, args, code, fragment):
    r = cli_in_process("export", tiny_ckpt, *args, "--format", "onnx", "--out-dir", tmp_path / "o", cwd=tmp_path)
    assert r.returncode == code and fragment in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "o").exists()


def test_a_checkpoint_with_no_state_dict_lists_its_keys_and_a_lightning_one_asks_for_the_class(tmp_path):
    torch.save({"epoch": 2, "notes": "run 7", "metrics": {"acc": 0.9}}, tmp_path / "odd.pt")
    r = cli_in_process("export", tmp_path / "odd.pt", "--model-class", f"{SCRIPT}:Net", cwd=tmp_path)
    assert r.returncode == 1
    assert "no state_dict found" in r.stderr and "its keys: epoch, notes, metrics" in r.stderr
    _, net = _net(hidden=32)
    ckpt = lightning_ckpt(tmp_path / "last.ckpt", net, {"hidden": 32})
    r = cli_in_process("export", ckpt, cwd=tmp_path)  # no --model-class: what it is and what to pass
    assert r.returncode == 1
    assert "a Lightning checkpoint (its weights under 'state_dict')" in r.stderr and "--model-class" in r.stderr
