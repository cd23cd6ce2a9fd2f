"""Outputs never land on inputs, however spelt; a full or read-only disk is exit 2 with one line and
leaves nothing behind; multi-file outputs land together or not at all."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import torch
from torch import nn

import modprune
import modprune.data
from modprune.exceptions import DiskError, OutputPathError
from modprune.outputs import check_output, is_within, same_path, staged_outputs

SRC = Path(modprune.__file__).resolve().parents[1]
CLI = "import sys; from modprune.cli import main; sys.exit(main())"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))
    modprune.save(model, tmp_path / "model.pt")
    (tmp_path / "sub").mkdir()
    return tmp_path


@pytest.fixture()
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """``cli(cwd, *argv) -> (rc, stderr lines)`` in this process (same code path as the console script)."""
    from modprune.cli import main

    def run(cwd: Path, *argv: str) -> tuple[int, list[str]]:
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        rc = main(list(argv))
        return rc, [line for line in capsys.readouterr().err.splitlines() if line.strip()]

    return run


PRUNE = ("prune", "model.pt", "--recipe", "unstructured-10", "--imgsz", "16")


@pytest.mark.parametrize(
    "spelling",
    ["model.pt", "./model.pt", "sub/../model.pt", "{abs}", "link.pt", "hard.pt", "linkdir/model.pt"],
)
def test_prune_output_spelt_as_the_input_is_refused(cli, workdir: Path, spelling: str) -> None:
    os.symlink(workdir / "model.pt", workdir / "link.pt")
    os.link(workdir / "model.pt", workdir / "hard.pt")
    os.symlink(workdir, workdir / "linkdir")
    before = _digest(workdir / "model.pt")
    rc, err = cli(workdir, *PRUNE, "-o", spelling.format(abs=workdir / "model.pt"), "--force")
    assert rc == 2 and len(err) == 1 and "is the input" in err[0], err
    assert _digest(workdir / "model.pt") == before


def test_report_json_on_the_input_is_refused_before_any_work(cli, workdir: Path) -> None:
    before = _digest(workdir / "model.pt")
    rc, err = cli(workdir, *PRUNE, "-o", "out.pt", "--report-json", "sub/../model.pt", "--force")
    assert rc == 2 and len(err) == 1 and "is the input" in err[0], err
    assert _digest(workdir / "model.pt") == before and not (workdir / "out.pt").exists()


def test_recipe_file_is_an_input_too(cli, workdir: Path) -> None:
    (workdir / "r.yaml").write_text("method: unstructured\ntarget: 0.1\n")
    rc, err = cli(workdir, "prune", "model.pt", "--recipe", "r.yaml", "-o", "./r.yaml", "--force")
    assert rc == 2 and len(err) == 1 and "is the input" in err[0], err
    assert (workdir / "r.yaml").read_text() == "method: unstructured\ntarget: 0.1\n"


@pytest.mark.parametrize("report", [".", "sub/..", "{abs}"])
def test_compare_report_directory_containing_an_input_is_refused(cli, workdir: Path, report: str) -> None:
    before = _digest(workdir / "model.pt")
    rc, err = cli(workdir, "compare", "model.pt", "--no-onnx", "--imgsz", "16", "--report", report.format(abs=workdir))
    assert rc == 2 and len(err) == 1 and "contains the input" in err[0], err
    assert _digest(workdir / "model.pt") == before
    assert sorted(p.name for p in workdir.iterdir()) == ["model.pt", "sub"]


def test_compare_report_file_that_is_an_input_is_refused(cli, workdir: Path) -> None:
    """The issue's case: an input named report.json inside the report directory."""
    (workdir / "sub" / "report.json").write_bytes((workdir / "model.pt").read_bytes())
    before = _digest(workdir / "sub" / "report.json")
    rc, err = cli(workdir, "compare", "model.pt", "sub/report.json", "--no-onnx", "--report", "sub")
    assert rc == 2 and len(err) == 1, err
    assert _digest(workdir / "sub" / "report.json") == before


def test_outputs_inside_a_dataset_are_refused(cli, workdir: Path) -> None:
    data = modprune.data.generate_dataset(workdir / "ds", n_train=2, n_val=2, imgsz=64, seed=0)
    rc, err = cli(workdir, "finetune", "model.pt", "--data", str(data), "--epochs", "1", "-o", "ds/labels/m.pt")
    assert rc == 2 and len(err) == 1 and "inside the input directory" in err[0], err
    rc, err = cli(workdir, "finetune", "model.pt", "--data", str(data), "--epochs", "1", "-o", "m.pt",
                  "--runs-dir", "ds")
    assert rc == 2 and len(err) == 1 and "inside the input directory" in err[0], err
    assert not (workdir / "m.pt").exists() and not (workdir / "ds" / "finetune").exists()


# --- the checker and staging, unit level ---------------------------------------------------------------


