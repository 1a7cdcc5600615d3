#!/usr/bin/env bash
# Drop-in for the comvis recipe's Stage3_Custom_Classifier/train_classifier.sh:
#   ./train_classifier.sh /PATH/BASE/FOLDER [camtrap train flags...]
# BASE holds crops/ and label_studio.csv (or labels.csv); the outputs go to ./logs of the caller, as the
# recipe's do: model.pt (TorchScript), label_correspondance.json, metrics.json, confusion_matrix.png,
# TensorBoard event files, and the bundle under logs/models/. Extra flags go to `camtrap train`.
set -euo pipefail
if [ $# -lt 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 /PATH/BASE/FOLDER [camtrap train flags...]  (BASE holds crops/ and label_studio.csv)" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
camtrap=${CAMTRAP:-$(command -v camtrap || echo "$here/../.venv/bin/camtrap")}
base=$1
shift
exec "$camtrap" train "$base" --logdir ./logs "$@"
