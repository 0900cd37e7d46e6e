#!/usr/bin/env bash
# Install pooling-lab and what its tests need, on a fresh machine or an existing one.
#  - torch: the CPU build pinned below when torch is missing (a bare "torch" requirement would
#    pull several GB of CUDA packages on a CPU-only machine); an installed torch is kept.
#  - the package itself, editable, with the dev extra (pytest, hypothesis, ruff, pillow).
#  - Fashion-MNIST from Debian's dataset-fashion-mnist when apt-get is usable (real data for the
#    integration tests and the p-drift study; the tests that need it skip without it).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    "$PYTHON" -m pip install -q torch==2.13.0
fi
"$PYTHON" -m pip install -q -e ".[dev]"

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist) >/dev/null \
        || echo "setup: could not install dataset-fashion-mnist; Fashion-MNIST tests will be skipped" >&2
fi
