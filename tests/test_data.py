import gzip
import hashlib
import http.server
import socket
import threading
import time

import numpy as np
import pytest

from conftest import make_images, need_module, write_tiny_dataset
from mnistkit import data
from mnistkit.data import DATASETS, load_split, read_idx, read_idx_pair, write_idx
from mnistkit.errors import DataError


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, dtype, gz):
    arr = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    if dtype == "uint8":
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / ("x.idx" + (".gz" if gz else ""))
    write_idx(p, arr)
    out = read_idx(p)
    assert out.dtype == arr.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_idx_header_bytes_are_the_standard_ones(tmp_path):
    p = tmp_path / "labels"
    write_idx(p, np.array([7, 2, 1], np.uint8))
    assert p.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])


def test_gzip_detected_by_content_not_suffix(tmp_path):
    p = tmp_path / "labels-no-suffix"
    p.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 2, 4, 5])))
    np.testing.assert_array_equal(read_idx(p), [4, 5])


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (b"", "empty file"),
        (b"\x00\x00", "too short"),
        (b"\x12\x34\x08\x01\x00\x00\x00\x01\x05", "not an IDX file (magic number 0x12340801"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "not an IDX file"),
        (b"\x00\x00\x08\x09\x00\x00\x00\x01\x05", "not an IDX file"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x01", "truncated header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "truncated: 10 bytes, expected 13"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", "has trailing bytes"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x00", "dimension is zero"),
        (b"\x1f\x8b\x08\x00garbage", "corrupt or truncated gzip"),
    ],
)
def test_bad_idx_files_raise_one_clear_error(tmp_path, payload, fragment):
    p = tmp_path / "bad-file"
    p.write_bytes(payload)
    with pytest.raises(DataError) as info:
        read_idx(p)
    assert fragment in str(info.value)
    assert str(p) in str(info.value)


def test_truncated_gzip(tmp_path):
    p = tmp_path / "t.gz"
    write_idx(p, np.zeros((10, 28, 28), np.uint8))
    p.write_bytes(p.read_bytes()[:-12])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        read_idx(p)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_idx(tmp_path / "nope")


def test_count_mismatch(tmp_path):
    images, labels = make_images(10, 0)
    write_idx(tmp_path / "i", images)
    write_idx(tmp_path / "l", labels[:9])
    with pytest.raises(DataError, match="holds 10 images but l holds 9 labels"):
        read_idx_pair(tmp_path / "i", tmp_path / "l")


def test_images_of_wrong_shape(tmp_path):
    write_idx(tmp_path / "i", np.zeros((3, 27, 28), np.uint8))
    write_idx(tmp_path / "l", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match=r"expected \[N,28,28\] uint8"):
        read_idx_pair(tmp_path / "i", tmp_path / "l")


def test_flat_and_torchvision_layouts(tmp_path):
    flat = write_tiny_dataset(tmp_path / "flat", 40, 10, gz=True)
    tv_root = tmp_path / "tv"
    write_tiny_dataset(tv_root / "FashionMNIST" / "raw", 40, 10, gz=False)
    a = load_split("mnist", "train", flat)
    b = load_split("fashion-mnist", "test", tv_root)
    assert a.images.shape == (40, 28, 28) and a.labels.dtype == np.int64
    assert b.images.shape == (10, 28, 28) and b.source == tv_root / "FashionMNIST" / "raw"


def test_missing_data_dir_and_empty_data_dir(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        load_split("mnist", "train", tmp_path / "absent")
    with pytest.raises(DataError, match="no mnist files found"):
        load_split("mnist", "train", tmp_path)


def test_labels_out_of_range(tmp_path):
    folder = write_tiny_dataset(tmp_path / "d", 20, 5)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.full(20, 12, np.uint8))
    with pytest.raises(DataError, match="expected 0..9"):
        load_split("mnist", "train", folder)


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'cifar'; expected one of: mnist, fashion-mnist, kmnist"):
        load_split("cifar")


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MNISTKIT_DATA", str(tmp_path / "cache"))
    assert data.cache_dir() == tmp_path / "cache"
    write_tiny_dataset(tmp_path / "cache" / "MNIST" / "raw", 30, 10)
    assert load_split("mnist", "train").images.shape == (30, 28, 28)


