"""The decoder on every bad and unusual image kind, built as real bytes with Pillow."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from visionqc.intake.imaging import ImageDecodeError, decode_image, thumbnail_jpeg


def encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def gradient(w: int = 64, h: int = 48) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.uint8)
    arr = np.stack([np.tile(x, (h, 1)), np.tile(x[::-1], (h, 1)), np.full((h, w), 128, np.uint8)], axis=2)
    return Image.fromarray(arr, "RGB")


def test_plain_jpeg_decodes_to_rgb():
    out = decode_image(encode(gradient(), "JPEG"))
    assert out.image.mode == "RGB"
    assert (out.width, out.height, out.format) == (64, 48, "JPEG")


def test_empty_file_is_reported():
    with pytest.raises(ImageDecodeError, match="empty file"):
        decode_image(b"")


def test_text_file_is_not_an_image():
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_image(b"hello, this is a text file pretending to be a PNG\n" * 3)


def test_pdf_is_named_as_unsupported():
    with pytest.raises(ImageDecodeError, match=r"unsupported format.*PDF"):
        decode_image(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n")


def test_unsupported_pillow_format_is_refused():
    data = encode(gradient(32, 32), "ICO")
    with pytest.raises(ImageDecodeError, match="unsupported format: ICO"):
        decode_image(data)


def test_truncated_jpeg_is_reported():
    data = encode(gradient(400, 300), "JPEG", quality=95)
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(data[: len(data) // 2])


def test_corrupt_png_is_reported():
    data = bytearray(encode(gradient(), "PNG"))
    data[60:80] = b"\x00" * 20  # destroy part of the IDAT stream
    with pytest.raises(ImageDecodeError):
        decode_image(bytes(data))


def test_decompression_bomb_is_refused_before_decoding():
    # A real PNG header claiming 30000 x 30000 pixels: refused from the header alone.
    data = encode(Image.new("L", (30000, 30000 // 300)), "PNG")
    ihdr = data.index(b"IHDR")
    forged = bytearray(data)
    forged[ihdr + 4 : ihdr + 12] = struct.pack(">II", 30000, 30000)
    forged[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(forged[ihdr : ihdr + 17])))
    with pytest.raises(ImageDecodeError, match="too large: 30000×30000"):
        decode_image(bytes(forged))


def test_pixel_limit_is_configurable():
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image(encode(gradient(100, 100), "PNG"), max_pixels=5000)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("L", "PNG"), ("LA", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG"), ("1", "BMP"), ("I;16", "PNG"), ("P", "GIF")],
)
def test_every_mode_converts_to_rgb(mode, fmt):
    src = gradient().convert("RGBA") if mode in ("LA", "RGBA") else gradient()
    im = src.convert(mode) if mode != "I;16" else Image.fromarray(np.full((48, 64), 40000, np.uint16))
    out = decode_image(encode(im, fmt))
    assert out.image.mode == "RGB"
    assert out.image.size == (64, 48)
    if mode == "I;16":  # 40000/65535 of full scale -> about 155 of 255
        assert abs(int(np.asarray(out.image)[0, 0, 0]) - 155) <= 1


def test_palette_transparency_composites_on_white():
    im = Image.new("P", (10, 10), 0)
    im.putpalette([255, 0, 0] + [0, 0, 0] * 255)
    data = encode(im, "PNG", transparency=0)
    out = decode_image(data)
    assert tuple(np.asarray(out.image)[5, 5]) == (255, 255, 255)


def test_rgba_transparent_pixels_become_white():
    im = Image.new("RGBA", (8, 8), (10, 20, 30, 0))
    out = decode_image(encode(im, "PNG"))
    assert tuple(np.asarray(out.image)[0, 0]) == (255, 255, 255)


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (60, 20), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 10, 20))  # blue stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    out = decode_image(encode(im, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.image.size == (20, 60)
    assert (out.width, out.height) == (20, 60)
    top = np.asarray(out.image)[2, 10]
    assert top[2] > 200 and top[0] < 60  # the left stripe is now on top


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    out = decode_image(buf.getvalue())
    r, g, b = np.asarray(out.image)[8, 8]
    assert r > 200 and g < 50 and b < 50


def test_sixteen_bit_tiff():
    im = Image.fromarray(np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16))
    out = decode_image(encode(im, "TIFF"))
    arr = np.asarray(out.image)
    assert arr[0, 0, 0] == 0 and arr[-1, -1, 0] == 255


def test_jpeg_draft_mode_reduces_decode_size_but_reports_full_size():
    data = encode(gradient(1920, 1080), "JPEG")
    out = decode_image(data, draft_size=(224, 224))
    assert (out.width, out.height) == (1920, 1080)
    assert out.image.size == (480, 270)  # DCT-scaled by 1/4, still >= 224 on both sides


def test_real_dataset_image(magnetic_tile):
    path = next((magnetic_tile / "images" / "crack").glob("*.jpg"))
    out = decode_image(path.read_bytes())
    assert out.image.mode == "RGB" and out.format == "JPEG"


def test_thumbnail_is_a_small_jpeg():
    thumb = thumbnail_jpeg(gradient(640, 480), size=160)
    im = Image.open(io.BytesIO(thumb))
    assert im.format == "JPEG" and max(im.size) == 160
