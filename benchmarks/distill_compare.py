"""Distillation modes after structured pruning, against the natively thin model trained from scratch.

    python benchmarks/distill_compare.py --out distill-out            # the protocol of docs/results.md
    python benchmarks/distill_compare.py --n-train 64 --base-epochs 3 --ft-epochs 1 --out d   # a smoke run
    python benchmarks/distill_compare.py --model yolov13n_lsnet_p2_simple.yaml --recipe tokenc3-lsnet-fast \
        --prune-imgsz 640 --base-epochs 20 --modes output --onnx --out fast-out   # issue 11's acceptance run

Protocol (synthetic data from ``modprune data synth``, one class; one seed): the model (default
yolov8n from its bundled yaml, nc=1) is trained from scratch for ``--base-epochs``, pruned structurally
to ``--target`` of its MACs (L2 importance; or with ``--recipe``, planned on a ``--prune-imgsz`` input), then fine-tuned for ``--ft-epochs`` from the same pruned
weights with the unpruned base as teacher, once per distillation mode: none, ``output``, ``feature``
(channel-wise distillation of the Detect head's inputs, learned 1x1 adapters) and ``both``. The thin
baseline (:mod:`modprune.workflows.thin_baseline`) is the same yaml at the width multiple whose MACs
match the pruned model's at ``--imgsz``, built with random weights and trained for base + fine-tune
epochs. Latency: fused PyTorch models, 1 thread, interleaved rounds at ``--latency-imgsz``, ratios to
the base (the busy-machine check is recorded). Writes ``OUT/distill.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch

import modprune


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="distill-out")
    p.add_argument("--model", default="yolov8n.yaml", help="model yaml (stock or a plugin's)")
    p.add_argument("--n-train", type=int, default=256)
    p.add_argument("--n-val", type=int, default=64)
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--base-epochs", type=int, default=40)
    p.add_argument("--ft-epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--target", type=float, default=0.40, help="fraction of MACs removed")
    p.add_argument("--recipe", default=None, help="prune with this recipe instead of --target")
    p.add_argument("--prune-imgsz", type=int, default=None, help="example input size for pruning (default --imgsz)")
    p.add_argument("--onnx", action="store_true", help="also time the exported ONNX graphs (ONNX Runtime)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", default="none,output,feature,both")
    p.add_argument("--no-thin", action="store_true", help="skip the thin baseline")
    p.add_argument("--latency-imgsz", type=int, default=640)
    p.add_argument("--latency-rounds", type=int, default=20)
    return p.parse_args()


def _train(model, data, a, name, epochs, teacher=None, mode="output"):
    from modprune.integrations.ultralytics.trainer import FinetuneOptions, finetune

    opts = FinetuneOptions(epochs=epochs, imgsz=a.imgsz, batch=a.batch, project_dir=Path(a.out).resolve() / "runs",
                           name=name, seed=a.seed, distill=mode, keep_zeros=teacher is not None)
    return finetune(model, data, opts, teacher=teacher)


def _latency(models, a):
    from modprune.evaluate.compare import CompareOptions, compare_models

    opts = CompareOptions(imgsz=a.latency_imgsz, threads=1, rounds=a.latency_rounds, onnx=a.onnx)
    result = compare_models(models, options=opts, progress=print)
    return {row["name"]: row for row in result["rows"]}, result["machine"]


def main() -> None:
    a = _args()
    from modprune.integrations.ultralytics.offline import ensure_offline

    ensure_offline()
    from modprune.data import generate_dataset
    from modprune.integrations.ultralytics.validate import validate
    from modprune.workflows.thin_baseline import build_thin, file_name, model_cfg, thin_baseline, width_of

    out = Path(a.out).resolve()
    started, cpu0 = time.perf_counter(), time.process_time()
    seconds = {}
    data = generate_dataset(out / "data", n_train=a.n_train, n_val=a.n_val, imgsz=a.imgsz, seed=a.seed, overwrite=True)
    cfg = model_cfg(a.model)
    fresh = build_thin(cfg, width_of(cfg), out / file_name(cfg, "base"), nc=1, seed=a.seed)
    t = time.perf_counter()
    base = _train(fresh, data, a, "base", a.base_epochs)
    seconds["base"] = time.perf_counter() - t
    models, metrics = {"base": base}, {"base": validate(base, data, imgsz=a.imgsz)}
    pruned = copy.deepcopy(base)
    config = (modprune.load_recipe(a.recipe) if a.recipe else
              modprune.PruneConfig(method="structured", target=a.target, target_kind="macs", importance="l2"))
    size = a.prune_imgsz or a.imgsz
    t = time.perf_counter()
    report = modprune.prune(pruned, config, torch.zeros(1, 3, size, size))
    seconds["prune"] = time.perf_counter() - t
    metrics["pruned, no fine-tune"] = validate(pruned, data, imgsz=a.imgsz)
    for mode in a.modes.split(","):
        t = time.perf_counter()
        name = f"pruned + {a.ft_epochs} ep, distill {mode}"
        models[name] = _train(pruned, data, a, f"ft-{mode}", a.ft_epochs, None if mode == "none" else base,
                              "output" if mode == "none" else mode)
        seconds[name] = time.perf_counter() - t
        metrics[name] = validate(models[name], data, imgsz=a.imgsz)
    match = None
    if not a.no_thin:
        t = time.perf_counter()
        thin, match = thin_baseline(base, pruned, data, out / "thin", epochs=a.base_epochs + a.ft_epochs,
                                    imgsz=a.imgsz, batch=a.batch, seed=a.seed)
        name = f"thin w={match.width:.4f}, scratch {a.base_epochs + a.ft_epochs} ep"
        models[name], metrics[name] = thin, validate(thin, data, imgsz=a.imgsz)
        seconds[name] = time.perf_counter() - t
    rows, machine = _latency(models, a)
    _write(a, out, report, match, metrics, rows, machine, seconds, started, cpu0)


def _write(a, out, report, match, metrics, rows, machine, seconds, started, cpu0):
    record = {
        "settings": vars(a), "data": "synthetic (modprune data synth), one class", "achieved": report.achieved,
        "target_kind": report.target_kind, "prune_notes": report.notes, "prune_latency": report.latency,
        "thin": None if match is None else match.to_dict(), "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu0, "load_average": os.getloadavg(),
        "torch_threads": torch.get_num_threads(), "stage_seconds": seconds, "latency_machine": machine,
        "results": {k: {m: v[m] for m in ("mAP50", "mAP50-95")} for k, v in metrics.items()},
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "distill.json").write_text(json.dumps(record, indent=2, default=str))
    print(f"\n| model | mAP50 | mAP50-95 | MACs at {a.latency_imgsz}px | latency ratio (1 thread) |\n|---|---|---|---|---|")
    for k, v in record["results"].items():
        row = rows.get(k, {})
        macs = f"{row['macs'] / 1e9:.3f} G" if "macs" in row else ""
        ratio = f"{row['torch_ratio_median']:.3f}" if row.get("torch_ratio_median") is not None else ""
        print(f"| {k} | {v['mAP50']:.4f} | {v['mAP50-95']:.4f} | {macs} | {ratio} |")
    busy = any(c and c.get("busy") for c in machine.values())
    print(f"\n{report.target_kind} removed {100 * report.achieved:.1f}%, total {record['seconds'] / 60:.1f} min; "
          f"latency {'UNRELIABLE: machine busy' if busy else 'machine not flagged busy'}")


if __name__ == "__main__":
    main()
