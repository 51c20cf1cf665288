#!/usr/bin/env bash
# The test command: installs what it needs, then runs the unit tests and every
# notebook in the CI profile (nbval; papermill inside pytest on two of them).
#
# Matplotlib: tests/conftest.py sets MPLBACKEND=Agg for the unit tests; the
# notebook kernels get the inline backend (the course runner sets it, and nbval
# starts kernels as JupyterLab does), so executed notebooks keep their figures.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${CLIPDIFF_VENV:-$root/.venv}"
start=$(date +%s)
bash tools/setup.sh
export CLIPDIFF_PROFILE=ci HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$venv/bin/python" -m pytest -q tests "$@"
# Every notebook, executed at the ci profile by nbval in lax mode (outputs are not compared; a cell that
# raises fails its test). tests/test_notebooks.py runs papermill's parameter injection on two of them.
"$venv/bin/python" -m pytest -q --nbval-lax -p no:cacheprovider notebooks
echo "run_tests: total $(( $(date +%s) - start )) s"
