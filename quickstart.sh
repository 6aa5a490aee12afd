#!/usr/bin/env bash
# From a fresh clone to a trained demo model, a SavedModel, an evaluation report and completed
# photographs, on a CPU, in about 9 minutes (2 cores with oneDNN; about 17 where TensorFlow runs Eigen, AVX2-only) and with nothing downloaded but packages:
#
#   bash quickstart.sh [OUTPUT_DIR]        # default: quickstart_output
#
# Uses the active virtual environment, or creates .venv. Running it again continues the
# training where it stopped (or skips it when it is done) and redoes the rest.
set -euo pipefail
cd "$(dirname "$0")"
OUT=${1:-quickstart_output}
START=$SECONDS

step() {
  local elapsed=$((SECONDS - START))
  printf '\n=== [%s/6] %s   (%dm%02ds so far)\n' "$1" "$2" $((elapsed / 60)) $((elapsed % 60))
}

step 1 "install glcic_tf with TensorFlow for the CPU, scikit-image and the page (.[cpu,demo,app])"
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi
python -m pip install --upgrade --quiet pip
python -m pip install -e ".[cpu,demo,app]"
python -c "import glcic_tf, tensorflow as tf; print('glcic_tf', glcic_tf.__version__, '| tensorflow', tf.__version__)"

step 2 "sample data: 12 training and 3 held-out photographs that scikit-image ships"
python -m glcic_tf.sample_data "$OUT/sample_data"

step 3 "train the demo model (demo.flags: all three phases, validated every 100 steps on the held-out photographs)"
python train.py --flagfile=demo.flags --source="folder:$OUT/sample_data/train" --model_dir="$OUT/run" \
  --validation_source="folder:$OUT/sample_data/test"

step 4 "export the best validated checkpoint ($OUT/run/best) as the SavedModel that tensorflow_model_server serves"
rm -rf "$OUT/export"  # one version: the best checkpoint of this run
python export.py --model_dir="$OUT/run/best" --export_dir="$OUT/export" --overwrite

step 5 "evaluate on the held-out photographs: brush strokes at their own sizes (as on the page), and the paper's protocol at the demo's scale (128x128, holes 48-64)"
python evaluate.py --model="$OUT/export" --source="folder:$OUT/sample_data/test" --output_dir="$OUT/evaluation_strokes" \
  --image_size=0 --mask_protocol=strokes --grid_tile=192
python evaluate.py --model="$OUT/export" --source="folder:$OUT/sample_data/test" --output_dir="$OUT/evaluation" \
  --image_size=128 --grid_tile=128

step 6 "complete the held-out photographs with a 64x64 hole each (with the paper's post-processing)"
python inpaint.py --model="$OUT/export" --image="$OUT/sample_data/test" --box=110,80,64,64 \
  --output="$OUT/completed" --postprocess

elapsed=$((SECONDS - START))
cat <<EOF

=== done in ${elapsed}s ($((elapsed / 60))m$(printf '%02d' $((elapsed % 60)))s). Results:
  trained run (checkpoints, TensorBoard)  $OUT/run            tensorboard --logdir=$OUT/run
  validation every 100 steps              $OUT/run/validation.csv  (the best: $OUT/run/best, step $(python -c "import json,sys; print(json.load(open(sys.argv[1]))['step'])" "$OUT/run/best/validation.json"))
  SavedModel for TF Serving               $OUT/export/$(ls "$OUT/export" | sort -n | tail -1)
  evaluation tables                       $OUT/evaluation_strokes/results.md, $OUT/evaluation/results.md
  evaluation pictures                     $OUT/evaluation_strokes/examples.png, $OUT/evaluation/examples.png
  per-image numbers                       $OUT/evaluation/per_image.csv, summary.json
  completed photographs                   $OUT/completed/
  complete your own in the browser        python app.py --model=$OUT/export   (then open the address it prints)

Brush strokes on the held-out photographs at their own sizes:
$(cat "$OUT/evaluation_strokes/results.md")

The paper's protocol at the demo's scale (128x128, one rectangle of 48-64):
$(cat "$OUT/evaluation/results.md")

This demo model trained for minutes on 12 photographs at half the paper's size: on new
photographs it carries the surrounding colours into the hole, blurred (docs/demo.md
says what it can and cannot do). The paper's model trained for two months on 8 million;
convert_torch_weights.py loads the authors' released weights.
EOF
