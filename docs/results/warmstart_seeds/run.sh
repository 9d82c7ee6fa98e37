#!/bin/sh
# Setup B at CPU scale with seeds (docs/results/warmstart_seeds). Rerunning this resumes.
#   sh docs/results/warmstart_seeds/run.sh [OUT] [DATA_ROOT]     (from the repository root)
# plain and the NC1 regulariser first (claims b and c), then S&P and weight decay 0.1
# side by side (one worker each: two sweeps, because --weight_decay would apply to S&P too).
OUT=${1:-runs/warmstart_seeds}
DATA=${2:-/usr/share/datasets/fashion-mnist}
COMMON="--dataset fashion-mnist --download false --data_root $DATA --width 4 --train_samples 500 --lr 0.05 --warmup_epochs 60 --checkpoint_every 5 --finetune_max_epochs 25 --seeds 0 1 2 --device cpu --threads 1 --progress false --backend process --out $OUT"
RUN="plasticollapse sweep paper/warmstart_cifar10"
date -u
$RUN $COMMON --workers 2 --scheme plain nc1_reg
date -u
$RUN $COMMON --workers 1 --scheme shrink_perturb &
$RUN $COMMON --workers 1 --scheme weight_decay --weight_decay 0.1 &
wait
date -u
