#!/usr/bin/env bash
# On the lent GPU host, from the checkout's root with the offline kit carried as .gpu (docs/benchmarks.md):
# install the kit, run the prepared script, keep its log beside gpu_papers.md/.json in $OUT.
#   bash benchmarks/gpu_papers.sh [--pretrain-minutes 4 --retro-minutes 4 --test-limit 500]
set -uo pipefail
source .gpu/setup.sh || exit 1
python3 benchmarks/gpu_papers.py "$@" 2>&1 | tee "${OUT:-/tmp}/gpu_papers.log"
