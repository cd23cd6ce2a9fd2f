"""The demo: synthetic data, a briefly trained TokenC3-LSNet-n, the seed's unstructured recipe and
the structured recipe with distillation fine-tuning, then one honest comparison table.

Everything runs offline on CPU. The data is synthetic (a stand-in for the user's drone imagery);
every accuracy figure printed says so, with image size, epochs and seed.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from modprune import api
from modprune.exceptions import ModpruneError
from modprune.serialization import atomic_path, load, save

__all__ = ["DemoSettings", "QUICK", "FULL", "run_demo"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo run (see :data:`FULL` and :data:`QUICK`)."""

    model: str = "yolov13n_lsnet_p2_simple.yaml"
    seed_recipe: str = "tokenc3-lsnet-seed"
    structured_recipe: str = "tokenc3-lsnet-structured"
    n_train: int = 256
    n_val: int = 64
    imgsz: int = 128
    train_epochs: int = 20
    finetune_epochs: int = 5
    batch: int = 16
    latency_imgsz: int = 640
    latency_rounds: int = 15
    threads: int = 2
    seed: int = 0


FULL = DemoSettings()
QUICK = DemoSettings(n_train=32, n_val=16, imgsz=96, train_epochs=2, finetune_epochs=1, batch=8,
                     latency_imgsz=320, latency_rounds=5)

Say = Callable[[str], None]


def _step(say: Say, n: int, total: int, text: str) -> float:
    say(f"[{n}/{total}] {text}")
    return time.perf_counter()


def run_demo(out_dir: str | Path, settings: DemoSettings = FULL, *, say: Say | None = None) -> dict[str, Any]:
    """Run the demo into ``out_dir``; returns the comparison result (also written as a report)."""
    from modprune.data import generate_dataset
    from modprune.evaluate.compare import CompareOptions, compare_models
    from modprune.evaluate.report import comparison_table, write_report
    from modprune.integrations.ultralytics.trainer import FinetuneOptions, finetune
    from modprune.integrations.ultralytics.validate import validate
    from modprune.report import category_table

    say = say or (lambda m: log.info("%s", m))
    s = settings
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(s.seed)
    started = time.perf_counter()
    total = 7
    example = torch.zeros(1, 3, s.imgsz, s.imgsz)

    _step(say, 1, total, f"synthetic dataset: {s.n_train} train / {s.n_val} val images at {s.imgsz}px, seed {s.seed}")
    data = generate_dataset(out / "data", n_train=s.n_train, n_val=s.n_val, imgsz=s.imgsz, seed=s.seed, overwrite=True)

    _step(say, 2, total, f"training {s.model} from scratch: {s.train_epochs} epochs at {s.imgsz}px (CPU)")
    base = _build(s.model)
    base = finetune(base, data, FinetuneOptions(epochs=s.train_epochs, imgsz=s.imgsz, batch=s.batch,
                                                project_dir=out / "runs", name="base", seed=s.seed, keep_zeros=False))
    save(base, out / "base.pt", metadata={"demo": asdict(s), "stage": "base"})
    metrics = {"base": validate(base, data, imgsz=s.imgsz)}

    _step(say, 3, total, f"recipe {s.seed_recipe} (the seed's unstructured design) and validation")
    seed_model = copy.deepcopy(base)
    seed_report = api.prune(seed_model, api.load_recipe(s.seed_recipe), example_inputs=example)
    save(seed_model, out / "seed-unstructured.pt", metadata={"recipe": s.seed_recipe, "report_digest": seed_report.digest()})
    metrics["seed-unstructured"] = validate(seed_model, data, imgsz=s.imgsz)

    _step(say, 4, total, f"recipe {s.structured_recipe} (structured channel pruning)")
    structured = copy.deepcopy(base)
    st_report = api.prune(structured, api.load_recipe(s.structured_recipe), example_inputs=example)
    metrics["structured (no fine-tune)"] = validate(structured, data, imgsz=s.imgsz)

    _step(say, 5, total, f"fine-tuning the structured model {s.finetune_epochs} epochs with distillation from the base")
    structured = finetune(structured, data, FinetuneOptions(epochs=s.finetune_epochs, imgsz=s.imgsz, batch=s.batch,
                                                            project_dir=out / "runs", name="structured-ft", seed=s.seed),
                          teacher=base)
    save(structured, out / "structured-finetuned.pt", metadata={"recipe": s.structured_recipe, "report_digest": st_report.digest()})
    metrics["structured-finetuned"] = validate(structured, data, imgsz=s.imgsz)

    _step(say, 6, total, f"comparison: latency at {s.latency_imgsz}px (PyTorch and ONNX Runtime), accuracy at {s.imgsz}px")
    models = {"base": base, "seed-unstructured": seed_model, "structured-finetuned": structured}
    paths = {"base": out / "base.pt", "seed-unstructured": out / "seed-unstructured.pt",
             "structured-finetuned": out / "structured-finetuned.pt"}
    options = CompareOptions(imgsz=s.latency_imgsz, threads=s.threads, rounds=s.latency_rounds)
    result = compare_models(models, paths=paths, options=options, progress=say)
    for row in result["rows"]:
        row.update({k: metrics[row["name"]][k] for k in ("mAP50", "mAP50-95")})
    result["accuracy"] = {
        "data": "synthetic (modprune data synth), not the user's imagery",
        "imgsz": s.imgsz, "train_epochs": s.train_epochs, "finetune_epochs": s.finetune_epochs, "seed": s.seed,
        "all": {k: {m: v[m] for m in ("mAP50", "mAP50-95")} for k, v in metrics.items()},
    }
    result["settings"] = asdict(s)
    result["prune_reports"] = {"seed-unstructured": seed_report.to_dict(), "structured": st_report.to_dict()}

    _step(say, 7, total, "writing the report")
    cats = {n: category_table(m, api.categorize(m)) for n, m in models.items()}
    report = write_report(result, out / "report", categories=cats, title="modprune demo: TokenC3-LSNet-n")
    result["seconds"] = time.perf_counter() - started
    with atomic_path(out / "demo.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=str))
    say("")
    say(comparison_table(result, markdown=False))
    say("")
    say(f"accuracy: synthetic data, {s.imgsz}px, base trained {s.train_epochs} epochs from scratch, "
        f"fine-tune {s.finetune_epochs} epochs, seed {s.seed}; before fine-tuning the structured model scored "
        f"mAP50 {metrics['structured (no fine-tune)']['mAP50']:.4f}")
    say(f"MACs removed: seed {100 * (seed_report.macs_reduction or 0):.1f}%, structured "
        f"{100 * (st_report.macs_reduction or 0):.1f}% (a MACs ratio is not a speedup: see the latency columns)")
    say(f"report: {report}  checkpoints: {out}/*.pt  total {result['seconds'] / 60:.1f} min")
    return result


def _build(model: str) -> nn.Module:
    try:
        return load(model)
    except ModpruneError as exc:
        raise ModpruneError(
            f"cannot build {model!r}: {exc}. The demo needs the TokenC3-LSNet plugin "
            "(pip install -e plugins/tokenc3-lsnet; `make demo` does it)",
            model,
        ) from None
