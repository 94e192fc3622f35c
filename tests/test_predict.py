"""The ``predict`` command and images read the way the user sees them."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def photos(tmp_path_factory, chelsea_png):
    """A real photo as 8-bit gray, its 16-bit twin, an RGB JPEG, and a file that is not a photo."""
    d = tmp_path_factory.mktemp("photos")
    gray = Image.open(chelsea_png).convert("L")
    gray.save(d / "cat8.png")
    Image.fromarray(np.asarray(gray).astype(np.uint16) * 257).save(d / "cat16.png")
    Image.open(chelsea_png).convert("RGB").save(d / "cat.jpg", quality=92)
    (d / "notes.jpg").write_bytes(b"this is not a photo")
    return d


def _predict(argv):
    from compress.__main__ import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["predict"] + argv)
        except SystemExit as e:                       # argparse's own errors
            code = e.code
    return code, out.getvalue(), err.getvalue()


def test_predict_json_gives_one_entry_per_file_and_16_bit_reads_like_8_bit(photos, cifar_asset):
    assert Image.open(photos / "cat16.png").mode.startswith("I")          # really 16-bit on disk
    code, out, err = _predict([str(photos), "--json", "--topk", "3"])
    assert code == 0
    entries = json.loads(out)
    assert [e["file"].rsplit("/", 1)[-1] for e in entries] == ["cat.jpg", "cat16.png", "cat8.png", "notes.jpg"]
    by = {e["file"].rsplit("/", 1)[-1]: e for e in entries}
    assert "not an image" in by["notes.jpg"]["error"] and "top" not in by["notes.jpg"]
    for name in ("cat.jpg", "cat16.png", "cat8.png"):
        top = by[name]["top"]
        assert len(top) == 3 and set(top[0]) == {"index", "label", "prob"}
        assert top[0]["prob"] >= top[1]["prob"] >= top[2]["prob"] and 0 < top[0]["prob"] <= 1
    assert by["cat16.png"]["top"][0]["index"] == by["cat8.png"]["top"][0]["index"]
    assert by["cat16.png"]["top"][0]["prob"] == pytest.approx(by["cat8.png"]["top"][0]["prob"], abs=1e-4)
    assert "cat" in [t["label"] for t in by["cat.jpg"]["top"]]            # a real photo of a cat
    assert "notes.jpg" in err


def test_predict_bad_input_is_a_message(photos, tmp_path, cifar_asset):
    code, out, err = _predict([str(photos / "notes.jpg")])
    assert code == 2 and "notes.jpg: error:" in out                      # nothing answered
    code, _, err = _predict([str(tmp_path / "missing.png")])
    assert code == 2 and err.strip() == f"error: {tmp_path / 'missing.png'} does not exist."
    code, _, err = _predict([str(tmp_path)])                              # an empty folder
    assert code == 2 and "holds no photos" in err
    code, _, err = _predict([str(photos), "--topk", "0"])
    assert code == 2 and err.startswith("error: argument --topk")


def test_predict_with_a_history_run_uses_its_compressed_model(photos, tmp_path, cifar_asset):
    from compress import pipeline
    from compress.history import History
    from compress.prune import StructuredConfig
    from compress.recipe import MeasureRef, ModelRef, Recipe
    h = History(tmp_path / "h.sqlite")
    res = pipeline.run(Recipe(model=ModelRef("resnet18_cifar10"), measure=MeasureRef(device="cpu", runs=2, warmup=0),
                              prune=StructuredConfig(ratio=0.3)), history=h)
    code, out, _ = _predict([str(photos / "cat.jpg"), "--run", str(res.run_id), "--history", str(h.path), "--json"])
    assert code == 0
    top = json.loads(out)[0]["top"]
    from compress.predict import predict_files
    from compress.zoo import ZOO
    direct = predict_files(res.model, ZOO["resnet18_cifar10"], [photos / "cat.jpg"], topk=5)[0]["top"]
    assert [t["index"] for t in top] == [t["index"] for t in direct]     # the pruned model, not the original
    code, _, err = _predict([str(photos / "cat.jpg"), "--run", "999", "--history", str(h.path)])
    assert code == 2 and "There is no run 999" in err


@pytest.mark.parametrize("mode", ["P", "LA", "CMYK", "I;16", "I", "F", "1", "RGBA"])
def test_every_image_mode_reads_as_upright_rgb(mode, chelsea_png):
    from compress.images import read_image
    src = Image.open(chelsea_png).convert("L").resize((64, 48))
    a = np.asarray(src)
    if mode in ("I;16", "I"):
        im = Image.fromarray(a.astype(np.uint16) * 257) if mode == "I;16" else Image.fromarray(a.astype(np.int32) * 257)
    elif mode == "F":
        im = Image.fromarray(a.astype(np.float32) / 255.0)
    else:
        im = Image.open(chelsea_png).resize((64, 48)).convert(mode)
    buf = io.BytesIO()
    im.save(buf, "TIFF" if mode in ("I", "F", "CMYK") else "PNG")
    out = read_image(buf.getvalue(), f"x.{mode}")
    assert out.mode == "RGB" and out.size == (64, 48)
    if mode in ("I;16", "I", "F"):                                        # scaled, not clipped to white
        assert np.abs(np.asarray(out)[..., 0].astype(int) - a.astype(int)).max() <= 1


def test_animated_image_uses_its_first_frame():
    from compress.images import read_image
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    out = read_image(buf.getvalue(), "anim.gif")
    r, g, b = out.getpixel((8, 8))
    assert r > 200 and b < 50


def test_size_row_says_which_file_it_counted():
    from compress.measure import Profile
    from compress.report import compare_profiles
    common = dict(model="m", params=10, nonzero_params=10, size_gzip_bytes=50, macs=100, input_size=(3, 8, 8))
    torch_p = Profile(size_bytes=100, **common)
    onnx_p = Profile(size_bytes=40, runtime="ONNX Runtime INT8 (QDQ)", **common)
    rows = {r["measure"]: r for r in compare_profiles(torch_p, onnx_p)}
    assert "Size (torch.save)" not in rows
    assert rows["Size (file)"]["how"] == ("before: real bytes of the state_dict written by torch.save; "
                                         "after: real bytes of the ONNX file ONNX Runtime loads")
    assert rows["Size (file)"]["change"] == "×0.40"
    same = {r["measure"]: r for r in compare_profiles(torch_p, torch_p)}
    assert same["Size (file)"]["how"] == "real bytes of the state_dict written by torch.save"
