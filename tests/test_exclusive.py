"""Two sessions of one server exporting at once (issue 32): exporters and compilers keep
process-wide state, so such steps run one at a time and a waiting step says so."""
import threading

import numpy as np
import onnxruntime as ort
import torch

from compress.exclusive import one_at_a_time
from compress.runtimes import export_onnx
from compress.zoo import build_architecture


def test_onnx_exports_from_two_threads_at_once_all_succeed_and_agree_with_the_model():
    torch.manual_seed(0)
    model = build_architecture("resnet18", 10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = model(x).numpy()
    errors, outputs = [], []

    def work():
        try:
            for _ in range(3):
                outputs.append(export_onnx(model, (3, 32, 32)))
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)
    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(outputs) == 6
    for data in outputs:
        got = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
        assert np.allclose(got, want, atol=1e-4)


def test_a_step_that_waits_for_another_says_so_then_runs():
    held, release, seen, order = threading.Event(), threading.Event(), [], []

    def first():
        with one_at_a_time("ONNX export"):
            held.set()
            release.wait(10)
            order.append("first")

    def second():
        with one_at_a_time("ExecuTorch export", seen.append):
            order.append("second")
    a = threading.Thread(target=first)
    a.start()
    held.wait(10)
    b = threading.Thread(target=second)
    b.start()
    b.join(0.5)
    assert b.is_alive() and order == []                      # it waits while the other holds the lock
    release.set()
    a.join(10)
    b.join(10)
    assert order == ["first", "second"]
    assert [e.message for e in seen] == ["waiting for another session's ExecuTorch export to finish"]
    with one_at_a_time("ONNX export", seen.append):          # nobody else: no message
        with one_at_a_time("TorchInductor compile", seen.append):   # re-entrant within one thread
            pass
    assert len(seen) == 1
