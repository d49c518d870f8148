"""The MLflow server stops: registry steps fail in seconds naming it, and succeed once it is back.

A real `mlflow server` on a free 127.0.0.1 port (SQLite backend and artifacts under
tmp_path) serves `DISTILLERY_MLFLOW_URI`; it is stopped between two days and
restarted on the same port and backend.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import requests
import torch

from infra import delta, registry
from infra.settings import Settings
from infra.sources.synthetic import SyntheticWorld, WorldConfig
from pipeline.fm_release import gate_fm, register_fm
from pipeline.gate import GateConfig
from pipeline.train_fm import FMTrainingConfig, train_fm
from teacher.train import TrainConfig

D1, D2 = "2026-01-01", "2026-01-02"
CONFIG = FMTrainingConfig(size="tiny", train=TrainConfig(batch_size=256))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(autouse=True)
def mlflow_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No MLflow variables from outside; those the registry sets are removed after the test."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", *registry.HTTP_FAIL_FAST):
        monkeypatch.setenv(name, "")  # records the outside value (or its absence) for the undo
        monkeypatch.delenv(name)
    yield
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def test_an_unanswering_server_fails_in_seconds_naming_its_uri() -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    start = time.monotonic()
    with pytest.raises(registry.RegistryUnavailableError, match=rf"MLflow server at {uri} .*does not answer"):
        registry.find_versions(Settings(mlflow_uri=uri), "gem-fm", {})
    assert time.monotonic() - start < 5
    registry.require_server("sqlite:////tmp/any.db")  # a database needs no server


class MlflowServer:
    """`mlflow server` on 127.0.0.1:`port` over `backend`, started and stopped as a process group."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.uri = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        command = [
            str(mlflow_bin), "server", "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db",
            "--default-artifact-root", (self.root / "artifacts").as_uri(), "--no-serve-artifacts",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        log = (self.root / "server.log").open("a")
        self.process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.root / "server.log").read_text()[-3000:]
            try:
                if requests.get(f"{self.uri}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        pytest.fail(f"mlflow server on {self.uri} did not answer within 120 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=60)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MlflowServer]:
    running = MlflowServer(tmp_path, free_port())
    running.start()
    yield running
    running.stop()


@pytest.mark.slow
def test_registry_steps_fail_fast_while_the_server_is_down_and_succeed_after(
    tmp_path: Path, server: MlflowServer, as_examples
) -> None:
    settings = Settings(lake=str(tmp_path / "lake"), mlflow_uri=server.uri, fm_size="tiny")
    world = SyntheticWorld(WorldConfig(seed=4, events_per_day=1_000, n_users=100))
    for ds in (D1, D2):
        delta.overwrite_partition(settings.table_uri("examples"), as_examples(world.day_table(ds)), ds)
    train_fm(settings, D1, CONFIG)
    assert register_fm(settings, D1)["version"] == 1
    train_fm(settings, D2, CONFIG)

    server.stop()
    for step in (lambda: register_fm(settings, D2), lambda: gate_fm(settings, D2, GateConfig())):
        start = time.monotonic()
        with pytest.raises(registry.RegistryUnavailableError, match=f"MLflow server at {server.uri}"):
            step()
        assert time.monotonic() - start < 10, "fails in seconds, not after MLflow's minutes of retries"

    server.start()  # same port, same backend
    registered = register_fm(settings, D2)
    assert registered["version"] == 2
    assert register_fm(settings, D2) == registered, "a re-run finds the version, no duplicate"
    assert [ref.version for ref in registry.find_versions(settings, "gem-fm", {})] == [2, 1]
    module, _ = registry.load_torch_module(settings, registered["model_uri"])
    assert all(isinstance(t, torch.Tensor) for t in module.state_dict().values())
