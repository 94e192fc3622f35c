#!/usr/bin/env bash
# The compressed variants of resnet18_cifar10 that ship in assets/ladder/ for the quick demo
# (compress/demo.py). Each is pruned (L1, stem and classifier kept whole), BatchNorm
# re-estimated, then trained back by the product's own recovery recipe given only a number
# of epochs, over 10,000 CIFAR-10 training photos; saved with float16 weights and a sidecar
# JSON (the recipe, the command, the figures measured when it was made). Small budgets (4 and
# 3 epochs of 10,000 photos) so a busy 2-core CPU makes both in about half an hour; a GPU
# makes stronger ones (15 epochs of 50,000) in minutes.
#
#   bash bench/make_ladder.sh ../shared/data/cifar10-jpeg.tar.gz
set -euo pipefail
cd "$(dirname "$0")/.."
CIFAR=${1:-../shared/data/cifar10-jpeg.tar.gz}
OUT=${2:-assets/ladder}
.venv/bin/python bench/recover_bench.py --cifar "$CIFAR" --ratios 0.6 --protect conv1,fc --methods distill \
    --seeds 0 --epochs 4 --train-limit 10000 --save "$OUT"
.venv/bin/python bench/recover_bench.py --cifar "$CIFAR" --ratios 0.8 --protect conv1,fc --methods distill \
    --seeds 0 --epochs 3 --train-limit 10000 --save "$OUT"
