import numpy as np
import pytest
import torch

from cyclemask.errors import InputError
from cyclemask.image_arrays import center_crop_resize, center_square, check_batch
from cyclemask.image_files import list_images, read_image, write_image
from cyclemask.image_tensors import UInt8Translator, postprocess, preprocess, to_tensor, to_uint8, eager_translate


def test_preprocess_maps_0_255_to_minus1_1_nchw():
    x = torch.tensor([[[[0, 255, 127]]]], dtype=torch.uint8)  # 1x1x1x3
    y = preprocess(x)
    assert y.shape == (1, 3, 1, 1) and y.dtype == torch.float32
    assert y.flatten().tolist() == pytest.approx([-1.0, 1.0, 127 / 127.5 - 1])


def test_roundtrip_is_exact_for_every_value():
    v = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16, 1).expand(1, 16, 16, 3).contiguous()
    assert torch.equal(postprocess(preprocess(v)), v)


def test_postprocess_rounds_half_to_even_then_clips():
    # Find float32 inputs whose scaled value lands exactly on n + 0.5: they must go to the even n.
    r = torch.linspace(-1, 1, 2_000_001, dtype=torch.float32)
    y = (r + 1.0) * 127.5
    halves = r[(y - torch.floor(y)) == 0.5]
    assert halves.numel() >= 10
    got = postprocess(halves.reshape(1, 1, 1, -1)).flatten().to(torch.int64)
    assert torch.all(got % 2 == 0)
    assert torch.all((got - ((halves + 1.0) * 127.5)).abs() == 0.5)
    # Clipping after rounding, and agreement with numpy's rint on dense values.
    assert postprocess(torch.tensor([-3.0, 3.0, 0.99]).reshape(1, 3, 1, 1)).flatten().tolist() == [0, 255, 254]
    d = torch.rand(1, 3, 64, 64) * 2.4 - 1.2
    ref = np.clip(np.rint((d.numpy() + np.float32(1.0)) * np.float32(127.5)), 0, 255).astype(np.uint8)
    assert np.array_equal(postprocess(d).numpy(), ref.transpose(0, 2, 3, 1))


def test_numpy_helpers_match_torch_functions(rng):
    img = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    t = to_tensor(img)
    assert t.shape == (1, 3, 5, 7)
    assert np.array_equal(to_uint8(t)[0], img)


def test_uint8_translator_equals_translate(tiny_generator, rng):
    batch = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    wrapped = UInt8Translator(tiny_generator).eval()
    with torch.no_grad():
        a = wrapped(torch.from_numpy(batch)).numpy()
    b = eager_translate(tiny_generator, batch)
    assert a.dtype == np.uint8 and a.shape == batch.shape
    assert np.array_equal(a, b)


@pytest.mark.parametrize("batch, match", [
    (np.zeros((1, 8, 8, 3), np.float32), "expected dtype uint8; got float32"),
    (np.zeros((8, 8, 3), np.uint8), r"expected shape \[N, H, W, 3\]; got \[8, 8, 3\]"),
    (np.zeros((1, 8, 8, 4), np.uint8), r"got \[1, 8, 8, 4\]"),
    (np.zeros((0, 8, 8, 3), np.uint8), "empty batch"),
    ([1, 2], "expected a numpy uint8 array"),
])
def test_check_batch_messages(batch, match):
    with pytest.raises(InputError, match=match):
        check_batch(batch)


def test_check_batch_size():
    with pytest.raises(InputError, match="expected images of 64x64; got 32x32"):
        check_batch(np.zeros((1, 32, 32, 3), np.uint8), size=64)


def _write_raw(path, image_bgr_or_gray):
    import cv2
    assert cv2.imwrite(str(path), image_bgr_or_gray)


def test_read_image_converts_gray_rgba_and_16bit(tmp_path):
    gray = np.full((4, 5), 100, np.uint8)
    _write_raw(tmp_path / "g.png", gray)
    assert read_image(tmp_path / "g.png").shape == (4, 5, 3)
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0] = 255  # blue in BGRA
    _write_raw(tmp_path / "a.png", rgba)
    img = read_image(tmp_path / "a.png")
    assert img.shape == (4, 5, 3) and img[0, 0].tolist() == [0, 0, 255]
    deep = np.full((3, 3, 3), 65535, np.uint16)
    _write_raw(tmp_path / "d.png", deep)
    assert read_image(tmp_path / "d.png").max() == 255


@pytest.mark.parametrize("orientation, turn", [(6, 1), (8, 3), (3, 2)])
def test_read_image_applies_the_exif_orientation(tmp_path, orientation, turn):
    from PIL import Image

    upright = np.zeros((40, 60, 3), np.uint8)
    upright[:10, :20] = (255, 0, 0)  # a red block top left, as a viewer must show it
    # Stored the way a camera does: pixels turned, and the tag saying how to turn them back.
    stored = np.rot90(upright, k=turn)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(stored)).save(tmp_path / "phone.jpg", exif=exif, quality=100)
    img = read_image(tmp_path / "phone.jpg")
    assert img.shape == upright.shape
    red = img[..., 0].astype(int)
    assert red[:10, :20].mean() > 200 and red[10:, 20:].mean() < 30, "read on its side or upside down"


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="missing.png: cannot read file"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(InputError, match="text.jpg: not a decodable image"):
        read_image(tmp_path / "text.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty.png: empty file"):
        read_image(tmp_path / "empty.png")
    write_image(tmp_path / "ok.jpg", np.zeros((32, 32, 3), np.uint8))
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.jpg: truncated JPEG"):
        read_image(tmp_path / "cut.jpg")


def test_write_image_is_atomic_and_roundtrips(tmp_path, rng):
    img = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    write_image(tmp_path / "sub" / "x.png", img)
    assert np.array_equal(read_image(tmp_path / "sub" / "x.png"), img)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.png"]  # no temp files left


def test_list_images_is_recursive_sorted_and_skips_others(tmp_path):
    for rel in ["b.jpg", "a/c.PNG", "a/.hidden.png", "notes.txt", ".git/x.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == ["a/c.PNG", "b.jpg"]
    with pytest.raises(InputError, match="not a folder"):
        list_images(tmp_path / "nope")


def test_center_crop_resize_takes_the_centred_square():
    img = np.zeros((40, 100, 3), np.uint8)
    img[:, 30:70] = 200  # the centred 40 x 40 square
    sq = center_square(img)
    assert sq.shape == (40, 40, 3) and (sq == 200).all()
    out = center_crop_resize(img, 20)
    assert out.shape == (20, 20, 3) and (out == 200).all()
