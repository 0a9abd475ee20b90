#!/usr/bin/env bash
# The benchmark suite on a many-core machine, PyTorch backend (GPU if there is one).
#
#   OUT=/tmp/klt-big bash benchmarks/big_machine.sh [scenario ...]
#
# Runs `benchmarks/run.py` (full mode, 1 repeat) one scenario per invocation, so that a
# scenario cut off by the time budget loses only itself; each writes its Markdown table
# and raw JSON to $OUT. Wheels in .whl/ (keras, optuna and their pure dependencies), if
# present, are installed to /tmp/site first: for a machine with PyTorch but no network.
# KLT_BIG_BUDGET_S (default 420): no scenario starts after this many seconds. First,
# `callback_dispatch.py` measures what a per-batch callback costs on the accelerator.
set -u
OUT=${OUT:-/tmp/klt-big}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" KERAS_BACKEND=${KERAS_BACKEND:-torch}
export PYTHONUNBUFFERED=1
budget=${KLT_BIG_BUDGET_S:-420}
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(latency-sleep gil-python numpy seed-article compute)
{
  echo "cores: $(nproc); $(nvidia-smi -L 2>/dev/null | head -1)"
  python3 -c "import keras, optuna, torch; print('keras', keras.__version__, 'optuna',
optuna.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$OUT/log.txt"
start=$SECONDS
timeout 120 python3 benchmarks/callback_dispatch.py --repeats 3 2>&1 | tee -a "$OUT/log.txt"
for s in "${scenarios[@]}"; do
  if (( SECONDS - start > budget )); then echo "skipped $s: budget spent" | tee -a "$OUT/log.txt"; continue; fi
  timeout 240 python3 benchmarks/run.py --repeats 1 --scenarios "$s" --out "$OUT/$s.md" \
    --raw "$OUT/$s.json" --png /tmp/klt-big-$s.png 2>&1 | tee -a "$OUT/log.txt"
  echo "== $s done at $((SECONDS - start)) s" | tee -a "$OUT/log.txt"
done
