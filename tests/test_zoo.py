import json
import urllib.error

import pytest
import torch
import torchvision

from compress import checkpoint, zoo
from compress.errors import ArchitectureMismatch, CheckpointError, UnknownModel, UntrustedPickle, WeightsUnavailable
from compress.images import classify
from compress.measure import count_macs, count_params


def test_resnet18_matches_torchvision_published_figures():
    m = zoo.build_architecture("resnet18", 1000)
    assert count_params(m)[0] == 11_689_512
    macs = count_macs(m, zoo.ZOO["resnet18"].input_size)
    assert abs(macs / 1e9 - 1.82) < 0.01


def test_every_entry_carries_its_metadata():
    for spec in zoo.ZOO.values():
        assert spec.description and spec.weights_source
        assert len(spec.categories) == spec.num_classes
        assert spec.input_size[0] == 3 and spec.preprocess.crop in (32, 224)
    r18 = zoo.ZOO["resnet18"]
    assert r18.weights_file == "resnet18-f37072fd.pth"
    assert r18.preprocess.mean == (0.485, 0.456, 0.406) and r18.preprocess.resize == 256
    assert zoo.ZOO["efficientnet_lite0"].preprocess.mean == (0.5, 0.5, 0.5)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(UnknownModel, match="Available"):
        zoo.get_spec("resnet19")


def test_missing_resnet18_weights_offline_names_file_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("COMPRESSION_LAB_WEIGHTS_DIR", raising=False)

    def offline(*a, **k):
        raise urllib.error.URLError("network is unreachable")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailable) as e:
        checkpoint.load_model("resnet18")
    msg = str(e.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path) in msg and "--weights" in msg


