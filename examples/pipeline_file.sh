#!/bin/sh
# A pipeline kept in a file: optimize a model with it, then hold it to a budget as CI would.
#   sh examples/pipeline_file.sh [WORKDIR]
set -e
here=$(dirname "$0")
work=${1:-$(mktemp -d)}
python3 -c "
import torch, graphopt
from graphopt.models import get_model
model, x = get_model('digits_cnn')
graphopt.trace(model, x).save_onnx('$work/digits.onnx')"
python3 -m graphopt opt -p "@$here/int8.pipeline" "$work/digits.onnx" -o "$work/digits.int8.onnx"
python3 -m graphopt check "$work/digits.onnx" -p "@$here/int8.pipeline" --min-sqnr 20 --junit "$work/check.xml"
echo "wrote $work/digits.int8.onnx and $work/check.xml"