@pytest.mark.realdata
def test_real_fashion_mnist_found_without_flags(fashion_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("MNISTKIT_DATA", str(tmp_path))  # empty cache: must find Debian's folder
    train = load_split("fashion-mnist", "train")
    test = load_split("fashion-mnist", "test")
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert train.source == fashion_dir
    assert sorted(np.unique(test.labels)) == list(range(10))
    # the stored mean/std are the training split's
    pixels = train.images / 255.0
    spec = DATASETS["fashion-mnist"]
    assert abs(pixels.mean() - spec.mean) < 1e-3 and abs(pixels.std() - spec.std) < 1e-3


@pytest.mark.realdata
def test_real_mnist_sample(mnist_sample_dir):
    train = load_split("mnist", "train", mnist_sample_dir)
    test = load_split("mnist", "test", mnist_sample_dir)
    assert len(train) == 800 and len(test) == 1000


# ---- download: torchvision's real code against a local HTTP server serving files the test wrote


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_with_torchvision_from_a_mirror(tmp_path, monkeypatch, capfd):
    tv = need_module("torchvision.datasets", "torch")
    served = write_tiny_dataset(tmp_path / "served", 60, 20, gz=True)
    resources = [(p.name, hashlib.md5(p.read_bytes()).hexdigest()) for p in sorted(served.iterdir())]
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **k: _QuietHandler(*a, directory=str(served), **k))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(tv.MNIST, "mirrors", [f"http://127.0.0.1:{server.server_port}/"])
        monkeypatch.setattr(tv.MNIST, "resources", resources)
        monkeypatch.setenv("MNISTKIT_DATA", str(tmp_path / "cache"))
        messages = []
        split = load_split("mnist", "train", log=messages.append)
    finally:
        server.shutdown()
    assert split.images.shape == (60, 28, 28)
    assert split.source == tmp_path / "cache" / "MNIST" / "raw"
    assert any("downloading mnist" in m for m in messages)
    assert capfd.readouterr().out == ""  # torchvision's progress went to stderr, not stdout
    # second load comes from the cache without the server
    assert load_split("mnist", "test").images.shape == (20, 28, 28)


def test_download_fails_fast_without_network(tmp_path, monkeypatch):
    tv = need_module("torchvision.datasets", "torch")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(tv.MNIST, "mirrors", [f"http://127.0.0.1:{port}/"])
    monkeypatch.setenv("MNISTKIT_DATA", str(tmp_path / "cache"))
    t0 = time.monotonic()
    with pytest.raises(DataError) as info:
        load_split("mnist", "train")
    assert time.monotonic() - t0 < 5
    message = str(info.value)
    assert "--data-dir" in message and "--dataset fashion-mnist" in message
    assert "\n" not in message


def test_demo_dataset_falls_back_to_fashion(tmp_path, monkeypatch, fashion_dir):
    tv = need_module("torchvision.datasets", "torch")
    monkeypatch.setattr(tv.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    monkeypatch.setenv("MNISTKIT_DATA", str(tmp_path / "empty"))
    name, why = data.resolve_demo_dataset()
    assert name == "fashion-mnist" and "could not be downloaded" in why


def test_demo_dataset_prefers_cached_mnist(tmp_path, monkeypatch):
    monkeypatch.setenv("MNISTKIT_DATA", str(tmp_path))
    write_tiny_dataset(tmp_path / "MNIST" / "raw", 20, 5)
    assert data.resolve_demo_dataset() == ("mnist", "MNIST found in the cache")

