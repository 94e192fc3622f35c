"""Bad input and faults (issue 13): each case at the layer where it occurs, with the
message asserted and the session or command still usable afterwards."""
from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from compress import prune as P
from compress.errors import CheckpointError, CompressError, DataError, ImageError, UntrustedPickle

# ------------------------------------------------------------------ the output layer


@pytest.mark.parametrize("arch,out", [("resnet18", "fc"), ("mobilenet_v3_large", "classifier.3"),
                                      ("efficientnet_lite0", None)])
def test_output_layer_is_never_pruned_nor_listed(arch, out):
    from compress.zoo import build_architecture
    model = build_architecture(arch, 10)
    last_linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    assert P.output_layers(model) == ((out or last_linear),)
    assert last_linear not in P.prunable_layers(model)
    assert last_linear not in P.default_protected(model)
    with pytest.raises(P.PruneError, match="is the output layer: its 10 channels are the model's 10 classes"):
        P.validate(model, P.StructuredConfig(ratio=0.5, only_layers=(last_linear,), protected=()))
    with pytest.raises(P.PruneError, match="output layer"):
        P.validate(model, P.StructuredConfig(ratio=0.5, layer_ratios=((last_linear, 0.5),)))


def test_unprotecting_everything_still_keeps_every_class():
    from compress.zoo import build_architecture
    model = build_architecture("resnet18", 10)
    pruned, report = P.prune_structured(model, P.StructuredConfig(ratio=0.5, protected=()), (3, 32, 32))
    assert pruned.fc.out_features == 10 and pruned(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert pruned.fc.in_features == 256                      # its inputs shrank with layer4
    assert "fc" not in {g.root for g in report.groups}
    assert pruned.conv1.out_channels == 32                  # the stem was unprotected and pruned


# ------------------------------------------------------------------ a prune that removes nothing


def _events():
    seen = []
    return seen, seen.append


@pytest.mark.parametrize("cfg,msg", [
    (P.StructuredConfig(ratio=0.5, only_layers=("conv1",)), "Nothing to prune: conv1 is protected"),
    (P.StructuredConfig(ratio=0.0), "Nothing to prune: a channel ratio of 0"),
    (P.StructuredConfig(ratio=0.5, protected=("every layer",)),
     "Nothing to prune: at channel ratio 0.5 no channel in any layer would be removed"),
])
def test_prune_that_removes_nothing_is_a_message_before_any_measurement(cfg, msg, tmp_path, cifar_asset):
    from dataclasses import replace
    from compress import pipeline
    from compress.zoo import build_architecture
    if cfg.protected == ("every layer",):
        cfg = replace(cfg, protected=tuple(P.prunable_layers(build_architecture("resnet18", 10))))
    from compress.history import History
    from compress.recipe import MeasureRef, ModelRef, Recipe
    h = History(tmp_path / "h.sqlite")
    recipe = Recipe(model=ModelRef("resnet18_cifar10"), measure=MeasureRef(device="cpu", runs=2, warmup=0), prune=cfg)
    seen, on_progress = _events()
    with pytest.raises(P.PruneError, match=msg):
        pipeline.run(recipe, on_progress=on_progress, history=h)
    assert not [e for e in seen if "latency" in e.stage or e.stage == "measure"]   # nothing was measured
    assert h.runs()[0].status == "failed" and msg.split(":")[0] in h.runs()[0].error
    # the engine and the estimate say the same
    from compress.zoo import build_architecture
    with pytest.raises(P.PruneError, match=msg):
        P.estimate(build_architecture("resnet18", 1000), cfg, (3, 224, 224))


# ------------------------------------------------------------------ training photos without labels


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory, chelsea_png):
    d = tmp_path_factory.mktemp("unlabelled")
    for i in range(3):
        Image.open(chelsea_png).rotate(10 * i).save(d / f"p{i}.png")
    return d


