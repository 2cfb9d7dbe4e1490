#!/bin/bash
# detect predict over many scenes as a SLURM job array: one shard per array task.
#
#   sbatch --array=0-15 tools/slurm_predict.sh model.keras /shared/out '/shared/scenes/*.tif'
#
# Every task runs `detect predict --shard I/N` with the same inputs and the same
# --out on a shared file system. Each task writes its units atomically, so a
# requeued or killed task resumes where it stopped (sbatch --requeue is safe).
# The task that finds every unit done merges; if tasks finished out of order,
# `detect merge OUT` (or a dependent job, below) writes the outputs.
#
#   jid=$(sbatch --parsable --array=0-15 tools/slurm_predict.sh model.keras OUT 'scenes/*.tif')
#   sbatch --dependency=afterok:$jid --wrap "detect merge OUT"
#
#SBATCH --job-name=detect-predict
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --time=04:00:00
#SBATCH --output=detect-predict-%A_%a.log
set -euo pipefail

MODEL=${1:?usage: sbatch --array=0-N-1 $0 MODEL OUT SOURCE [SOURCE ...]}
OUT=${2:?OUT folder (shared by every task)}
shift 2
: "${SLURM_ARRAY_TASK_ID:?run with sbatch --array}"
: "${SLURM_ARRAY_TASK_COUNT:?run with sbatch --array}"

# A SLURM array may start at any index; shards count from 0.
MIN=${SLURM_ARRAY_TASK_MIN:-0}
SHARD=$((SLURM_ARRAY_TASK_ID - MIN))

# One TensorFlow thread pool per task, sized to its CPUs.
export TF_NUM_INTRAOP_THREADS=${SLURM_CPUS_PER_TASK:-4}

detect predict --model "$MODEL" --out "$OUT" --shard "$SHARD/$SLURM_ARRAY_TASK_COUNT" \
    --format gpkg --geojson-wgs84 "$@"
