"""A training step SIGKILLed mid-run, then re-run: it succeeds from a clean state, nothing half-written.

The real `distillery fm` / `distillery distill` commands run in a child process that
kills itself (SIGKILL, no cleanup) at a chosen point, deterministically: after the
third optimizer step; with the temp checkpoint written but not renamed; before the
model version is created; right after it is created (the student: first and last).
The re-run must end with the same weights as an uninterrupted run, one complete
checkpoint and one version per day.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pyarrow as pa
import pytest
import torch
from deltalake import write_deltalake

from infra import delta, registry
from infra.checkpoints import checkpoint_days, checkpoint_uri, load_checkpoint
from infra.schema import TEACHER_OUTPUTS_SCHEMA
from infra.settings import Settings
from infra.sources.synthetic import SyntheticWorld, WorldConfig
from pipeline.hierarchy import domain_fm
from pipeline.train_fm import FMTrainingConfig, train_fm
from pipeline.train_student import DistillConfig, train_student
from teacher.knowledge import TeacherIdentity, teacher_outputs

pytestmark = pytest.mark.slow

D1, D2 = "2026-01-01", "2026-01-02"
STUDENT = domain_fm("facebook")

# Runs `distillery <args>` after arranging to SIGKILL itself at `point` (argv[1]).
CHILD = """
import os, signal, sys

import mlflow
import pyarrow.fs as pafs
from torch.optim.optimizer import register_optimizer_step_post_hook

import infra.checkpoints


