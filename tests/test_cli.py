import json
import subprocess
import sys

import pytest

from conftest import ROOT


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "compress", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_profile_json_contract(imagenet_val):
    r = run_cli("profile", "--model", "efficientnet_lite0", "--data", str(imagenet_val),
                "--limit", "32", "--runs", "5", "--warmup", "2", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("model", "params", "nonzero_params", "size_bytes", "macs", "latency_ms", "accuracy"):
        assert key in out
    assert out["params"] == 4_652_008
    assert set(out["latency_ms"]) >= {"median", "p90", "batch", "device", "threads", "runs"}
    assert out["latency_ms"]["runs"] == 5 and out["latency_ms"]["device"] == "cpu"
    acc = out["accuracy"]
    assert acc["n"] == 32 and acc["ci95"][0] <= acc["top1"] <= acc["ci95"][1] and acc["top1"] > 50


def test_profile_without_data_scores_the_bundled_sample_and_data_none_scores_nothing(cifar_asset):
    r = run_cli("profile", "--model", "resnet18_cifar10", "--runs", "3", "--warmup", "1", "--json")
    assert r.returncode == 0, r.stderr
    acc = json.loads(r.stdout)["accuracy"]
    # 1,500 bundled test images, less the 375-image scoring pool; the trained model is far above chance
    assert acc["n"] == 1125 and "bundled sample" in acc["source"] and 70 < acc["top1"] < 95
    r = run_cli("profile", "--model", "resnet18_cifar10", "--runs", "3", "--warmup", "1", "--data", "none",
                "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["accuracy"] is None
    r = run_cli("profile", "--model", "efficientnet_lite0", "--runs", "3", "--warmup", "1", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["accuracy"] is None      # ImageNet: no bundled sample
    r = run_cli("profile", "--model", "resnet18_cifar10", "--runs", "3", "--warmup", "1", "--limit", "100")
    assert r.returncode == 0 and "Latency, median" in r.stdout and "Latency, p90" in r.stdout
    assert "n = 100 images" in r.stdout and "bundled sample" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (("profile", "--model", "nope"), "Unknown model"),
    (("profile", "--model", "efficientnet_lite0", "--data", "/definitely/missing"), "does not exist"),
    (("profile", "--checkpoint", "/definitely/missing.pt"), "does not exist"),
    (("run", "--model", "efficientnet_lite0", "--prune-ratio", "1.0"), "out of range"),
    (("run", "--model", "efficientnet_lite0", "--prune-layers", "layer9.conv"), "'layer9.conv' does not exist"),
    (("run", "--model", "efficientnet_lite0", "--prune-layers", "_bn0"), "only Conv2d and Linear"),
    (("run", "--model", "efficientnet_lite0", "--unstructured-amount", "0.99"), "out of range"),
    (("run", "--model", "efficientnet_lite0", "--quantize", "static"), "give --data"),
    (("run", "--model", "efficientnet_lite0", "--distill-epochs", "1"), "give --train-data"),
    (("run", "--model", "efficientnet_lite0", "--distill-epochs", "1", "--train-data", "x"),
     "Recovery trains a pruned model"),
    (("run", "--model", "efficientnet_lite0", "--prune-ratio", "0.3", "--distill-epochs", "1", "--train-data", "x",
      "--teacher", "resnet18_cifar10"), "same task"),
    (("run", "--model", "efficientnet_lite0", "--prune-ratio", "0.3", "--distill-epochs", "1", "--train-data", "x",
      "--teacher", "resnet50"), "resnet50-"),          # its weights cannot be downloaded here
    (("run", "--model", "efficientnet_lite0", "--prune-ratio", "0.3", "--distill-epochs", "1", "--train-data", "x",
      "--lr", "5"), "learning rate"),
    (("run", "--model", "efficientnet_lite0", "--prune-ratio", "0.3", "--finetune-epochs", "500",
      "--train-data", "x"), "out of range for recovery epochs"),
    (("run", "--model", "efficientnet_lite0", "--quantize", "ort-int8", "--data", "/definitely/missing",
      "--keep-float", "nope"), "'nope'"),
])
def test_bad_input_exits_2_with_one_line(args, needle):
    r = run_cli(*args)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr


def test_cuda_asked_for_but_absent():
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = run_cli("profile", "--model", "efficientnet_lite0", "--device", "cuda")
    assert r.returncode == 2 and "CUDA" in r.stderr and "Traceback" not in r.stderr


def test_run_prunes_and_reports_before_after_and_steps(cifar_asset, cifar_tar, tmp_path):
    out_path = tmp_path / "pruned.pt"
    r = run_cli("run", "--model", "resnet18_cifar10", "--prune-ratio", "0.5", "--prune-criterion", "taylor",
                "--prune-steps", "2", "--unstructured-amount", "0.2", "--data", str(cifar_tar),
                "--limit", "64", "--runs", "3", "--warmup", "1", "--save", str(out_path), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    before, after, steps = out["before"], out["after"], out["steps"]
    assert after["macs"] < 0.45 * before["macs"] and after["params"] < before["params"]
    assert after["size_bytes"] < before["size_bytes"]
    assert before["accuracy"]["n"] == after["accuracy"]["n"] == 64
    assert [s["step"] for s in steps] == ["prune_structured", "prune_unstructured"]
    assert steps[0]["config"]["criterion"] == "taylor" and len(steps[0]["report"]) == 2
    assert abs(steps[1]["report"]["global_sparsity"] - 0.2) < 0.01
    assert out["artifacts"]["checkpoint"] == str(out_path)
    from compress.checkpoint import load_checkpoint
    from compress.measure import count_params
    assert count_params(load_checkpoint(out_path).model)[0] == after["params"]


def test_run_prune_then_ort_int8_is_measured_in_onnx_runtime(cifar_asset, cifar_tar, tmp_path):
    onnx_path = tmp_path / "model.onnx"
    r = run_cli("run", "--model", "resnet18_cifar10", "--prune-ratio", "0.25", "--quantize", "ort-int8",
                "--calib", "32", "--data", str(cifar_tar), "--limit", "64", "--runs", "5", "--warmup", "1",
                "--save", str(onnx_path), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)                       # calibration chatter must not reach stdout
    before, after = out["before"], out["after"]
    assert [s["step"] for s in out["steps"]] == ["prune_structured", "quantize"]
    assert after["runtime"] == "ONNX Runtime INT8 (QDQ)" and before["runtime"] == "PyTorch eager FP32"
    assert after["size_bytes"] < 0.25 * before["size_bytes"]
    assert after["agreement_top1"] >= 80 and after["accuracy"]["n"] == 64
    assert out["data"]["scoring_pool"] >= 128 and onnx_path.stat().st_size == after["size_bytes"]


def test_fp16_without_a_gpu_is_a_clear_message():
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = run_cli("run", "--model", "efficientnet_lite0", "--quantize", "fp16", "--runs", "2", "--warmup", "1")
    assert r.returncode == 2 and "CUDA GPU" in r.stderr and "Traceback" not in r.stderr


def test_run_prune_then_distill_recovers_accuracy(cifar_asset, cifar_tar):
    r = run_cli("run", "--model", "resnet18_cifar10", "--prune-ratio", "0.5", "--distill-epochs", "1",
                "--train-data", str(cifar_tar), "--train-limit", "512", "--unfreeze", "pruned",
                "--data", str(cifar_tar), "--limit", "200", "--runs", "3", "--warmup", "1", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    steps = out["steps"]
    assert [s["step"] for s in steps] == ["prune_structured", "distill"]
    assert steps[1]["config"]["teacher"] == "original" and steps[1]["config"]["unfreeze"] == "pruned"
    plan = steps[1]["report"]["plan"]                         # the recovery recipe, chosen from 512 photos
    assert plan["holdout"] == 51 and steps[1]["report"]["train_images"] == 512 - 51
    assert steps[1]["config"]["batch_size"] == plan["batch_size"] == 32 and len(steps[1]["report"]["history"]) == 1
    assert steps[1]["report"]["best_epoch"] in (0, 1) and steps[1]["report"]["start_score"] is not None
    # pruning alone leaves ~20% (docs/pruning.md); one short KD epoch must already do far better
    assert out["after"]["accuracy"]["top1"] > 40


def test_train_baseline_runs_under_torchrun_with_two_processes(cifar_tar, tmp_path):
    """The README's command: 2 CPU processes (gloo), each on its shard; rank 0 writes the
    checkpoint and its sidecar, which records the process count."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "compress", "train-baseline", "resnet18_cifar10", "--data", str(cifar_tar),
                        "--epochs", "1", "--train-limit", "128", "--batch", "32", "--out", str(tmp_path)],
                       cwd=root, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('"top1"') == 1                  # only rank 0 prints
    side = json.loads((tmp_path / "resnet18_cifar10.json").read_text())
    assert side["training"]["processes"] == 2 and side["test_accuracy"]["n"] == 10_000
    assert side["command"].startswith("torchrun --nproc_per_node 2")
    assert (tmp_path / "resnet18_cifar10.pt").stat().st_size > 10_000_000
