"""The demo: synthetic data, a briefly trained model, an unstructured recipe and a structured recipe
with distillation fine-tuning, then one honest comparison table.

The model and the recipes come from a :class:`DemoSpec`: plugins offer theirs through the
``modprune_register_demos`` hook (the first one registered is the default); without any, the stock
demo (:data:`STOCK_DEMO`, an ultralytics YOLOv8n with built-in recipes) runs.

Everything runs offline on CPU. The data is synthetic (a stand-in for real imagery); every accuracy
figure printed says so, with image size, epochs and seed.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Union

import torch
from torch import nn

from modprune import api
from modprune.exceptions import ConfigError, ModpruneError, UnknownStrategyError
from modprune.serialization import atomic_path, load, save

if TYPE_CHECKING:  # pragma: no cover
    from modprune.plugins import ModpruneManager

__all__ = ["DemoSettings", "DemoSpec", "FULL", "QUICK", "STOCK_DEMO", "available_demos", "run_demo", "select_demo"]

log = logging.getLogger(__name__)

HOOK = "modprune_register_demos"


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo run (see :data:`FULL` and :data:`QUICK`).

    ``thin_baseline`` adds the honest baseline (:mod:`modprune.workflows.thin_baseline`): the model's
    yaml made natively thin to the structured model's MACs, trained from scratch for ``train_epochs +
    finetune_epochs`` (row ``thin-scratch``). Off by default: it costs about as much as the base training
    again.

    ``nominal_batch`` is the images per optimizer step of every training the demo runs: the base, the
    structured model's fine-tuning (unless its recipe's ``finetune`` section sets its own) and the thin
    model, so that the three train alike. The default is one step per batch; None keeps ultralytics' 64,
    which at ``batch=16`` accumulates four batches a step: 20 epochs of 256 images are then 80 steps, and
    the base ends far from trained (docs/results.md, "One optimizer step per batch").

    :raises ConfigError: a size is not a positive integer, or the seed a negative one.
    """

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
    thin_baseline: bool = False
    nominal_batch: int | None = 16

    def __post_init__(self) -> None:
        sizes = ("n_train", "n_val", "imgsz", "train_epochs", "finetune_epochs", "batch", "latency_imgsz",
                 "latency_rounds", "threads")
        for name in sizes + ("seed",) + (("nominal_batch",) if self.nominal_batch is not None else ()):
            value, least = getattr(self, name), 0 if name == "seed" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"DemoSettings.{name}={value!r} must be an integer >= {least}"
                                  + (" (or None: ultralytics' 64)" if name == "nominal_batch" else ""), value)
        if not isinstance(self.thin_baseline, bool):
            raise ConfigError(f"DemoSettings.thin_baseline={self.thin_baseline!r} must be True or False",
                              self.thin_baseline)


FULL = DemoSettings()
QUICK = DemoSettings(n_train=32, n_val=16, imgsz=96, train_epochs=2, finetune_epochs=1, batch=8,
                     latency_imgsz=320, latency_rounds=5, nominal_batch=8)

Say = Callable[[str], None]
ModelSource = Union[str, Callable[[], nn.Module]]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
THIN_ROW = "thin-scratch"
_FIXED_ROWS = ("base", "structured (no fine-tune)", "structured-finetuned", THIN_ROW)


@dataclass(frozen=True)
class DemoSpec:
    """What ``modprune demo`` runs: a model, the two recipes it compares, and its sizes.

    :param name: what ``modprune demo --demo NAME`` selects it by.
    :param model: a MODEL string :func:`modprune.load` accepts (e.g. a model yaml name), or a
        zero-argument factory returning a fresh ``nn.Module`` (an ultralytics ``DetectionModel``).
    :param unstructured_recipe: the recipe applied without fine-tuning (e.g. zeroing weights).
    :param structured_recipe: the recipe that removes channels, then fine-tuned with distillation.
    :param title: the report's title (default ``modprune demo: NAME``).
    :param description: one line for ``modprune demo --list``.
    :param unstructured_label: the unstructured model's row, checkpoint and report name.
    :param unstructured_note: what the unstructured recipe is, in the progress line.
    :param full: the sizes of a full run.
    :param quick: the sizes of ``modprune demo --quick``.
    :raises ConfigError: a field has the wrong type, or the label is one of the fixed row names.
    """

    name: str
    model: ModelSource
    unstructured_recipe: str
    structured_recipe: str
    title: str = ""
    description: str = ""
    unstructured_label: str = "unstructured"
    unstructured_note: str = "unstructured pruning"
    full: DemoSettings = FULL
    quick: DemoSettings = QUICK

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigError(f"demo name {self.name!r} must be letters, digits, '.', '-' or '_'", self.name)
        if not (isinstance(self.model, str) and self.model) and not callable(self.model):
            raise ConfigError(f"demo {self.name!r}: model must be a MODEL string or a factory, got {self.model!r}",
                              self.model)
        texts = (self.unstructured_recipe, self.structured_recipe, self.unstructured_label)
        if not all(isinstance(t, str) and t for t in texts) or not all(
                isinstance(t, str) for t in (self.title, self.description, self.unstructured_note)):
            raise ConfigError(f"demo {self.name!r}: recipes and labels must be non-empty strings", self)
        if self.unstructured_label in _FIXED_ROWS:
            raise ConfigError(f"demo {self.name!r}: unstructured_label {self.unstructured_label!r} is taken by "
                              f"a fixed row ({', '.join(_FIXED_ROWS)}); choose another", self.unstructured_label)
        if not (isinstance(self.full, DemoSettings) and isinstance(self.quick, DemoSettings)):
            raise ConfigError(f"demo {self.name!r}: full and quick must be DemoSettings", self)

    @property
    def model_name(self) -> str:
        """The model as the progress lines and ``demo.json`` name it."""
        return self.model if isinstance(self.model, str) else getattr(self.model, "__name__", repr(self.model))


