"""Command line: ``python -m compress {profile,run,auto,predict,diff,history,models,train-baseline}``.

Errors a user can cause print one plain line to stderr and exit with status 2; Ctrl-C prints
one line and exits with status 130 (a run it stops is recorded as cancelled).
"""
from __future__ import annotations

import sys
from pathlib import Path

from compress.errors import CompressError
from compress.export import FORMATS
from compress.prune import CRITERIA
from compress.quantize import KEEP_RANKS, MODES, OBSERVERS
from compress.cli.commands import (_cmd_auto, _cmd_diff, _cmd_history, _cmd_models, _cmd_predict, _cmd_profile,
                                   _cmd_train_baseline)
from compress.cli.common import _measure_args, _model_args, _num, _Parser
from compress.cli.run import _cmd_run


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="python -m compress", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    pr = sub.add_parser("profile", help="measure a model: params, bytes, MACs, latency, accuracy")
    for args, kw in _model_args + _measure_args:
        pr.add_argument(*args, **kw)
    pr.set_defaults(func=_cmd_profile)

    ru = sub.add_parser("run", help="compress a model and measure it before and after")
    ru.add_argument("recipe", nargs="?", default=None,
                    help="a recipe JSON file (see compress/recipe.py); without it, the flags below")
    for args, kw in _model_args + _measure_args:
        ru.add_argument(*args, **kw)
    ru.add_argument("--prune-ratio", type=_num("prune_ratio"), default=None,
                    help="structured pruning: fraction of channels to remove (0-0.9); with "
                         "--prune-target macs/params, the fraction of MACs/params to remove")
    ru.add_argument("--prune-criterion", default="l1", choices=list(CRITERIA))
    ru.add_argument("--prune-scope", default="uniform", choices=["uniform", "global"])
    ru.add_argument("--prune-target", default="ratio", choices=["ratio", "macs", "params"])
    ru.add_argument("--prune-layers", default=None,
                    help="single-layer mode: prune only these layers (comma-separated), e.g. layer2.0.conv1")
    ru.add_argument("--prune-steps", type=_num("prune_steps"), default=1,
                    help="reach the ratio in N steps (with --finetune/--distill-epochs, recovery runs after "
                         "every step)")
    ru.add_argument("--bn-images", type=_num("bn_images"), default=512,
                    help="re-estimate BatchNorm statistics after pruning on up to N scoring photos (never "
                         "evaluation images); 0 = off (default 512)")
    ru.add_argument("--protect", default=None,
                    help="layers never pruned, comma-separated; 'none' for none "
                         "(default: the stem conv and the classifier)")
    ru.add_argument("--round-to", type=_num("round_to"), default=None, help="keep channel counts multiples of N")
    ru.add_argument("--unstructured-amount", type=_num("unstructured_amount"), default=None,
                    help="unstructured pruning: fraction of weights set to zero (0-0.95)")
    ru.add_argument("--unstructured-method", default="l1", choices=["l1", "random"])
    ru.add_argument("--unstructured-scope", default="global", choices=["global", "layer"])
    ru.add_argument("--quantize", default="none", choices=["none"] + list(MODES),
                    help="quantize after pruning; `after` is measured in the runtime that runs it")
    ru.add_argument("--calib", type=_num("calibration"), default=128, help="calibration images (kept apart from evaluation)")
    ru.add_argument("--qbackend", default="x86", choices=["x86", "qnnpack"])
    ru.add_argument("--observer", default="auto", choices=list(OBSERVERS),
                    help="activation ranges: auto tries min/max and percentile (ONNX Runtime) and keeps "
                         "the one closer to FP32 on the calibration photos; PyTorch uses histogram for auto")
    ru.add_argument("--equalize", action="store_true",
                    help="cross-layer equalization before INT8: same float outputs, weight ranges that "
                         "quantize better (pairs joined by ReLU; ReLU6 pairs are left alone)")
    ru.add_argument("--bias-correction", action="store_true",
                    help="before INT8, take the mean output shift that 8-bit weights cause (measured on the "
                         "calibration photos) out of each layer's bias")
    ru.add_argument("--keep-float", default=None, help="layers left in float, comma-separated")
    ru.add_argument("--finetune-epochs", type=_num("recover_epochs"), default=0, help="recover after pruning by fine-tuning")
    ru.add_argument("--distill-epochs", type=_num("recover_epochs"), default=0,
                    help="recover after pruning by knowledge distillation from --teacher")
    ru.add_argument("--recover-minutes", type=_num("recover_minutes"), default=None,
                    help="recover after pruning by knowledge distillation for about this many minutes (the "
                         "epochs come from a training step timed on this device)")
    ru.add_argument("--distill-T", type=_num("temperature"), default=None,
                    help="distillation temperature (default: chosen by the recovery recipe, 2)")
    ru.add_argument("--distill-alpha", type=_num("alpha"), default=None,
                    help="weight of the teacher's term (1 = label-free: no labels needed; default: 0.5 with "
                         "labels, 1 without)")
    ru.add_argument("--distill-attention", type=_num("attention"), default=None,
                    help="weight of attention transfer on the stage outputs (0 = off; 1000 in Zagoruyko & "
                         "Komodakis); needs the original as the teacher (default: 50 with the original)")
    ru.add_argument("--warmup-epochs", type=_num("warmup_epochs"), default=None,
                    help="recovery: linear learning-rate warm-up before the cosine decay to zero (default: a "
                         "tenth of the run, at most half an epoch)")
    ru.add_argument("--recover-batch", type=_num("batch_size"), default=None,
                    help="recovery batch size (default: 128, smaller for few photos)")
    ru.add_argument("--holdout", type=_num("holdout"), default=None,
                    help="training photos held out to keep the best epoch (default: a tenth, 16 to 1000; "
                         "0 keeps the last epoch)")
    ru.add_argument("--teacher", default=None, help="zoo entry to distil from (default: the unpruned model)")
    ru.add_argument("--lr", type=_num("lr"), default=None,
                    help="recovery learning rate (SGD, cosine; default: 0.1 at batch 128, scaled to the batch and "
                         "down for short runs)")
    ru.add_argument("--unfreeze", default="all", choices=["pruned", "all"],
                    help="pruned: only pruned layers, BatchNorms and the classifier train")
    ru.add_argument("--keep-worst", type=_num("keep_worst"), default=0,
                    help="also keep K layers in float, ranked by --keep-rank")
    ru.add_argument("--keep-rank", default="sqnr", choices=list(KEEP_RANKS),
                    help="sqnr: simulated 8-bit error (fast); accuracy: quantize with each candidate in "
                         "float and keep those that raise agreement with FP32 most (slower, measured)")
    ru.add_argument("--weight-bits", default="auto", choices=["auto", "8", "7"],
                    help="ONNX Runtime INT8 weights: auto chooses per CPU (with VNNI 8-bit; without, "
                         "8-bit and 7-bit are both tried and the closer to FP32 kept)")
    ru.add_argument("--qat-epochs", type=_num("qat_epochs"), default=1)
    ru.add_argument("--qat-lr", type=_num("lr"), default=1e-4)
    ru.add_argument("--train-data", default=None,
                    help="labelled training photos (QAT); a CIFAR-10 tarball/folder uses its train split")
    ru.add_argument("--train-limit", type=_num("train_limit"), default=None, help="train on N images (seeded)")
    ru.add_argument("--save", default=None, help="write the compressed model (project checkpoint format)")
    ru.add_argument("--export", default=None,
                    help=f"comma-separated: {', '.join(FORMATS)}; each file is "
                         "loaded back and checked against the model; a Markdown model card comes with them")
    ru.add_argument("--out", default=None, help="folder for --export files")
    ru.add_argument("--history", default=None, help="history file (default: COMPRESSION_LAB_HISTORY or "
                                                    "~/.cache/compression-lab/history.sqlite)")
    ru.add_argument("--no-history", action="store_true", help="do not record this run")
    ru.add_argument("--from-run", type=_num("run_id"), default=None, metavar="ID",
                    help="start from run ID's saved model: its steps are not redone; the flags add steps")
    ru.set_defaults(func=_cmd_run)

    hi = sub.add_parser("history", help="list (or delete) recorded runs")
    hi.add_argument("--history", default=None)
    hi.add_argument("--status", default=None, choices=["running", "done", "failed", "cancelled", "interrupted"])
    hi.add_argument("--delete", type=_num("run_id"), default=None, metavar="ID")
    hi.add_argument("--json", action="store_true")
    hi.set_defaults(func=_cmd_history)

    df = sub.add_parser("diff", help="what changed between two runs: per-class top-1 and the images that flipped")
    df.add_argument("run_a", type=_num("run_id"), metavar="RUN_A")
    df.add_argument("run_b", type=_num("run_id"), metavar="RUN_B")
    df.add_argument("--history", default=None)
    df.add_argument("--json", action="store_true")
    df.set_defaults(func=_cmd_diff)

    pd = sub.add_parser("predict", help="classify photos: top-k labels and probabilities per photo")
    pd.add_argument("photos", nargs="+", help="photo files or folders of photos")
    for args, kw in _model_args:
        pd.add_argument(*args, **kw)
    pd.add_argument("--run", type=_num("run_id"), default=None, metavar="ID",
                    help="use the model a history run saved (e.g. a pruned or INT8 one)")
    pd.add_argument("--history", default=None, help="history file for --run")
    pd.add_argument("--topk", type=_num("topk"), default=5)
    pd.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    pd.add_argument("--saliency", default=None, metavar="OUT.png",
                    help="write where the model looks (Grad-CAM, or occlusion for INT8/ONNX models) as a "
                         "PNG; with --run, next to the original's map. Several photos: OUT-<photo>.png")
    pd.add_argument("--json", action="store_true",
                    help='one list: {"file", "top": [{"index", "label", "prob"}]} or {"file", "error"} per photo')
    pd.set_defaults(func=_cmd_predict)

    au = sub.add_parser("auto", help="search recipes for the fastest or smallest model within an accuracy budget")
    for args, kw in _model_args + _measure_args:
        au.add_argument(*args, **kw)
    au.add_argument("--max-drop", type=_num("max_drop"), default=1.0, help="points of top-1 the model may lose")
    au.add_argument("--objective", default="latency", choices=["latency", "size"])
    au.add_argument("--runtime", default="ort",
                    help="ort (ONNX Runtime), torch (PyTorch INT8 through PT2E + Inductor) or executorch "
                         "(ExecuTorch XNNPACK, the phone runtime, timed on this CPU)")
    au.add_argument("--budget-minutes", type=_num("budget_minutes"), default=30.0)
    au.add_argument("--screen-images", type=_num("screen_images"), default=300,
                    help="images each candidate is screened on before the full measurement")
    au.add_argument("--ratios", default="0.2,0.35,0.5,0.65", help="channel ratios to try (comma-separated)")
    au.add_argument("--train-data", default=None,
                    help="training photos: the prunes that lose too much untrained are distilled back, with "
                         "the time left shared out (see --recover-epochs)")
    au.add_argument("--recover-epochs", type=_num("recover_epochs"), default=None,
                    help="train each prune back for this many epochs instead of a share of the time left "
                         "(0: no training)")
    au.add_argument("--train-limit", type=_num("train_limit"), default=None)
    au.add_argument("--demo", action="store_true",
                    help="the quick demo instead of a search: the original, the compressed variants that ship "
                         "in assets/ladder/ and their runtime forms, measured now on the bundled sample "
                         "(about half a minute); the frontier is the ladder")
    au.add_argument("--history", default=None)
    au.set_defaults(func=_cmd_auto, runs=30, warmup=5)

    mo = sub.add_parser("models", help="list the model zoo")
    mo.set_defaults(func=_cmd_models)

    t = sub.add_parser("train-baseline", help="train the project's CIFAR-10 ResNet18")
    t.add_argument("model")
    t.add_argument("--data", required=True, help="cifar10-jpeg.tar.gz or a CIFAR-10 folder")
    t.add_argument("--epochs", type=_num("epochs"), default=30)
    t.add_argument("--batch", type=_num("batch_size"), default=128,
                   help="images per step over all processes (split evenly under torchrun)")
    t.add_argument("--train-limit", type=_num("train_limit"), default=None,
                   help="train on a seeded subset of this many training images")
    t.add_argument("--lr", type=_num("lr"), default=0.1)
    t.add_argument("--seed", type=_num("seed"), default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "assets"))
    t.add_argument("--workdir", default=None, help="per-epoch checkpoints (for --resume)")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--verbose", action="store_true")
    t.set_defaults(func=_cmd_train_baseline)

    a = p.parse_args(argv)
    try:
        return a.func(a)
    except CompressError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:             # Ctrl-C: one line, and the shell's status for SIGINT
        run_id = getattr(e, "run_id", None)    # set by pipeline.run: the history row, now cancelled
        print("cancelled by the user (Ctrl-C)"
              + (f"; run {run_id} is recorded as cancelled" if run_id is not None else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
