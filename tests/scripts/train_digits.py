"""Train the digits MLP on fixed global batches; the same script under `python` and under `torchrun`.

    python tests/scripts/train_digits.py OUT_DIR
    torchrun --standalone --nproc_per_node=2 tests/scripts/train_digits.py OUT_DIR

Each rank saves its trained parameters and step losses to OUT_DIR/rank<r>.npz.
The batches include one of odd size (shards of unequal size) and a masked weight.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

import graphopt
from graphopt.models import DigitsMLP, load_digits_data
from graphopt.train import init_distributed, shutdown_distributed, train


def main(out_dir: Path) -> None:
    ctx = init_distributed()
    torch.manual_seed(0)
    data = load_digits_data(seed=0)
    x, y = data.x_train.flatten(1), data.y_train
    graph = graphopt.trace(DigitsMLP().eval(), (x[:2],))
    weight = graph.params["body.0.weight"].data
    graph.set_mask("body.0.weight", np.abs(weight) >= np.median(np.abs(weight)))
    sizes = [64, 64, 63, 64, 32]
    starts = np.cumsum([0, *sizes])
    batches = [(x[a:b], y[a:b]) for a, b in zip(starts[:-1], starts[1:])]
    result = train(
        graph,
        batches,
        torch.nn.CrossEntropyLoss(),
        epochs=2,
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        log=lambda line: print(f"[rank{ctx.rank}] {line}", flush=True),
    )
    arrays = {name: np.asarray(p.data) for name, p in result.graph.params.items()}
    np.savez(out_dir / f"rank{ctx.rank}.npz", losses=np.asarray(result.losses), **arrays)
    shutdown_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
