"""A searched recipe against the hand-picked one at the same MACs budget, and the thin model (issue 12).

    python benchmarks/search_vs_recipe.py --out svr-out                    # the protocol of docs/results.md
    python benchmarks/search_vs_recipe.py --n-train 32 --n-val 16 --base-epochs 1 --ft-epochs 1 \\
        --trials 2 --seeds 0 --out svr-smoke                               # a smoke run (minutes)

Protocol, once per seed (synthetic data from ``modprune data synth``, one class; the seed sets the data,
the base's initialisation and training, the sampler and the fine-tuning): the model (default
TokenC3-LSNet-n, ``yolov13n_lsnet_p2_simple.yaml``, nc=1) is trained from scratch for ``--base-epochs``.
:func:`modprune.workflows.search.search` then looks for per-category ratios meeting ``--budget`` on the
base recipe's settings (importance, protect, max_ratio, round_to of ``--recipe``), scored without
fine-tuning by :class:`~modprune.integrations.ultralytics.proxy.ProxyScorer` (mAP50 on the first
``--subset`` validation images, BatchNorm recalibrated on ``--calibrate`` training batches). The searched
recipe and ``--recipe`` itself each prune a copy of the base, then get the same ``--ft-epochs`` of
fine-tuning with output distillation from the base. The thin baseline (the same yaml at the width multiple
whose MACs match the recipe's pruned model) trains from scratch for base + fine-tune epochs. Accuracy:
ultralytics' validator on the whole validation split at ``--imgsz``. A rerun into the same ``OUT`` reuses
each seed's trained base (``OUT/seed-N/base.pt``); ``--bases-only`` stops there (the bases other benchmarks
start from). ``--nominal-batch N`` sets the images per optimizer step of both arms' fine-tuning,
``--thin-nominal-batch N`` that of the thin model's training (both: ultralytics' 64 by default).
``--base-nominal-batch N`` does the same for the base's training (all three at 16: every model takes one
optimizer step per batch); ``--no-search`` runs the hand-picked arm (and the thin model) only.
``--recovery-epochs N`` adds a third arm: a second search whose proxy fine-tunes every trial N epochs first
(:class:`~modprune.integrations.ultralytics.proxy.RecoveryScorer`: output distillation from the base, the
arms' nominal batch), then the same fine-tuning as the other arms. Writes
``OUT/search_vs_recipe.json`` after every seed and prints a Markdown table with mean and spread over the seeds.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path

import torch

import modprune


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="svr-out")
    p.add_argument("--model", default="yolov13n_lsnet_p2_simple.yaml", help="model yaml (stock or a plugin's)")
    p.add_argument("--recipe", default="tokenc3-lsnet-structured", help="the hand-picked recipe, and the search's base")
    p.add_argument("--budget", default="macs=0.4")
    p.add_argument("--n-train", type=int, default=256)
    p.add_argument("--n-val", type=int, default=64)
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--base-epochs", type=int, default=20)
    p.add_argument("--ft-epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--prune-imgsz", type=int, default=None,
                   help="input size the search and both arms prune (and time a latency budget) at; default --imgsz")
    p.add_argument("--latency", action="store_true",
                   help="also time base and both arms (fused PyTorch, 1 thread, --latency-imgsz, interleaved)")
    p.add_argument("--latency-imgsz", type=int, default=640)
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--subset", type=int, default=32)
    p.add_argument("--calibrate", type=int, default=4, help="proxy: BatchNorm recalibration batches (0: off)")
    p.add_argument("--objective", default="mAP50")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--no-thin", action="store_true", help="skip the thin baseline")
    p.add_argument("--nominal-batch", type=int, default=None,
                   help="images per optimizer step of both arms' fine-tuning (default: ultralytics' 64)")
    p.add_argument("--thin-nominal-batch", type=int, default=None,
                   help="images per optimizer step of the thin model's training (default: ultralytics' 64)")
    p.add_argument("--base-nominal-batch", type=int, default=None,
                   help="images per optimizer step of the base's training (default: ultralytics' 64; a base "
                        "already in OUT is reused as it is)")
    p.add_argument("--no-search", action="store_true", help="skip the search: the hand-picked arm only")
    p.add_argument("--recovery-epochs", type=int, default=0,
                   help="also search with a proxy that fine-tunes each trial this many epochs (arm "
                        "'searched-recovery'; default 0: not run)")
    p.add_argument("--bases-only", action="store_true",
                   help="stop after each seed's data and trained base (OUT/seed-N/base.pt, data/data.yaml)")
    return p.parse_args()


def _train(model, data, a, out, name, epochs, seed, teacher=None, nominal_batch=None):
    from modprune.integrations.ultralytics.trainer import FinetuneOptions, finetune

    opts = FinetuneOptions(epochs=epochs, imgsz=a.imgsz, batch=a.batch, project_dir=out / "runs", name=name,
                           seed=seed, distill="output", keep_zeros=teacher is not None, nominal_batch=nominal_batch)
    return finetune(model, data, opts, teacher=teacher)


def _search(base, data, a, out, seed, arm="searched"):
    from modprune.integrations.ultralytics.proxy import ProxyScorer, RecoveryScorer
    from modprune.integrations.ultralytics.trainer import FinetuneOptions
    from modprune.workflows.search import search

    size = a.prune_imgsz or a.imgsz
    x = torch.zeros(1, 3, size, size)
    with ProxyScorer(data, imgsz=a.imgsz, subset=a.subset, batch=a.batch, calibrate_batches=a.calibrate) as score:
        if arm != "searched":  # the recovery proxy: each trial fine-tuned as the arms are, for fewer epochs
            options = FinetuneOptions(epochs=a.recovery_epochs, imgsz=a.imgsz, batch=a.batch, seed=seed,
                                      project_dir=out / "runs", name="proxy-finetune", distill="output",
                                      nominal_batch=a.nominal_batch)
            score = RecoveryScorer(score, data, options, teacher=base)
        result = search(base, score, x, budget=a.budget, objective=a.objective, trials=a.trials,
                        storage=f"sqlite:///{out / 'search.optuna.db'}", study_name=f"seed-{seed}-{arm}",
                        config=modprune.load_recipe(a.recipe), seed=seed, progress=print)
    proxy = "without fine-tuning" if arm == "searched" else f"after {a.recovery_epochs} fine-tuning epoch(s)"
    recipe = result.recipe(f"{arm}-seed-{seed}", proxy=proxy)
    (out / f"{arm}.yaml").write_text(recipe.to_yaml())
    return result


def _latency(models, a) -> dict:
    from modprune.evaluate.compare import CompareOptions, compare_models

    result = compare_models(models, options=CompareOptions(imgsz=a.latency_imgsz, threads=1, rounds=20), progress=print)
    keys = ("torch_ratio_median", "torch_ratio_ci_low", "torch_ratio_ci_high", "torch_median_ms", "macs", "params")
    return {"rows": {r["name"]: {k: r.get(k) for k in keys} for r in result["rows"]}, "machine": result["machine"]}


def _one_seed(a, seed: int) -> dict:
    from modprune.data import generate_dataset
    from modprune.integrations.ultralytics.validate import validate
    from modprune.workflows.thin_baseline import build_thin, file_name, model_cfg, thin_baseline, width_of

    out = Path(a.out).resolve() / f"seed-{seed}"
    out.mkdir(parents=True, exist_ok=True)
    seconds, metrics, record = {}, {}, {"seed": seed}
    data = generate_dataset(out / "data", n_train=a.n_train, n_val=a.n_val, imgsz=a.imgsz, seed=seed, overwrite=True)
    cfg = model_cfg(a.model)
    t = time.perf_counter()
    saved = out / "base.pt"  # a rerun into the same OUT reuses the trained base
    if saved.exists():
        base = modprune.load(saved)
    else:
        base = _train(build_thin(cfg, width_of(cfg), out / file_name(cfg, "base"), nc=1, seed=seed), data, a, out,
                      "base", a.base_epochs, seed, nominal_batch=a.base_nominal_batch)
        modprune.save(base, saved)
    seconds["base"], metrics["base"] = time.perf_counter() - t, validate(base, data, imgsz=a.imgsz)
    if a.bases_only:
        base_metrics = {m: metrics["base"][m] for m in ("mAP50", "mAP50-95")}
        return {**record, "seconds": seconds, "results": {"base": base_metrics}}
    arms = [(a.recipe, modprune.load_recipe(a.recipe))]
    for arm in [] if a.no_search else ("searched", "searched-recovery")[: 2 if a.recovery_epochs else 1]:
        t = time.perf_counter()
        found = _search(base, data, a, out, seed, arm)
        key = "search" if arm == "searched" else f"{arm} search"
        seconds[key] = time.perf_counter() - t
        record[key] = {"ratios": found.config.category_ratios, "proxy": found.value, "metrics": found.metrics,
                       "achieved": found.achieved, "complete": found.complete, "infeasible": found.infeasible}
        arms.append((arm, found.config))
    pruned = {}
    for arm, config in arms:
        t = time.perf_counter()
        model = copy.deepcopy(base)
        size = a.prune_imgsz or a.imgsz
        report = modprune.prune(model, config, torch.zeros(1, 3, size, size))
        record[f"{arm} achieved"] = report.achieved
        metrics[f"{arm}, no fine-tune"] = validate(model, data, imgsz=a.imgsz)
        pruned[arm] = _train(model, data, a, out, f"ft-{arm}", a.ft_epochs, seed, teacher=base,
                             nominal_batch=a.nominal_batch)
        seconds[arm], metrics[arm] = time.perf_counter() - t, validate(pruned[arm], data, imgsz=a.imgsz)
    if not a.no_thin:
        t = time.perf_counter()
        thin, match = thin_baseline(base, pruned[a.recipe], data, out / "thin", epochs=a.base_epochs + a.ft_epochs,
                                    imgsz=a.imgsz, batch=a.batch, seed=seed,
                                    finetune_overrides={"nominal_batch": a.thin_nominal_batch})
        record["thin"] = match.to_dict()
        seconds["thin"], metrics["thin"] = time.perf_counter() - t, validate(thin, data, imgsz=a.imgsz)
    if a.latency:
        record["latency"] = _latency({"base": base, **pruned}, a)
    record["seconds"] = seconds
    record["results"] = {k: {m: v[m] for m in ("mAP50", "mAP50-95")} for k, v in metrics.items()}
    return record


def _summary(runs: list[dict]) -> dict:
    rows: dict[str, dict] = {}
    for name in runs[0]["results"]:
        for metric in ("mAP50", "mAP50-95"):
            values = [r["results"][name][metric] for r in runs if name in r["results"]]
            rows.setdefault(name, {})[metric] = {
                "mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values), "max": max(values), "n": len(values)}
    return rows


def main() -> None:
    a = _args()
    from modprune.integrations.ultralytics.offline import ensure_offline

    ensure_offline()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    started, cpu0 = time.perf_counter(), time.process_time()
    runs = []
    out = Path(a.out).resolve()
    for seed in (int(s) for s in a.seeds.split(",")):
        runs.append(_one_seed(a, seed))
        record = {"settings": vars(a), "data": "synthetic (modprune data synth), one class, seed = run seed",
                  "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu0,
                  "load_average": os.getloadavg(), "runs": runs, "summary": _summary(runs)}
        (out / "search_vs_recipe.json").write_text(json.dumps(record, indent=2, default=str))
    print("\n| model | mAP50 mean | std | min-max | mAP50-95 mean | seeds |\n|---|---:|---:|---:|---:|---:|")
    for name, row in record["summary"].items():
        m, m95 = row["mAP50"], row["mAP50-95"]
        print(f"| {name} | {m['mean']:.4f} | {m['std']:.4f} | {m['min']:.4f}-{m['max']:.4f} | {m95['mean']:.4f} "
              f"| {m['n']} |")
    print(f"\ntotal {record['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
