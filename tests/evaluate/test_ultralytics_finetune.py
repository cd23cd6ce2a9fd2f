"""ultralytics integration: offline setup, validation and fine-tuning of in-memory (pruned) models.

Uses yolov8n built from ultralytics' bundled yaml (no weight download) and the tiny synthetic dataset
(8 + 8 images at imgsz 64). Training runs are 1-2 epochs: they check behaviour, not accuracy.
"""

from __future__ import annotations

import copy
import logging
import csv
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("ultralytics")

from modprune.data import generate_dataset  # noqa: E402
from modprune.exceptions import ConfigError, DatasetError, UnsupportedModelError  # noqa: E402

SRC = str(Path(__import__("modprune").__file__).resolve().parents[1])
# Enough optimizer steps in 1-2 tiny epochs: no warm-up, no gradient accumulation.
STEP_EVERY_BATCH = {"warmup_epochs": 0, "nbs": 4}


def _subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _zero_some_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Zero the first half of the output channels of three convolutions; return the zeroed slices' masks."""
    zeroed = {}
    with torch.no_grad():
        for name in ("model.2.cv1.conv.weight", "model.8.m.0.cv2.conv.weight", "model.22.cv2.0.0.conv.weight"):
            p = dict(model.named_parameters())[name]
            p[: p.shape[0] // 2] = 0
            zeroed[name] = p.detach().clone() == 0
    return zeroed


def _disguise_yaml(model: torch.nn.Module) -> None:
    """Make the model's yaml describe yolov8s: a trainer that rebuilds from yaml would change the size."""
    model.yaml = dict(model.yaml, scale="s")


# ------------------------------------------------------------------------------------------------ offline


def test_ensure_offline_prepares_environment(offline_ultralytics: Path) -> None:
    import ultralytics.data.utils as data_utils
    import ultralytics.utils.checks as checks
    from ultralytics.utils import SETTINGS

    from modprune.integrations.ultralytics.offline import ensure_offline

    assert os.environ["YOLO_OFFLINE"] == "1" and os.environ["YOLO_AUTOINSTALL"] == "False"
    for font in ("Arial.ttf", "Arial.Unicode.ttf"):  # found locally, never downloaded nor copied
        assert Path(checks.check_font(font)).stat().st_size > 10_000
        assert Path(data_utils.check_font(font)).is_file()
    assert SETTINGS["sync"] is False and SETTINGS["mlflow"] is False and SETTINGS["wandb"] is False
    on_disk = json.loads((offline_ultralytics / "settings.json").read_text())
    assert on_disk["sync"] is True  # ultralytics' default, as the user left it: nothing was saved
    before = sorted(p.name for p in offline_ultralytics.iterdir())
    assert ensure_offline() == offline_ultralytics  # idempotent
    assert sorted(p.name for p in offline_ultralytics.iterdir()) == before  # nothing copied or written
    # (that modprune leaves a user's config dir byte-identical is walked in test_user_environment.py; this
    # directory is shared by the whole test session, where other fixtures place fonts of their own)


def test_ensure_offline_after_ultralytics_import(tmp_path: Path) -> None:
    """Called late, it patches ultralytics' constants and its font lookup, and keeps its config dir."""
    code = textwrap.dedent(f"""
        import json, os
        import ultralytics.utils as uu, ultralytics.utils.checks as checks, ultralytics.utils.events as ev
        import ultralytics.utils.plotting as plotting
        from modprune.integrations.ultralytics.offline import ensure_offline
        d = ensure_offline()
        print(json.dumps({{"dir": str(d), "actual": str(uu.USER_CONFIG_DIR), "online": uu.ONLINE,
            "auto": checks.AUTOINSTALL, "events": ev.events.enabled,
            "font": os.path.exists(plotting.check_font("Arial.ttf"))}}))
    """)
    env = _subprocess_env(YOLO_CONFIG_DIR=str(tmp_path / "early"), YOLO_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["dir"] == res["actual"] == str(tmp_path / "early" / "Ultralytics")
    assert res["font"] and res["online"] is False and res["auto"] is False and res["events"] is False
    assert not (tmp_path / "early" / "Ultralytics" / "Arial.ttf").exists()


@pytest.mark.slow  # ~11 s alone, ~20 s on a busy 2-core machine
def test_no_network_attempt_during_validation_and_training(tmp_path: Path) -> None:
    """A fresh process with every socket entry point guarded: import, validate and train attempt nothing."""
    code = textwrap.dedent(f"""
        import json, socket
        attempts = []
        def guard(name):
            def blocked(*args, **kwargs):
                attempts.append(name + " " + repr(args[1:3] if name.startswith("socket.") else args[:2]))
                raise OSError("network disabled by test")
            return blocked
        socket.socket.connect = guard("socket.connect")
        socket.socket.connect_ex = guard("socket.connect_ex")
        socket.create_connection = guard("create_connection")
        socket.getaddrinfo = guard("getaddrinfo")
        from modprune.integrations.ultralytics.offline import ensure_offline
        ensure_offline({str(tmp_path / "cfg")!r})
        from modprune.data import generate_dataset
        from modprune.integrations.ultralytics.trainer import FinetuneOptions, finetune
        from modprune.integrations.ultralytics.validate import validate
        from ultralytics.nn.tasks import DetectionModel
        data = generate_dataset({str(tmp_path / "ds")!r}, n_train=8, n_val=8, imgsz=64)
        model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
        validate(model, data, imgsz=64, batch=8)
        options = FinetuneOptions(epochs=1, imgsz=64, batch=4, project_dir={str(tmp_path / "runs")!r}, plots=True)
        finetune(model, data, options, teacher=DetectionModel("yolov8n.yaml", nc=1, verbose=False))
        print(json.dumps(attempts))
    """)
    env = {k: v for k, v in _subprocess_env().items() if not k.startswith("YOLO_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


# ------------------------------------------------------------------------------------------------ validate


def test_validate_in_memory_model(yolov8n: torch.nn.Module, tiny_data: Path) -> None:
    from modprune.integrations.ultralytics.validate import validate

    yolov8n.train()
    before = copy.deepcopy(yolov8n.state_dict())
    n_modules = len(list(yolov8n.modules()))
    res = validate(yolov8n, tiny_data, imgsz=64, batch=8)
    assert set(res) == {"mAP50", "mAP50-95", "precision", "recall", "fitness", "speed_ms"}
    assert all(isinstance(res[k], float) and 0.0 <= res[k] <= 1.0 for k in ("mAP50", "mAP50-95", "precision", "recall"))
    assert yolov8n.training  # mode restored
    assert len(list(yolov8n.modules())) == n_modules  # not fused in place
    now = yolov8n.state_dict()
    assert all(torch.equal(v, now[k]) for k, v in before.items())


def test_validate_errors(yolov8n: torch.nn.Module, tiny_data: Path, tmp_path: Path) -> None:
    from modprune.integrations.ultralytics.validate import validate

    with pytest.raises(DatasetError):
        validate(yolov8n, tmp_path / "missing.yaml", imgsz=64)
    with pytest.raises(ConfigError, match="imgsz"):
        validate(yolov8n, tiny_data, imgsz=0)
    with pytest.raises(ConfigError, match="iou"):
        validate(yolov8n, tiny_data, imgsz=64, iou=2.0)
    with pytest.raises(UnsupportedModelError):
        validate(torch.nn.Linear(2, 2), tiny_data, imgsz=64)
    two = generate_dataset(tmp_path / "two", n_train=2, n_val=2, imgsz=64, n_classes=2)
    with pytest.raises(ConfigError, match="1 classes but"):
        validate(yolov8n, two, imgsz=64)


# ------------------------------------------------------------------------------------------------ finetune


@pytest.fixture(scope="module")
def finetuned(offline_ultralytics: Path, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """One 2-epoch fine-tune of a yolov8n with zeroed weights and a yaml that lies about its size."""
    from ultralytics.nn.tasks import DetectionModel

    from modprune.integrations.ultralytics.trainer import FinetuneOptions, finetune

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    zeroed = _zero_some_weights(model)
    _disguise_yaml(model)
    original = copy.deepcopy(model.state_dict())
    project = tmp_path_factory.mktemp("ft")
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    trainer_log = logging.getLogger("modprune.integrations.ultralytics.trainer")
    trainer_log.addHandler(handler)
    level = trainer_log.level
    trainer_log.setLevel(logging.INFO)
    try:  # pytest captures stdout: not a terminal, so one line per epoch is logged
        out = finetune(model, tiny_data, FinetuneOptions(epochs=2, imgsz=64, batch=4, project_dir=project,
                                                         overrides=STEP_EVERY_BATCH))
    finally:
        trainer_log.removeHandler(handler)
        trainer_log.setLevel(level)
    return {"model": model, "out": out, "zeroed": zeroed, "original": original, "project": project, "log": lines}


def test_finetune_logs_one_line_per_epoch_without_a_terminal(finetuned: dict) -> None:
    epochs = [line for line in finetuned["log"] if line.startswith(("epoch ", "final validation"))]
    assert [line.split(",")[0] for line in epochs][:2] == ["epoch 1/2", "epoch 2/2"], finetuned["log"]
    assert all(line.startswith("final validation (best weights)") for line in epochs[2:]), epochs
    assert all("box_loss" in line and "fitness" in line and "mAP50" in line for line in epochs), epochs


def test_finetune_keeps_architecture(finetuned: dict) -> None:
    model, out = finetuned["model"], finetuned["out"]
    assert _n_params(out) == _n_params(model)
    assert [tuple(p.shape) for p in out.parameters()] == [tuple(p.shape) for p in model.parameters()]
    assert type(out) is type(model)


def test_finetune_keeps_zeros_and_trains_the_rest(finetuned: dict) -> None:
    out, zeroed, original = finetuned["out"], finetuned["zeroed"], finetuned["original"]
    params = dict(out.named_parameters())
    for name, zero in zeroed.items():
        assert bool((params[name][zero] == 0).all()), name
        assert not torch.equal(params[name][~zero], original[name][~zero]), f"{name} did not train"


def test_finetune_returns_float32_eval_copy(finetuned: dict) -> None:
    out, model, original = finetuned["out"], finetuned["model"], finetuned["original"]
    assert not out.training
    assert all(p.dtype == torch.float32 for p in out.parameters())
    assert out is not model
    now = model.state_dict()
    assert all(torch.equal(v, now[k]) for k, v in original.items())  # caller's model untouched
    assert getattr(out, "criterion", None) is None
    run = finetuned["project"] / "finetune"
    assert (run / "weights" / "best.pt").is_file() and (run / "results.csv").is_file()


def test_checkpoint_fallback_is_float32(finetuned: dict) -> None:
    from modprune.integrations.ultralytics.trainer import _state_from_checkpoint

    weights = finetuned["project"] / "finetune" / "weights"
    state = _state_from_checkpoint(weights / "best.pt", weights / "last.pt")
    assert all(v.dtype == torch.float32 for k, v in state.items() if v.is_floating_point())
    out_state = finetuned["out"].state_dict()
    assert set(state) == set(out_state)
    for name, zero in finetuned["zeroed"].items():
        assert bool((state[name][zero] == 0).all())


def test_finetune_with_distillation_and_explicit_masks(offline_ultralytics: Path, tiny_data: Path,
                                                       tmp_path: Path) -> None:
    from ultralytics.nn.tasks import DetectionModel

    from modprune.integrations.ultralytics.trainer import FinetuneOptions, finetune

    torch.manual_seed(1)
    student = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    teacher = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    teacher_state = copy.deepcopy(teacher.state_dict())
    name = "model.4.cv1.conv.weight"
    w = dict(student.named_parameters())[name]
    keep = torch.ones_like(w, dtype=torch.bool)
    keep[:, : w.shape[1] // 2] = False  # a mask over weights that are nonzero now
    options = FinetuneOptions(epochs=1, imgsz=64, batch=4, project_dir=tmp_path, distill_weight=2.0,
                              overrides=STEP_EVERY_BATCH)
    out = finetune(student, tiny_data, options, teacher=teacher, masks={name: keep})
    assert bool((dict(out.named_parameters())[name][~keep] == 0).all())
    with open(tmp_path / "finetune" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    kd = [float(r["train/kd_loss"]) for r in rows]
    assert kd and all(v > 0 for v in kd)
    now = teacher.state_dict()
    assert all(torch.equal(v, now[k].cpu()) for k, v in teacher_state.items())  # not trained


def test_keep_zeros_false_lets_weights_regrow(offline_ultralytics: Path, tiny_data: Path, tmp_path: Path) -> None:
    from ultralytics.nn.tasks import DetectionModel

    from modprune.integrations.ultralytics.trainer import FinetuneOptions, finetune

    torch.manual_seed(2)
    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    zeroed = _zero_some_weights(model)
    out = finetune(model, tiny_data, FinetuneOptions(epochs=1, imgsz=64, batch=4, project_dir=tmp_path,
                                                     keep_zeros=False, overrides=STEP_EVERY_BATCH))
    params = dict(out.named_parameters())
    assert any(bool((params[n][z] != 0).any()) for n, z in zeroed.items())


@pytest.mark.parametrize("kwargs, error, match", [
    ({"epochs": 0}, ConfigError, "epochs"),
    ({"batch": 1}, ConfigError, "batch"),
    ({"distill_weight": 0}, ConfigError, "distill_weight"),
    ({"name": "a/b"}, ConfigError, "name"),
    ({"overrides": {"model": "yolov8s.pt"}}, ConfigError, "overrides may not set"),
    ({"lr0": -1.0}, ConfigError, "lr0"),
    ({"lr0": 0.01}, ConfigError, "would be ignored: optimizer='auto'"),  # ultralytics' auto drops lr0 silently
    ({"patience": 0}, ConfigError, "patience"),
    ({"nominal_batch": 0}, ConfigError, "nominal_batch=0 must be an integer >= 1"),
    ({"nominal_batch": 16.0}, ConfigError, "nominal_batch"),
    ({"overrides": {"nbs": 16}, "nominal_batch": 16}, ConfigError, "both set ultralytics' nbs"),
    ({"overrides": {"cos_lrr": True}}, ConfigError, "not an ultralytics training argument .did you mean cos_lr"),
    ({"resume": True}, ConfigError, "nothing to resume"),
    ({"masks": {"nope.weight": torch.ones(1)}}, ConfigError, "names no parameter"),
    ({"masks": {"model.0.conv.weight": torch.ones(3)}}, ConfigError, "shape"),
])
def test_finetune_argument_errors(yolov8n: torch.nn.Module, tiny_data: Path, tmp_path: Path, kwargs: dict,
                                  error: type, match: str) -> None:
    from modprune.integrations.ultralytics.trainer import FinetuneOptions, finetune

    masks = kwargs.pop("masks", None)
    args = {"epochs": 1, "imgsz": 64, "batch": 4, "project_dir": tmp_path, **kwargs}
    with pytest.raises(error, match=match):  # invalid options fail at construction
        finetune(yolov8n, tiny_data, FinetuneOptions(**args), masks=masks)


def test_finetune_model_and_teacher_checks(yolov8n: torch.nn.Module, tiny_data: Path, tmp_path: Path) -> None:
    from ultralytics.nn.tasks import DetectionModel

    from modprune.integrations.ultralytics.trainer import FinetuneOptions, finetune

    options = FinetuneOptions(epochs=1, imgsz=64, project_dir=tmp_path)
    with pytest.raises(UnsupportedModelError):
        finetune(torch.nn.Conv2d(3, 3, 1), tiny_data, options)
    with pytest.raises(ConfigError, match="teacher predicts 2 classes"):
        finetune(yolov8n, tiny_data, options, teacher=DetectionModel("yolov8n.yaml", nc=2, verbose=False))
    two = generate_dataset(tmp_path / "two", n_train=2, n_val=2, imgsz=64, n_classes=2)
    with pytest.raises(ConfigError, match="classes"):
        finetune(yolov8n, two, options)
    with pytest.raises(ConfigError, match="FinetuneOptions"):
        finetune(yolov8n, tiny_data, {"epochs": 1})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="reset_head=True"):  # the documented way out, before any training
        finetune(DetectionModel("yolov8n.yaml", verbose=False), tiny_data, options)


def test_reset_head_reinitialises_only_the_class_outputs(yolov8n: torch.nn.Module) -> None:
    from modprune.integrations.ultralytics.trainer import reset_head

    before = {k: v.clone() for k, v in yolov8n.state_dict().items()}
    reset_head(yolov8n, 3)
    head = yolov8n.model[-1]
    assert head.nc == 3 and head.no == 3 + 4 * head.reg_max and yolov8n.yaml["nc"] == 3
    after = yolov8n.state_dict()
    changed = {k for k in before if k not in after or before[k].shape != after[k].shape}
    assert changed and all(".cv3." in k for k in changed)
    assert all(torch.equal(before[k], after[k]) for k in before if k not in changed)
    y = yolov8n.eval()(torch.zeros(1, 3, 64, 64))[0]
    assert y.shape[1] == 4 + 3


@pytest.mark.slow  # one tiny epoch through the CLI
def test_finetune_command_for_real_data(tmp_path: Path, tiny_data: Path) -> None:
    """An 80-class model on a 1-class dataset, ultralytics arguments passed through, the default runs dir."""
    config = tmp_path / "cfg"
    env = {k: v for k, v in _subprocess_env().items() if not k.startswith("YOLO_")}
    env["YOLO_CONFIG_DIR"] = str(config)
    subprocess.run([sys.executable, "-c", "import ultralytics.utils"], env={**env, "YOLO_OFFLINE": "1"}, check=True,
                   capture_output=True, timeout=120)
    settings_file = config / "Ultralytics" / "settings.json"
    settings = json.loads(settings_file.read_text())
    settings_file.write_text(json.dumps({**settings, "runs_dir": str(tmp_path / "my-runs")}))
    base = ["-c", "import sys; from modprune.cli.main import main; sys.exit(main())", "finetune", "yolov8n.yaml", "--data", str(tiny_data), "--epochs", "1",
            "--imgsz", "64", "--batch", "4", "-o", "tuned.pt"]
    bad = subprocess.run([sys.executable, *base, "--reset-head", "--train-arg", "mosaik=0"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "'mosaik' is not an ultralytics training argument" in bad.stderr
    assert len([line for line in bad.stderr.splitlines() if line.strip()]) == 1
    no_reset = subprocess.run([sys.executable, *base], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
    assert no_reset.returncode == 2 and "--reset-head" in no_reset.stderr
    done = subprocess.run([sys.executable, *base, "--reset-head", "--device", "cpu", "--workers", "0", "--optimizer",
                           "SGD", "--lr0", "0.002", "--patience", "3", "--nominal-batch", "4",
                           "--train-arg", "mosaic=0", "--train-arg", "warmup_epochs=0"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "my-runs" / "modprune" / "finetune"
    assert (run / "weights" / "last.pt").is_file()
    args = (run / "args.yaml").read_text()
    assert "mosaic: 0" in args and "patience: 3" in args and "lr0: 0.002" in args and "optimizer: SGD" in args
    assert "nbs: 4" in args  # one optimizer step per batch
    import modprune

    assert modprune.load(tmp_path / "tuned.pt").model[-1].nc == 1


# ------------------------------------------------------------------------------------------------ trainer class


def test_trainer_class_pickles_by_reference(offline_ultralytics: Path, yolov8n: torch.nn.Module, tiny_data: Path,
                                            tmp_path: Path) -> None:
    from modprune.integrations.ultralytics.trainer import (
        DistillationInstaller,
        MaskKeeper,
        PrunedModelTrainer,
    )

    trainer = PrunedModelTrainer(overrides={"data": str(tiny_data), "project": str(tmp_path), "name": "t",
                                            "epochs": 1, "imgsz": 64, "device": "cpu", "verbose": False},
                                 model=yolov8n)
    assert trainer.model is yolov8n and trainer.get_model() is yolov8n
    blob = pickle.dumps(type(trainer))
    assert b"modprune.integrations.ultralytics.trainer" in blob and b"PrunedModelTrainer" in blob
    callbacks = pickle.dumps([MaskKeeper({"w": torch.ones(2, dtype=torch.bool)}),
                              DistillationInstaller(torch.nn.Conv2d(1, 1, 1), 1.0, 2.0)])
    code = ("import pickle, sys\n"
            "data = sys.stdin.buffer.read()\n"
            "n = int.from_bytes(data[:8], 'little')\n"
            "cls = pickle.loads(data[8:8 + n])\n"
            "cbs = pickle.loads(data[8 + n:])\n"
            "print(cls.__module__ + '.' + cls.__qualname__, [type(c).__name__ for c in cbs])")
    out = subprocess.run([sys.executable, "-c", code], input=len(blob).to_bytes(8, "little") + blob + callbacks,
                         capture_output=True, env=_subprocess_env(), timeout=120)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert out.stdout.decode().split() == ["modprune.integrations.ultralytics.trainer.PrunedModelTrainer",
                                           "['MaskKeeper',", "'DistillationInstaller']"]


def test_trainer_without_model_refuses_to_build_one(offline_ultralytics: Path, tiny_data: Path,
                                                    tmp_path: Path) -> None:
    from modprune.integrations.ultralytics.trainer import PrunedModelTrainer

    trainer = PrunedModelTrainer(overrides={"data": str(tiny_data), "project": str(tmp_path), "name": "t",
                                            "imgsz": 64, "device": "cpu"})
    with pytest.raises(ConfigError, match="needs the model"):
        trainer.get_model(cfg="yolov8n.yaml")


def test_zero_masks_only_covers_weight_tensors() -> None:
    from modprune.integrations.ultralytics.trainer import zero_masks

    net = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 1), torch.nn.BatchNorm2d(2))
    with torch.no_grad():
        net[0].weight[0] = 0
        net[0].bias.zero_()
    masks = zero_masks(net)
    assert list(masks) == ["0.weight"]  # conv bias and BN bias are zero but not masked
    assert masks["0.weight"].dtype == torch.bool and int((~masks["0.weight"]).sum()) == 2


# ------------------------------------------------------------------------------------------------ distillation loss


def _head_outputs(b: int = 2, nc: int = 3, reg_max: int = 16, anchors: int = 21, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"scores": torch.randn(b, nc, anchors, generator=g),
            "boxes": torch.randn(b, 4 * reg_max, anchors, generator=g)}


def test_distillation_loss_zero_when_equal_positive_otherwise() -> None:
    from modprune.integrations.ultralytics.trainer import output_distillation_loss

    t = _head_outputs(seed=0)
    s = {k: v.clone().requires_grad_(True) for k, v in t.items()}
    assert output_distillation_loss(s, t).item() == pytest.approx(0.0, abs=1e-5)
    other = {k: v.clone().requires_grad_(True) for k, v in _head_outputs(seed=1).items()}
    loss = output_distillation_loss(other, t, temperature=2.0)
    assert loss.item() > 0
    loss.backward()
    assert other["scores"].grad.abs().sum() > 0 and other["boxes"].grad.abs().sum() > 0


def test_distillation_loss_variants_and_errors() -> None:
    from modprune.integrations.ultralytics.trainer import output_distillation_loss

    l1 = output_distillation_loss(_head_outputs(reg_max=1, seed=1), _head_outputs(reg_max=1, seed=2))
    assert float(l1) > 0
    e2e_s = {"one2many": _head_outputs(seed=1), "one2one": _head_outputs(seed=3)}
    e2e_t = {"one2many": _head_outputs(seed=2), "one2one": _head_outputs(seed=4)}
    assert float(output_distillation_loss(e2e_s, e2e_t)) > 0
    with pytest.raises(ConfigError, match="do not match"):
        output_distillation_loss(_head_outputs(nc=3), _head_outputs(nc=2))
    with pytest.raises(ConfigError, match="end-to-end"):
        output_distillation_loss({"one2many": _head_outputs()}, _head_outputs())
