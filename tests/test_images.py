import io

import pytest
import torch
from PIL import Image

from compress.errors import ImageError
from compress.images import classify, read_image


def _bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode,fmt", [("RGB", "JPEG"), ("L", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG"),
                                      ("RGB", "WEBP"), ("RGB", "BMP"), ("P", "PNG")])
def test_accepted_formats_and_modes_become_rgb(mode, fmt):
    im = Image.new(mode, (40, 30))
    out = read_image(_bytes(im, fmt))
    assert out.mode == "RGB" and out.size == (40, 30)


def test_exif_rotation_is_applied():
    im = Image.new("RGB", (40, 30), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6   # rotate 90° clockwise to display
    out = read_image(_bytes(im, "JPEG", exif=exif))
    assert out.size == (30, 40)


def test_transparent_pixels_become_white():
    im = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert read_image(_bytes(im, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_non_image_truncated_and_huge_are_rejected():
    with pytest.raises(ImageError, match="not an image"):
        read_image(b"%PDF-1.4 this is a pdf", "doc.pdf")
    with pytest.raises(ImageError, match="empty"):
        read_image(b"", "empty.jpg")
    good = _bytes(Image.effect_noise((256, 256), 50).convert("RGB"), "JPEG")
    with pytest.raises(ImageError, match="truncated"):
        read_image(good[: len(good) // 2], "cut.jpg")
    huge = _bytes(Image.new("1", (10_000, 6_000)), "PNG")   # 60 megapixels, small file
    with pytest.raises(ImageError, match="60 megapixels.*limit is 50"):
        read_image(huge, "huge.png")
    bomb = _bytes(Image.new("1", (10_000, 10_000)), "PNG")   # 100 megapixels
    with pytest.raises(ImageError, match="limit is 50 megapixels"):
        read_image(bomb, "bomb.png")


def test_classify_returns_sorted_top5_and_time(lite0, chelsea_png):
    im = read_image(chelsea_png.read_bytes())
    pred = classify(lite0.model, im, lite0.spec.preprocess.transform(), lite0.spec.categories,
                    torch.device("cpu"))
    assert len(pred.labels) == 5 and pred.probs == sorted(pred.probs, reverse=True)
    assert 0 < sum(pred.probs) <= 1.0001 and pred.ms > 0
