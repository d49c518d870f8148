"""`GemFM`: the foundation model (embeddings, interleaved pyramid, shared trunk, surface heads).

No I/O: it maps a `FeatureBatch` to logits (B, n_tasks) for each example's own
surface. `embed()` is the representation every head reads, for knowledge
generation; `forward(batch) == heads(embed(batch), batch["surface"])`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from teacher.blocks import InterleavedStack
from teacher.config import FMConfig
from teacher.features import FeatureBatch, random_batch
from teacher.wukong import mlp

# Non-sequence fields in their order along the field axis.
FIELDS: tuple[str, ...] = (
    "user",
    "age",
    "country",
    "item",
    "item_kind",
    "advertiser",
    "category",
    "ad_format",
    "surface",
)


class Embeddings(nn.Module):
    """Id tables; item, category and surface tables are shared by the example and its history."""

    def __init__(self, config: FMConfig) -> None:
        super().__init__()
        d, c = config.d_model, config
        sizes = {
            "user": c.user_buckets,
            "age": c.n_age_buckets + 1,
            "country": c.country_buckets,
            "item": c.item_buckets,
            "item_kind": 3,
            "advertiser": c.advertiser_buckets,
            "category": c.category_buckets,
            "ad_format": 4,
            "surface": c.n_surfaces + 1,
            "event": 6,
            "time": c.n_time_buckets,
        }
        self.tables = nn.ModuleDict({k: nn.Embedding(n, d, padding_idx=0) for k, n in sizes.items()})
        for table in self.tables.values():
            nn.init.normal_(table.weight, std=d**-0.5)
            table.weight.data[0].zero_()
        self.position = nn.Parameter(torch.randn(config.history_length, d) * d**-0.5)  # recency rank
        self.cls = nn.Parameter(torch.randn(config.n_cls, d) * d**-0.5)
        self.field_norm = nn.LayerNorm(d)
        self.token_norm = nn.LayerNorm(d)

    def fields(self, batch: FeatureBatch) -> torch.Tensor:
        """-> (B, len(FIELDS), D)."""
        ids = {k: batch[k] for k in FIELDS}  # type: ignore[literal-required]
        ids["surface"] = ids["surface"] + 1  # the surface table keeps 0 for history padding
        return self.field_norm(torch.stack([self.tables[k](ids[k]) for k in FIELDS], dim=1))

    def tokens(self, batch: FeatureBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> CLS + history tokens (B, C + L, D), their mask (B, C + L), their ages in seconds (B, C + L)."""
        t = self.tables
        hist = (
            t["item"](batch["hist_item"])
            + t["category"](batch["hist_category"])
            + t["surface"](batch["hist_surface"])
            + t["event"](batch["hist_event"])
            + t["time"](batch["hist_time"])
            + self.position
        )  # (B, L, D)
        b, length = batch["hist_item"].shape
        cls = self.cls.expand(b, -1, -1)  # (B, C, D)
        seq = self.token_norm(torch.cat([cls, hist], dim=1))  # (B, C + L, D)
        real = torch.arange(length, device=seq.device)[None, :] < batch["hist_len"][:, None]  # (B, L)
        mask = torch.cat([real.new_ones(b, cls.shape[1]), real], dim=1)
        age = torch.cat([batch["hist_dt_s"].new_zeros(b, cls.shape[1]), batch["hist_dt_s"]], dim=1)
        return seq, mask, age


class SurfaceHeads(nn.Module):
    """One linear head per surface, each scoring every task: (B, E), (B,) -> (B, n_tasks)."""

    def __init__(self, n_surfaces: int, embed_dim: int, n_tasks: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_surfaces, embed_dim, n_tasks) * embed_dim**-0.5)
        self.bias = nn.Parameter(torch.zeros(n_surfaces, n_tasks))

    @torch.no_grad()
    def start_at_rates(self, rates: torch.Tensor) -> None:
        """Set every surface's bias to the log-odds of `rates` (n_tasks,): a fresh model
        then starts at the base rates (NE near 1) instead of at p = 0.5."""
        self.bias.copy_(torch.logit(rates.clamp(1e-6, 1 - 1e-6)).expand_as(self.bias))

    def forward(self, embedding: torch.Tensor, surface: torch.Tensor) -> torch.Tensor:
        """Each row read by its own surface's head.

        Every head scores every row and each row keeps its own surface's scores. Indexing the weights
        per row instead (`weight[surface]`) sums their gradients with a CPU `index_put_` whose threads
        add in the order they finish: two runs of one seed then drift apart from the first step.
        """
        scores = torch.einsum("be,set->bst", embedding, self.weight) + self.bias  # (B, S, T)
        own = surface[:, None, None].expand(-1, 1, scores.shape[-1])  # (B, 1, T)
        return scores.gather(1, own).squeeze(1)


class GemFM(nn.Module):
    """The foundation model; `config` is kept as an attribute for checkpoints."""

    def __init__(self, config: FMConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.stack = InterleavedStack(config, n_raw_fields=len(FIELDS))
        trunk_in = (config.n_fields + config.n_summary) * config.d_model
        self.trunk = mlp((trunk_in, *config.trunk_widths), config.dropout, last_activation=True)
        self.heads = SurfaceHeads(config.n_surfaces, config.embed_dim, len(config.tasks))

    def embed(self, batch: FeatureBatch) -> torch.Tensor:
        """The shared trunk's output, what the heads read: (B, config.embed_dim)."""
        fields = self.embeddings.fields(batch)  # (B, F, D)
        seq, mask, age = self.embeddings.tokens(batch)  # (B, C + L, D), (B, C + L), (B, C + L)
        top_fields, summary = self.stack(fields, seq, mask, age)  # (B, n_fields, D), (B, S, D)
        return self.trunk(torch.cat([top_fields.flatten(1), summary.flatten(1)], dim=1))

    def forward(self, batch: FeatureBatch) -> torch.Tensor:
        """Logits (B, n_tasks), tasks in `config.tasks` order, from each row's surface head."""
        return self.heads(self.embed(batch), batch["surface"])


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def forward_flops_per_example(config: FMConfig, batch_size: int = 8) -> float:
    """Forward FLOPs per example (matmul-type ops, as FlopCounterMode counts them), full histories."""
    model = GemFM(config).eval()
    batch = random_batch(config, batch_size, seed=0, full_history=True)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(batch)
    return counter.get_total_flops() / batch_size
