"""MLflow tracking and model registry: every model of the product goes through here.

A model is a PyTorch `nn.Module` built from a config dict by a factory function.
It is logged as a generic pyfunc (`TorchModule`) whose artifacts are the state dict
(`state_dict.pt`, torch.save) and `config.json` holding the config and two dotted
paths, `factory` and `predictor` ("package.module:function"), imported at load time
so this module never imports model code statically.

Tracking and registry live at `Settings.mlflow_uri`; artifacts of the experiment
named after each model land under `<lake>/mlartifacts/<name>`, never `./mlruns` of
the working directory. Versions carry lineage tags (`trained_through`,
`examples_version`, `teacher`, ...) plus `config_hash` and `git_sha` set here;
the alias `champion` is moved only by the quality gate (`pipeline.gate`).

A version is created with all its tags in one registry call, so a step killed at any
point leaves either no version or a complete one, which its re-run finds and returns.
With an MLflow server (`http://...`), a server that does not answer fails the step in
seconds with RegistryUnavailableError; the step can simply run again once it is back.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import math
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import requests
import torch
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from infra.settings import Settings

CHAMPION = "champion"
# Tags that identify one training of one day: a version carrying the same values is
# the same model, so a re-run may return it instead of training again (STYLE rule 10).
IDENTITY_TAGS = ("trained_through", "config_hash", "git_sha", "examples_version")
_REPO_ROOT = Path(__file__).resolve().parents[1]
# MLflow retries a failed HTTP request for minutes by default (7 retries, backoff 2 s):
# a step fails in seconds instead and leaves the waiting to its task's retries.
# Variables already set in the environment win.
HTTP_FAIL_FAST = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
HEALTH_TIMEOUT_S = 5.0


class RegistryUnavailableError(RuntimeError):
    """The MLflow server at `Settings.mlflow_uri` does not answer: the call did nothing."""


@dataclass(frozen=True)
class ModelRef:
    """One registered model version; `uri` is what tasks pass to each other."""

    name: str
    version: int
    run_id: str

    @property
    def uri(self) -> str:
        """`models:/<name>/<version>`, what `mlflow.pyfunc.load_model` takes."""
        return f"models:/{self.name}/{self.version}"


# ---------------------------------------------------------------- configuration


def require_server(uri: str) -> None:
    """For an http(s) MLflow URI: fail fast when its server does not answer `/health`.

    Raises RegistryUnavailableError naming `uri`. Other URIs (sqlite, file) pass.
    """
    if not uri.startswith(("http://", "https://")):
        return
    for name, value in HTTP_FAIL_FAST.items():
        os.environ.setdefault(name, value)
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S).raise_for_status()
    except requests.RequestException as err:
        raise RegistryUnavailableError(
            f"the MLflow server at {uri} (DISTILLERY_MLFLOW_URI) does not answer: {err}. "
            "Start it (`distillery up`) and run the step again: every registry step is safe to re-run."
        ) from err


def configure_mlflow(settings: Settings) -> MlflowClient:
    """Point tracking and registry at `settings.mlflow_uri`; return a client on it.

    Raises RegistryUnavailableError when that is a server that does not answer.
    """
    require_server(settings.mlflow_uri)
    mlflow.set_tracking_uri(settings.mlflow_uri)
    mlflow.set_registry_uri(settings.mlflow_uri)
    return MlflowClient(tracking_uri=settings.mlflow_uri, registry_uri=settings.mlflow_uri)


def artifact_location(settings: Settings, experiment: str) -> str:
    """`<lake>/mlartifacts/<experiment>`, as a file:// URI when the lake is a local path."""
    return f"{settings.artifact_root()}/{experiment}"


def ensure_experiment(settings: Settings, name: str) -> str:
    """Id of the experiment `name`, created with its artifacts under the lake if missing."""
    client = configure_mlflow(settings)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(settings, name))
    except MlflowException:  # created concurrently by another task
        return client.get_experiment_by_name(name).experiment_id


# ---------------------------------------------------------------- lineage


def config_hash(config: Mapping[str, Any]) -> str:
    """Stable 16-hex-digit hash of a JSON-serialisable config dict (key order ignored)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def git_sha() -> str:
    """`git rev-parse HEAD` of this repository, or "unknown" outside a git checkout."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_REPO_ROOT, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


# ---------------------------------------------------------------- the pyfunc wrapper


def _import_dotted(path: str) -> Callable[..., Any]:
    """The callable named by "package.module:function"."""
    module_name, _, attribute = path.partition(":")
    if not attribute:
        raise ValueError(f"expected 'package.module:function', got {path!r}")
    return getattr(importlib.import_module(module_name), attribute)


