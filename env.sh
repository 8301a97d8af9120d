#!/usr/bin/env sh
# Make or refresh the one project virtual environment (.venv), then run a command inside it.
#   sh env.sh python train.py          # the built-in training demo
#   sh env.sh python -m pytest -n 2 --dist loadfile      # the whole test suite
# The environment is rebuilt only when requirements.txt or setup.cfg change (a stamp holds their hash).
set -e
cd "$(dirname "$0")"
VENV=.venv
PY=${PYTHON:-python3}
want=$(cat requirements.txt setup.cfg pyproject.toml | "$PY" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$want" ]; then
    echo "env.sh: preparing $VENV (first time: a few minutes, about 5.5 GB)" >&2
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -r requirements.txt
    echo "$want" > "$VENV/.stamp"
fi
[ $# -gt 0 ] || exit 0
. "$VENV/bin/activate"
exec "$@"
