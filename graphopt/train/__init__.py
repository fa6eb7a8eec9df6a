"""Training on `graph.to_torch()`: fine-tuning now, QAT and distillation next; results written back into a new graph.

    from graphopt.train import init_distributed, train, evaluate
    init_distributed()                 # no-op under `python`, joins the group under `torchrun`
    result = train(graph, batches, torch.nn.CrossEntropyLoss(), epochs=3, optimizer="adam")
    print(evaluate(result.graph, test_batches))

- `loop.py`: `train` and `TrainResult` (masks kept, frozen parameters fixed, the caller's graph untouched);
- `batches.py`: the data contract, each batch `(inputs, targets)`;
- `evaluate.py`: `evaluate`, `accuracy`;
- `distributed.py`: `init_distributed`, batch sharding, DistributedDataParallel semantics;
- `distill.py`: `distill` (soft labels at a temperature, hard labels, feature matching through projections);
- `schedules.py`: the polynomial sparsity ramp and `iterative_prune`;
- `shared.py`: `finetune_shared`, codebook centroids trained with per-cluster summed gradients.
"""

from graphopt.train.distill import DistillLoss, FeatureMatch, distill
from graphopt.train.distributed import DistributedContext, current_context, init_distributed, shutdown_distributed
from graphopt.train.evaluate import accuracy, evaluate
from graphopt.train.loop import TrainResult, train
from graphopt.train.qat import QATResult, qat
from graphopt.train.schedules import iterative_prune, polynomial_sparsity, sparsity_schedule
from graphopt.train.shared import finetune_shared

__all__ = [
    "train",
    "TrainResult",
    "qat",
    "QATResult",
    "evaluate",
    "accuracy",
    "init_distributed",
    "current_context",
    "shutdown_distributed",
    "DistributedContext",
    "iterative_prune",
    "polynomial_sparsity",
    "sparsity_schedule",
    "finetune_shared",
    "distill",
    "DistillLoss",
    "FeatureMatch",
]
