"""docs/getting-started.md runs as written (issue 14): every fenced ``bash`` / ``python`` block outside
"Install" runs, in order, in a fresh folder, each command must exit 0 and the files the page names
must exist afterwards.

Only sizes change (64 px, one epoch, a few images, a few timing rounds): the substitutions are listed
in ``SMALLER`` and each must still match the page, so an edited page cannot slip past them.
ultralytics runs offline with a private config dir whose ``runs_dir`` is the test's folder (tests
never download anything, and write nowhere else).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("ultralytics")

DOC = Path(__file__).resolve().parents[2] / "docs" / "getting-started.md"
#: (documented size, size the test runs): only numbers, never commands or options.
SMALLER = [
    ("--imgsz 320", "--imgsz 64"), ("--imgsz 160", "--imgsz 64"), ("--train 256 --val 64", "--train 8 --val 4"),
    ("--epochs 10", "--epochs 1"), ("--rounds 20", "--rounds 3"), ("--steps 4", "--steps 2"),
    ("--finetune-epochs 2", "--finetune-epochs 1"), ("epochs=10", "epochs=1"), ("imgsz=160", "imgsz=64"),
]
#: What the page says the commands write.
WRITTEN = ["v8n-30.pt", "data/data.yaml", "v8n-30-ft.pt", "base.pt", "v8n-30-iter.pt", "v8n-iter"]
#: Before the page's Python: no network (what every modprune command does for itself).
OFFLINE = "from modprune.integrations.ultralytics.offline import ensure_offline; ensure_offline()\n"


def blocks(text: str) -> list[tuple[str, str]]:
    """``(language, code)`` of the fenced bash / python blocks outside the "Install" section."""
    out = []
    for section in re.split(r"^## ", text, flags=re.M):
        if section.startswith("Install"):
            continue  # creates the environment this test runs in
        out += re.findall(r"^```(bash|python)\n(.*?)^```", section, flags=re.M | re.S)
    return out


def test_the_page_has_the_commands_and_sizes_the_test_shrinks() -> None:
    text = DOC.read_text()
    found = blocks(text)
    assert [lang for lang, _ in found].count("bash") >= 3 and any(lang == "python" for lang, _ in found)
    code = "\n".join(c for _, c in found)
    missing = [big for big, _ in SMALLER if big not in code]
    assert not missing, f"getting-started.md changed; update SMALLER: {missing}"


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("MODPRUNE_LONG_TESTS") != "1",
                    reason="the whole page (several minutes of training) runs with make test-long")
@pytest.mark.timeout(1800)  # a dozen commands, three short trainings: minutes on a busy 2-core machine
def test_getting_started_runs_as_written() -> None:
    """Every block, in order, in one shell session (``set -e``: the first failing command fails the test)."""
    with tempfile.TemporaryDirectory(prefix="modprune-getting-started-") as tmp:  # a folder of its own
        _run_page(Path(tmp))


def _run_page(tmp_path: Path) -> None:
    script = ["set -euo pipefail"]
    for i, (lang, code) in enumerate(blocks(DOC.read_text())):
        for big, small in SMALLER:
            code = code.replace(big, small)
        if lang == "python":
            (tmp_path / f"block{i}.py").write_text(OFFLINE + code)
            code = f'"{sys.executable}" block{i}.py'
        script.append(f"echo '### block {i}' >&2\n{code}")
    (tmp_path / "page.sh").write_text("\n".join(script) + "\n")
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "YOLO_CONFIG_DIR": str(tmp_path / "ultralytics-config"), "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False"}
    private = "from ultralytics.utils import SETTINGS; import sys; " \
              "SETTINGS.update(runs_dir=sys.argv[1] + '/runs', datasets_dir=sys.argv[1], weights_dir=sys.argv[1] + '/weights')"
    subprocess.run([sys.executable, "-c", private, str(tmp_path)], env=env, check=True, timeout=300)  # runs stay here
    done = subprocess.run(["bash", "page.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-5000:])
    missing = [name for name in WRITTEN if not (tmp_path / name).exists()]
    assert not missing, (missing, sorted(p.name for p in tmp_path.iterdir()))
    assert (tmp_path / "runs").is_dir()  # the page's training runs landed under the (private) runs_dir
    assert "achieved 0.3" in done.stdout or "achieved 0.29" in done.stdout  # the structured-30 report