def test_resnet18_weights_resolve_from_hub_cache_then_user_dir(tmp_path, monkeypatch):
    """The resolution order: user file, hub cache. Uses a real resnet18 state_dict (untrained)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    ref = torchvision.models.resnet18()
    torch.save(ref.state_dict(), cache / "resnet18-f37072fd.pth")
    loaded = checkpoint.load_model("resnet18", download=False)
    assert loaded.weights_origin.endswith("hub/checkpoints/resnet18-f37072fd.pth")
    assert torch.equal(loaded.model.fc.weight, ref.fc.weight)
    other = torchvision.models.resnet18()
    user = tmp_path / "mine.pth"
    torch.save(other.state_dict(), user)
    loaded = checkpoint.load_model("resnet18", weights=user)
    assert torch.equal(loaded.model.fc.weight, other.fc.weight)


def test_efficientnet_lite0_is_real_and_offline(lite0, chelsea_png):
    from PIL import Image
    assert lite0.trained and "efficientnet" in lite0.weights_origin
    pred = classify(lite0.model, Image.open(chelsea_png).convert("RGB"),
                    lite0.spec.preprocess.transform(), lite0.spec.categories, torch.device("cpu"))
    # ImageNet's domestic-cat classes are 281..285 (tabby, tiger cat, Persian, Siamese, Egyptian cat)
    assert pred.indices[0] in range(281, 286), pred.labels


def test_shipped_cifar10_baseline_loads_and_records_its_accuracy(cifar_asset):
    path = cifar_asset
    loaded = checkpoint.load_model("resnet18_cifar10")
    assert loaded.trained and loaded.spec.num_classes == 10
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["test_accuracy"]["n"] == 10000
    assert side["test_accuracy"]["top1"] >= 80.0
    assert {"torch", "torchvision"} <= set(side["software"])
    sd = torch.load(path, weights_only=True)
    assert sd["fc.weight"].dtype == torch.float16


def test_state_dict_checkpoint_infers_classes_and_architecture(tmp_path):
    ref = torchvision.models.resnet18(num_classes=7)
    p = tmp_path / "r18.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, p)
    loaded = checkpoint.load_checkpoint(p)
    assert loaded.spec.arch == "resnet18" and loaded.spec.num_classes == 7
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(loaded.model(x), ref.eval()(x))


def test_wrong_architecture_names_the_mismatch(tmp_path):
    p = tmp_path / "r34.pt"
    torch.save(torchvision.models.resnet34().state_dict(), p)
    with pytest.raises(ArchitectureMismatch) as e:
        checkpoint.load_checkpoint(p, arch="resnet18")
    assert "does not fit resnet18" in str(e.value) and "resnet34" in str(e.value)


def test_wrong_class_count_names_both_counts(tmp_path):
    p = tmp_path / "r18_10.pt"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), p)
    with pytest.raises(ArchitectureMismatch, match="10-class.*1000 classes"):
        checkpoint.load_checkpoint(p, arch="resnet18", num_classes=1000)


def test_corrupt_and_truncated_checkpoints_are_rejected_plainly(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint.load_checkpoint(bad)
    good = tmp_path / "good.pt"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        checkpoint.load_checkpoint(cut)


def test_full_pickle_needs_explicit_trust(tmp_path):
    p = tmp_path / "whole.pt"
    model = torchvision.models.resnet18(num_classes=10).eval()
    torch.save(model, p)
    with pytest.raises(UntrustedPickle, match="I trust this file"):
        checkpoint.load_checkpoint(p)
    loaded = checkpoint.load_checkpoint(p, trust_pickle=True)
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(loaded.model(x), model(x))


def test_torchscript_and_own_artifact_round_trip(tmp_path):
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    ts = tmp_path / "m.ts"
    torch.jit.save(torch.jit.trace(model, x), ts)
    loaded = checkpoint.load_checkpoint(ts, like="resnet18_cifar10")
    assert torch.allclose(loaded.model(x), model(x), atol=1e-5)
    art = tmp_path / "art.pt"
    checkpoint.save_artifact(zoo.LoadedModel(model, zoo.ZOO["resnet18_cifar10"], "test"), art, {"note": "x"})
    back = checkpoint.load_checkpoint(art)
    assert back.spec.name == "resnet18_cifar10"
    assert torch.allclose(back.model(x), model(x))


def test_untrained_weights_are_labelled():
    loaded = checkpoint.load_model("resnet18", pretrained=False)
    assert not loaded.trained and "UNTRAINED" in loaded.weights_note


@pytest.mark.parametrize("kind", ["pytorch", "torchscript", "onnx"])
def test_a_model_saved_by_kind_is_recognised_and_loads_back(tmp_path, kind):
    model = zoo.build_architecture("resnet18", 10).eval()
    spec = zoo.ZOO["resnet18_cifar10"]
    path = checkpoint.save(kind, model, spec, tmp_path, meta={"run_id": 1})
    assert path.name == checkpoint.ARTIFACT_KINDS[kind].file_name
    assert checkpoint.kind_of(path) == kind
    back = checkpoint.load_checkpoint(path, like="resnet18_cifar10")
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(back.model(x), model(x), atol=1e-4)
    if kind != "torchscript":            # the project checkpoint and ONNX carry their zoo entry
        assert checkpoint.load_checkpoint(path).spec.name == "resnet18_cifar10"


def test_artifact_kinds_by_name_and_programs_need_their_bytes(tmp_path):
    assert [checkpoint.kind_of(n) for n in ("m.ONNX", "m.pte", "m.pt2", "m.pth")] == ["onnx", "pte", "pt2", "pytorch"]
    assert checkpoint.carried("pte", b"x") == {"pte": b"x"} and checkpoint.carried("pytorch", b"x") == {}
    with pytest.raises(CheckpointError, match="carries no ExecuTorch program"):
        checkpoint.save("pte", zoo.build_architecture("resnet18", 10), zoo.ZOO["resnet18_cifar10"], tmp_path)
    with pytest.raises(CheckpointError, match="Unknown model file kind"):
        checkpoint.save("gif", None, zoo.ZOO["resnet18_cifar10"], tmp_path)

