"""CUDA: graphopt's TVM build (default GPU schedules, no tuning) against torch eager on the GPU.

Both sides are timed end to end from host arrays to host arrays (upload, run,
download), fp32, median of repeated runs after warm-up; outputs are checked
against torch on the CPU. Needs a CUDA GPU; prints a markdown table.

    python benchmarks/bench_cuda.py [--target cuda-sm90] [--models resnet18,mobilenet_v2,vit_small]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def _median_ms(fn, runs: int = 30) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="cuda-sm90")
    p.add_argument("--models", default="resnet18,mobilenet_v2,vit_small")
    p.add_argument("--batches", default="1,8")
    args = p.parse_args(argv)

    import numpy as np
    import torch
    import tvm

    import graphopt.api as api
    from graphopt.models import get_model

    if not tvm.cuda(0).exist or not torch.cuda.is_available():
        print("no CUDA device: nothing to measure", file=sys.stderr)
        return 1
    print(f"# {torch.cuda.get_device_name(0)}; target {args.target}; fp32; host->host latency, median of 30 runs")
    print("| model | batch | torch CUDA ms | graphopt TVM CUDA ms | x torch | build s | max abs err vs CPU |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            model, inputs = get_model(name, batch_size=batch, seed=0)
            with torch.no_grad():
                reference = model(*inputs).numpy()
            t0 = time.perf_counter()
            compiled = api.optimize(model, inputs, target=args.target, verify=False)
            build_s = time.perf_counter() - t0
            arrays = [x.numpy() for x in inputs]
            err = float(np.abs(np.asarray(compiled(*arrays)) - reference).max())
            tvm_ms = _median_ms(lambda: compiled(*arrays))  # noqa: B023 - called within this iteration
            gpu_model = model.cuda()

            def torch_call():
                with torch.no_grad():
                    return gpu_model(*[x.cuda() for x in inputs]).cpu()  # noqa: B023 - called within this iteration

            torch_ms = _median_ms(torch_call)
            model.cpu()
            print(
                f"| {name} | {batch} | {torch_ms:.2f} | {tvm_ms:.2f} | {tvm_ms / torch_ms:.2f} | "
                f"{build_s:.1f} | {err:.1e} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
