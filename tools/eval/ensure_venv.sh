#!/usr/bin/env bash
# Makes (or refreshes) the lm-evaluation-harness venv, .venv-eval by default, and prints its python.
#
#   tools/eval/ensure_venv.sh [VENV_DIR]
#
# The venv is made over Debian's python3 with --system-site-packages (torch, numpy, PyYAML come
# from Debian: python3-torch, python3-numpy, python3-yaml in tools/deps/apt-packages.txt) and gets the
# lock in tools/deps/eval-requirements.txt with `pip install --no-deps` (why: see that file). A
# stamp with the lock's sha256 makes a second call cost ~10 ms; pip's wheel cache (~/.cache/pip)
# makes a re-install quick. Concurrent calls (ctest -j, ./phi eval) serialise on a lock file.
# Used by `./phi eval`, the eval tests (tests/integration/eval) and bench/eval.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${1:-$ROOT/.venv-eval}"
REQ="$ROOT/tools/deps/eval-requirements.txt"
sum=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" = "$sum" ] && [ -x "$VENV/bin/python3" ]; then
  echo "$VENV/bin/python3"
  exit 0
fi
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$sum" ] || [ ! -x "$VENV/bin/python3" ]; then
  for m in torch numpy yaml; do
    /usr/bin/python3 -c "import $m" 2>/dev/null ||
      { echo "ensure_venv: Debian's python3 has no '$m' (apt packages python3-torch python3-numpy python3-yaml; ./phi bootstrap installs them)" >&2; exit 1; }
  done
  if [ ! -x "$VENV/bin/python3" ]; then
    echo "[phi] creating $VENV (lm-evaluation-harness over Debian's python3, torch and numpy)" >&2
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
  fi
  echo "[phi] installing lm-evaluation-harness from tools/deps/eval-requirements.txt (~1 min the first time)" >&2
  t0=$(date +%s)
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -r "$REQ" >&2
  "$VENV/bin/python3" -c "import lm_eval, lm_eval.models.huggingface, lm_eval.models.openai_completions, pyarrow, datasets" >&2 ||
    { echo "ensure_venv: lm-eval does not import in $VENV" >&2; exit 1; }
  echo "$sum" > "$VENV/.requirements.sha256"
  echo "[phi] lm-evaluation-harness ready in $VENV ($(( $(date +%s) - t0 )) s)" >&2
fi
echo "$VENV/bin/python3"
