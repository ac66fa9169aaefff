#!/usr/bin/env bash
# Produced: the shipped checkpoints dos-surrogate, dos-denovo-mp20, dos-classifier (data/checkpoints/, snapshot p2), the
# constrained-task evaluations results/dos/eval_*_p2*.csv/.npz, and (through run_label.py) the rest of the label store data/dos/.
# Reproduce: `setsid nohup bash experiments/dos/run_final.sh p2 400 > results/dos/logs/run_final_p2.log 2>&1 &` (logs are not committed).
#
# The last stretch of the per-atom DOS work, chained and resumable: finish labelling pass 1, freeze snapshot SNAP (default p1),
# retrain the surrogate, the DOS-conditioned generator and the classifier on it, evaluate the constrained tasks with the new
# models (xTB on every candidate that fits the budget), relax-then-check, and last the retry ladder (pass 2).
#
#   setsid nohup bash experiments/dos/run_final.sh p1 90 > results/dos/logs/run_final.log 2>&1 &
#
# (p1: the snapshot's name; 90: pass 1 labels supercells of up to 90 atoms before training, the rest after the evaluations.)
#
# Once `run_final.sh p1 90` has finished both passes ("=== done" in its log), a new snapshot name retrains and re-evaluates on the
# finished store (a cap of 400 covers every supercell, so labelling is a no-op):
#   setsid nohup bash experiments/dos/run_final.sh p2 400 > results/dos/logs/run_final_p2.log 2>&1 &
#
# Snapshot p2 (data/dos/dosgen_split_p2.json, the one the shipped dos-surrogate, dos-denovo-mp20 and dos-classifier were
# trained on) was taken after pass 1 and part of pass 2; pass 2 continues at the end of `run_final.sh p2 400`.
#
# Every step skips what is already done (finished label ids, finished training runs, cached eval tags), so after an interruption
# the same command continues. Each Python step is one single-threaded nice-19 process, except labelling (two workers).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p results/dos/logs   # logs are not committed (.gitignore)
S="${1:-p1}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=(nice -n 19 .venv/bin/python)
step() { echo "=== $(date -u +%H:%M:%S) $*"; }

CAP="${2:-100}"      # supercell atoms: pass 1 up to this size runs before training, the larger (slowest) ones after the evaluations
step "labelling, pass 1, supercells <= $CAP atoms"
"${PY[@]}" experiments/dos/run_label.py 2 pass1 "$CAP" >> results/dos/logs/label.log 2>&1

step "training on snapshot $S"
"${PY[@]}" experiments/dos/train_dosgen.py surrogate 1500 "snap=$S" >> "results/dos/logs/train_surrogate_$S.log" 2>&1   # writes the snapshot
"${PY[@]}" experiments/dos/train_dosgen.py classifier 1500 "snap=$S" >> "results/dos/logs/train_classifier_$S.log" 2>&1 &
"${PY[@]}" experiments/dos/train_dosgen.py generator 8000 "snap=$S" >> "results/dos/logs/train_generator_$S.log" 2>&1
wait

step "constrained tasks, relax-then-check, and the DOSMatGen reproduction (four lanes on two cores)"
# lane 1: masked generation, four seeds (32 candidates per arm), then their relax-then-check
( "${PY[@]}" experiments/dos/eval_dosgen.py 2 --suffix "_$S" --only masked >> "results/dos/logs/eval_$S.log" 2>&1
  for k in 1 2 3; do
    "${PY[@]}" experiments/dos/eval_dosgen.py 2 --suffix "_${S}_s$k" --seed $k --only masked >> "results/dos/logs/eval_${S}_s$k.log" 2>&1
  done
  "${PY[@]}" experiments/dos/eval_relaxed.py "masked_g2_$S" "masked_g0_$S" masked_g{2,0}_"${S}"_s{1,2,3} >> "results/dos/logs/eval_relaxed_$S.log" 2>&1 ) &
# lane 2: the classifier arm at sigma_y 0.3 and the fixed atom types, then their relax-then-check
( "${PY[@]}" experiments/dos/eval_dosgen.py 2 --suffix "_$S" --only-classifier --sigma-y 0.3 >> "results/dos/logs/eval_${S}_classifier.log" 2>&1
  "${PY[@]}" experiments/dos/eval_dosgen.py 5 --suffix "_$S" --only fixed >> "results/dos/logs/eval_${S}_fixed.log" 2>&1
  "${PY[@]}" experiments/dos/eval_relaxed.py "masked_classifier_sy0.3_$S" fixed_{Ti,Co,Cu,Pd}_g2_"$S" >> "results/dos/logs/eval_relaxed_${S}_fixed.log" 2>&1 ) &
# lane 3: the DOSMatGen tables with the new models (its params file names the eval suffix; rerun at the end from its caches)
sed -i "s/\"eval_suffix\": \"[^\"]*\"/\"eval_suffix\": \"_$S\"/" nbs/repro/params/dosmatgen.cpu.json    # Figs. 4-6 rows: this snapshot's tags
( nice -n 19 .venv/bin/xtalnb repro dosmatgen --scale cpu >> "results/dos/logs/repro_$S.log" 2>&1 || echo "repro failed: see results/dos/logs/repro_$S.log" ) &
# lane 4: template-guided generation (the longest single step)
"${PY[@]}" experiments/dos/eval_template.py 6 2,0 "--suffix=_$S" >> "results/dos/logs/eval_template_$S.log" 2>&1
wait

step "labelling, pass 1, the rest"
"${PY[@]}" experiments/dos/run_label.py 2 pass1 >> results/dos/logs/label.log 2>&1
step "labelling, pass 2 (the retry ladder for the pass-1 SCF failures)"
"${PY[@]}" experiments/dos/run_label.py 2 pass2 >> results/dos/logs/label.log 2>&1
step "done"
