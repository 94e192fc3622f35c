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
    assert text.returncode == 0 and "photos became right" in text.stdout
    missing = run_cli("diff", str(a.run_id), "999", "--history", str(h.path))
    assert missing.returncode == 2 and "no run 999" in missing.stderr
