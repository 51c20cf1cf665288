#!/usr/bin/env bash
# The course command: installs what it needs, then executes every notebook
# headlessly (papermill) in the given profile (default: laptop) and writes the
# executed notebooks and a summary under outputs/<profile>/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tools/setup.sh
export MPLBACKEND=Agg HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m clipdiff_mini.course --profile "${1:-laptop}" "${@:2}"