def yolov8n_one_class() -> nn.Module:
    """A fresh ultralytics YOLOv8n built from its bundled yaml with one class (the synthetic data's)."""
    from modprune.integrations.ultralytics.offline import ensure_offline

    ensure_offline()  # before ultralytics is imported
    from ultralytics.nn.tasks import DetectionModel

    return DetectionModel("yolov8n.yaml", nc=1, verbose=False).float()


#: The demo run when no plugin offers one: a stock ultralytics YOLOv8n with built-in recipes.
STOCK_DEMO = DemoSpec(
    name="yolov8n",
    model=yolov8n_one_class,
    unstructured_recipe="unstructured-10",
    structured_recipe="structured-30",
    title="modprune demo: YOLOv8n",
    description="stock ultralytics YOLOv8n (from its yaml, one class) with the built-in recipes",
)


def available_demos(pm: ModpruneManager | None = None) -> dict[str, DemoSpec]:
    """Every demo by name: the plugins' (``modprune_register_demos``, plugin order), then
    :data:`STOCK_DEMO`. A name already offered is skipped with a warning (the stock one silently)."""
    from modprune.plugins import resolve

    demos: dict[str, DemoSpec] = {}
    for plugin_name, spec in resolve(pm).collect(HOOK, DemoSpec):
        if spec.name in demos:
            log.warning("plugin %s: demo %r is already offered; skipping the plugin's", plugin_name, spec.name)
            continue
        demos[spec.name] = spec
    demos.setdefault(STOCK_DEMO.name, STOCK_DEMO)
    return demos


def select_demo(name: str | None = None, pm: ModpruneManager | None = None) -> DemoSpec:
    """The demo called ``name``, or the default (the first one offered) when ``name`` is None.

    :raises UnknownStrategyError: no demo has that name; the message lists the valid ones.
    """
    demos = available_demos(pm)
    if name is None:
        return next(iter(demos.values()))
    if name not in demos:
        raise UnknownStrategyError("demo", name, demos)
    return demos[name]


@dataclass
class _Run:
    """One demo run: its inputs and what the steps have produced so far."""

    spec: DemoSpec
    s: DemoSettings
    out: Path
    say: Say
    total: int = 7
    data: Path = Path()
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, nn.Module] = field(default_factory=dict)
    reports: dict[str, Any] = field(default_factory=dict)

    def step(self, n: int, text: str) -> None:
        self.say(f"[{n}/{self.total}] {text}")

    @property
    def example(self) -> torch.Tensor:
        return torch.zeros(1, 3, self.s.imgsz, self.s.imgsz)

    def validate(self, label: str, model: nn.Module) -> None:
        from modprune.integrations.ultralytics.validate import validate

        self.metrics[label] = validate(model, self.data, imgsz=self.s.imgsz)


def run_demo(
    out_dir: str | Path,
    settings: DemoSettings | None = None,
    *,
    demo: DemoSpec | str | None = None,
    pm: ModpruneManager | None = None,
    say: Say | None = None,
) -> dict[str, Any]:
    """Run a demo into ``out_dir``; returns the comparison result (also written as a report).

    :param settings: the run's sizes (default: the demo's ``full`` settings).
    :param demo: a :class:`DemoSpec`, a demo name, or None for the default (:func:`select_demo`).
    :param pm: the plugin manager demos are looked up in (default: the default manager).
    :raises UnknownStrategyError: ``demo`` names no demo.
    """
    spec = demo if isinstance(demo, DemoSpec) else select_demo(demo, pm)
    run = _Run(spec=spec, s=settings or spec.full, out=Path(out_dir).resolve(),
               say=say or (lambda m: log.info("%s", m)))
    run.total += int(run.s.thin_baseline)
    run.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(run.s.seed)
    started = time.perf_counter()
    _make_data(run)
    _train_base(run)
    _prune_unstructured(run)
    _prune_structured(run)
    if run.s.thin_baseline:
        _train_thin(run)
    result = _compare(run)
    _write_outputs(run, result, started)
    return result


