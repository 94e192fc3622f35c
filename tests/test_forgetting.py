"""What compression forgets (issue 16, first part): every measured model keeps per-class
counts and per-image answers; a run lists the images whose top-1 changed; `diff` compares
two runs on the same images."""
import json

import pytest

from compress import pipeline
from compress.history import History
from compress.prune import StructuredConfig
from compress.recipe import DataRef, MeasureRef, Recipe
from compress.zoo import sample_data_path
from test_cli import run_cli


@pytest.fixture(scope="module")
def runs(cifar_asset, tmp_path_factory):
    """Two recorded runs on the bundled sample's first 200 evaluation images, and one on 100."""
    from compress.zoo import get_spec
    h = History(tmp_path_factory.mktemp("h") / "h.sqlite")
    sample = str(sample_data_path(get_spec("resnet18_cifar10")))
    measure = MeasureRef(device="cpu", runs=2, warmup=1)
    out = []
    for ratio, limit in ((0.5, 200), (0.3, 200), (0.3, 100)):
        recipe = Recipe(data=DataRef(path=sample, limit=limit), measure=measure,
                        prune=StructuredConfig(ratio=ratio))
        out.append(pipeline.run(recipe, history=h, source="test"))
    return h, out


def test_per_class_counts_add_up_and_changed_is_exactly_the_flipped_images(runs):
    _, (res, _, _) = runs
    for prof in (res.before, res.after):
        acc = prof["accuracy"]
        assert sum(c["n"] for c in acc["per_class"]) == acc["n"] == 200
        assert sum(c["correct"] for c in acc["per_class"]) == acc["correct1"]
        assert [c["class"] for c in acc["per_class"]] == ["airplane", "automobile", "bird", "cat", "deer",
                                                          "dog", "frog", "horse", "ship", "truck"]
    pb, pa = res.before["per_image"]["pred"], res.after["per_image"]["pred"]
    files, labels = res.data["files"], res.data["labels"]
    flipped = {files[i] for i in range(len(files)) if pb[i] != pa[i]}
    assert flipped and {c["file"] for c in res.changed} == flipped
    cats = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    for c in res.changed:
        i = files.index(c["file"])
        assert c["label"] == cats[labels[i]] and c["before"]["class"] == cats[pb[i]]
        assert c["change"] == ("fixed" if pa[i] == labels[i] else "broken" if pb[i] == labels[i] else "still wrong")
    fixed = sum(c["change"] == "fixed" for c in res.changed)
    broken = sum(c["change"] == "broken" for c in res.changed)
    assert broken - fixed == res.before["accuracy"]["correct1"] - res.after["accuracy"]["correct1"]


def test_history_keeps_them_and_diff_compares_two_runs(runs):
    h, (a, b, c) = runs
    row = h.get(a.run_id)
    assert row.changed == a.changed and row.data["files"] == a.data["files"]
    same = run_cli("diff", str(a.run_id), str(a.run_id), "--history", str(h.path), "--json")
    assert same.returncode == 0, same.stderr
    d = json.loads(same.stdout)
    assert d["changed"] == [] and all(r["delta"] == 0 for r in d["per_class"]) and len(d["per_class"]) == 10
    ab = json.loads(run_cli("diff", str(a.run_id), str(b.run_id), "--history", str(h.path), "--json").stdout)
    pa, pb = a.after["per_image"]["pred"], b.after["per_image"]["pred"]
    assert len(ab["changed"]) == sum(x != y for x, y in zip(pa, pb))
    assert sum(r["delta"] * r["n"] for r in ab["per_class"]) / 100 == pytest.approx(
        b.after["accuracy"]["correct1"] - a.after["accuracy"]["correct1"])
    other = run_cli("diff", str(a.run_id), str(c.run_id), "--history", str(h.path))
    assert other.returncode == 2 and "different images" in other.stderr
    text = run_cli("diff", str(a.run_id), str(b.run_id), "--history", str(h.path))
    assert text.returncode == 0 and " became right, " in text.stdout
    missing = run_cli("diff", str(a.run_id), "999", "--history", str(h.path))
    assert missing.returncode == 2 and "no run 999" in missing.stderr


# ------------------------------------------------------------------ where each model looks

def _photo(size=(300, 200)):
    """A real photo (scikit-image's astronaut), cropped to a non-square size."""
    from PIL import Image
    from skimage import data
    return Image.fromarray(data.astronaut()).resize(size)


