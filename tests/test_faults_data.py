"""Faults lose nothing (issue 27), for the user's photos: data folders as other programs
leave them (Excel, macOS, empty class folders) and the dataset cache (partial unpacks, a
damaged tarball, a cache that cannot be written). The rest is in tests/test_faults.py."""
from __future__ import annotations

import pytest


# ------------------------------------------------------------------ 3. data folders


def _cifar_photos(n_per_class: int, classes: tuple[str, ...]) -> dict[str, list[bytes]]:
    """Real CIFAR-10 test photos (JPEG bytes) per class, read from the tarball."""
    import tarfile

    from conftest import CIFAR_TAR
    if not CIFAR_TAR.is_file():
        pytest.skip(f"CIFAR-10 tarball not found at {CIFAR_TAR}")
    out: dict[str, list[bytes]] = {c: [] for c in classes}
    with tarfile.open(CIFAR_TAR) as tar:
        for m in tar:
            parts = m.name.split("/")
            if m.isfile() and "test" in parts and parts[-2] in out and len(out[parts[-2]]) < n_per_class:
                out[parts[-2]].append(tar.extractfile(m).read())
            if all(len(v) == n_per_class for v in out.values()):
                break
    return out


def test_an_excel_labels_csv_with_a_byte_order_mark_is_read(tmp_path):
    from compress.data.folders import scan_folder
    photos = _cifar_photos(2, ("cat", "ship"))
    (tmp_path / "images").mkdir()
    rows = []
    for label, c in ((3, "cat"), (8, "ship")):
        for i, data in enumerate(photos[c]):
            (tmp_path / "images" / f"{c}{i}.jpg").write_bytes(data)
            rows.append(f"{c}{i}.jpg,{label}")
    (tmp_path / "labels.csv").write_text("file,label\r\n" + "\r\n".join(rows) + "\r\n", encoding="utf-8-sig")
    assert (tmp_path / "labels.csv").read_bytes().startswith(b"\xef\xbb\xbffile,label")
    images = scan_folder(tmp_path)
    assert images.layout == "labels.csv" and images.labels == (3, 3, 8, 8)
    assert [p.name for p in images.paths] == ["cat0.jpg", "cat1.jpg", "ship0.jpg", "ship1.jpg"]


def test_macos_hidden_files_in_class_folders_are_not_photos(tmp_path):
    from compress.data.folders import scan_folder
    from compress.predict import photo_files
    photos = _cifar_photos(2, ("cat", "ship"))
    for c, datas in photos.items():
        (tmp_path / c).mkdir()
        for i, data in enumerate(datas):
            (tmp_path / c / f"photo{i}.jpg").write_bytes(data)
            (tmp_path / c / f"._photo{i}.jpg").write_bytes(b"\x00\x05\x16\x07AppleDouble metadata")
        (tmp_path / c / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "._cat").write_bytes(b"\x00\x05\x16\x07")
    images = scan_folder(tmp_path)
    assert images.classes == ("cat", "ship") and len(images) == 4
    assert all(not p.name.startswith(".") for p in images.paths)
    assert photo_files([tmp_path]) == list(images.paths)       # the same rule in predict


def test_an_empty_class_folder_is_left_out_and_the_result_says_so(tmp_path, cifar_asset):
    from compress import pipeline
    from compress.data.folders import scan_folder
    from compress.recipe import DataRef, MeasureRef, Recipe
    photos = _cifar_photos(6, ("airplane", "cat"))
    for c in ("airplane", "bird", "cat", "deer"):
        (tmp_path / c).mkdir()
        for i, data in enumerate(photos.get(c, [])):
            (tmp_path / c / f"{i}.jpg").write_bytes(data)
    (tmp_path / "deer" / ".DS_Store").write_bytes(b"Bud1")          # hidden files do not count as images
    images = scan_folder(tmp_path)
    assert images.classes == ("airplane", "cat") and len(images) == 12
    (note,) = images.notes
    assert note.startswith("2 class folders of ") and "left out: bird, deer." in note
    assert "other 2 classes only" in note
    result = pipeline.run(Recipe(data=DataRef(path=str(tmp_path), limit=None),
                                 measure=MeasureRef(device="cpu", runs=2, warmup=1)))
    assert note in result.warnings
    assert result.before["accuracy"]["n"] + result.data["scoring_pool"] == 12


# ------------------------------------------------------------------ 6. the dataset cache


def _small_cifar_tarball(path, per_class: int = 2):
    """A CIFAR-10 tarball in the real one's layout (cifar10/{train,test}/<class>/*.jpg, ten
    classes), from real photos, large enough that cutting it cuts photos."""
    import io
    import tarfile

    from compress.data.folders import CIFAR10_CLASSES
    photos = _cifar_photos(per_class, CIFAR10_CLASSES)
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            for c, datas in photos.items():
                for i, data in enumerate(datas):
                    info = tarfile.TarInfo(f"cifar10/{split}/{c}/{i:04d}.jpg")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return path


