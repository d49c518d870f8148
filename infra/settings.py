"""One frozen settings object, read from `DISTILLERY_*` environment variables.

Every default is embedded so a fresh checkout runs with no configuration:
the lake under `./lake`, MLflow on SQLite in `./mlruns.db`, Spark on `local[*]`,
and the synthetic world as the event source.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

_PREFIX = "DISTILLERY_"
TRANSFER_PATHS: tuple[str, ...] = ("hierarchical", "direct")


def _absolute_uri(value: str) -> str:
    """Local paths become absolute (tasks may run from another cwd); URIs stay as given."""
    if "://" in value:
        return value
    return str(Path(value).expanduser().resolve())


@dataclass(frozen=True)
class Settings:
    """Where things live and how big the embedded world is.

    Each field `name` is read from `DISTILLERY_<NAME>` when set.
    """

    lake: str = "./lake"
    mlflow_uri: str = ""  # empty: sqlite:///<cwd>/mlruns.db
    spark_master: str = "local[*]"
    spark_driver_memory: str = "4g"
    source: str = "synthetic"  # "synthetic" or "files"
    events_dir: str = "./events"  # the files source reads <events_dir>/ds=YYYY-MM-DD/*
    seed: int = 7
    events_per_day: int = 20_000
    n_users: int = 2_000
    history_length: int = 100
    max_bad_share: float = 0.01
    fm_size: str = "base"  # a name in teacher.config.SIZES: tiny, base, large
    gate_max_ne: float = 1.0  # a model is promoted only with click NE below this ...
    gate_max_regression: float = 0.01  # ... and at most this much worse than the champion
    teacher_delay_days: int = 0  # knowledge for ds from the teacher trained through ds-1-k
    knowledge_batch_size: int = 1_024  # examples per teacher forward pass in the executors
    transfer_path: str = "hierarchical"  # VMs learn from their domain FM, or "direct" from gem-fm
    transfer_method: str = "full"  # the VMs' transfer methods: a name in students.config.METHODS
    start_date: str = "2026-01-01"

    def __post_init__(self) -> None:
        if self.source not in ("synthetic", "files"):
            raise ValueError(f"DISTILLERY_SOURCE must be 'synthetic' or 'files', got {self.source!r}")
        if not 0.0 <= self.max_bad_share <= 1.0:
            raise ValueError(f"DISTILLERY_MAX_BAD_SHARE must be in [0, 1], got {self.max_bad_share}")
        if self.history_length < 1:
            raise ValueError(f"DISTILLERY_HISTORY_LENGTH must be >= 1, got {self.history_length}")
        if self.teacher_delay_days < 0:
            raise ValueError(f"DISTILLERY_TEACHER_DELAY_DAYS must be >= 0, got {self.teacher_delay_days}")
        if self.knowledge_batch_size < 1:
            raise ValueError(f"DISTILLERY_KNOWLEDGE_BATCH_SIZE must be >= 1, got {self.knowledge_batch_size}")
        if self.transfer_path not in TRANSFER_PATHS:
            raise ValueError(
                f"DISTILLERY_TRANSFER_PATH must be one of {TRANSFER_PATHS}, got {self.transfer_path!r}"
            )
        object.__setattr__(self, "lake", _absolute_uri(self.lake))
        object.__setattr__(self, "events_dir", _absolute_uri(self.events_dir))
        if not self.mlflow_uri:
            object.__setattr__(self, "mlflow_uri", f"sqlite:///{Path('mlruns.db').resolve()}")

    def table_uri(self, name: str) -> str:
        """URI of the Delta table `name` under the lake root."""
        return f"{self.lake.rstrip('/')}/{name}"

    def artifact_root(self) -> str:
        """`<lake>/mlartifacts`, where MLflow keeps each experiment's artifacts (file:// for a path)."""
        if "://" in self.lake:
            return self.table_uri("mlartifacts")
        return (Path(self.lake) / "mlartifacts").as_uri()

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from `DISTILLERY_*` variables; keyword overrides win."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in fields(cls):
            raw = env.get(_PREFIX + field.name.upper())
            if raw is None:
                continue
            kind = type(field.default)
            try:
                values[field.name] = kind(raw)
            except ValueError as err:
                name = _PREFIX + field.name.upper()
                raise ValueError(f"{name}={raw!r} is not a valid {kind.__name__}") from err
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