def _build_module(document: Mapping[str, Any], state_dict_path: str) -> torch.nn.Module:
    """Rebuild the module from a config.json document and load its weights, in eval mode."""
    module = _import_dotted(document["factory"])(document["config"])
    state = torch.load(state_dict_path, map_location="cpu", weights_only=True)
    module.load_state_dict(state)
    return module.eval()


class TorchModule(mlflow.pyfunc.PythonModel):
    """Pyfunc over any factory-built `nn.Module`; artifacts `state_dict` and `config`."""

    def __init__(self) -> None:
        self.module: torch.nn.Module | None = None
        self.config: dict[str, Any] = {}
        self._predictor: Callable[[torch.nn.Module, pd.DataFrame], Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Pickled with the model: weights travel as artifacts, never inside the pickle.
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Read `config.json`, import factory and predictor, build the module, load weights."""
        document = json.loads(Path(context.artifacts["config"]).read_text())
        self.module = _build_module(document, context.artifacts["state_dict"])
        self.config = document["config"]
        self._predictor = _import_dotted(document["predictor"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        """The predictor's output for `model_input`, without gradients."""
        if self.module is None or self._predictor is None:
            raise RuntimeError("TorchModule.predict called before load_context")
        with torch.no_grad():
            return self._predictor(self.module, model_input)


def load_torch_module(settings: Settings, model_uri: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The raw `nn.Module` (eval mode) and its config dict behind `model_uri` (models:/...) in the
    registry of `settings`, whatever store MLflow pointed at before (a fresh process: its default)."""
    configure_mlflow(settings)
    wrapper = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    if not isinstance(wrapper, TorchModule) or wrapper.module is None:
        raise TypeError(f"{model_uri} is not a TorchModule pyfunc")
    return wrapper.module, wrapper.config


# ---------------------------------------------------------------- logging


def _write_artifacts(
    folder: Path, module: torch.nn.Module, config: Mapping[str, Any], factory: str, predictor: str
) -> dict[str, str]:
    """Write `state_dict.pt` and `config.json` into `folder`; return the pyfunc artifacts map."""
    state_path, config_path = folder / "state_dict.pt", folder / "config.json"
    torch.save(module.state_dict(), state_path)
    document = {"config": dict(config), "factory": factory, "predictor": predictor}
    config_path.write_text(json.dumps(document, indent=2, sort_keys=True, default=str))
    return {"state_dict": str(state_path), "config": str(config_path)}


def _requirements() -> list[str]:
    """Pinned pip requirements (explicit: MLflow's inference would import the model in a subprocess)."""
    import numpy

    return [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"pandas=={pd.__version__}",
        f"numpy=={numpy.__version__}",
    ]


def log_and_register(
    settings: Settings,
    name: str,
    module: torch.nn.Module,
    config: Mapping[str, Any],
    factory: str,
    predictor: str,
    metrics: Mapping[str, float],
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    input_example: pd.DataFrame | None = None,
) -> ModelRef:
    """Log `module` in one run of experiment `name` and register it as a new version of `name`.

    Writes: run params, metrics and tags; the pyfunc model under the lake's artifact
    location; version tags = `tags` + `config_hash` + `git_sha`. Returns the new version.
    `tags` should carry `trained_through` and `examples_version` (and `teacher` for
    students): `find_trained` matches on them to skip a re-run.
    """
    for path in (factory, predictor):
        _import_dotted(path)  # fail now, before a run exists, not at load time
    experiment_id = ensure_experiment(settings, name)
    all_tags = {
        **{k: str(v) for k, v in tags.items()},
        "config_hash": config_hash(config),
        "git_sha": git_sha(),
    }
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(experiment_id=experiment_id) as run:
        artifacts = _write_artifacts(Path(tmp), module, config, factory, predictor)
        mlflow.log_params(dict(params))
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.set_tags(all_tags)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=TorchModule(),
            artifacts=artifacts,
            input_example=input_example,
            pip_requirements=_requirements(),
        )
    # The version and its tags in one call (one transaction in the store): a step killed
    # in between cannot leave an untagged version that `find_trained` would not see.
    version = mlflow.register_model(info.model_uri, name, tags=all_tags)
    return ModelRef(name=name, version=int(version.version), run_id=run.info.run_id)


# ---------------------------------------------------------------- lookups


def _ref(version: ModelVersion) -> ModelRef:
    return ModelRef(name=version.name, version=int(version.version), run_id=version.run_id)


def _quote(value: str) -> str:
    if "'" in value:
        raise ValueError(f"tag values used in lookups may not contain quotes: {value!r}")
    return f"'{value}'"


def find_versions(settings: Settings, name: str, tags: Mapping[str, str]) -> list[ModelRef]:
    """Versions of `name` carrying every tag in `tags`, newest first (empty if none)."""
    client = configure_mlflow(settings)
    clauses = [f"name = {_quote(name)}"] + [f"tags.`{k}` = {_quote(v)}" for k, v in tags.items()]
    found = client.search_model_versions(" AND ".join(clauses))
    return sorted((_ref(v) for v in found), key=lambda ref: ref.version, reverse=True)


def find_version(settings: Settings, name: str, tag: str, value: str) -> ModelRef | None:
    """The newest version of `name` whose tag `tag` equals `value` (a re-run wins), or None."""
    found = find_versions(settings, name, {tag: value})
    return found[0] if found else None


def find_trained(
    settings: Settings,
    name: str,
    trained_through: str,
    config: Mapping[str, Any],
    examples_version: int | str,
    extra: Mapping[str, str] | None = None,
) -> ModelRef | None:
    """The version already trained for this (ds, config, code, examples), so a re-run can skip.

    `extra` adds tags the match needs too (a student's `teacher` and its outputs' table version).
    """
    identity = dict(
        zip(
            IDENTITY_TAGS,
            (trained_through, config_hash(config), git_sha(), str(examples_version)),
            strict=True,
        )
    )
    found = find_versions(settings, name, {**identity, **(extra or {})})
    return found[0] if found else None


def get_version(settings: Settings, name: str, version: int) -> ModelRef | None:
    """Version `version` of `name`, or None when the model or the version does not exist."""
    client = configure_mlflow(settings)
    try:
        return _ref(client.get_model_version(name, str(version)))
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def alias_version(settings: Settings, name: str, alias: str = CHAMPION) -> ModelRef | None:
    """The version of `name` holding `alias`, or None (no such model or alias yet)."""
    client = configure_mlflow(settings)
    try:
        registered = client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    # Not get_model_version_by_alias: a missing alias raises INVALID_PARAMETER_VALUE there.
    version = registered.aliases.get(alias)
    return None if version is None else _ref(client.get_model_version(name, str(version)))


def champion(settings: Settings, name: str) -> ModelRef | None:
    """The version of `name` holding the alias `champion`, or None."""
    return alias_version(settings, name, CHAMPION)


def set_alias(settings: Settings, ref: ModelRef, alias: str = CHAMPION) -> None:
    """Point `alias` of `ref.name` at `ref.version` (moving it from any other version)."""
    configure_mlflow(settings).set_registered_model_alias(ref.name, alias, str(ref.version))


def version_tags(settings: Settings, ref: ModelRef) -> dict[str, str]:
    """All tags of the version `ref`."""
    return dict(configure_mlflow(settings).get_model_version(ref.name, str(ref.version)).tags)


def set_version_tags(settings: Settings, ref: ModelRef, tags: Mapping[str, str], on_run: bool = True) -> None:
    """Set `tags` on the version `ref` and, with `on_run`, on the run that logged it."""
    client = configure_mlflow(settings)
    for key, value in tags.items():
        client.set_model_version_tag(ref.name, str(ref.version), key, str(value))
        if on_run:
            client.set_tag(ref.run_id, key, str(value))


def run_metrics(settings: Settings, ref: ModelRef) -> dict[str, float]:
    """The latest value of each metric logged in the run that produced `ref`."""
    return dict(configure_mlflow(settings).get_run(ref.run_id).data.metrics)


def log_run_metrics(settings: Settings, ref: ModelRef, metrics: Mapping[str, float]) -> None:
    """Add `metrics` to the run that produced `ref` (e.g. its evaluation on a later day)."""
    client = configure_mlflow(settings)
    for key, value in metrics.items():
        client.log_metric(ref.run_id, key, float(value))


def log_report(
    settings: Settings,
    experiment: str,
    files: list[Path],
    metrics: Mapping[str, float],
    params: Mapping[str, Any],
) -> str:
    """Log a report in one run: files as artifacts, headline numbers as metrics; returns the run id."""

    configure_mlflow(settings)
    experiment_id = ensure_experiment(settings, experiment)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if math.isfinite(float(v))})
        for path in files:
            mlflow.log_artifact(str(path))
    return run.info.run_id
