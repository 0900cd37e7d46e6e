#!/usr/bin/env bash
# Install pooling-lab and what its tests need, on a fresh machine or an existing one.
#  - the environment: the active virtual environment when there is one, else ./.venv (made here;
#    a Debian system python refuses `pip install`, PEP 668). `. scripts/env.sh` then puts that
#    environment on PATH, so `pooling-lab` and `python3` are the ones installed here.
#  - torch: the CPU build pinned below when torch is missing (a bare "torch" requirement would
#    pull several GB of CUDA packages on a CPU-only machine); an installed torch is kept.
#  - the package itself, editable, with the dev extra (pytest, hypothesis, ruff, pillow and the
#    metric extra, pytorch-metric-learning).
#  - Fashion-MNIST from Debian's dataset-fashion-mnist when apt-get is usable (real data for the
#    integration tests and the p-drift study; the tests that need it skip without it).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

can_apt() { command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; }
apt_install() {
    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@") >/dev/null
}

if "$PYTHON" -c 'import os, sys; sys.exit(not (sys.prefix != sys.base_prefix or os.environ.get("CONDA_PREFIX")))'; then
    PY=$PYTHON
else
    if [ ! -x .venv/bin/python ]; then
        if ! "$PYTHON" -m venv .venv 2>/dev/null; then
            rm -rf .venv
            can_apt && apt_install python3-venv || { echo "setup: '$PYTHON -m venv' failed; install python3-venv" >&2; exit 1; }
            "$PYTHON" -m venv .venv
        fi
        echo "setup: created .venv (use it with: . scripts/env.sh)" >&2
    fi
    PY=.venv/bin/python
fi

if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install -q torch==2.13.0
fi
"$PY" -m pip install -q -e ".[dev]"

if [ ! -d /usr/share/datasets/fashion-mnist ] && can_apt; then
    apt_install dataset-fashion-mnist \
        || echo "setup: could not install dataset-fashion-mnist; Fashion-MNIST tests will be skipped" >&2
fi
