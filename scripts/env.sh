# Source me (`. scripts/env.sh`): puts the environment that scripts/setup.sh installed into on
# PATH. Inside an active virtual (or conda) environment it changes nothing; otherwise it
# activates the project's .venv.
if ! python3 -c 'import os, sys; sys.exit(not (sys.prefix != sys.base_prefix or os.environ.get("CONDA_PREFIX")))' 2>/dev/null; then
    _pooling_lab_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
    if [ -f "$_pooling_lab_root/.venv/bin/activate" ]; then
        . "$_pooling_lab_root/.venv/bin/activate"
    else
        echo "scripts/env.sh: no .venv in $_pooling_lab_root; run bash scripts/setup.sh first" >&2
    fi
    unset _pooling_lab_root
fi
