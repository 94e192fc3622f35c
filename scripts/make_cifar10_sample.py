"""Write assets/cifar10-test-sample.tar.gz: 150 CIFAR-10 *test* images per class (1,500),
chosen with a fixed seed, in the layout of the full tarball (cifar10/test/<class>/<file>.jpg).

It is the evaluation set resnet18_cifar10 uses when the user gives no data, so accuracy is
measured out of the box, offline. None of these images is in the training split, so the
project's own checkpoint (trained on cifar10/train) never saw them.

    .venv/bin/python scripts/make_cifar10_sample.py [path/to/cifar10-jpeg.tar.gz]

The default source is the shared data folder (../shared/data/cifar10-jpeg.tar.gz). The
output is byte-for-byte reproducible (sorted members, fixed mtimes, gzip without a name
or timestamp).
"""
from __future__ import annotations

import gzip
import io
import random
import sys
import tarfile
from pathlib import Path

PER_CLASS = 150
SEED = 0
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "assets" / "cifar10-test-sample.tar.gz"


def main(src: Path) -> None:
    by_class: dict[str, list[tarfile.TarInfo]] = {}
    with tarfile.open(src) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")]
        for m in members:
            parts = m.name.split("/")
            if len(parts) == 4 and parts[1] == "test":
                by_class.setdefault(parts[2], []).append(m)
        if len(by_class) != 10:
            sys.exit(f"{src}: expected the ten CIFAR-10 classes under cifar10/test/, found {sorted(by_class)}")
        rng = random.Random(SEED)
        chosen = []
        for cls in sorted(by_class):
            pool = sorted(by_class[cls], key=lambda m: m.name)
            chosen += sorted(rng.sample(pool, PER_CLASS), key=lambda m: m.name)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as out:
            for m in chosen:
                data = tar.extractfile(m).read()
                info = tarfile.TarInfo(m.name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                out.addfile(info, io.BytesIO(data))
    with open(OUT, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
        gz.write(buf.getvalue())
    print(f"wrote {OUT.relative_to(ROOT)}: {len(chosen)} images, {OUT.stat().st_size:,} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz")
