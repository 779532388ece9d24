#!/usr/bin/env bash
# `make demo`: train the toy translation model, evaluate it on the held-out split, translate.
set -euo pipefail
cd "$(dirname "$0")/.."
TT=.venv/bin/transformer-tf
RUN=${RUN_DIR:-runs/toy_translation}

echo "== train (resumes if $RUN already has checkpoints)"
time $TT train configs/toy_translation.yaml --run-dir "$RUN"

echo "== evaluate on the held-out test split (beam search, averaged last 3 checkpoints)"
$TT evaluate "$RUN" --split test --average-last 3

echo "== translate"
$TT translate "$RUN" --average-last 3 \
  "the big dog will not love the small cats" \
  "my twenty three red apples fetched your queen" \
  "we love the old tree"