def test_checker_resolves_spellings(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("x")
    os.symlink(tmp_path / "a", tmp_path / "alias")
    assert same_path(tmp_path / "a" / ".." / "a" / "f", tmp_path / "alias" / "f")
    assert is_within(tmp_path / "alias" / "new" / "x", tmp_path / "a")
    assert not is_within(tmp_path / "ab", tmp_path / "a")  # a prefix is not a parent
    with pytest.raises(OutputPathError, match="contains the input"):
        check_output(tmp_path / "alias" / "..", [tmp_path / "a" / "f"], directory=True)
    check_output(tmp_path / "b", [tmp_path / "a" / "f"], directory=True)  # fine: writes nothing
    assert not (tmp_path / "b").exists()


def test_staged_outputs_land_together_or_not_at_all(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_outputs() as stage:
            stage.file(tmp_path / "old.txt").write_text("new")
            (stage.dir(tmp_path / "rep" / "deep") / "r.md").write_text("r")
            raise RuntimeError("the second output failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.txt"]  # no temporaries, no created folders
    assert (tmp_path / "old.txt").read_text() == "old"
    with staged_outputs() as stage:
        stage.file(tmp_path / "old.txt").write_text("new")
        (stage.dir(tmp_path / "rep") / "r.md").write_text("r")
    assert (tmp_path / "old.txt").read_text() == "new" and (tmp_path / "rep" / "r.md").read_text() == "r"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.txt", "rep"]


def test_a_failing_move_undoes_the_moves_already_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").write_text("old a")
    (tmp_path / "b").write_text("old b")
    real_replace = os.replace

    def replace(src, dst):  # noqa: ANN001, ANN202
        if Path(dst) == tmp_path / "b" and str(src).endswith(".tmp"):  # the move of the new b fails
            raise OSError(errno.EIO, "I/O error", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OutputPathError):
        with staged_outputs() as stage:
            stage.file(tmp_path / "a").write_text("new a")
            stage.file(tmp_path / "b").write_text("new b")
    monkeypatch.undo()
    assert (tmp_path / "a").read_text() == "old a" and (tmp_path / "b").read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_enospc_in_a_write_is_a_disk_error(tmp_path: Path) -> None:
    with pytest.raises(DiskError, match="no space left"):
        with staged_outputs() as stage:
            stage.file(tmp_path / "x")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


# --- real full and read-only file systems (tmpfs; skipped where mounting is not permitted) ----------------


@contextlib.contextmanager
def _tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("needs root on Linux to mount a small tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(disk: Path) -> None:
    """Fill the file system: new files can still be created (empty), but no byte can be written."""
    with contextlib.suppress(OSError), open(disk / "filler", "wb", buffering=0) as f:
        while True:
            f.write(b"x" * 512)


def _real_cli(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", CLI, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def _one_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("modprune:")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_data_synth_onto_a_full_disk(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / f"full-{uuid.uuid4().hex[:6]}", "size=200k") as disk:
        proc = _real_cli(tmp_path, "data", "synth", str(disk / "ds"), "--train", "40", "--val", "8")
        assert "no space left" in _one_error(proc)
        assert list(disk.iterdir()) == []  # no partial dataset


def test_prune_model_and_report_land_together(tmp_path: Path, workdir: Path) -> None:
    with _tmpfs(tmp_path / f"full-{uuid.uuid4().hex[:6]}", "size=4k") as disk:
        _fill(disk)
        proc = _real_cli(workdir, *PRUNE, "-o", "out.pt", "--report-json", str(disk / "report.json"))
        assert "no space left" in _one_error(proc)
        assert not (workdir / "out.pt").exists()  # the model did not land without its report
        assert [p.name for p in disk.iterdir()] == ["filler"]
        assert sorted(p.name for p in workdir.iterdir() if not p.name.startswith("full-")) == ["model.pt", "sub"]


def test_model_save_on_a_full_disk_and_a_read_only_one(tmp_path: Path, workdir: Path) -> None:
    with _tmpfs(tmp_path / f"full-{uuid.uuid4().hex[:6]}", "size=4k") as disk:
        _fill(disk)
        proc = _real_cli(workdir, *PRUNE, "-o", str(disk / "out.pt"))
        assert "no space left" in _one_error(proc)
        assert [p.name for p in disk.iterdir()] == ["filler"]
    with _tmpfs(tmp_path / f"ro-{uuid.uuid4().hex[:6]}", "size=1m,ro") as disk:
        proc = _real_cli(workdir, *PRUNE, "-o", str(disk / "out.pt"))
        assert "read-only" in _one_error(proc)


@pytest.mark.slow
def test_compare_report_on_a_full_disk_leaves_no_partial_directory(tmp_path: Path, workdir: Path) -> None:
    with _tmpfs(tmp_path / f"full-{uuid.uuid4().hex[:6]}", "size=8k") as disk:
        _fill(disk)
        proc = _real_cli(workdir, "compare", "model.pt", "--no-onnx", "--imgsz", "16", "--rounds", "3",
                         "--json", "result.json", "--report", str(disk / "rep"))
        assert "no space left" in _one_error(proc)
        assert [p.name for p in disk.iterdir()] == ["filler"]  # no partial report directory
        assert not (workdir / "result.json").exists()  # nor the JSON that would have landed with it