def test_qat_with_unlabelled_photos_is_refused_before_measuring(unlabelled, cifar_tar, cifar_asset):
    from compress import pipeline
    from compress.quantize import QuantConfig
    from compress.recipe import DataRef, MeasureRef, ModelRef, Recipe
    recipe = Recipe(model=ModelRef("resnet18_cifar10"), data=DataRef(path=str(cifar_tar), train_path=str(unlabelled)),
                    measure=MeasureRef(device="cpu", runs=2, warmup=0), quantize=QuantConfig(mode="qat"))
    seen, on_progress = _events()
    with pytest.raises(DataError, match=r"QAT trains on labelled photos, and .* holds 3 photos without labels"):
        pipeline.run(recipe, on_progress=on_progress)
    assert not seen


def test_qat_engine_refuses_unlabelled_batches(unlabelled):
    from compress.data import train_loader
    from compress.quantize import QuantConfig, QuantizeError, quantize
    from compress.zoo import ZOO, build_architecture
    loader = train_loader(unlabelled, ZOO["resnet18"].preprocess.transform(), batch_size=2)
    with pytest.raises(QuantizeError, match="these have no labels"):
        quantize(build_architecture("resnet18", 1000), QuantConfig(mode="qat"), (3, 224, 224), None,
                 torch.device("cpu"), train_batches=loader)


def test_qat_with_an_empty_training_folder_and_fp16_without_cuda_fail_before_measuring(tmp_path, cifar_tar, cifar_asset):
    from compress import pipeline
    from compress.quantize import QuantConfig
    from compress.recipe import DataRef, MeasureRef, ModelRef, Recipe
    base = Recipe(model=ModelRef("resnet18_cifar10"), data=DataRef(path=str(cifar_tar), train_path=str(tmp_path)),
                  measure=MeasureRef(device="cpu", runs=2, warmup=0))
    seen, on_progress = _events()
    with pytest.raises(CompressError, match="Nothing was measured: qat: No images found"):
        pipeline.run_variants(base, [QuantConfig(mode="ort-int8"), QuantConfig(mode="qat")], on_progress=on_progress)
    if not torch.cuda.is_available():
        with pytest.raises(CompressError, match="(?s)fp16: FP16 runs fast only on a CUDA GPU.*qat: No images"):
            pipeline.run_variants(base, [QuantConfig(mode="fp16"), QuantConfig(mode="qat")], on_progress=on_progress)
    assert not seen


# ------------------------------------------------------------------ broken files


