#!/bin/bash
# Wall time of one reproduce table per sweep backend (README "Scaling out"): the same command with
# --jobs 1, --jobs 2 and --backend ray, one after the other. Usage: bench/sweep_walltime.sh DATA_DIR [OUT]
set -u
data=${1:?data dir}; out=${2:-runs/walltime}
mkdir -p "$out"
for mode in "jobs1:--jobs 1" "jobs2:--jobs 2" "ray:--backend ray --cpus-per-run 1"; do
  name=${mode%%:*}; flags=${mode#*:}
  rm -rf "${out:?}/$name"
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  forgetless reproduce baselines-splitmnist --only class-IL --seeds 0 --set iterations=200 --data-dir "$data" \
      --out "$out/$name" --quiet $flags > "$out/$name.txt" 2>&1
  rc=$?
  echo "$name rc=$rc wall=$(echo "$(date +%s.%N) - $start" | bc) s" | tee -a "$out/walltime.log"
done
