"""CLI behaviour common to every command: help, usage errors, user errors, --json."""

import json
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from mnistkit.cli import DATASET_NAMES, cli
from mnistkit.data import DATASETS
from conftest import cli_run as run


def test_dataset_choices_match_the_data_module():
    assert set(DATASET_NAMES) == set(DATASETS)


def test_help_is_fast_and_imports_no_torch():
    code = (
        "import sys, time; t=time.perf_counter();"
        "from mnistkit.cli import cli;"
        "import click.testing as ct; r=ct.CliRunner().invoke(cli, ['--help']);"
        "assert r.exit_code == 0, r.output; "
        "print(time.perf_counter()-t, 'torch' in sys.modules, 'onnxruntime' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1] == "False" and out[2] == "False"
    assert float(out[0]) < 1.0


def test_console_script_help():
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "mnistkit", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "train" in r.stdout and "export" in r.stdout
    assert time.perf_counter() - t < 5  # generous: subprocess start-up on a loaded CI box


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--epochs", "0"],
        ["train", "--batch-size", "0"],
        ["train", "--lr", "0"],
        ["train", "--lr", "-1"],
        ["train", "--model", "resnet"],
        ["train", "--dataset", "cifar"],
        ["train", "--no-such-flag"],
        ["no-such-command"],
    ],
)
def test_usage_errors_exit_2(args):
    r = run(*args)
    assert r.exit_code == 2, r.output


def test_user_error_exits_1_with_one_line_and_no_traceback(tmp_path):
    r = run("train", "--data-dir", tmp_path / "absent", "--epochs", "1")
    assert r.exit_code == 1
    assert "internal error" not in r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "no such directory" in lines[0]


def test_unwritable_out_path(tiny_data, tmp_path):
    r = run("train", "--data-dir", tiny_data, "--epochs", "1", "--out", tmp_path / "missing" / "dir" / "m.pt")
    assert r.exit_code == 1 and "does not exist" in r.output


def test_train_json(tiny_data, tmp_path):
    r = CliRunner().invoke(cli, ["train", "--data-dir", str(tiny_data), "--epochs", "2", "--out",
                                 str(tmp_path / "m.pt"), "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["checkpoint"] == str(tmp_path / "m.pt") and obj["epochs"] == 2
    assert obj["dataset"] == "mnist" and obj["model"] == "mlp"
    assert 0 <= obj["test_accuracy"] <= 1 and obj["seconds_per_epoch"] > 0
    assert len(obj["history"]) == 2


def test_train_json_in_a_real_subprocess_has_clean_stdout(tiny_data, tmp_path):
    r = subprocess.run([sys.executable, "-m", "mnistkit", "train", "--data-dir", str(tiny_data), "--epochs", "1",
                        "--out", str(tmp_path / "m.pt"), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["epochs"] == 1


def test_train_human_output(tiny_data, tmp_path):
    r = run("train", "--data-dir", tiny_data, "--epochs", "1", "--out", tmp_path / "m.pt")
    assert r.exit_code == 0 and "test accuracy" in r.output and str(tmp_path / "m.pt") in r.output


BLOCK_TORCH = (
    "import sys, importlib.abc\n"
    "class Block(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'torchvision'):\n"
    "            raise ImportError(f'No module named {name!r}')\n"
    "sys.meta_path.insert(0, Block())\n"
    "from mnistkit.cli import main\n"
    "sys.argv = ['mnistkit'] + sys.argv[1:]\n"
    "main()\n"
)


@pytest.mark.parametrize("args", [["train", "--epochs", "1"], ["export", "x.pt"], ["verify", "x.pt"], ["demo"]])
def test_commands_that_need_torch_say_so_in_one_line(args, tmp_path):
    r = subprocess.run([sys.executable, "-c", BLOCK_TORCH, *args], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs torch" in lines[0] and "pip install 'mnistkit[torch]'" in lines[0]
    assert r.stdout == ""


def test_core_commands_work_without_torch(tiny_export, tmp_path):
    r = subprocess.run([sys.executable, "-c", BLOCK_TORCH, "inspect", str(tiny_export / "model.onnx"), "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["labels"] == list("0123456789")


def json_commands() -> set[str]:
    return {name for name, cmd in cli.commands.items() if any(p.name == "as_json" for p in cmd.params)}


def test_every_json_command_prints_exactly_one_json_object(json_command_runs):
    """Each command with --json, run as a real process (conftest.json_command_runs, made beside the tests): stdout
    parses as one JSON object, whatever the libraries (torch.onnx, onnxruntime, preload_dlls) print on the way."""
    runs, waves, done = json_command_runs
    assert set(runs) == json_commands(), "a command with --json is missing from conftest._json_commands"
    assert sorted(n for wave in waves for n in wave) == sorted(runs)
    for wave in waves:
        for name in wave:
            assert name in done, f"{name}: not run (a process of the wave before it failed)"
            r = done[name]
            assert r.returncode in ((0, 1) if name == "doctor" else (0,)), f"{name}: {r.stderr[-500:]}"
            obj = json.loads(r.stdout)  # exactly one object: json.loads refuses anything before or after it
            assert isinstance(obj, dict) and obj, f"{name}: {r.stdout[:200]}"


def test_the_cli_defaults_are_the_librarys():
    """Each command's option defaults are read from the library it calls, never restated: a default changed in
    the library is the CLI's too."""
    from mnistkit import optimize, predict
    from mnistkit.bench import BenchConfig
    from mnistkit.score import ScoreConfig

    def defaults(command):
        return {p.name: p.default for p in cli.commands[command].params}

    bench = defaults("bench")
    assert (bench["warmup"], bench["min_time"], bench["min_reps"]) == \
        (BenchConfig.warmup, BenchConfig.min_time, BenchConfig.min_reps)
    assert bench["batch_sizes"] == ",".join(map(str, BenchConfig.batch_sizes))
    score = defaults("score")
    assert (score["batch_size"], score["top_k"], score["threads_per_worker"]) == \
        (ScoreConfig.batch_size, ScoreConfig.top_k, ScoreConfig.threads_per_worker)
    assert defaults("predict")["top_k"] == predict.DEFAULT_TOP_K
    opt = defaults("optimize")
    assert opt["batch_sizes"] == ",".join(map(str, optimize.DEFAULT_BATCH_SIZES))
    assert opt["out_dir"] == optimize.DEFAULT_DEPLOY_DIR and opt["budget"] == f"{optimize.DEFAULT_BUDGET:g}s"
    import inspect

    signature = inspect.signature(optimize.optimize).parameters
    assert opt["max_accuracy_drop"] == signature["max_accuracy_drop"].default
    assert signature["out_dir"].default == optimize.DEFAULT_DEPLOY_DIR
    import dataclasses

    from mnistkit.train import TrainConfig

    from mnistkit import demo

    assert defaults("demo") == {"out_dir": demo.DEFAULT_OUT_DIR, "epochs": TrainConfig.epochs}
    train = defaults("train")
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert {k: train[k] for k in fields if k in train and k not in ("out", "data_dir", "threads")} == \
        {k: v for k, v in fields.items() if k in train and k not in ("out", "data_dir", "threads")}
