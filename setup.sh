#!/usr/bin/env bash
# Set up edgecompress in ./.venv, then run the main job (`edgecompress demo`) on the bundled data.
#   TORCH_SPEC   what to pip-install for torch when the venv has none (default: torch==2.13.0,
#                the CPU wheel this project is developed with). Any torch >= 2.4 works, e.g.
#                TORCH_SPEC="torch==2.5.1 --index-url <your CPU wheel index>".
#   PYTHON       the interpreter to build the venv with (default: python3, >= 3.10).
#   SKIP_DEMO=1  install only.
set -euo pipefail
cd "$(dirname "$0")"
"${PYTHON:-python3}" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
    # Installed on its own first, so that the package's `torch>=2.4` is already satisfied and pip
    # never resolves it to a multi-GB CUDA build.
    # shellcheck disable=SC2086
    pip install ${TORCH_SPEC:-torch==2.13.0}
fi
pip install -e ".[test,baselines]"
python - <<'PY'
import torch
if torch.version.cuda is not None and not torch.cuda.is_available():
    print(f"WARNING: torch {torch.__version__} is a CUDA build (several GB) on a machine without "
          "a GPU; for CPU-only use set TORCH_SPEC to a CPU wheel (see README.md).")
PY
python -c "import torch, edgecompress; print(f'edgecompress {edgecompress.__version__} with torch {torch.__version__}')"
if [ "${SKIP_DEMO:-0}" != "1" ]; then
    edgecompress demo --no-progress
fi
