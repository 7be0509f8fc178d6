#!/usr/bin/env bash
# Runs python3 of the lm-eval venv (.venv-eval), making or refreshing it first (ensure_venv.sh).
set -euo pipefail
py="$("$(dirname "${BASH_SOURCE[0]}")/ensure_venv.sh")"
exec "$py" "$@"