def die(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


point = sys.argv[1]
if point == "training":  # mid-pass: the third optimizer step of the day
    steps = []

    def count(*_args):
        steps.append(1)
        if len(steps) == 3:
            die()

    register_optimizer_step_post_hook(count)
elif point == "rename":  # the temp checkpoint fully written, not yet renamed
    class DyingFileSystem:
        def __init__(self, fs):
            self.fs = fs

        def __getattr__(self, name):
            return getattr(self.fs, name)

        def move(self, src, dest):
            die()

    class DyingPafs:
        def __getattr__(self, name):
            return getattr(pafs, name)

        class FileSystem:
            @staticmethod
            def from_uri(uri):
                fs, path = pafs.FileSystem.from_uri(uri)
                return DyingFileSystem(fs), path

    infra.checkpoints.pafs = DyingPafs()
elif point == "register":  # checkpoint saved, run logged, the version not created
    mlflow.register_model = die
elif point == "registered":  # the version created, the step not finished
    real_register = mlflow.register_model

    def register_then_die(*args, **kwargs):
        real_register(*args, **kwargs)
        die()

    mlflow.register_model = register_then_die

from pipeline.cli import main

main(sys.argv[2:])
"""


def run_cli(settings: Settings, cwd: Path, args: list[str], kill_at: str = "none") -> int:
    """Exit code of `distillery <args>` in a child process (-SIGKILL when it killed itself)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISTILLERY_", "MLFLOW_"))}
    env |= {
        "DISTILLERY_LAKE": settings.lake,
        "DISTILLERY_MLFLOW_URI": settings.mlflow_uri,
        "DISTILLERY_FM_SIZE": settings.fm_size,
        "DISTILLERY_GATE_MAX_NE": str(settings.gate_max_ne),
        "DISTILLERY_GATE_MAX_REGRESSION": str(settings.gate_max_regression),
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, kill_at, *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if kill_at == "none" and done.returncode != 0:
        pytest.fail(f"distillery {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.returncode


def versions(settings: Settings, name: str, ds: str) -> list[int]:
    return [ref.version for ref in registry.find_versions(settings, name, {"trained_through": ds})]


def temp_files(settings: Settings, name: str, ds: str) -> list[str]:
    folder = Path(checkpoint_uri(settings.lake, name, ds)).parent
    return sorted(p.name for p in folder.glob(".checkpoint.*")) if folder.exists() else []


def assert_same_weights(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> None:
    assert left.keys() == right.keys()
    assert all(torch.equal(left[key], right[key]) for key in left)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, as_examples) -> Settings:
    """Examples of D1 and D2 (1,500 events each); a tiny FM; gates that pass any tiny model."""
    root = tmp_path_factory.mktemp("faults")
    settings = Settings(
        lake=str(root / "lake"),
        mlflow_uri=f"sqlite:///{root}/mlflow.db",
        fm_size="tiny",
        gate_max_ne=2.0,
        gate_max_regression=1.0,
    )
    world = SyntheticWorld(WorldConfig(seed=5, events_per_day=1_500, n_users=200))
    for ds in (D1, D2):
        delta.overwrite_partition(settings.table_uri("examples"), as_examples(world.day_table(ds)), ds)
    (root / "cwd").mkdir()
    yield settings
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@pytest.fixture(scope="module")
def cwd(settings: Settings) -> Path:
    return Path(settings.lake).parent / "cwd"


@pytest.fixture(scope="module")
def fm_chain(settings: Settings, cwd: Path) -> dict[str, list[int]]:
    """D1 killed mid-training, D2 killed at each later point in turn; every kill followed by a re-run."""
    killed = {}
    fm = ["fm", "--ds"]
    killed["training"] = run_cli(settings, cwd, [*fm, D1], "training")
    assert checkpoint_days(settings.lake, "gem-fm") == [] and versions(settings, "gem-fm", D1) == []
    run_cli(settings, cwd, [*fm, D1])

    killed["rename"] = run_cli(settings, cwd, [*fm, D2], "rename")
    assert checkpoint_days(settings.lake, "gem-fm") == [D1], "a temp file is no checkpoint"
    assert len(temp_files(settings, "gem-fm", D2)) == 1, "killed with the temp file written"
    killed["register"] = run_cli(settings, cwd, [*fm, D2], "register")
    assert checkpoint_days(settings.lake, "gem-fm") == [D1, D2] and versions(settings, "gem-fm", D2) == []
    assert temp_files(settings, "gem-fm", D2) == [], "the next save removed the killed writer's temp file"
    killed["registered"] = run_cli(settings, cwd, [*fm, D2], "registered")
    killed["versions after the kill"] = versions(settings, "gem-fm", D2)
    run_cli(settings, cwd, [*fm, D2])
    return killed


def test_every_fm_kill_was_a_sigkill(fm_chain: dict) -> None:
    for point in ("training", "rename", "register", "registered"):
        assert fm_chain[point] == -signal.SIGKILL, point


def test_fm_reruns_give_the_uninterrupted_weights_and_one_version_per_day(
    settings: Settings, fm_chain: dict
) -> None:
    assert fm_chain["versions after the kill"] == [2], "a version is complete (tagged) once it exists"
    assert versions(settings, "gem-fm", D1) == [1] and versions(settings, "gem-fm", D2) == [2]
    rerun = {ds: load_checkpoint(checkpoint_uri(settings.lake, "gem-fm", ds))["model"] for ds in (D1, D2)}
    module, _ = registry.load_torch_module(settings, "models:/gem-fm/2")
    assert_same_weights(module.state_dict(), rerun[D2])
    for ds in (D1, D2):  # an uninterrupted run of each day, in this process
        uninterrupted = train_fm(settings, ds, FMTrainingConfig.from_settings(settings))
        assert_same_weights(load_checkpoint(uninterrupted["checkpoint"])["model"], rerun[ds])
    assert temp_files(settings, "gem-fm", D2) == []


def write_fm_knowledge(settings: Settings, ds: str) -> None:
    """gem-fm v1's teacher_outputs of `ds`, computed in this process (the Spark job's pure core)."""
    module, _ = registry.load_torch_module(settings, "models:/gem-fm/1")
    examples = delta.read_partition(settings.table_uri("examples"), ds)
    outputs = teacher_outputs(module, examples, TeacherIdentity("gem-fm", 1, D1), 512)
    write_deltalake(
        settings.table_uri("teacher_outputs"),
        pa.Table.from_batches([outputs], TEACHER_OUTPUTS_SCHEMA),
        mode="overwrite",
        partition_by=["ds", "teacher"],
    )


def test_a_killed_distillation_reruns_to_the_same_student(
    settings: Settings, cwd: Path, fm_chain: dict
) -> None:
    write_fm_knowledge(settings, D2)
    distill = ["distill", "--model", STUDENT.name, "--ds", D2]

    assert run_cli(settings, cwd, distill, "training") == -signal.SIGKILL
    assert checkpoint_days(settings.lake, STUDENT.name) == []
    assert run_cli(settings, cwd, distill, "registered") == -signal.SIGKILL
    assert versions(settings, STUDENT.name, D2) == [1]
    run_cli(settings, cwd, distill)

    assert versions(settings, STUDENT.name, D2) == [1], "the re-run found the complete version"
    assert temp_files(settings, STUDENT.name, D2) == []
    rerun = load_checkpoint(checkpoint_uri(settings.lake, STUDENT.name, D2))["model"]
    tags = registry.version_tags(settings, registry.ModelRef(STUDENT.name, 1, ""))
    assert tags["teacher"] == "gem-fm/1" and tags["trained_through"] == D2
    uninterrupted = train_student(settings, STUDENT, D2, DistillConfig.from_settings(settings))
    assert_same_weights(load_checkpoint(uninterrupted["checkpoint"])["model"], rerun)
