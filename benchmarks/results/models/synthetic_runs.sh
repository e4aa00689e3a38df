#!/usr/bin/env bash
# The synthetic-amplitude table of docs/benchmarks-models.md: micro_attention,
# meranet and smastn on a synthetic composite (3 subjects per database, 6 clips
# each: 54 samples, 9 folds) at a given --amplitude, one seed, one thread, one process.
# Usage: synthetic_runs.sh AMPLITUDE WORKDIR [MODEL...]
# Each run's config.json, metrics.json and predictions.csv are copied to
# benchmarks/results/models/synthetic-amp{AMPLITUDE}/{model}/.
set -euo pipefail
amp=$1; work=$2; shift 2
models=("$@"); [ ${#models[@]} -gt 0 ] || models=(micro_attention meranet smastn)
here=$(cd "$(dirname "$0")" && pwd); repo=$(cd "$here/../../.." && pwd)
frmer="$repo/.venv/bin/fr-mer"
data="$work/amp$amp"
mkdir -p "$work"
[ -f "$data/synth-manifest.json" ] || "$frmer" synth --out "$data" --subjects 3 --clips-per-subject 6 --amplitude "$amp"
roots=(--casme2-root "$data/casme2" --casme2-annotations "$data/casme2/CASME2-coding-20140508.xlsx"
       --samm-root "$data/samm" --samm-annotations "$data/samm/SAMM_Micro_FACS_Codes_v2.xlsx"
       --smic-root "$data/smic" --composite-list "$data/synthetic_3class_gt.csv")
"$frmer" preprocess --dataset composite "${roots[@]}" --out "$data/cache.h5" --jobs 1 --flow-size 128 \
    --face-size 64 --with-clip --clip-length 8 --clip-size 64 --with-dynamic-images --di-size 64
for model in "${models[@]}"; do
  case $model in
    micro_attention) extra=(-o input_size=64 --epochs 30) ;;
    meranet) extra=(--epochs 40) ;;  # the recipe's 40 epochs as written (120 steps a fold), not min_steps's 1200
    smastn) extra=(-o width=16 --epochs 15) ;;
  esac
  out="$work/runs-amp$amp/$model"
  "$frmer" evaluate --cache "$data/cache.h5" --protocol composite --composite-list "$data/synthetic_3class_gt.csv" \
      --model "$model" "${extra[@]}" --seeds 1 --threads 1 --jobs 1 --out "$out"
  keep="$here/synthetic-amp$amp/$model"; mkdir -p "$keep"
  cp "$out/config.json" "$out/metrics.json" "$out/predictions.csv" "$keep/"
done
