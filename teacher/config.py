"""The foundation model's config: one frozen dataclass, stored beside the weights.

`SIZES` names three configs built from the same code: `tiny` (tests, seconds),
`base` (the demo's daily model) and `large` (benchmarks, ~10x base's FLOPs).
A checkpoint keeps `config.to_dict()` and rebuilds with `FMConfig.from_dict`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass
from typing import Any

from infra.schema import SURFACES

ATTENTION_KINDS: tuple[str, ...] = ("softmax", "hstu")


@dataclass(frozen=True)
class FMConfig:
    """Every size knob of `GemFM`; field names are stable (they key stored checkpoints)."""

    name: str = "tiny"
    d_model: int = 16  # embedding width of every field and sequence token
    n_layers: int = 2  # interleaved (sequence arm, Wukong arm) layers
    n_heads: int = 2
    history_length: int = 16  # history tokens read (most recent first)
    attention: str = "softmax"  # "softmax" or "hstu"
    pyramid: tuple[int, ...] = ()  # history tokens kept at each layer; () halves per layer
    n_cls: int = 1  # learned CLS tokens prepended to the history
    n_pool_queries: int = 2  # learned queries of the attention-pooling summary
    n_recent: int = 2  # most recent history tokens copied into the summary
    n_fields: int = 8  # non-sequence fields carried between Wukong layers (FMB + LCB)
    fmb_fields: int = 4  # of which produced by the dot-product interaction block
    wukong_rank: int = 4  # k of the learned n x k projection Y
    wukong_mlp: tuple[int, ...] = (64,)  # hidden widths of the FMB's MLP
    personal_hidden: int = 16  # hidden width of the MLP making the per-sample d x d projection
    ffn_mult: int = 2  # feed-forward width of the softmax attention block, x d_model
    trunk_widths: tuple[int, ...] = (64, 32)  # shared trunk; the last width is embed()'s size
    dropout: float = 0.0
    user_buckets: int = 4_096  # hash buckets per id feature, bucket 0 = padding / null
    item_buckets: int = 8_192  # shared by the example's item and the history items
    advertiser_buckets: int = 512
    category_buckets: int = 64
    country_buckets: int = 256
    n_age_buckets: int = 7  # user_age_bucket 0..6
    n_time_buckets: int = 48  # log-time buckets of history ages (and of pairwise gaps in HSTU)
    n_surfaces: int = len(SURFACES)
    tasks: tuple[str, ...] = ("click", "conversion")

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if not 0 < self.fmb_fields < self.n_fields:
            raise ValueError(f"need 0 < fmb_fields < n_fields, got {self.fmb_fields}, {self.n_fields}")
        if self.n_cls < 1:
            raise ValueError("n_cls must be >= 1 (CLS tokens keep every attention row non-empty)")
        if not self.trunk_widths:
            raise ValueError("trunk_widths must name at least one width")
        self.tokens_per_layer()  # validates the pyramid

    @property
    def embed_dim(self) -> int:
        """Width of the representation the heads read (`GemFM.embed`)."""
        return self.trunk_widths[-1]

    @property
    def n_summary(self) -> int:
        """Tokens of one sequence summary: CLS + pooled + most recent."""
        return self.n_cls + self.n_pool_queries + self.n_recent

    def tokens_per_layer(self) -> tuple[int, ...]:
        """History tokens each layer attends over (non-increasing, >= n_recent)."""
        floor = max(self.n_recent, 1)
        if self.pyramid:
            keep = tuple(self.pyramid)
        else:
            keep = tuple(max(floor, self.history_length >> i) for i in range(self.n_layers))
        if len(keep) != self.n_layers:
            raise ValueError(f"pyramid {keep} needs one entry per layer ({self.n_layers})")
        if keep[0] > self.history_length or any(b > a for a, b in itertools.pairwise(keep)):
            raise ValueError(f"pyramid {keep} must be non-increasing and <= history_length")
        if keep[-1] < floor:
            raise ValueError(f"pyramid {keep} keeps fewer tokens than n_recent={self.n_recent}")
        return keep

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists), the form stored with the weights."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FMConfig:
        """Rebuild from `to_dict()` output; lists become tuples, unknown keys are an error."""
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


SIZES: dict[str, FMConfig] = {
    "tiny": FMConfig(),
    "base": FMConfig(
        name="base",
        d_model=32,
        n_layers=3,
        n_heads=2,
        history_length=64,
        n_cls=2,
        n_pool_queries=4,
        n_recent=4,
        n_fields=12,
        fmb_fields=6,
        wukong_rank=8,
        wukong_mlp=(128,),
        personal_hidden=32,
        trunk_widths=(256, 64),
        dropout=0.1,
        user_buckets=8_192,
        item_buckets=32_768,
        advertiser_buckets=1_024,
    ),
    "large": FMConfig(
        name="large",
        d_model=80,
        n_layers=4,
        n_heads=4,
        history_length=100,
        n_cls=2,
        n_pool_queries=4,
        n_recent=8,
        n_fields=16,
        fmb_fields=8,
        wukong_rank=16,
        wukong_mlp=(512,),
        personal_hidden=64,
        trunk_widths=(512, 128),
        dropout=0.1,
        user_buckets=16_384,
        item_buckets=65_536,
        advertiser_buckets=2_048,
    ),
}


def config_for(size: str, **overrides: Any) -> FMConfig:
    """The named size with fields replaced, e.g. `config_for("tiny", attention="hstu")`."""
    if size not in SIZES:
        raise KeyError(f"unknown size {size!r}; known: {sorted(SIZES)}")
    return dataclasses.replace(SIZES[size], **overrides)
