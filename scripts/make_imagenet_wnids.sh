#!/usr/bin/env bash
# Writes assets/imagenet_wnids.txt: the 1000 ImageNet-1k WordNet ids, one per line, line i =
# class index i (the sorted order every torchvision/timm ImageNet model uses; line 0 is
# n01440764, "tench"). Taken from the timm wheel on PyPI (timm/data/_info/imagenet_synsets.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
.venv/bin/python -m pip download timm==1.0.31 --no-deps -d "$tmp" -q
.venv/bin/python - "$tmp" <<'PY'
import glob, sys, zipfile
whl = glob.glob(f"{sys.argv[1]}/timm-*.whl")[0]
text = zipfile.ZipFile(whl).read("timm/data/_info/imagenet_synsets.txt").decode()
wnids = text.split()
assert len(wnids) == 1000 and wnids[0] == "n01440764" and wnids == sorted(wnids)
open("assets/imagenet_wnids.txt", "w").write("\n".join(wnids) + "\n")
PY
rm -rf "$tmp"
echo "wrote assets/imagenet_wnids.txt"