def _broken_files(d: Path) -> dict[str, Path]:
    """About 20 kinds of files that are not a usable checkpoint or photo."""
    d.mkdir(parents=True, exist_ok=True)
    good = io.BytesIO()
    torch.save({"a": torch.zeros(3)}, good)
    good = good.getvalue()
    files: dict[str, bytes] = {
        "random.pt": os.urandom(5000),
        "empty.pt": b"",
        "truncated_zip.pt": good[: len(good) // 2],
        "text.pt": b"hello, not a checkpoint\n" * 20,
        "jpeg_named_pt.pt": b"\xff\xd8\xff\xe0" + os.urandom(500),
        "pickle_of_plain_dict.pt": pickle.dumps({"a": 1, "b": "x"}),
        "pickle_of_list.pt": pickle.dumps([1, 2, 3]),
        "legacy_garbage.pt": b"\x80\x02" + os.urandom(300),
        "huge_header.pt": b"PK\x03\x04" + b"\xff" * 30 + os.urandom(100),
        "garbage.onnx": os.urandom(800),
        "empty.onnx": b"",
        "garbage.png": os.urandom(2000),
        "truncated.png": b"",
    }
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("archive/version", "3\n")
    files["zip_without_data_pkl.pt"] = z.getvalue()
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    files["zip_with_only_data_pkl.pt"] = z.getvalue()
    for name, obj in [("dict_of_non_tensors.pt", {"a": 1, "b": "x"}), ("one_tensor.pt", torch.zeros(3)),
                      ("empty_dict.pt", {}), ("weights_and_junk.pt", {"w": torch.zeros(2), "meta": {"x": 1}})]:
        b = io.BytesIO()
        torch.save(obj, b)
        files[name] = b.getvalue()
    png = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(png, "PNG")
    files["truncated.png"] = png.getvalue()[:60]
    out = {}
    for name, data in files.items():
        (d / name).write_bytes(data)
        out[name] = d / name
    (d / "a_folder.pt").mkdir(exist_ok=True)
    out["a_folder.pt"] = d / "a_folder.pt"
    return out


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    return _broken_files(tmp_path_factory.mktemp("broken"))


def test_every_broken_file_is_a_message_as_a_checkpoint_and_none_asks_for_trust(broken):
    from compress.checkpoint import load_checkpoint
    assert len(broken) >= 20
    for name, path in broken.items():
        for trust in (False, True):
            with pytest.raises(CheckpointError) as e:
                load_checkpoint(path, trust_pickle=trust)
            assert not isinstance(e.value, UntrustedPickle), name    # only real model pickles ask for trust
            msg = str(e.value)
            assert path.name in msg and msg.endswith("."), (name, msg)
            assert "Traceback" not in msg and "miniz" not in msg and "In PyTorch 2.6" not in msg, (name, msg)


def test_only_a_real_pickled_model_asks_for_trust(tmp_path):
    from compress.checkpoint import load_checkpoint
    for legacy in (False, True):
        p = tmp_path / f"module-{legacy}.pt"
        torch.save(torch.nn.Linear(2, 2), p, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(UntrustedPickle, match="refers to torch.nn.modules.linear.Linear"):
            load_checkpoint(p)
        assert isinstance(load_checkpoint(p, trust_pickle=True).model, torch.nn.Linear)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.pt is empty \(0 bytes\): not a readable checkpoint\."):
        load_checkpoint(empty)


def test_every_broken_file_is_a_message_as_a_photo(broken):
    from compress.images import read_image
    for name, path in broken.items():
        data = b"" if path.is_dir() else path.read_bytes()
        with pytest.raises(ImageError) as e:
            read_image(data, name)
        assert name in str(e.value)


def test_cli_broken_checkpoint_is_one_line_and_exit_2(broken):
    from compress.__main__ import main
    import contextlib
    for name in ("random.pt", "empty.pt", "zip_without_data_pkl.pt"):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["profile", "--checkpoint", str(broken[name]), "--trust-pickle", "--runs", "1"])
        assert code == 2
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "not a readable checkpoint" in lines[0]


# ------------------------------------------------------------------ a decompression bomb in a dataset


def test_decompression_bomb_in_a_dataset_is_a_message_naming_it(tmp_path, chelsea_png):
    from compress.__main__ import main
    from compress.data import eval_sets
    from compress.zoo import ZOO
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(4):
            Image.open(chelsea_png).resize((40, 40)).save(tmp_path / cls / f"{i}.png")
    Image.new("1", (12000, 12000)).save(tmp_path / "dog" / "bomb.png")     # 144 megapixels, 18 kB
    spec = ZOO["resnet18_cifar10"]
    with pytest.raises(DataError, match=r"bomb.png is 12000x12000 = 144 megapixels"):
        eval_sets(tmp_path, spec.preprocess.transform(), 10, spec.name, limit=None)
    import contextlib
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["profile", "--data", str(tmp_path), "--runs", "1", "--warmup", "0"]) == 2
    assert "bomb.png" in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1


# ------------------------------------------------------------------ numbers on the command line


def _numeric_flags():
    """(command, flag, limits name) for every numeric flag of every command; a positional
    argument appears as its metavar (e.g. diff's RUN_A), with no leading dashes."""
    import argparse
    from compress import __main__ as cli
    seen = []
    real = argparse.ArgumentParser.parse_args

    def grab(self, args=None, namespace=None):
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for cmd, sub in action.choices.items():
                    for a in sub._actions:
                        if callable(a.type) and a.type.__name__ not in ("str",):
                            seen.append((cmd, a.option_strings[0] if a.option_strings else (a.metavar or a.dest),
                                         a.type.__name__.replace(" ", "_")))
        raise SystemExit(0)
    argparse.ArgumentParser.parse_args = grab
    try:
        with pytest.raises(SystemExit):
            cli.main(["models"])
    finally:
        argparse.ArgumentParser.parse_args = real
    return seen


