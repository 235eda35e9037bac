#!/usr/bin/env bash
# Sets everything up on a fresh machine. torch is pinned and installed first: an unpinned torch
# (asked for by anything) pulls several GB of CUDA packages. taming-transformers is installed
# without its declared dependencies, which drag in a CUDA torchvision that breaks imports
# (environment.md); we import only its Encoder/Decoder/quantizer modules.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
"$PY" -m pip install --quiet -e ".[dev,eval,serve]"
"$PY" -m pip install --quiet --no-deps "taming-transformers-rom1504==0.0.6"
# torch-fidelity declares torchvision (a CUDA build here); evaluate --fid imports only its Inception module,
# which needs torch alone (docs/reproducing.md, "FID/IS and torchvision").
"$PY" -m pip install --quiet --no-deps "torch-fidelity==0.4.0"
# Headless Chromium (Debian's package, no browser download at run time) for the tests that open the
# demo's report.html and drive the serve page (playwright on this chromium). Optional: without root or
# apt those tests check the report's files and the page's HTTP API instead.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
    || echo "install.sh: chromium not installed; the report test falls back to checking files" >&2
fi