def _make_data(run: _Run) -> None:
    from modprune.data import generate_dataset

    s = run.s
    run.step(1, f"synthetic dataset: {s.n_train} train / {s.n_val} val images at {s.imgsz}px, seed {s.seed}")
    run.data = generate_dataset(run.out / "data", n_train=s.n_train, n_val=s.n_val, imgsz=s.imgsz, seed=s.seed,
                                overwrite=True)


def _train_base(run: _Run) -> None:
    s, out = run.s, run.out
    run.step(2, f"training {run.spec.model_name} from scratch: {s.train_epochs} epochs at {s.imgsz}px, "
                f"{_per_step(s)} (CPU)")
    base = _build(run.spec)
    from modprune.integrations.ultralytics.trainer import FinetuneOptions, finetune  # imports ultralytics: after the build

    base = finetune(base, run.data, FinetuneOptions(epochs=s.train_epochs, imgsz=s.imgsz, batch=s.batch,
                                                    project_dir=out / "runs", name="base", seed=s.seed,
                                                    keep_zeros=False, nominal_batch=s.nominal_batch))
    save(base, out / "base.pt", metadata={"demo": _settings_record(run), "stage": "base"})
    run.models["base"] = base
    run.validate("base", base)


def _prune_unstructured(run: _Run) -> None:
    spec, label = run.spec, run.spec.unstructured_label
    run.step(3, f"recipe {spec.unstructured_recipe} ({spec.unstructured_note}) and validation")
    model = copy.deepcopy(run.models["base"])
    report = api.prune(model, api.load_recipe(spec.unstructured_recipe), example_inputs=run.example)
    save(model, run.out / f"{label}.pt", metadata={"recipe": spec.unstructured_recipe,
                                                   "report_digest": report.digest()})
    run.models[label], run.reports[label] = model, report
    run.validate(label, model)


def _prune_structured(run: _Run) -> None:
    from modprune.integrations.ultralytics.trainer import FinetuneOptions, finetune

    s, spec, out, base = run.s, run.spec, run.out, run.models["base"]
    run.step(4, f"recipe {spec.structured_recipe} (structured channel pruning)")
    structured = copy.deepcopy(base)
    recipe = api.find_recipe(spec.structured_recipe)
    report = api.prune(structured, recipe.config, example_inputs=run.example)
    run.reports["structured"] = report
    run.validate("structured (no fine-tune)", structured)

    run.step(5, f"fine-tuning the structured model {s.finetune_epochs} epochs with distillation from the base")
    options = FinetuneOptions(epochs=s.finetune_epochs, imgsz=s.imgsz, batch=s.batch, project_dir=out / "runs",
                              name="structured-ft", seed=s.seed,
                              **{"nominal_batch": s.nominal_batch, **recipe.finetune})
    structured = finetune(structured, run.data, options, teacher=base)
    save(structured, out / "structured-finetuned.pt", metadata={"recipe": spec.structured_recipe,
                                                                "report_digest": report.digest()})
    run.models["structured-finetuned"] = structured
    run.validate("structured-finetuned", structured)


def _train_thin(run: _Run) -> None:
    from modprune.workflows.thin_baseline import thin_baseline

    s, out = run.s, run.out
    epochs = s.train_epochs + s.finetune_epochs
    run.step(6, f"the honest baseline: {run.spec.model_name} made natively thin to the structured model's MACs, "
                f"trained from scratch {epochs} epochs")
    thin, match = thin_baseline(_build(run.spec), run.models["structured-finetuned"], run.data, out / "thin",
                                epochs=epochs, imgsz=s.imgsz, batch=s.batch, seed=s.seed,
                                finetune_overrides={"nominal_batch": s.nominal_batch})
    save(thin, out / f"{THIN_ROW}.pt", metadata={"thin_baseline": match.to_dict(), "epochs": epochs})
    run.models[THIN_ROW], run.reports[THIN_ROW] = thin, match
    run.validate(THIN_ROW, thin)


