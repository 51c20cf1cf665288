#!/usr/bin/env bash
# The course command: installs what it needs, then executes every notebook
# headlessly (papermill) in the given profile (default: laptop) and writes the
# executed notebooks, a summary and the report (index.html) under outputs/<profile>/.
#
# No MPLBACKEND here: the runner gives each notebook kernel the inline backend,
# so the executed notebooks keep their figures. No HF_HUB_OFFLINE either: the
# laptop and ci profiles never ask the model hub, and the colab profile's
# pretrained CLIP is downloaded when the hub answers (clipdiff_mini.hub fails
# within seconds when it does not).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${CLIPDIFF_VENV:-$root/.venv}"
setup_start=$SECONDS
bash tools/setup.sh
export CLIPDIFF_SETUP_SECONDS=$((SECONDS - setup_start))  # reported in the summary (the README's timings)
exec "$venv/bin/python" -m clipdiff_mini.course --profile "${1:-laptop}" "${@:2}"
