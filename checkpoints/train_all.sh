#!/usr/bin/env bash
# Retrain the six shipped models with the recipes recorded in their cards (the conv cards' older
# spelling `--channels 24` is `--arch-arg channels=24` here), then record their test figures in the
# cards with dae-eval. Run one at a time: two torch jobs on 2 cores slow each other.
#   DATA_ROOT=../shared/data bash checkpoints/train_all.sh [name ...]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_ROOT=${DATA_ROOT:-../shared/data}
export PATH="$PWD/.venv/bin:$PATH"

declare -A ARGS=(
  [mlp-gaussian]="--dataset mnist --arch mlp --noise gaussian --level 0.3 --epochs 10 --batch-size 128 --lr 1e-3"
  [mlp-salt-pepper]="--dataset mnist --arch mlp --noise salt_pepper --level 0.2 --epochs 10 --batch-size 128 --lr 1e-3"
  [mlp-masking]="--dataset mnist --arch mlp --noise masking --level 0.3 --epochs 10 --batch-size 128 --lr 1e-3"
  [mlp-standard]="--dataset mnist --arch mlp --noise none --epochs 10 --batch-size 128 --lr 1e-3"
  [conv-blind]="--dataset mnist --arch conv --arch-arg channels=24 --noise mixed --level 0.5 --epochs 20 --batch-size 128 --lr 2e-3 --schedule cosine"
  [conv-blind-fashion]="--dataset fashion-mnist --arch conv --arch-arg channels=24 --noise mixed --level 0.5 --epochs 20 --batch-size 128 --lr 2e-3 --schedule cosine"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(mlp-gaussian mlp-salt-pepper mlp-masking mlp-standard conv-blind conv-blind-fashion)
for name in "${names[@]}"; do
  # shellcheck disable=SC2086  # the argument strings are meant to split
  dae-train ${ARGS[$name]} --data-root "$DATA_ROOT" --seed 0 --out "checkpoints/$name"
  dae-eval --checkpoint "checkpoints/$name" --data-root "$DATA_ROOT" --write-card
done
