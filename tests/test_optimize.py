"""mnistkit optimize: the plan and its pruning, the gate, the decision rule, the deploy folder, and using it
(predict with a deploy folder, mnistkit.load). The search itself runs once, through the CLI, on the real
Fashion-MNIST MLP export (its full test split is the gate), with the shortest budget."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

import mnistkit
from mnistkit.backends import BACKENDS
from mnistkit.errors import InvalidInputError
from mnistkit.formats import FORMATS, tolerance_for
from mnistkit.deploy import deploy_choice, read_deploy
from mnistkit.optimize.candidates import PRUNE_REASONS, Candidate, plan_candidates
from mnistkit.optimize.decide import MAX_NOISE, MIN_NOISE, choose, noise_band
from mnistkit.optimize.folders import export_folder
from mnistkit.optimize.qualify import qualify
from mnistkit.optimize.report import pareto
from mnistkit.plan import expand
from conftest import cli_run as run_cli


@pytest.fixture(scope="module")
def deployed(fashion_deploy):
    """`mnistkit optimize` on the Fashion-MNIST MLP export (conftest's fashion_deploy, made beside the tests):
    (deploy folder, its --json output)."""
    out, r = fashion_deploy
    assert r.returncode == 0, r.stderr[-3000:]
    return out, json.loads(r.stdout)


def test_the_deploy_folder_holds_the_choice_its_files_and_the_report(deployed, fashion_export):
    out, result = deployed
    assert json.loads((out / "deploy.json").read_text()) == result
    assert set(result["choices"]) == {"1", "64"}
    s = result["search"]
    assert s["test_images"] == 10_000 and s["passed_gate"] > 10 and s["pruned"] > 0
    listed = json.loads((out / "manifest.json").read_text())
    for c in result["choices"].values():
        f = out / c["file"]
        assert hashlib.sha256(f.read_bytes()).hexdigest() == c["sha256"]
        assert c["file"] in {a["file"] for a in listed["artifacts"]}
        assert c["vs_fastest"] <= 1 + MAX_NOISE  # the promise: within 1.05x of the fastest measured
        assert MIN_NOISE <= c["noise"] <= MAX_NOISE
        assert c["runner_up"] is not None and c["runner_up"]["label"] != c["label"]
        assert c["runner_up"]["ratio"] >= 1 - c["noise"]
        # Every runtime's defaults are either timed or said not to be, with the reason. Which: it depends on the CPU
        # (OpenVINO's compute in bf16 where the CPU has AVX-512-BF16 or AMX, judged then by bf16's tolerance; ncnn's
        # store activations in fp16); ONNX Runtime's are fp32 on every x86-64 CPU. Both OpenVINO branches run on any
        # CPU in test_a_runtime_default_is_judged_by_what_it_computes_in_on_this_cpu.
        timed = {d["name"] for d in c["defaults"]}
        said = {note.split(":")[0]: note for note in s["defaults_not_timed"]}
        assert timed | set(said) == {f"{b.label} defaults" for b in BACKENDS.values() if b.defaults_format}
        assert not timed & set(said) and "ONNX Runtime defaults" in timed
        assert all("differ from PyTorch" in n or "not installed" in n for n in said.values()), said
        assert all(d["p50_ms"] > 0 for d in c["defaults"])
        assert abs(c["accuracy"] - s["reference_accuracy"] - c["accuracy_delta"]) < 1e-9
        assert -c["accuracy_delta"] * 100 <= 0.3
        assert c["checked_run_p50_ms"] > 0
    # every file of the folder: the chosen artifacts (with companions), and what describes them
    names = {p.name for p in out.iterdir()}
    assert names == set(result["files"]) | {"deploy.json", "manifest.json", "candidates.json", "report.md",
                                            "tradeoff.png"}
    report = (out / "report.md").read_text()
    for heading in ("## Choices", "## Against each runtime's defaults", "## Every candidate", "## Pruned"):
        assert heading in report
    assert PRUNE_REASONS["fp16"] in report and "![latency vs accuracy](tradeoff.png)" in report
    assert (out / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = json.loads((out / "candidates.json").read_text())
    assert len(table["candidates"]) == s["passed_gate"]
    assert all(set(c["screen"]) == {"1", "64"} for c in table["candidates"])


def test_load_and_predict_run_the_choice(deployed, fashion_export, fashion_dir, tmp_path):
    out, result = deployed
    from mnistkit.data import load_split

    images = load_split("fashion-mnist", "test", fashion_dir).images[:70]
    for batch, images_in in ((1, images[:3]), (64, images)):
        c = result["choices"][str(batch)]
        with mnistkit.load(out, batch_size=batch) as m:
            assert (m.name, m.threads, m.path.name) == (c["backend"], c["threads"], c["file"])
            assert {k: m.options[k] for k in c["options"]} == c["options"]
            labels = m.run(images_in).argmax(1)
        with mnistkit.load(fashion_export / "model.onnx") as ref:
            assert (labels == ref.run(images_in).argmax(1)).mean() >= 0.98  # int8 choices may differ on a few
        npy = tmp_path / f"x{batch}.npy"
        np.save(npy, images_in)
        r = run_cli("predict", "--deploy", str(out), str(npy), "--json")
        assert r.exit_code == 0, r.output
        got = json.loads(r.stdout)
        assert got["deployment"]["batch_size"] == batch and got["deployment"]["label"] == c["label"]
        assert [p["index"] for p in got["predictions"]] == labels.tolist()
        r = run_cli("predict", str(out), str(npy), "--json")  # the folder as MODEL
        assert [p["index"] for p in json.loads(r.stdout)["predictions"]] == labels.tolist()


def test_a_runtime_default_is_judged_by_what_it_computes_in_on_this_cpu(tiny_export, tiny_data):
    """On a CPU with AVX-512-BF16 or AMX, OpenVINO's defaults run float models in bf16 (~0.1 off PyTorch): they are
    judged by bf16's tolerance and timed; on a CPU without bf16 the same logits would mean a broken runtime and are
    not timed. Both branches on any CPU: the real default call, its logits rounded to bf16's 8-bit mantissa as a
    bf16 CPU returns them, judged once as that CPU's default (bf16) and once as an AVX2 CPU's (fp32)."""
    import dataclasses

    from mnistkit.data import load_split
    from mnistkit.optimize.defaults import gate_defaults, runtime_defaults

    defaults, notes = runtime_defaults(tiny_export, {"model.onnx", "model.xml"})
    assert {d.name for d in defaults} == {"ONNX Runtime defaults", "OpenVINO defaults"}
    split = load_split("mnist", "test", tiny_data)
    with mnistkit.load(tiny_export / "model.onnx") as b:
        reference = b.run(split.images)

    def bf16(make):
        def make_bf16(x):
            call = make(x)
            return lambda: (np.asarray(call(), np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32)
        return make_bf16

    for cpu, kept_names in (("bf16", {"ONNX Runtime defaults", "OpenVINO defaults"}), ("fp32", {"ONNX Runtime defaults"})):
        as_cpu = [dataclasses.replace(d, make=bf16(d.make), precision=cpu) if d.backend == "openvino" else d
                  for d in defaults]
        said: list[str] = []
        kept = gate_defaults(as_cpu, tiny_export, split.images, reference, said, split.labels)
        assert {d.name for d in kept} == kept_names, said
        if cpu == "fp32":
            assert any(n.startswith("OpenVINO defaults: not timed, its answers differ from PyTorch's") for n in said)


def test_deploy_choice_picks_the_nearest_batch_size_on_a_log_scale():
    obj = {"choices": {"1": {"n": 1}, "64": {"n": 64}, "1024": {"n": 1024}}}
    assert [deploy_choice(obj, b)[0] for b in (1, 5, 8, 9, 63, 200, 256, 257, 5000)] == \
        [1, 1, 64, 64, 64, 64, 1024, 1024, 1024]
    assert deploy_choice(obj, None)[0] == 1024
    with pytest.raises(InvalidInputError):
        deploy_choice(obj, 0)


def _cand(backend="onnxruntime", threads=1, fmt="onnx", options=()):
    return Candidate(f"{fmt}.x", fmt, "onnx", backend, threads, options)


def test_the_simplest_candidate_within_noise_is_chosen_and_the_rule_is_deterministic():
    fp32_2 = _cand(threads=2)
    int8_1 = _cand(fmt="onnx-int8")
    fp32_1 = _cand()
    litert = _cand(backend="litert")
    spin = _cand(threads=2, options=(("spinning", False),))
    # int8 is 2 % faster: within a 3 % band, fp32 (simpler) wins; fewer threads beat more
    assert choose([(int8_1, 98.0), (fp32_2, 100.0), (fp32_1, 100.5)], 0.03)[0] == 2
    # outside the band the fastest wins
    assert choose([(int8_1, 90.0), (fp32_2, 100.0), (fp32_1, 100.5)], 0.03)[0] == 0
    # the core install (ONNX Runtime) before another runtime; default options before changed ones
    assert choose([(litert, 99.0), (fp32_1, 100.0)], 0.02)[0] == 1
    assert choose([(spin, 99.0), (fp32_2, 100.0)], 0.02)[0] == 1
    timed = [(litert, 99.0), (fp32_1, 100.0), (int8_1, 97.0)]
    assert choose(timed, 0.02) == choose(list(timed), 0.02)


def test_noise_band_is_measured_and_clamped():
    assert noise_band([(100, 103), (100, 104), (100, 102)]) == pytest.approx(0.03)
    assert noise_band([(100, 100.1)]) == MIN_NOISE
    assert noise_band([(100, 150)]) == MAX_NOISE
    assert noise_band([]) == MIN_NOISE


def test_pareto_front():
    pts = [(1.0, 88.0), (2.0, 89.0), (3.0, 88.5), (0.5, 80.0), (2.0, 88.0)]
    assert sorted(pareto(pts)) == [(0.5, 80.0), (1.0, 88.0), (2.0, 89.0)]


@pytest.fixture
def plan_probes(monkeypatch):
    """The plan's measurements made fixed: ONNX Runtime's distinct graph levels, ExecuTorch's pool size, and the
    precisions OpenVINO's CPU plugin computes in (`cpus`: set it to simulate a CPU with or without bf16)."""
    from mnistkit.backends import executorch, onnxrt, openvino

    cpu = {"precisions": ("f32",), "levels": ["all"], "pool": 2}
    monkeypatch.setattr(onnxrt, "graph_levels", lambda path: cpu["levels"])
    monkeypatch.setattr(executorch, "pool_threads", lambda: cpu["pool"])
    monkeypatch.setattr(openvino, "cpu_precisions", lambda: cpu["precisions"])
    return cpu


def test_the_plan_prunes_by_reasoning_and_says_why(tiny_export, plan_probes):
    from mnistkit.backends import BACKENDS, litert, onnxrt, openvino

    targets, _ = expand([tiny_export])
    cands, pruned = plan_candidates(targets, 2)
    labels = {c.label for c in cands}
    assert "model.onnx on onnxruntime, 2 threads, spinning=off" in labels
    assert "model.onnx on onnxruntime, 1 thread" in labels
    assert "model.xml on openvino, 2 threads, hint=THROUGHPUT" in labels
    assert "model-int8.tflite on litert, 1 thread, xnnpack=off" in labels
    assert not any("fp16" in c.format for c in cands)
    assert not any(BACKENDS[c.backend].not_deployed for c in cands)
    assert not any(c.file == "model.onnx" and c.backend == "openvino" for c in cands)  # the IR stands for it
    assert not any(c.backend == "litert" and "int8" not in c.format and c.options for c in cands)
    assert {c.threads for c in cands if c.backend == "executorch"} == {2}
    assert all(1 <= c.threads <= 2 for c in cands)
    assert len(labels) == len(cands)
    reasons = {p.reason for p in pruned}
    expected = [PRUNE_REASONS["fp16"], PRUNE_REASONS["pool"].format(label="ExecuTorch"), onnxrt.SPIN_1,
                openvino.ONNX_BESIDE_IR, openvino.THROUGHPUT_1, openvino.NO_BF16, litert.XNNPACK_FP32,
                *{s.not_deployed for s in BACKENDS.values() if s.not_deployed}]
    for reason in expected:
        assert reason in reasons, reason
    plan_probes["pool"] = 1
    one_core, _ = plan_candidates(targets, 1)
    assert {c.threads for c in one_core} == {1} and not any(c.options for c in one_core if c.backend != "litert")


def test_bf16_is_a_candidate_where_the_cpu_computes_in_it(tiny_export, plan_probes):
    """Both CPUs on any machine: with bf16 (AVX-512-BF16 or AMX) OpenVINO's float files are also planned in bf16,
    and judged by bf16's tolerance; without it the bf16 candidates are pruned with the reason."""
    from mnistkit.backends import openvino
    from mnistkit.formats import COMPUTE_TOLERANCE

    targets, _ = expand([tiny_export])
    plan_probes["precisions"] = ("f32", "bf16")
    cands, pruned = plan_candidates(targets, 2)
    bf16 = [c for c in cands if c.computes_in == "bf16"]
    assert {c.label for c in bf16} >= {"model.xml on openvino, 1 thread, precision=bf16",
                                        "model.xml on openvino, 2 threads, hint=THROUGHPUT, precision=bf16"}
    assert all(c.backend == "openvino" and FORMATS[c.format].precision == "fp32" for c in bf16)
    assert openvino.NO_BF16 not in {p.reason for p in pruned}
    assert tolerance_for("openvino", "cpu", "bf16") is COMPUTE_TOLERANCE["bf16"]["cpu"]
    assert tolerance_for("onnx-int8", "cpu", "bf16") is FORMATS["onnx-int8"].tolerance["cpu"]  # int8 stays int8's
    fp32 = next(c for c in cands if c.label == "model.xml on openvino, 1 thread")
    assert fp32.simplicity() < bf16[0].simplicity()  # within the noise band, f32 is chosen
    plan_probes["precisions"] = ("f32",)
    cands, pruned = plan_candidates(targets, 2)
    assert not any(c.computes_in for c in cands) and openvino.NO_BF16 in {p.reason for p in pruned}


def test_graph_levels_that_give_the_same_graph_are_one_candidate(tiny_export, plan_probes):
    targets, _ = expand([tiny_export])
    plan_probes["levels"], plan_probes["pool"] = ["all", "basic"], 1
    cands, _ = plan_candidates(targets, 1)
    assert "model.onnx on onnxruntime, 1 thread, graph_level=basic" in {c.label for c in cands}


def test_graph_levels_are_measured(tiny_export):
    from mnistkit.backends.onnxrt import graph_levels

    levels = graph_levels(tiny_export / "model.onnx")
    assert levels[0] == "all" and len(set(levels)) == len(levels) and set(levels) <= {"all", "extended", "basic"}


def test_a_candidate_that_differs_from_pytorch_is_refused_with_its_reason(tiny_export, tiny_data):
    from mnistkit.data import load_split

    split = load_split("mnist", "test", tiny_data)
    with mnistkit.load(tiny_export / "model.onnx") as m:
        reference = m.run(split.images)
    pruned = []
    c = Candidate("model.onnx", "onnx", "onnx", "onnxruntime", 1)
    ok = qualify(tiny_export, c, split.images, split.labels, reference, 0.003, pruned)
    assert ok is not None and not pruned
    ok.backend.close()
    assert qualify(tiny_export, c, split.images, split.labels, reference + 0.5, 0.003, pruned) is None
    assert pruned[-1].what == c.label and pruned[-1].reason.startswith("failed the gate: max_abs")


def test_a_checkpoint_gets_the_formats_its_export_folder_lacks(tmp_path, tiny_ckpt, tiny_export, tiny_data,
                                                              monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    ckpt = models / "tiny.pt"
    shutil.copy(tiny_ckpt, ckpt)
    folder = models / "tiny"
    shutil.copytree(tiny_export, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["format"] != "onnx-int8-dynamic"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "model-int8-dynamic.onnx").unlink()
    calls = []
    import mnistkit.exporter as exporter

    real = exporter.export_model
    monkeypatch.setattr(exporter, "export_model", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    got, exported = export_folder(ckpt, tiny_data, lambda m: None)
    assert got == folder and exported == ["onnx-int8-dynamic"] and calls == [["onnx-int8-dynamic"]]
    assert (folder / "model-int8-dynamic.onnx").is_file()
    assert export_folder(ckpt, tiny_data, lambda m: None) == (folder, [])  # complete now: nothing exported


@pytest.mark.parametrize("args, message", [
    (["{onnx}"], "optimize takes a checkpoint or an export folder"),
    (["{missing}"], "no such file or folder"),
    (["{export}", "--budget", "5s"], "--budget 5s: expected at least 10s"),
    (["{export}", "--out-dir", "{userdir}"], "holds notes.txt and no deploy.json"),
    (["{export}", "--out-dir", "{deploy}"], "already holds a deployment; --overwrite replaces it"),
    (["{export}", "--out-dir", "{nowhere}"], "parent directory"),
])
def test_bad_inputs_are_one_line_and_change_nothing(tmp_path, tiny_export, deployed, args, message):
    userdir = tmp_path / "mine"
    userdir.mkdir()
    (userdir / "notes.txt").write_text("mine")
    paths = {"onnx": tiny_export / "model.onnx", "missing": tmp_path / "nope", "export": tiny_export,
             "userdir": userdir, "deploy": deployed[0], "nowhere": tmp_path / "a" / "b"}
    before = sorted(p.name for p in deployed[0].iterdir())
    r = run_cli("optimize", *[a.format(**paths) for a in args])
    assert r.exit_code == 1, r.output
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert (userdir / "notes.txt").read_text() == "mine" and sorted(p.name for p in deployed[0].iterdir()) == before


def test_a_tampered_or_hostile_deploy_folder_is_refused(tmp_path, deployed):
    folder = tmp_path / "d"
    shutil.copytree(deployed[0], folder)
    obj = json.loads((folder / "deploy.json").read_text())
    c = obj["choices"]["1"]
    (folder / c["file"]).write_bytes((folder / c["file"]).read_bytes() + b"x")
    with pytest.raises(InvalidInputError, match="sha256"):
        mnistkit.load(folder, batch_size=1)
    for bad in ({**c, "file": "../../etc/passwd"}, {**c, "backend": "os.system"}, {**c, "options": "x"}):
        (folder / "deploy.json").write_text(json.dumps({**obj, "choices": {"1": bad}}))
        with pytest.raises(InvalidInputError, match="malformed|a file name inside the deploy folder"):
            read_deploy(folder)
    (folder / "deploy.json").write_text("[]")
    with pytest.raises(InvalidInputError, match="not a mnistkit deploy.json"):
        read_deploy(folder)
    r = run_cli("predict", "--deploy", str(folder), str(folder / "deploy.json"), "--threads", "1")
    assert r.exit_code == 1 and "a deploy folder runs the configuration it records" in r.stderr


@pytest.mark.parametrize("change, fragment", [
    (lambda c: {"1": {**c, "file": ".."}}, "a file name inside the deploy folder"),
    (lambda c: {"1": {**c, "file": ""}}, "a file name inside the deploy folder"),
    (lambda c: {"1": {**c, "options": {**c["options"], "threads": 4}}}, "unknown"),
    (lambda c: {"1": {**c, "options": {**c["options"], "device": "cuda"}}}, "unknown"),
    (lambda c: {"1": {**c, "options": {"no_such_option": True}}}, "unknown"),
    (lambda c: {"1": {**c, "threads": True}}, "malformed"),
    (lambda c: {"1": {**c, "threads": 10 ** 9}}, "malformed"),
    (lambda c: {"0": c}, "a whole number from 1"),
    (lambda c: {"\u00b2": c}, "a whole number from 1"),
    (lambda c: {"-1": c}, "a whole number from 1"),
])
def test_a_malformed_deploy_json_is_one_line_through_the_cli(tmp_path, deployed, change, fragment):
    """The second trust audit found internal errors for each of these (issue 20)."""
    folder = tmp_path / "d"
    shutil.copytree(deployed[0], folder)
    obj = json.loads((folder / "deploy.json").read_text())
    (folder / "deploy.json").write_text(json.dumps({**obj, "choices": change(obj["choices"]["1"])}))
    np.save(tmp_path / "x.npy", np.zeros((2, 28, 28), np.uint8))
    r = run_cli("predict", str(folder), str(tmp_path / "x.npy"))
    assert r.exit_code == 1, r.output
    assert fragment in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "internal error" not in r.stderr


def test_a_link_that_leaves_the_deploy_folder_is_refused(tmp_path, deployed):
    folder = tmp_path / "d"
    shutil.copytree(deployed[0], folder)
    c = json.loads((folder / "deploy.json").read_text())["choices"]["1"]
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"not yours")
    (folder / c["file"]).unlink()
    (folder / c["file"]).symlink_to(outside)
    with pytest.raises(InvalidInputError, match="a link that leaves the deploy folder") as info:
        read_deploy(folder)
    assert hashlib.sha256(b"not yours").hexdigest()[:16] not in str(info.value)


def test_backend_options_are_checked(tiny_export):
    for path, backend, options, message in (
            ("model.onnx", "onnxruntime", {"graph_level": "max"}, "graph_level 'max'"),
            ("model.xml", "openvino", {"hint": "FAST"}, "hint 'FAST'")):
        with pytest.raises(InvalidInputError, match=message):
            mnistkit.load(tiny_export / path, backend=backend, **options)


def test_score_runs_the_deployment_chosen_for_its_batch_size(deployed, fashion_dir, tmp_path):
    import pyarrow.parquet as pq

    from mnistkit.data import load_split
    from mnistkit.score import ScoreConfig, score

    out, result = deployed
    images = load_split("fashion-mnist", "test", fashion_dir).images[:300]
    np.save(tmp_path / "x.npy", images)
    summary = score(ScoreConfig(model=str(out), inputs=[str(tmp_path / "x.npy")], out=str(tmp_path / "preds"),
                                engine="local"))
    c = result["choices"]["64"]  # --batch-size 1024: the nearest recorded choice is 64
    assert summary["deployment"]["batch_size"] == 64 and summary["deployment"]["label"] == c["label"]
    assert summary["backend"] == c["backend"] and summary["model"].endswith(c["file"]) and summary["check"]["ok"]
    rows = pq.read_table(tmp_path / "preds").to_pandas().sort_values("index")
    with mnistkit.load(out, batch_size=64) as m:
        assert rows["class_index"].tolist() == m.run(images).argmax(1).tolist()
    with pytest.raises(InvalidInputError, match="--backend goes with a model file"):
        score(ScoreConfig(model=str(out), inputs=[str(tmp_path / "x.npy")], out=str(tmp_path / "p2"),
                          backend="onnxruntime"))
