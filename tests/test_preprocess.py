import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnistkit.data import load_split, write_idx
from mnistkit.errors import InvalidInputError
from mnistkit.preprocess import apply_recipe, load_inputs, preprocess_image


def draw_digit(digit: str, size=(200, 240), ink="black", paper="white", mode="RGB") -> Image.Image:
    """A digit drawn with strokes, dark on light, the way a user writes one."""
    im = Image.new(mode, size, paper)
    d = ImageDraw.Draw(im)
    w = 18
    if digit == "0":
        d.ellipse((50, 40, 150, 200), outline=ink, width=w)
    elif digit == "1":
        d.line((100, 30, 100, 210), fill=ink, width=w)
    elif digit == "7":
        d.line((40, 40, 160, 40), fill=ink, width=w)
        d.line((160, 40, 80, 210), fill=ink, width=w)
    elif digit == "4":
        d.line((130, 30, 50, 150), fill=ink, width=16)
        d.line((50, 150, 160, 150), fill=ink, width=16)
        d.line((130, 90, 130, 215), fill=ink, width=16)
    return im


def test_digit_recipe_geometry():
    out = preprocess_image(draw_digit("1"), "digits")
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out[0].max() == 0 and out[:, 0].max() == 0  # light ink on black, as in MNIST
    ys, xs = np.nonzero(out > 30)
    assert ys.max() - ys.min() + 1 <= 21  # the long side fits the 20-pixel box
    total = out.sum()
    cy = (out.sum(1) * np.arange(28)).sum() / total
    cx = (out.sum(0) * np.arange(28)).sum() / total
    assert abs(cy - 13.5) < 1 and abs(cx - 13.5) < 1  # centre of mass at the centre


def test_objects_recipe_fits_the_longest_edge_and_centres():
    im = Image.new("L", (300, 150), 255)
    ImageDraw.Draw(im).rectangle((20, 40, 279, 109), fill=0)  # a dark wide box on white
    out = preprocess_image(im, "objects")
    ys, xs = np.nonzero(out > 128)
    assert xs.min() == 0 and xs.max() == 27  # longest edge -> 28
    assert abs((ys.min() + ys.max()) / 2 - 13.5) <= 1  # centred


def test_polarity_is_detected_both_ways():
    dark_on_light = preprocess_image(draw_digit("7"), "digits")
    light_on_dark = preprocess_image(draw_digit("7", ink="white", paper="black"), "digits")
    assert np.abs(dark_on_light.astype(int) - light_on_dark.astype(int)).max() <= 2


def test_transparent_png_with_dark_ink(tmp_path):
    im = draw_digit("0", ink=(0, 0, 0, 255), paper=(0, 0, 0, 0), mode="RGBA")
    im.save(tmp_path / "t.png")
    out = load_inputs(tmp_path / "t.png", "digits")[0].array
    ref = preprocess_image(draw_digit("0"), "digits")
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 2


@pytest.mark.realdata
def test_dataset_images_pass_through_unchanged(fashion_dir, mnist_sample_dir, tmp_path):
    for name, data_dir in (("fashion-mnist", fashion_dir), ("mnist", mnist_sample_dir)):
        images = load_split(name, "test", data_dir).images[:300]
        for i, a in enumerate(images):
            for recipe in ("digits", "objects"):
                assert np.array_equal(preprocess_image(Image.fromarray(a), recipe), a), (name, i)
    # also through a PNG file on disk
    Image.fromarray(images[0]).save(tmp_path / "x.png")
    assert np.array_equal(load_inputs(tmp_path / "x.png", "digits")[0].array, images[0])


@pytest.mark.realdata
def test_recipe_must_follow_the_model(fashion_export):
    """Fashion images as a phone would see them (bigger, dark on light): objects keeps the
    accuracy, digits destroys it."""
    from mnistkit.backends import create_backend

    split = load_split("fashion-mnist", "test")
    images, labels = split.images[:1000], split.labels[:1000]
    photos = [255 - np.asarray(Image.fromarray(a).resize((112, 112), Image.Resampling.BICUBIC), np.float32)
              for a in images]
    with create_backend(fashion_export / "model.onnx") as b:
        base = (b.run(images).argmax(1) == labels).mean()
        acc = {r: (b.run(np.stack([apply_recipe(p, r) for p in photos])).argmax(1) == labels).mean()
               for r in ("objects", "digits")}
    assert acc["objects"] >= base - 0.03
    assert acc["digits"] < base - 0.3


def test_file_formats(tmp_path):
    im = draw_digit("4")
    for suffix in ("png", "jpg", "bmp"):
        im.save(tmp_path / f"d.{suffix}")
        (s,) = load_inputs(tmp_path / f"d.{suffix}", "digits")
        assert s.array.shape == (28, 28) and s.form == "uint8" and s.name == str(tmp_path / f"d.{suffix}")
    im.convert("P").save(tmp_path / "p.png")
    assert load_inputs(tmp_path / "p.png", "digits")[0].array.max() > 200
    arr = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "a.npy", arr)
    np.save(tmp_path / "one.npy", arr[0])
    np.save(tmp_path / "f.npy", np.zeros((2, 1, 28, 28), np.float32))
    write_idx(tmp_path / "x-idx3-ubyte", arr)
    assert [s.name for s in load_inputs(tmp_path / "a.npy", "digits")] == [f"{tmp_path / 'a.npy'}[{i}]" for i in range(3)]
    assert load_inputs(tmp_path / "one.npy", "digits")[0].array.shape == (28, 28)
    assert load_inputs(tmp_path / "f.npy", "digits")[1].form == "float"
    idx = load_inputs(tmp_path / "x-idx3-ubyte", "digits")
    assert len(idx) == 3 and np.array_equal(idx[2].array, arr[2])  # IDX pixels pass through as they are


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda p: p.write_text("not an image at all"), "not an image (expected PNG, JPEG or BMP"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: Image.new("L", (1, 1), 0).save(p, format="PNG"), "image is 1x1 pixels; expected at least 8x8"),
        (lambda p: Image.new("L", (64, 64), 255).save(p, format="PNG"), "blank"),
        (lambda p: np.save(p, np.zeros((28, 28), np.float64)), "array is float64 [28, 28]; expected uint8"),
        (lambda p: np.save(p, np.full((1, 1, 28, 28), np.nan, np.float32)), "NaN"),
        (lambda p: (draw_digit("1").save(p, format="PNG"), p.write_bytes(p.read_bytes()[:300])), "unreadable image"),
        (lambda p: write_idx(p, np.zeros((2, 5), np.uint8)), "expected uint8 images [N,28,28]"),
        (lambda p: None, "no such file"),
    ],
)
def test_bad_inputs(tmp_path, make, fragment):
    p = tmp_path / "input.bin"
    make(p)
    if p.suffix != ".npy" and p.with_suffix(".bin.npy").exists():
        p = p.with_suffix(".bin.npy")
    with pytest.raises(InvalidInputError) as info:
        load_inputs(p, "digits")
    assert fragment in str(info.value)
    assert "input.bin" in str(info.value)


def test_unknown_recipe():
    with pytest.raises(InvalidInputError, match="unknown preprocessing recipe 'faces'"):
        apply_recipe(np.zeros((40, 40), np.float32), "faces")