def test_a_good_tarball_is_unpacked_once_and_completely(tmp_path, monkeypatch):
    from compress.data.folders import open_labelled
    cache = tmp_path / "cache"
    monkeypatch.setenv("COMPRESSION_LAB_CACHE", str(cache))
    tar = _small_cifar_tarball(tmp_path / "cifar10-small.tar.gz")
    images = open_labelled(tar)
    assert len(images) == 20 and len(set(images.labels)) == 10
    (unpacked,) = cache.iterdir()                          # one folder, no temporary left
    assert unpacked.name.startswith("cifar10-") and (unpacked / ".unpacked").is_file()
    assert open_labelled(tar, "train").paths[0].is_relative_to(unpacked)


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_a_truncated_tarball_is_one_message_and_leaves_nothing_in_the_cache(tmp_path, monkeypatch, keep):
    from compress.data.folders import open_labelled
    from compress.errors import DataError
    cache = tmp_path / "cache"
    monkeypatch.setenv("COMPRESSION_LAB_CACHE", str(cache))
    full = _small_cifar_tarball(tmp_path / "full.tar.gz").read_bytes()
    cut = tmp_path / "cifar10-cut.tar.gz"
    cut.write_bytes(full[:int(len(full) * keep)])
    for _ in range(2):                                      # and again: nothing half-done is trusted
        with pytest.raises(DataError, match=r"cifar10-cut\.tar\.gz is truncated or damaged: ") as e:
            open_labelled(cut)
        assert "\n" not in str(e.value)
        assert list(cache.iterdir()) == []


def test_a_partial_unpack_of_an_earlier_version_is_not_trusted(tmp_path, monkeypatch):
    """Earlier versions unpacked in place and marked the folder when done: one without the
    mark (the process was stopped) is unpacked again, not used with photos missing."""
    from compress.data.folders import open_labelled
    cache = tmp_path / "cache"
    monkeypatch.setenv("COMPRESSION_LAB_CACHE", str(cache))
    tar = _small_cifar_tarball(tmp_path / "c.tar.gz")
    (unpacked,) = (open_labelled(tar), *cache.iterdir())[1:]
    (unpacked / ".unpacked").unlink()
    for f in list((unpacked / "cifar10" / "test" / "cat").iterdir()):
        f.unlink()
    assert len(open_labelled(tar)) == 20


def test_a_cache_path_under_a_file_is_a_message(tmp_path, monkeypatch, cifar_tar):
    from compress.data.folders import open_labelled
    from compress.errors import CompressError
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    monkeypatch.setenv("COMPRESSION_LAB_CACHE", str(a_file / "cache"))
    with pytest.raises(CompressError, match=r"^The cache folder .*notes\.txt/cache cannot be made .*"
                                            r"COMPRESSION_LAB_CACHE"):
        open_labelled(cifar_tar)


def test_a_cache_under_a_file_through_the_cli_is_one_line(tmp_path, cifar_tar, cifar_asset):
    import os
    import subprocess
    import sys

    from conftest import ROOT
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    env = {**os.environ, "COMPRESSION_LAB_CACHE": str(a_file / "cache")}
    r = subprocess.run([sys.executable, "-m", "compress", "profile", "--model", "resnet18_cifar10", "--data",
                        str(cifar_tar), "--limit", "10", "--runs", "2", "--warmup", "1", "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "The cache folder" in lines[0] and "cannot be made" in lines[0], r.stderr


def test_a_read_only_cache_is_a_message(tmp_path, monkeypatch):
    import os
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder; a cache under a file is tested instead")
    from compress.data.folders import open_labelled
    from compress.errors import CompressError
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    monkeypatch.setenv("COMPRESSION_LAB_CACHE", str(cache))
    try:
        with pytest.raises(CompressError, match=r"^The cache folder .* cannot be written \(Permission denied\)"):
            open_labelled(_small_cifar_tarball(tmp_path / "c.tar.gz"))
    finally:
        cache.chmod(0o755)


def test_a_cache_folder_that_even_root_cannot_write_is_a_message(tmp_path, monkeypatch):
    from compress.data.folders import open_labelled
    from compress.errors import CompressError
    tar = _small_cifar_tarball(tmp_path / "c.tar.gz")
    monkeypatch.setenv("COMPRESSION_LAB_CACHE", "/proc")         # a folder no one can make files in
    with pytest.raises(CompressError, match=r"^The cache folder /proc cannot be written \(.*\); c\.tar\.gz is "
                                            r"unpacked there\. Set COMPRESSION_LAB_CACHE"):
        open_labelled(tar)


def test_decoded_photos_survive_a_cache_that_cannot_be_written_or_is_damaged(tmp_path, monkeypatch):
    """decode_to_tensor's cache is a convenience: a failed write (a full disk) leaves no file
    and still returns the photos; a damaged cache file is decoded again, never trusted."""
    import errno

    import torch

    from compress import data as D
    from compress.data import loaders
    from compress.data.folders import ImageList
    folder = tmp_path / "photos" / "cat"
    folder.mkdir(parents=True)
    for i, data in enumerate(_cifar_photos(3, ("cat",))["cat"]):
        (folder / f"{i}.jpg").write_bytes(data)
    images = D.scan_folder(tmp_path / "photos")
    assert isinstance(images, ImageList) and len(images) == 3
    cache = tmp_path / "cache"
    monkeypatch.setenv("COMPRESSION_LAB_CACHE", str(cache))
    real = loaders.atomic_write

    def full_disk(path):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(loaders, "atomic_write", full_disk)
    x, y = D.decode_to_tensor(images, 32)
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.uint8 and y.tolist() == [0, 0, 0]
    assert not list(cache.glob("decoded-*"))                        # nothing written, nothing partial
    monkeypatch.setattr(loaders, "atomic_write", real)
    x2, _ = D.decode_to_tensor(images, 32)                           # now cached, whole
    (cached,) = cache.glob("decoded-*.pt")
    cached.write_bytes(cached.read_bytes()[:100])                    # damaged (e.g. an old crash)
    x3, _ = D.decode_to_tensor(images, 32)
    assert torch.equal(x, x2) and torch.equal(x, x3)
