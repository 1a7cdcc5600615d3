#!/usr/bin/env bash
# Drop-in for the comvis recipe's run_classifier.sh:
#   ./run_classifier.sh /PATH/TO/MODEL /PATH/TO/CROPS [camtrap classify flags...]
# MODEL is logs/model.pt from train_classifier.sh (or a bundle folder); the output is ./logs/model_results.csv:
# path (relative to CROPS), label, score, then one probability column per class.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 /PATH/TO/MODEL /PATH/TO/CROPS [camtrap classify flags...]" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
camtrap=${CAMTRAP:-$(command -v camtrap || echo "$here/../.venv/bin/camtrap")}
model=$1
crops=$2
shift 2
mkdir -p ./logs
exec "$camtrap" classify "$model" "$crops" -o ./logs/model_results.csv "$@"
