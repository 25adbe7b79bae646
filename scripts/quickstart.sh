#!/usr/bin/env bash
# The page's workflow end to end: pair DBs from the bundled MNIST, training, the feature plot.
# Default: a short run (2,000 iterations, a few minutes). --full: Caffe's 50,000 iterations.
set -euo pipefail
cd "$(dirname "$0")/.."
iters=2000
case "${1:-}" in
  --full) iters=50000 ;;
  "") ;;
  *) echo "usage: scripts/quickstart.sh [--full]" >&2; exit 2 ;;
esac
bash scripts/setup.sh
siamese=.venv/bin/siamese
[ -d examples/siamese/mnist_siamese_train_leveldb ] || $siamese create-db
$siamese train --solver examples/siamese/mnist_siamese_solver.prototxt --max-iter "$iters" \
  --log examples/siamese/train_log.csv 2> >(tee examples/siamese/train_log.txt >&2)
$siamese plot-features --weights "examples/siamese/mnist_siamese_iter_${iters}.caffemodel" \
  --out examples/siamese/features.png
$siamese plot-log examples/siamese/train_log.csv --out examples/siamese/loss.png
if command -v dot >/dev/null 2>&1; then
  $siamese draw-net examples/siamese/mnist_siamese_train_test.prototxt examples/siamese/net.png --phase TRAIN
fi
echo "pictures: examples/siamese/features.png examples/siamese/loss.png examples/siamese/net.png"
