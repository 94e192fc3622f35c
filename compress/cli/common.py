"""What the commands share: the parser with the project's error form, checked numbers,
the model a command names, and its default data."""
from __future__ import annotations

import argparse
import sys

from compress.errors import CompressError
from compress.limits import BOUNDS, BadNumber, check
from compress.pipeline import load_ref
from compress.recipe import ModelRef
from compress.zoo import ZOO, describe_data, sample_data_path


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error form: one line on stderr, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _num(name: str):
    """An argparse type for a number checked against compress/limits.py's range for ``name``."""
    lo, hi, _ = BOUNDS[name]
    whole = isinstance(lo, int) and isinstance(hi, int)

    def parse(text: str):
        try:
            value = int(text) if whole else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if whole else 'a number'}, "
                                             f"got {text!r}") from None
        try:
            return check(name, value, "value")
        except BadNumber as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix("value: ").rstrip(".")) from None
    parse.__name__ = name.replace("_", " ")
    return parse




def _fmt_bytes(n) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB"


def _load(a: argparse.Namespace):
    return load_ref(ModelRef(name=a.model or ("" if a.checkpoint else "resnet18_cifar10"), weights=a.weights,
                             checkpoint=a.checkpoint, arch=a.arch, num_classes=a.num_classes or None,
                             trust_pickle=a.trust_pickle))


def _default_data(a: argparse.Namespace, model_name: str) -> None:
    """No --data: a model with a bundled evaluation sample (resnet18_cifar10) is measured
    on it, all of it unless --limit says otherwise; ``--data none`` measures no accuracy."""
    if a.data and a.data.lower() == "none":
        a.data = None
        return
    spec = ZOO.get(model_name)
    sample = sample_data_path(spec) if spec is not None and not a.data else None
    if sample is not None:
        a.data = str(sample)
        if not getattr(a, "json", False):
            print(f"no --data: accuracy on {describe_data(a.data)}", file=sys.stderr, flush=True)


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in (text or "").split(",") if n.strip())




def _ratio_list(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise CompressError(f"--ratios {text}: give channel ratios separated by commas, e.g. 0.3,0.5.") from None
    return [check("prune_ratio", v, "--ratios") for v in values]


_model_args = [
    (("--model",), dict(default=None, help="zoo entry (see `models`)")),
    (("--weights",), dict(default=None, help="weights file for the zoo entry")),
    (("--checkpoint",), dict(default=None, help="your own checkpoint instead of a zoo entry")),
    (("--arch",), dict(default=None, help="architecture of --checkpoint (default: guessed)")),
    (("--num-classes",), dict(type=_num("num_classes"), default=None,
                              help="classes of --checkpoint (default or 0: read from the file)")),
    (("--trust-pickle",), dict(action="store_true",
                               help="allow a full pickled model (runs code from the file)")),
]
_measure_args = [
    (("--data",), dict(default=None, help="labelled folder or CIFAR-10 tarball/folder (default: the model's "
                                          "bundled sample, if it has one; 'none': no accuracy)")),
    (("--limit",), dict(type=_num("limit"), default=None, help="evaluate on N images (seeded)")),
    (("--seed",), dict(type=_num("seed"), default=0)),
    (("--device",), dict(default="cpu", help="cpu, cuda or auto")),
    (("--batch",), dict(type=_num("batch"), default=1, help="batch size for latency")),
    (("--runs",), dict(type=_num("runs"), default=50, help="timed runs for latency")),
    (("--warmup",), dict(type=_num("warmup"), default=10)),
    (("--threads",), dict(type=_num("threads"), default=None)),
    (("--json",), dict(action="store_true", help="print one JSON object")),
]
