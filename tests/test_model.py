import pickle
import warnings
import zipfile

import pytest
import torch

from mnistkit import tables
from mnistkit.errors import CheckpointError, InvalidInputError
from mnistkit.model import CNN, MLP, MODELS, build_model, load_checkpoint, save_checkpoint

META = {"arch": "mlp", "arch_args": {"num_classes": 10}, "dataset": "mnist", "labels": list("0123456789")}


def test_registry_matches_cli_table():
    assert set(MODELS) == set(tables.MODEL_NAMES)


def test_mlp_is_the_tutorial_network():
    shapes = [tuple(p.shape) for p in MLP().parameters()]
    assert shapes == [(256, 784), (256,), (128, 256), (128,), (64, 128), (64,), (10, 64), (10,)]
    assert sum(p.numel() for p in MLP().parameters()) == 242_762
    relus = [m for m in MLP().modules() if isinstance(m, torch.nn.ReLU)]
    assert len(relus) == 3


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_models_map_images_to_logits(arch):
    model = build_model(arch, num_classes=7).eval()
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 7)


def test_unknown_model():
    with pytest.raises(InvalidInputError, match="unknown model 'resnet'; expected one of: mlp, cnn"):
        build_model("resnet")


def test_checkpoint_round_trip_gives_bit_identical_logits(tmp_path):
    torch.manual_seed(3)
    model = CNN().eval()
    x = torch.randn(5, 1, 28, 28)
    save_checkpoint(tmp_path / "c.pt", model.state_dict(), {**META, "arch": "cnn"})
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert ckpt.meta["format"] == "mnistkit-checkpoint" and ckpt.meta["format_version"] == 1
    with torch.no_grad():
        assert torch.equal(model(x), ckpt.build()(x))


def test_checkpoint_is_readable_with_weights_only(tmp_path):
    save_checkpoint(tmp_path / "c.pt", MLP().state_dict(), META)
    obj = torch.load(tmp_path / "c.pt", weights_only=True)
    assert obj["mnistkit"]["arch"] == "mlp"


def test_metadata_must_be_plain_json(tmp_path):
    from pathlib import Path

    with pytest.raises(TypeError, match="plain JSON"):
        save_checkpoint(tmp_path / "c.pt", MLP().state_dict(), {**META, "where": Path("/x")})
    assert not list(tmp_path.iterdir())


def test_save_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "c.pt"
    save_checkpoint(target, MLP().state_dict(), META)
    before = target.read_bytes()

    def broken_save(obj, f, *a, **k):
        open(f, "wb").write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError):
        save_checkpoint(target, MLP().state_dict(), META)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_bare_state_dict_says_how_to_export(tmp_path):
    torch.save(MLP().state_dict(), tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match=r"bare state_dict.*--model-class"):
        load_checkpoint(tmp_path / "bare.pth")


class Foreign:
    pass


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"hello world, not torch"), "not a file torch.save wrote"),
        (lambda p: torch.save([1, 2, 3], p), "found a list"),
        (lambda p: torch.save({"mnistkit": {"format": "other"}, "state_dict": {}}, p), "format tag"),
        (lambda p: p.write_bytes(pickle.dumps(Foreign())), "refuses to load: the pickle calls test_model.Foreign"),
        (lambda p: torch.save({"x": Foreign()}, p), "refuses to load: data.pkl calls test_model.Foreign"),
    ],
)
def test_foreign_checkpoints(tmp_path, make, fragment):
    p = tmp_path / "ckpt.pt"
    make(p)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(p)
    assert fragment in str(info.value) and str(p) in str(info.value)


def test_truncated_checkpoint(tmp_path):
    p = tmp_path / "c.pt"
    save_checkpoint(p, MLP().state_dict(), META)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(p)


def test_newer_format_version_is_refused(tmp_path):
    p = tmp_path / "c.pt"
    torch.save({"mnistkit": {"format": "mnistkit-checkpoint", "format_version": 99}, "state_dict": {}}, p)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(p)


def test_torchscript_archive_is_named(tmp_path):
    p = tmp_path / "m.ts"
    with warnings.catch_warnings():  # torch.jit is deprecated upstream (FutureWarning on newer torch)
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(MLP().eval(), torch.zeros(2, 1, 28, 28)), p)
    assert zipfile.is_zipfile(p)
    with pytest.raises(CheckpointError, match="TorchScript archive"):
        load_checkpoint(p)
