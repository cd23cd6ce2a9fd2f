"""Same seed -> bit-identical fine-tuned weights across processes (different hash seeds); another seed differs.
Plus the ``--seeds`` summary of the demo (with a stand-in for the demo run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import modprune
from modprune.exceptions import ConfigError
from modprune.workflows.seeds import parse_seeds, run_demo_seeds, summarise

SRC = str(Path(modprune.__file__).resolve().parents[1])
SCRIPT = textwrap.dedent("""
    import hashlib, json, sys
    from pathlib import Path
    import torch
    from modprune.integrations.ultralytics.offline import ensure_offline
    ensure_offline(sys.argv[3])
    from modprune.integrations.ultralytics.trainer import FinetuneOptions, finetune
    from ultralytics.nn.tasks import DetectionModel
    seed, out = int(sys.argv[1]), Path(sys.argv[2])
    torch.manual_seed(seed)
    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    opts = FinetuneOptions(epochs=1, imgsz=64, batch=4, project_dir=out, seed=seed,
                           overrides={"warmup_epochs": 0, "nbs": 4})
    tuned = finetune(model, sys.argv[4], opts)
    digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in tuned.state_dict().values())).hexdigest()
    print(json.dumps({"digest": digest}))
""")


def _run(seed: int, tmp: Path, data: Path, cfg: Path, hashseed: str) -> str:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "PYTHONHASHSEED": hashseed}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(seed), str(tmp), str(cfg), str(data)], env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["digest"]


@pytest.mark.slow  # three 1-epoch trainings in subprocesses (~60-90 s on a busy 2-core machine)
def test_same_seed_same_weights_other_seed_differs(offline_ultralytics: Path, tmp_path: Path) -> None:
    from modprune.data import generate_dataset

    data = generate_dataset(tmp_path / "ds", n_train=16, n_val=8, imgsz=64, seed=0)
    first = _run(0, tmp_path / "a", data, offline_ultralytics.parent, "1")
    second = _run(0, tmp_path / "b", data, offline_ultralytics.parent, "2")
    other = _run(1, tmp_path / "c", data, offline_ultralytics.parent, "1")
    assert first == second
    assert other != first


def test_parse_seeds() -> None:
    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("5") == [5]
    for bad in ("", "a", "1,1", "-1"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_seeds_summary_mean_and_spread(tmp_path: Path) -> None:
    from modprune.workflows.demo import DemoSettings

    seen = []

    def fake_demo(out, settings, *, demo=None, say=None):  # stands in for the (minutes-long) demo run
        seen.append((Path(out).name, settings.seed))
        value = 0.5 + 0.1 * settings.seed
        return {"accuracy": {"all": {"base": {"mAP50": value, "mAP50-95": value / 2}}}}

    summary = run_demo_seeds(tmp_path, DemoSettings(), [0, 1, 2], runner=fake_demo)
    assert seen == [("seed-0", 0), ("seed-1", 1), ("seed-2", 2)]
    m = summary["summary"]["base"]["mAP50"]
    assert m["mean"] == pytest.approx(0.6) and m["std"] == pytest.approx(0.1) and m["n"] == 3
    assert json.loads((tmp_path / "seeds.json").read_text())["summary"] == summary["summary"]
    assert summarise({0: {"base": {"mAP50": 0.4}}})["base"]["mAP50"]["std"] == 0.0