def test_every_numeric_flag_rejects_zero_negative_and_huge_with_one_line(capsys):
    from compress.__main__ import main
    from compress.limits import BOUNDS
    flags = _numeric_flags()
    assert len(flags) >= 30 and all(name in BOUNDS for _, _, name in flags), flags
    tried = 0
    for cmd, flag, name in flags:
        lo, hi, _ = BOUNDS[name]
        for value in ("0", "-1", "1e30" if isinstance(hi, float) else str(10**30), "nan", "abc"):
            try:
                v = float(value)
            except ValueError:
                v = None
            if v is not None and v == v and lo <= v <= hi and not (isinstance(hi, int) and "e" in value):
                continue                                   # a valid value (e.g. --seed 0): not a bad input
            if flag.startswith("-"):
                argv = [cmd] + (["resnet18_cifar10", "--data", "x"] if cmd == "train-baseline" else []) + [flag, value]
            else:                            # a positional number (diff RUN_A RUN_B): the others valid
                places = [f for c, f, _ in flags if c == cmd and not f.startswith("-")]
                argv = [cmd] + [value if f == flag else "1" for f in places]
            with pytest.raises(SystemExit) as e:
                main(argv)
            out = capsys.readouterr()
            assert e.value.code == 2, (argv, out.err)
            lines = out.err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"error: argument {flag}"), (argv, out.err)
            assert "Traceback" not in out.err
            tried += 1
    assert tried > 100


def test_numbers_in_a_recipe_file_and_in_the_engine(tmp_path):
    from compress.__main__ import main
    from compress.limits import BadNumber
    from compress.timing import measure_latency
    import contextlib
    for body, msg in [('{"measure": {"runs": -3}}', "measure.runs: -3 is out of range"),
                      ('{"measure": {"batch": 0}}', "measure.batch: 0 is out of range"),
                      ('{"data": {"limit": 0}}', "data.limit: 0 is out of range"),
                      ('{"prune": {"ratio": NaN}}', "prune.ratio: nan is not a usable"),
                      ('{"prune": {"layer_ratios": [["layer1.0.conv1"]]}}',
                       r"prune.layer_ratios\[0\]: expected a list of 2 items"),
                      ('{"measure": {"device": "tpu"}}', "measure.device: 'tpu' is not a device")]:
        f = tmp_path / "r.json"
        f.write_text(body)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert main(["run", str(f), "--no-history"]) == 2
        import re
        assert re.search(msg, err.getvalue()), (body, err.getvalue())
        assert len(err.getvalue().strip().splitlines()) == 1
    bad = tmp_path / "latin1.json"
    bad.write_bytes('{"name": "caf\xe9"}'.encode("latin-1"))
    for path, msg in [(bad, "is not a UTF-8 text file"), (tmp_path, "is a folder; give a recipe file")]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert main(["run", str(path), "--no-history"]) == 2
        assert msg in err.getvalue()
    with pytest.raises(BadNumber, match="batch: 0 is out of range"):
        measure_latency(torch.nn.Identity(), (3, 8, 8), torch.device("cpu"), batch=0)


