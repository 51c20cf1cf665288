#!/usr/bin/env bash
# The test command: installs what it needs, then runs the unit tests and every
# notebook in the CI profile (papermill inside pytest; nbval as well with CLIPDIFF_NBVAL=1).
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
# tests/test_notebooks.py has already executed every notebook in a kernel, cell by cell (papermill).
# nbval would run all ten a second time, which the CI budget (20 minutes) cannot afford with the
# captioner notebooks; CLIPDIFF_NBVAL=1 adds that second pass.
if [ "${CLIPDIFF_NBVAL:-0}" = 1 ]; then
  "$venv/bin/python" -m pytest -q --nbval-lax -p no:cacheprovider notebooks
fi
echo "run_tests: total $(( $(date +%s) - start )) s"
