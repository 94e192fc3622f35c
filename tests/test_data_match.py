"""Data must match the model (issue 12): class folders are mapped by name, never by sort
order, and a set whose classes are not the model's is refused before anything is scored."""
from __future__ import annotations

import contextlib
import csv
import io
import os

import pytest

from compress import data as D
from compress.errors import DataError


def test_wnid_table_is_imagenet_order():
    w = D.imagenet_wnids()
    assert len(w) == 1000 and len(set(w)) == 1000 and w == tuple(sorted(w))
    assert w[0] == "n01440764" and w[281] == "n02123045"            # tench; tabby cat


def test_class_indices_by_wnid_name_and_number():
    from compress.zoo import ZOO
    cats = ZOO["efficientnet_lite0"].categories
    assert D.class_indices(["n01443537", "n01440764"], 1000, "m") == [1, 0]
    assert D.class_indices(["Tench", "great_white-shark"], 1000, "m", cats) == [0, 2]
    assert D.class_indices(["7", "3"], 10, "m") == [7, 3]
    assert D.class_indices(list(D.CIFAR10_CLASSES), 10, "m") == list(range(10))
    with pytest.raises(DataError, match=r"do not match m's 1000 classes \(tench, goldfish.*cat, dog"):
        D.class_indices(["cat", "dog", "zebra_crossing"], 1000, "m", cats[:0] or ("tench", "goldfish", "x"))
    with pytest.raises(DataError, match="are ImageNet WordNet ids, but m has 10 classes"):
        D.class_indices(["n01440764"], 10, "m")
    with pytest.raises(DataError, match="folder 12 is not a class index of m"):
        D.class_indices(["1", "12"], 10, "m")
    with pytest.raises(DataError, match="n99999999 is not among the 1000"):
        D.class_indices(["n99999999"], 1000, "m")


@pytest.fixture(scope="module")
def wnid_folder(imagenet_val, tmp_path_factory):
    """The real ImageNet sample's first 150 images twice: as wnid class folders, and as
    images/ + labels.csv."""
    rows = list(csv.DictReader(open(imagenet_val / "labels.csv")))[:150]
    w = D.imagenet_wnids()
    folders = tmp_path_factory.mktemp("wnid")
    flat = tmp_path_factory.mktemp("csv")
    (flat / "images").mkdir()
    for r in rows:
        (folders / w[int(r["label"])]).mkdir(exist_ok=True)
        os.symlink(imagenet_val / "images" / r["file"], folders / w[int(r["label"])] / r["file"])
        os.symlink(imagenet_val / "images" / r["file"], flat / "images" / r["file"])
    with open(flat / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "label"]] + [[r["file"], r["label"]] for r in rows])
    return folders, flat


def _top1(path, lite0):
    from compress.measure import evaluate
    import torch
    spec = lite0.spec
    sets = D.eval_sets(path, spec.preprocess.transform(), spec.num_classes, spec.name, limit=None,
                       categories=spec.categories)
    return evaluate(lite0.model, sets.evaluation, torch.device("cpu"), total=sets.n_eval)


def test_wnid_imagefolder_scores_like_labels_csv(wnid_folder, lite0):
    folders, flat = wnid_folder
    a, b = _top1(folders, lite0), _top1(flat, lite0)
    assert a.n == b.n > 100
    assert a.top1 > 60 and abs(a.top1 - b.top1) <= 3.0               # the real accuracy, not 1/1000


def test_cifar_for_an_imagenet_model_exits_2_and_prints_no_accuracy(cifar_tar):
    from compress.__main__ import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["profile", "--model", "efficientnet_lite0", "--data", str(cifar_tar), "--runs", "1",
                     "--warmup", "0"])
    assert code == 2 and out.getvalue() == ""
    line = err.getvalue().strip()
    assert len(line.splitlines()) == 1 and str(cifar_tar) in line
    assert "do not match efficientnet_lite0's 1000 classes" in line and "Nothing was scored" in line
