#!/usr/bin/env bash
# Train the learned EchoMod generator of the `shapes` world: the 16,000-UNet-step model of
# reports/approx-shapes (prompt accuracy 81.6%, EchoSelect AUROC 0.649 there), as the four runs that
# made it: the defaults, then three continuations (44 + 38 + 63 + 78 min on 2 CPU cores).
#
#   bash scripts/train_echomod_shapes.sh [OUT]      # default OUT: runs/echomod-shapes-16k
#
# Stop it whenever (Ctrl-C): run it again and it skips the finished pieces and resumes the current one
# from its checkpoint (`echobench train-echomod` saves one every 5 minutes and when stopped).
# OUT/16k is the model; echobench ships it as echobench/echoalign/trained/shapes/ (model=shapes).
set -euo pipefail
OUT=${1:-runs/echomod-shapes-16k}
mkdir -p "$OUT"

piece() {
  local name=$1; shift
  if [ -f "$OUT/$name/training.json" ]; then
    echo "$OUT/$name: already trained"
  else
    echobench train-echomod --out "$OUT/$name" "$@"
  fi
}

continuation=(--vae-steps 0 --tiny-vae-steps 0 --controlnet-steps 600)
piece 2k --seed 0 --eval-images 0
piece 5k --init-from "$OUT/2k" --seed 1 --unet-steps 3000 "${continuation[@]}" --eval-images 0
piece 10k --init-from "$OUT/5k" --seed 2 --unet-steps 5000 "${continuation[@]}" --eval-images 0
piece 16k --init-from "$OUT/10k" --seed 3 --unet-steps 6000 "${continuation[@]}"
echo "model: $OUT/16k (prompt accuracy in $OUT/16k/training.json)"
