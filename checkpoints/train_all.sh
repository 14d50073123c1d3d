#!/usr/bin/env bash
# Retrain the shipped models with the recipes recorded in their cards (the conv cards' older spelling
# `--channels 24` is `--arch-arg channels=24` here), then record their test figures in the cards with
# dae-eval (the photo model's on Set12 and BSD68, with BM3D and the best classical filter beside it).
# Run one at a time: two torch jobs on 2 cores slow each other.
#   DATA_ROOT=../shared/data bash checkpoints/train_all.sh [name ...]
# photo-blind is trained in three stages: photo-blind-stage1 from scratch (about 75 minutes on a 2-core CPU),
# then photo-blind-stage2 fine-tuned from it (about 105 minutes), both written to $STAGE_DIR rather than
# checkpoints/ (the service would serve them), then photo-blind fine-tuned from the second (about 60 minutes;
# --init-from: its card records every earlier stage's command and time). Each stage restarts the cosine
# schedule at a lower rate. The shipped first stage ran when mixed_photo drew Gaussian noise for a third of its
# images; rerun here, it draws it for half. The shipped second stage was trained as --out $STAGE_DIR/photo-blind.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_ROOT=${DATA_ROOT:-../shared/data}
STAGE_DIR=${STAGE_DIR:-/tmp/photo}
export PATH="$PWD/.venv/bin:$PATH"

declare -A ARGS=(
  [mlp-gaussian]="--dataset mnist --arch mlp --noise gaussian --level 0.3 --epochs 10 --batch-size 128 --lr 1e-3 --seed 0"
  [mlp-salt-pepper]="--dataset mnist --arch mlp --noise salt_pepper --level 0.2 --epochs 10 --batch-size 128 --lr 1e-3 --seed 0"
  [mlp-masking]="--dataset mnist --arch mlp --noise masking --level 0.3 --epochs 10 --batch-size 128 --lr 1e-3 --seed 0"
  [mlp-standard]="--dataset mnist --arch mlp --noise none --epochs 10 --batch-size 128 --lr 1e-3 --seed 0"
  [conv-blind]="--dataset mnist --arch conv --arch-arg channels=24 --noise mixed --level 0.5 --epochs 20 --batch-size 128 --lr 2e-3 --schedule cosine --seed 0"
  [conv-blind-fashion]="--dataset fashion-mnist --arch conv --arch-arg channels=24 --noise mixed --level 0.5 --epochs 20 --batch-size 128 --lr 2e-3 --schedule cosine --seed 0"
  [photo-blind-stage1]="--dataset train400 --arch unet-res --noise mixed_photo --patch-size 64 --batch-size 32 --epochs 100 --lr 1e-3 --schedule cosine --val-images 16 --seed 0"
  [photo-blind-stage2]="--dataset train400 --arch unet-res --noise mixed_photo --patch-size 64 --batch-size 32 --epochs 40 --lr 5e-4 --schedule cosine --val-images 16 --seed 1 --init-from $STAGE_DIR/photo-blind-stage1"
  [photo-blind]="--dataset train400 --arch unet-res --noise mixed_photo --patch-size 64 --batch-size 32 --epochs 36 --lr 3e-4 --schedule cosine --val-images 16 --seed 2 --init-from $STAGE_DIR/photo-blind-stage2"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(mlp-gaussian mlp-salt-pepper mlp-masking mlp-standard conv-blind conv-blind-fashion photo-blind-stage1 photo-blind-stage2 photo-blind)
for name in "${names[@]}"; do
  out_dir=checkpoints
  [[ "$name" == *-stage[0-9] ]] && out_dir=$STAGE_DIR
  # shellcheck disable=SC2086  # the argument strings are meant to split
  dae-train ${ARGS[$name]} --data-root "$DATA_ROOT" --out "$out_dir/$name"
  if [ "$out_dir" != checkpoints ]; then
    continue  # a first stage: evaluated through the model trained from it
  elif [ "$name" = photo-blind ]; then
    for set in set12 bsd68; do
      dae-eval --checkpoint "checkpoints/$name" --dataset "$set" --data-root "$DATA_ROOT" --baselines --write-card
    done
  else
    dae-eval --checkpoint "checkpoints/$name" --data-root "$DATA_ROOT" --write-card
  fi
done