def test_num_classes_zero_means_read_from_the_file_on_the_cli_as_in_the_sidebar(cifar_asset, capsys):
    from compress.__main__ import main
    import json
    assert main(["profile", "--checkpoint", str(cifar_asset), "--num-classes", "0", "--runs", "1",
                 "--warmup", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == 11_181_642       # the 10-class CIFAR model (1000: 11.69 M)


# ------------------------------------------------------------------ small things


def test_quantize_baselines_are_not_recorded_and_a_cancelled_run_is(tmp_path, cifar_tar):
    import threading
    from compress import pipeline
    from compress.history import History
    from compress.quantize import QuantConfig
    from compress.recipe import DataRef, MeasureRef, ModelRef, Recipe
    h = History(tmp_path / "h.sqlite")
    recipe = Recipe(model=ModelRef("resnet18_cifar10"), data=DataRef(path=str(cifar_tar), limit=32),
                    measure=MeasureRef(device="cpu", runs=2, warmup=0))
    out = pipeline.run_variants(recipe, [QuantConfig(mode="ort-int8", calibration=16)], history=h,
                                references=[QuantConfig(mode="ort-fp32")])
    assert [r.recipe.quantize.mode for r in out.baselines] == ["ort-fp32"]
    assert [r.recipe.quantize.mode for r in out.results] == ["ort-int8"]
    assert [r.recipe["quantize"]["mode"] for r in h.runs()] == ["ort-int8"]     # one row per press
    assert out.baselines[0].run_id is None and out.results[0].run_id == h.runs()[0].id
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Exception, match="cancelled"):
        pipeline.run(replace_prune(recipe), history=h, cancel=cancel)
    last = h.runs()[0]
    assert last.status == "cancelled" and last.error.startswith("cancelled by the user")
    assert [r.id for r in h.runs(status="cancelled")] == [last.id]


def replace_prune(recipe):
    from dataclasses import replace
    return replace(recipe, prune=P.StructuredConfig(ratio=0.5))


# ------------------------------------------------------------------ pages


def test_prune_page_nothing_to_prune_is_a_message_and_the_page_keeps_working(cifar_asset):
    from tests.test_app import on_page
    at = on_page("prune", prune_runs=5)
    at.multiselect(key="prune_only").set_value(["conv1"]).run()      # conv1 is protected by default
    assert not at.exception
    assert any("Nothing to prune: conv1 is protected" in e.value for e in at.error)
    at.button(key="prune_go").click().run()
    assert not at.exception
    assert any("Nothing to prune: conv1 is protected" in e.value for e in at.error)
    assert at.button(key="un_go") is not None and at.button(key="sens_go") is not None   # the rest renders
    at.multiselect(key="prune_only").set_value(["layer1.0.conv1"]).run()
    assert not at.exception and not at.error


def test_quantize_page_qat_on_unlabelled_photos_is_a_message_before_measuring(cifar_asset, cifar_tar, unlabelled):
    import time
    from tests.test_app import on_page
    at = on_page("quantize", data_path=str(cifar_tar), data_limit=40, q_runs=5)
    at.multiselect(key="q_modes").set_value(["qat"]).run()
    at.text_input(key="q_train_path").set_value(str(unlabelled)).run()
    t0 = time.perf_counter()
    at.button(key="q_go").click().run()
    assert time.perf_counter() - t0 < 30                     # refused before the baselines are measured
    assert not at.exception
    assert any("QAT trains on labelled photos" in e.value for e in at.error)


def test_page_crash_is_one_line_and_the_session_goes_on(monkeypatch, cifar_asset):
    from streamlit.testing.v1 import AppTest
    from tests.test_app import APP
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("views/prune.py")

    def boom(model):
        raise RuntimeError("boom in a helper")
    monkeypatch.setattr(P, "prunable_layers", boom)
    at.run()
    assert not at.exception
    assert any(e.value.startswith("Something went wrong while showing the Prune page: RuntimeError: "
                                  "boom in a helper. The details are in the server log") for e in at.error)
    monkeypatch.undo()
    at.run()                                               # the same session, working again
    assert not at.exception and not at.error
    only = at.multiselect(key="prune_only")
    assert "fc" not in only.options and "layer1.0.conv1" in only.options
    assert "fc" not in at.multiselect(key="prune_protected").options
    assert any("The output layer (fc) is never pruned" in c.value for c in at.caption)