def test_saliency_maps_are_the_photos_size_and_differ_between_two_models(runs, lite0):
    import numpy as np

    from compress import saliency
    _, (res, _, _) = runs
    photo = _photo()
    spec = lite0.spec
    [m] = saliency.explain([("lite0", lite0.model)], photo, spec.preprocess, spec.categories)
    assert m.method == saliency.GRAD_CAM and m.size == photo.size and m.values.shape == (200, 300)
    # ImageNet preprocessing keeps the centre crop: 224/256 of the shorter side, centred
    left, top, right, bottom = m.crop_box
    assert (right - left, bottom - top) == (175, 175) and abs(left - (300 - right)) <= 1
    assert np.isnan(m.values[:, :left]).all() and not np.isnan(m.values[top:bottom, left:right]).any()
    inside = m.values[top:bottom, left:right]
    assert inside.min() >= 0 and inside.max() == pytest.approx(1.0) and inside.std() > 0.05
    # the original and its pruned copy (run 1) on a CIFAR-sized view of the same photo
    from compress.checkpoint import load_model
    from compress.zoo import get_spec
    cifar = get_spec("resnet18_cifar10")
    original = load_model("resnet18_cifar10").model
    a, b = saliency.explain([("original", original), ("pruned", res.model)], photo, cifar.preprocess,
                            cifar.categories)
    assert a.values.shape == b.values.shape == (200, 300)
    assert not np.allclose(np.nan_to_num(a.values), np.nan_to_num(b.values), atol=1e-3)
    r = saliency.similarity(a, b)
    assert -1 <= r < 0.999
    same = saliency.explain([("a", original), ("b", original)], photo, cifar.preprocess, cifar.categories)
    assert saliency.similarity(*same) == pytest.approx(1.0)


def test_int8_models_are_explained_by_occlusion_and_grad_cam_on_them_is_a_message(runs):
    import torch

    from compress import quantize, saliency
    from compress.checkpoint import load_model
    from compress.zoo import get_spec
    spec = get_spec("resnet18_cifar10")
    original = load_model("resnet18_cifar10").model
    photo = _photo((64, 64))
    calib = [torch.stack([spec.preprocess.transform()(_photo((40 + i, 48))) for i in range(8)])]
    q = quantize.quantize(original, quantize.QuantConfig(mode="ort-int8", calibration=8), spec.input_size,
                          calibration=calib)
    assert not saliency.has_gradients(q.model) and saliency.has_gradients(original)
    a, b = saliency.explain([("original", original), ("int8", q.model)], photo, spec.preprocess, spec.categories)
    assert a.method == b.method == saliency.OCCLUSION and "gradient-free" in b.note
    assert a.values.shape == (64, 64) and 0.3 < saliency.similarity(a, b) <= 1.0   # INT8 looks where FP32 looks
    with pytest.raises(saliency.SaliencyError, match="Grad-CAM needs gradients"):
        saliency.explain([("int8", q.model)], photo, spec.preprocess, spec.categories, method=saliency.GRAD_CAM)


def test_predict_writes_a_saliency_png_next_to_the_originals(runs, tmp_path):
    from PIL import Image
    h, (res, _, _) = runs
    photo = tmp_path / "astronaut.jpg"
    _photo((96, 80)).save(photo)
    out = tmp_path / "where.png"
    r = run_cli("predict", str(photo), "--run", str(res.run_id), "--history", str(h.path),
                "--saliency", str(out), "--json")
    assert r.returncode == 0, r.stderr
    [entry] = json.loads(r.stdout)
    assert entry["saliency"]["file"] == str(out) and entry["saliency"]["method"] == "Grad-CAM"
    assert -1 <= entry["saliency"]["similarity"] <= 1
    with Image.open(out) as im:                        # two overlays side by side, under a title strip
        assert im.size == (2 * 96, 80 + 36)
    bad = run_cli("predict", str(photo), "--saliency", str(tmp_path / "where.jpg"))
    assert bad.returncode == 2 and "give a .png file name" in bad.stderr


def test_the_sentence_names_a_class_only_when_it_lost_more_than_one_photo():
    from compress.report import forgetting_sentence
    one_each = [{"class": c, "n": 1, "before": 100.0, "after": 0.0, "delta": -100.0} for c in ("snowmobile", "toucan")]
    s = forgetting_sentence(one_each, [{"change": "broken"}, {"change": "broken"}, {"change": "fixed"}])
    assert "snowmobile" not in s and "spread over 2 classes" in s
    assert s.endswith("1 photo became right, 2 photos became wrong.")
    cat = {"class": "cat", "n": 100, "before": 70.0, "after": 64.0, "delta": -6.0}
    dog = {"class": "dog", "n": 100, "before": 80.0, "after": 79.0, "delta": -1.0}
    assert forgetting_sentence([cat, dog], []).startswith("Most of the loss is in 'cat' (-6.0 points on 100 photos);")
