#!/usr/bin/env bash
# Retrain the shipped models with the recipes recorded in their cards (the conv cards' older spelling
# `--channels 24` is `--arch-arg channels=24` here), then record their test figures in the cards with
# dae-eval (the photo model's on Set12 and BSD68, with BM3D and the best classical filter beside it).
# Run one at a time: two torch jobs on 2 cores slow each other.
#   DATA_ROOT=../shared/data bash checkpoints/train_all.sh [name ...]
# photo-blind trains in four stages, the first two under bf16 autocast (--precision bfloat16; on a CPU without native
# bf16 drop that option, which is emulated there and slower than float32): from scratch (99 min on a 2-core CPU with
# AMX), then fine-tuned in place with --saturate 0.25 (about 60 min), so that black and white regions stay black and
# white, then with --faint-share 0.5 (58 min in float32 on the 2-core EPYC) and --faint-share 0.6 (55 min there), so
# that a nearly clean photo keeps its fine texture; the card records every stage (training.init_from).
# NAME-stage1, NAME-stage2, ... recipes train into checkpoints/NAME, in that order, before NAME's own.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_ROOT=${DATA_ROOT:-../shared/data}
export PATH="$PWD/.venv/bin:$PATH"

declare -A ARGS=(
  [mlp-gaussian]="--dataset mnist --arch mlp --noise gaussian --level 0.3 --epochs 10 --batch-size 128 --lr 1e-3 --seed 0"
  [mlp-salt-pepper]="--dataset mnist --arch mlp --noise salt_pepper --level 0.2 --epochs 10 --batch-size 128 --lr 1e-3 --seed 0"
  [mlp-masking]="--dataset mnist --arch mlp --noise masking --level 0.3 --epochs 10 --batch-size 128 --lr 1e-3 --seed 0"
  [mlp-standard]="--dataset mnist --arch mlp --noise none --epochs 10 --batch-size 128 --lr 1e-3 --seed 0"
  [conv-blind]="--dataset mnist --arch conv --arch-arg channels=24 --noise mixed --level 0.5 --epochs 20 --batch-size 128 --lr 2e-3 --schedule cosine --seed 0"
  [conv-blind-fashion]="--dataset fashion-mnist --arch conv --arch-arg channels=24 --noise mixed --level 0.5 --epochs 20 --batch-size 128 --lr 2e-3 --schedule cosine --seed 0"
  [photo-blind-stage1]="--dataset train400 --arch unet-res --arch-arg depth=3 --noise mixed_photo --patch-size 64 --batch-size 32 --epochs 170 --lr 1e-3 --schedule cosine --val-images 16 --seed 0 --precision bfloat16"
  [photo-blind-stage2]="--dataset train400 --arch unet-res --arch-arg channels=32 --arch-arg depth=3 --noise mixed_photo --patch-size 64 --batch-size 32 --epochs 135 --lr 3e-4 --schedule cosine --val-images 16 --seed 1 --precision bfloat16 --saturate 0.25 --init-from checkpoints/photo-blind"
  [photo-blind-stage3]="--dataset train400 --arch unet-res --arch-arg channels=32 --arch-arg depth=3 --noise mixed_photo --gaussian-share 0.7 --faint-share 0.5 --patch-size 64 --batch-size 32 --epochs 14 --steps-per-epoch 200 --lr 2e-4 --schedule cosine --val-images 16 --seed 3 --precision float32 --saturate 0.25 --init-from checkpoints/photo-blind"
  [photo-blind]="--dataset train400 --arch unet-res --arch-arg channels=32 --arch-arg depth=3 --noise mixed_photo --gaussian-share 0.75 --faint-share 0.6 --patch-size 64 --batch-size 32 --epochs 18 --steps-per-epoch 200 --lr 2e-4 --schedule cosine --val-images 16 --seed 4 --precision float32 --saturate 0.25 --init-from checkpoints/photo-blind"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(mlp-gaussian mlp-salt-pepper mlp-masking mlp-standard conv-blind conv-blind-fashion photo-blind)
for name in "${names[@]}"; do
  for stage in 1 2 3 4 5; do  # a model fine-tuned in place: its earlier stages, in order, into checkpoints/NAME
    if [ -n "${ARGS[$name-stage$stage]:-}" ]; then
      # shellcheck disable=SC2086
      dae-train ${ARGS[$name-stage$stage]} --data-root "$DATA_ROOT" --out "checkpoints/$name"
    fi
  done
  # shellcheck disable=SC2086  # the argument strings are meant to split
  dae-train ${ARGS[$name]} --data-root "$DATA_ROOT" --out "checkpoints/$name"
  if [ "$name" = photo-blind ]; then
    for set in set12 bsd68; do
      dae-eval --checkpoint "checkpoints/$name" --dataset "$set" --data-root "$DATA_ROOT" --baselines --write-card
    done
  else
    dae-eval --checkpoint "checkpoints/$name" --data-root "$DATA_ROOT" --write-card
  fi
done
