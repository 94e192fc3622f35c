"""Faults lose nothing (issue 27): every bad input gets one clear message, never a
traceback or a silent wrong answer, and a finished result is never lost. Recipe files and
photo files (Hypothesis), Ctrl-C, output paths, saving after the work; data folders and the
dataset cache are in tests/test_faults_data.py."""
from __future__ import annotations

import dataclasses
import re
import typing

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compress.recipe import Recipe, RecipeError

# ------------------------------------------------------------------ 1. recipe files


def _sections(cls=Recipe, prefix: str = "") -> dict[str, type]:
    """Every recipe field by its place in the file ("prune.ratio") and its declared type."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        out[prefix + f.name] = tp
        for a in (tp, *typing.get_args(tp)):
            if dataclasses.is_dataclass(a):
                out.update(_sections(a, prefix + f.name + "."))
    return out


FIELDS = _sections()
LEAVES = {k: tp for k, tp in FIELDS.items()
          if not any(dataclasses.is_dataclass(a) for a in (tp, *typing.get_args(tp)))}


def _optional(tp) -> bool:
    return type(None) in typing.get_args(tp)


def _nest(place: str, value) -> dict:
    d: typing.Any = value
    for part in reversed(place.split(".")):
        d = {part: d}
    return d


@pytest.mark.parametrize("place", sorted(p for p, tp in LEAVES.items() if not _optional(tp)))
def test_a_null_where_a_value_belongs_is_a_message_naming_the_field(place):
    with pytest.raises(RecipeError, match="^" + re.escape(place) + r": expected .*, got null\.$"):
        Recipe.from_dict(_nest(place, None), check=False)


def test_prune_ratio_null_with_the_ratio_target_names_the_field():
    with pytest.raises(RecipeError, match=r"^prune\.ratio: expected a number .*, got null"):
        Recipe.from_dict({"prune": {"ratio": None}})
    # with a MACs/params target the ratio is searched, so null is what the file should say
    r = Recipe.from_dict({"prune": {"ratio": None, "target": "macs", "target_reduction": 0.3}})
    assert r.prune.ratio is None and r.prune.target == "macs"


EXTREMES = st.sampled_from([10 ** 400, -(10 ** 400), 2 ** 63, 2 ** 32, -1, 0, 1e308, -1e308, 5e-324, 1e-300,
                            float("nan"), float("inf"), -0.0])
GARBAGE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | EXTREMES | st.text(max_size=12)
    | st.sampled_from(["", "auto", "l1", "ratio", "macs", "params", "ort-int8", "static", "onnx", "distill",
                       "resnet18_cifar10", "cuda:0", "uniform", "global", "x86", "sgd", "all"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)
SECTION_NAMES = sorted({p.split(".")[0] for p in FIELDS} | {"bogus"})
# a recipe that passes every check, so that a wrong value is not masked by a missing one
VALID = {"data": {"path": "photos", "train_path": "train"}, "prune": {"ratio": 0.3},
         "recover": {"method": "distill", "epochs": 1}, "unstructured": {"amount": 0.2},
         "quantize": {"mode": "ort-int8"}, "export": {"formats": ["onnx"]}}


@st.composite
def recipe_dicts(draw):
    """A recipe-shaped object (from nothing or from a valid one) whose fields may be of the
    wrong type, null, huge, tiny, nested garbage or unknown."""
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in draw(st.sampled_from([{}, VALID])).items()}
    for section in draw(st.lists(st.sampled_from(SECTION_NAMES), unique=True, max_size=4)):
        inner = [p.split(".", 1)[1] for p in LEAVES if p.startswith(section + ".")]
        if inner and draw(st.integers(0, 4)):
            keys = draw(st.lists(st.sampled_from(inner + ["unknown_key"]), unique=True, min_size=1, max_size=3))
            d[section] = {**(d.get(section) if isinstance(d.get(section), dict) else {}),
                          **{k: draw(GARBAGE) for k in keys}}
        else:
            d[section] = draw(GARBAGE)
    return d


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe_dicts())
def test_any_recipe_json_is_a_recipe_or_one_recipe_error(d):
    try:
        r = Recipe.from_dict(d)
    except RecipeError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert isinstance(r, Recipe)
    r.describe()                       # what the history and the pages show of it
    assert Recipe.from_json(r.to_json()) == r


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(LEAVES)), GARBAGE, st.booleans())
def test_any_value_in_any_one_field_is_accepted_or_one_recipe_error(place, value, on_valid):
    section = place.split(".")[0]
    d = {k: dict(v) for k, v in VALID.items()} if on_valid else {}
    if "." in place:
        d.setdefault(section, {})[place.split(".", 1)[1]] = value
    else:
        d[place] = value
    try:
        r = Recipe.from_dict(d)
    except RecipeError as e:
        assert str(e) and "\n" not in str(e)
        return
    r.describe()
    assert Recipe.from_json(r.to_json()) == r


NASTY = [None, True, 10 ** 400, -(10 ** 400), 2 ** 63, -1, 0, 1e308, 5e-324, float("nan"), float("inf"), "",
         "bogus", [], [None], {}, {"a": 1}]


@pytest.mark.parametrize("on_valid", [False, True])
def test_every_field_with_every_kind_of_wrong_value_is_a_recipe_or_one_message(on_valid):
    """Every field of the file, one at a time, with each value a hand-edited file might hold."""
    odd = []
    for place in sorted(LEAVES):
        section, _, key = place.partition(".")
        for value in NASTY:
            d = {k: dict(v) for k, v in VALID.items()} if on_valid else {}
            if key:
                d.setdefault(section, {})[key] = value
            else:
                d[section] = value
            try:
                Recipe.from_dict(d).describe()
            except RecipeError as e:
                if str(e).split(":")[0].split("[")[0] not in FIELDS:     # "prune.ratio: …", "recover: …"
                    odd.append(f"{place}={value!r}: message does not name the field: {e}")
            except Exception as e:  # noqa: BLE001 - the point of the test
                odd.append(f"{place}={value!r}: {type(e).__name__}: {e}")
    assert not odd, "\n".join(odd[:20])


# ------------------------------------------------------------------ 1b. photo files


def _photo_bytes() -> dict[str, bytes]:
    """Small real encodings (a gradient with EXIF, in each format predict reads) to mutate."""
    import io

    import numpy as np
    from PIL import Image
    a = np.zeros((24, 32, 3), np.uint8)
    a[..., 0], a[..., 1] = np.arange(32) * 8, np.arange(24)[:, None] * 10
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6                                   # rotated 90°
    out = {}
    for fmt, suffix in (("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp"), ("GIF", ".gif"), ("TIFF", ".tif")):
        buf = io.BytesIO()
        im.save(buf, fmt, **({"exif": exif} if fmt in ("JPEG", "PNG", "WEBP") else {}))
        out[suffix] = buf.getvalue()
    return out


PHOTOS = _photo_bytes()


@st.composite
def photo_files(draw):
    """(suffix, bytes): random bytes, or a real photo with bytes changed, cut or inserted."""
    suffix = draw(st.sampled_from(sorted(PHOTOS)))
    if draw(st.integers(0, 5)) == 0:
        return suffix, draw(st.binary(max_size=256))
    data = bytearray(PHOTOS[suffix])
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(data) - 1))
        how = draw(st.sampled_from(["set", "cut", "insert"]))
        if how == "set":
            data[i] = draw(st.integers(0, 255))
        elif how == "cut":
            del data[i:i + draw(st.integers(1, 64))]
        else:
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        if not data:
            break
    return suffix, bytes(data)


class _TenClasses(torch.nn.Module):
    def forward(self, x):
        assert x.shape[1:] == (3, 32, 32)
        return x.mean(dim=(2, 3)).repeat(1, 4)[:, :10]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(photo_files())
def test_any_photo_file_is_classified_or_one_image_message(tmp_path, photo):
    from compress.predict import predict_files
    from compress.zoo import ZOO
    suffix, data = photo
    path = tmp_path / f"photo{suffix}"
    path.write_bytes(data)
    (entry,) = predict_files(_TenClasses(), ZOO["resnet18_cifar10"], [path], topk=3)
    assert ("top" in entry) != ("error" in entry), entry
    if "error" in entry:
        assert entry["error"].startswith("photo") and "\n" not in entry["error"]
    else:
        assert len(entry["top"]) == 3


# ------------------------------------------------------------------ 2. Ctrl-C


def _rows(history) -> list[tuple]:
    import sqlite3
    if not history.exists():
        return []
    try:
        with sqlite3.connect(history, timeout=5) as db:
            return db.execute("SELECT id, status, error FROM runs ORDER BY id").fetchall()
    except sqlite3.Error:                      # the CLI is creating the file at this moment
        return []


def test_ctrl_c_during_a_run_is_one_line_exit_130_and_a_cancelled_row(tmp_path, cifar_tar, cifar_asset):
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT
    history = tmp_path / "h" / "history.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "compress", "run", "--model", "resnet18_cifar10", "--data", str(cifar_tar),
         "--limit", "200", "--runs", "3", "--warmup", "1", "--prune-ratio", "0.3", "--distill-epochs", "2",
         "--train-data", str(cifar_tar), "--train-limit", "2000", "--history", str(history), "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not _rows(history) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        assert [r[1] for r in _rows(history)] == ["running"]
        time.sleep(2)                          # into the work: data, measuring, training
        assert proc.poll() is None, "the run finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "cancel" in lines[0], err
    (run_id, status, error), = _rows(history)
    assert status == "cancelled" and "Ctrl-C" in error
    assert lines[0] == f"cancelled by the user (Ctrl-C); run {run_id} is recorded as cancelled"
    assert out == ""                                       # no half result
    artifacts = history.parent / "artifacts"
    assert not artifacts.exists() or not any(p.is_file() for p in artifacts.rglob("*"))


# ------------------------------------------------------------------ 4. output paths, before the work


def _cli(*args, timeout=600):
    import subprocess
    import sys

    from conftest import ROOT
    return subprocess.run([sys.executable, "-m", "compress", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("case", ["save_is_a_folder", "save_folder_missing", "save_folder_is_a_file",
                                  "out_is_a_file", "out_under_a_file"])
def test_output_paths_are_checked_before_anything_is_measured(case, tmp_path, cifar_asset):
    import time
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    args, needle = {
        "save_is_a_folder": (["--save", str(tmp_path)], "is a folder; give a file name"),
        "save_folder_missing": (["--save", str(tmp_path / "missing" / "m.pt")], "missing does not exist"),
        "save_folder_is_a_file": (["--save", str(a_file / "m.pt")], "notes.txt is a file, not a folder"),
        "out_is_a_file": (["--export", "onnx", "--out", str(a_file)], "notes.txt is a file"),
        "out_under_a_file": (["--export", "onnx", "--out", str(a_file / "exports")], "notes.txt is a file"),
    }[case]
    history = tmp_path / "history.sqlite"
    t0 = time.monotonic()
    r = _cli("run", "--model", "resnet18_cifar10", "--prune-ratio", "0.3", "--runs", "3", "--warmup", "1",
             "--history", str(history), *args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert _rows(history) == []                            # nothing was run, so nothing recorded
    assert time.monotonic() - t0 < 60


def test_a_recipe_files_export_folder_under_a_file_is_checked_before_the_work(tmp_path, capsys, cifar_asset):
    from compress.cli import main
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    recipe = tmp_path / "r.json"
    recipe.write_text('{"prune": {"ratio": 0.3}, "export": {"formats": ["onnx"], "out_dir": "%s"}}'
                      % (a_file / "exports"))
    history = tmp_path / "history.sqlite"
    assert main(["run", str(recipe), "--data", "none", "--history", str(history)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: export.out_dir ") and "notes.txt is a file" in err and err.count("\n") == 1
    assert _rows(history) == []


# ------------------------------------------------------------------ 5. saving that fails after the work


def _no_space_after(limit: int):
    """For subprocess's preexec_fn: files over ``limit`` bytes cannot be written (EFBIG, as
    a full disk gives ENOSPC), also for root, whom a read-only folder does not stop."""
    def apply():
        import resource
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # the write fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    return apply


def test_atomic_write_leaves_the_old_file_and_no_part_file_when_the_write_fails(tmp_path):
    from compress.paths import atomic_write
    target = tmp_path / "model.pt"
    target.write_bytes(b"the earlier model")
    with pytest.raises(OSError):
        with atomic_write(target) as f:
            f.write(b"half a model")
            raise OSError(28, "No space left on device")
    assert target.read_bytes() == b"the earlier model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    with atomic_write(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new" and target.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def _umask() -> int:
    import os
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _run_and_save(tmp_path, save, preexec_fn=None, *more):
    import json
    import subprocess
    import sys

    from conftest import ROOT
    history = tmp_path / "h" / "history.sqlite"
    r = subprocess.run([sys.executable, "-m", "compress", "run", "--model", "resnet18_cifar10", "--data", "none",
                        "--prune-ratio", "0.3", "--runs", "3", "--warmup", "1", "--history", str(history),
                        "--save", str(save), "--json", *more], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       preexec_fn=preexec_fn)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    out = json.loads(r.stdout)                             # the result is printed whole
    assert out["after"]["params"] < out["before"]["params"]
    return out, r.stderr, history


def test_a_full_disk_after_the_work_keeps_the_result_warns_and_leaves_no_partial_file(tmp_path, cifar_asset):
    saves = tmp_path / "saves"
    saves.mkdir()
    exports = saves / "exports"
    out, err, history = _run_and_save(tmp_path, saves / "small.pt", _no_space_after(4_000_000),
                                      "--export", "onnx", "--out", str(exports))
    assert "checkpoint" not in out["artifacts"] and "model" not in out["artifacts"]
    card = exports / "resnet18_cifar10-compressed.md"
    assert "onnx" not in out["artifacts"] and out["artifacts"]["model_card"] == str(card)
    (export_warning,) = [w for w in out["warnings"] if w.startswith("onnx: ")]
    assert "could not be written (File too large); nothing was left there." in export_warning
    assert [p.name for p in exports.iterdir()] == ["resnet18_cifar10-compressed.md"]
    (save_warning,) = [w for w in out["warnings"] if w.startswith("--save ")]
    assert "could not be written (File too large)" in save_warning and "nothing was left there" in save_warning
    (model_warning,) = [w for w in out["warnings"] if "could not be saved next to the history" in w]
    assert f"warning: {save_warning}\n" in err and f"warning: {model_warning}\n" in err
    (run_id, status, note), = _rows(history)
    assert status == "done" and note.startswith(f"The model of run {run_id} could not be saved") \
        and "File too large" in note
    assert [p.name for p in saves.iterdir()] == ["exports"]
    assert not any(p.is_file() for p in (history.parent / "artifacts").rglob("*"))


def test_a_save_path_that_cannot_be_created_even_by_root_is_a_warning_and_the_model_is_kept(tmp_path,
                                                                                            cifar_asset):
    out, err, history = _run_and_save(tmp_path, "/proc/model.pt")
    (save_warning,) = [w for w in out["warnings"] if w.startswith("--save ")]
    (run_id, status, note), = _rows(history)
    assert status == "done" and note is None
    kept = out["artifacts"]["model"]
    assert f"The model is kept as run {run_id}'s: {kept}." in save_warning
    assert (history.parent / "artifacts" / f"run-{run_id}" / "model.pt").is_file()
    assert f"warning: {save_warning}\n" in err and save_warning.startswith("--save /proc/model.pt could not be written")


def test_a_read_only_save_folder_is_a_warning(tmp_path, cifar_asset):
    import os
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder; the full-disk and /proc tests cover this for root")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        out, err, history = _run_and_save(tmp_path, ro / "model.pt")
    finally:
        ro.chmod(0o755)
    assert any(w.startswith(f"--save {ro / 'model.pt'} could not be written") for w in out["warnings"])
    assert list(ro.iterdir()) == []