def _compare(run: _Run) -> dict[str, Any]:
    from modprune.evaluate.compare import CompareOptions, compare_models

    s, metrics = run.s, run.metrics
    run.step(run.total - 1, f"comparison: latency at {s.latency_imgsz}px (PyTorch and ONNX Runtime), accuracy at "
                            f"{s.imgsz}px")
    paths = {name: run.out / f"{name}.pt" for name in run.models}
    options = CompareOptions(imgsz=s.latency_imgsz, threads=s.threads, rounds=s.latency_rounds)
    result = compare_models(run.models, paths=paths, options=options, progress=run.say)
    for row in result["rows"]:
        row.update({k: metrics[row["name"]][k] for k in ("mAP50", "mAP50-95")})
    result["accuracy"] = {
        "data": "synthetic (modprune data synth), not the user's imagery",
        "imgsz": s.imgsz, "train_epochs": s.train_epochs, "finetune_epochs": s.finetune_epochs, "seed": s.seed,
        "nominal_batch": s.nominal_batch,
        "all": {k: {m: v[m] for m in ("mAP50", "mAP50-95")} for k, v in metrics.items()},
    }
    result["settings"] = _settings_record(run)
    from modprune.workflows.seeds import environment  # noqa: PLC0415 - what besides the seed fixes the bits

    result["environment"] = environment()
    result["prune_reports"] = {name: report.to_dict() for name, report in run.reports.items() if name != THIN_ROW}
    if THIN_ROW in run.reports:
        result["thin_baseline"] = {**run.reports[THIN_ROW].to_dict(), "epochs": s.train_epochs + s.finetune_epochs}
    return result


def _write_outputs(run: _Run, result: dict[str, Any], started: float) -> None:
    from modprune.evaluate.report import comparison_table, write_report
    from modprune.report import category_table

    s, say, spec = run.s, run.say, run.spec
    run.step(run.total, "writing the report")
    cats = {n: category_table(m, api.categorize(m)) for n, m in run.models.items()}
    report = write_report(result, run.out / "report", categories=cats, title=spec.title or f"modprune demo: {spec.name}")
    result["seconds"] = time.perf_counter() - started
    with atomic_path(run.out / "demo.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=str))
    unstructured, structured = run.reports[spec.unstructured_label], run.reports["structured"]
    say("")
    say(comparison_table(result, markdown=False))
    say("")
    say(f"accuracy: synthetic data, {s.imgsz}px, base trained {s.train_epochs} epochs from scratch "
        f"({_per_step(s)}), "
        f"fine-tune {s.finetune_epochs} epochs, seed {s.seed}; before fine-tuning the structured model scored "
        f"mAP50 {run.metrics['structured (no fine-tune)']['mAP50']:.4f}")
    say(f"MACs removed: {spec.unstructured_label} {100 * (unstructured.macs_reduction or 0):.1f}%, structured "
        f"{100 * (structured.macs_reduction or 0):.1f}% (a MACs ratio is not a speedup: see the latency columns)")
    if THIN_ROW in run.reports:
        match, m = run.reports[THIN_ROW], run.metrics[THIN_ROW]
        say(f"thin baseline: width {match.width:.4f} (yaml {match.base_width:g}), {100 * match.relative_error:+.1f}% "
            f"MACs vs the structured model, {s.train_epochs + s.finetune_epochs} epochs from scratch: mAP50 "
            f"{m['mAP50']:.4f}")
    say(f"report: {report}  checkpoints: {run.out}/*.pt  total {result['seconds'] / 60:.1f} min")


def _per_step(s: DemoSettings) -> str:
    """How many images each optimizer step of the demo's trainings sees, in words."""
    return f"{s.nominal_batch if s.nominal_batch is not None else 64} images per optimizer step"


def _settings_record(run: _Run) -> dict[str, Any]:
    """The run's demo, model, recipes and sizes, as ``demo.json`` and the base checkpoint record them."""
    spec = run.spec
    return {"demo": spec.name, "model": spec.model_name, "seed_recipe": spec.unstructured_recipe,
            "structured_recipe": spec.structured_recipe, **asdict(run.s)}


def _build(spec: DemoSpec) -> nn.Module:
    """A fresh model for ``spec``; a failure names the demo and its model."""
    try:
        model = load(spec.model) if isinstance(spec.model, str) else spec.model()
    except ModpruneError as exc:
        raise ModpruneError(
            f"demo {spec.name!r} cannot build its model {spec.model_name!r}: {exc}. Is the plugin that offers "
            "it installed with its dependencies? (`modprune demo --list` shows the demos available)",
            spec.model_name,
        ) from None
    if not isinstance(model, nn.Module):
        raise ModpruneError(f"demo {spec.name!r}: its model factory returned {type(model).__name__}, not an "
                            "nn.Module", spec.model)
    return model
