import pytest
from PIL import Image

from compress import data as D
from compress.errors import DataError


def test_labels_csv_layout(imagenet_val):
    images = D.scan_folder(imagenet_val)
    assert images.layout == "labels.csv" and len(images) == 650
    assert all(0 <= y < 1000 for y in images.labels)


def _make_imagefolder(root, classes=("cat", "dog", "ant"), per=3):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / c / f"{i}.png")


def test_imagefolder_sorted_like_torchvision(tmp_path):
    import torchvision
    _make_imagefolder(tmp_path)
    images = D.scan_folder(tmp_path)
    tv = torchvision.datasets.ImageFolder(str(tmp_path))
    assert list(images.classes) == tv.classes == ["ant", "cat", "dog"]
    assert list(images.labels) == [y for _, y in tv.samples]


def test_empty_and_malformed_folders_get_clear_messages(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        D.scan_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="No images found"):
        D.scan_folder(tmp_path / "empty")
    bad = tmp_path / "bad"
    (bad / "images").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(bad / "images" / "a.png")
    (bad / "labels.csv").write_text("file,label\na.png,cat\n")
    with pytest.raises(DataError, match="line 2.*not an integer"):
        D.scan_folder(bad)
    (bad / "labels.csv").write_text("name,class\na.png,1\n")
    with pytest.raises(DataError, match="'file' and 'label'"):
        D.scan_folder(bad)
    (bad / "labels.csv").write_text("file,label\nmissing.png,1\n")
    with pytest.raises(DataError, match="does not exist"):
        D.scan_folder(bad)


def test_unlabelled_folder(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "x.jpg")
    with pytest.raises(DataError, match="no labels"):
        D.scan_folder(tmp_path)
    assert D.scan_folder(tmp_path, allow_unlabelled=True).labels is None


def test_subsets_are_deterministic_and_splits_disjoint():
    a = D.subset_indices(1000, 50, seed=3)
    assert a == D.subset_indices(1000, 50, seed=3) and len(set(a)) == 50
    assert a != D.subset_indices(1000, 50, seed=4)
    pool, rest = D.scoring_split(650, seed=0)
    assert len(pool) == 162 and len(rest) == 488 and not set(pool) & set(rest)
    assert (pool, rest) == D.scoring_split(650, seed=0)
    assert len(D.scoring_split(50_000)[0]) == D.SCORING_POOL          # capped on big sets


def test_cifar10_tarball_and_model_transforms(cifar_tar, tmp_path_factory):
    from compress.zoo import ZOO
    test_dir = D.resolve_cifar10(cifar_tar, "test")
    images = D.open_labelled(cifar_tar)
    assert len(images) == 10_000 and images.classes == D.CIFAR10_CLASSES
    loader, sub = D.eval_loader(images, ZOO["resnet18_cifar10"].preprocess.transform(), limit=40,
                                batch_size=16, workers=0)
    x, y = next(iter(loader))
    assert x.shape == (16, 3, 32, 32) and len(sub) == 40
    assert abs(float(x.mean())) < 1.0  # normalised
    assert test_dir.name == "test"


def test_tensor_batches_augment_keeps_shapes():
    import torch
    x = torch.randint(0, 255, (10, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(10)
    b = D.TensorBatches(x, y, 4, (0.5,) * 3, (0.25,) * 3, shuffle=True, augment=True)
    batches = list(b)
    assert len(batches) == len(b) == 3
    assert sorted(torch.cat([yb for _, yb in batches]).tolist()) == list(range(10))
    plain = next(iter(D.TensorBatches(x, y, 10, (0.5,) * 3, (0.25,) * 3)))[0]
    assert torch.allclose(plain, (x.float() / 255 - 0.5) / 0.25, atol=1e-5)


def test_torchvision_cifar10_download_path_becomes_an_imagefolder(tmp_path, monkeypatch):
    """The online path, with torchvision's dataset class replaced by real images we made."""
    import torchvision
    monkeypatch.setenv("COMPRESSION_LAB_CACHE", str(tmp_path))

    class FakeCIFAR10:
        classes = list(D.CIFAR10_CLASSES)

        def __init__(self, root, train, download):
            assert download and not train

        def __len__(self):
            return 20

        def __getitem__(self, i):
            return Image.new("RGB", (32, 32), (i * 10, 0, 0)), i % 10
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    images = D.open_labelled(D.TORCHVISION_CIFAR10)
    assert len(images) == 20 and images.classes == D.CIFAR10_CLASSES
    assert sorted(images.labels) == sorted(i % 10 for i in range(20))


def test_download_failure_is_a_clear_message(tmp_path, monkeypatch):
    import torchvision
    monkeypatch.setenv("COMPRESSION_LAB_CACHE", str(tmp_path))

    def offline(*a, **k):
        raise OSError("Name or service not known")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError, match="Could not download CIFAR-10.*Offline"):
        D.open_labelled(D.TORCHVISION_CIFAR10)


def test_a_corrupt_image_in_a_dataset_is_named(tmp_path):
    from compress.zoo import ZOO
    _make_imagefolder(tmp_path, per=1)
    (tmp_path / "cat" / "0.png").write_bytes(b"not a png")
    loader, _ = D.eval_loader(D.scan_folder(tmp_path), ZOO["resnet18_cifar10"].preprocess.transform())
    with pytest.raises(DataError, match="A dataset image cannot be used: .*0.png"):
        list(loader)
