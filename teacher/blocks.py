"""InterFormer-style interleaving of the two arms, layer by layer, in a pyramid.

Each layer reads the other arm's state from the layer below: a gated sequence
summary (CLS tokens, attention pooling with learned queries, the K most recent
tokens) joins the non-sequence fields in a Wukong layer, and a per-sample d x d
projection made from the non-sequence fields personalises the sequence tokens
before self-attention. Layer i attends over only its first `keep_i` history
tokens (the most recent; histories are most recent first) plus the CLS tokens,
so higher layers are cheaper, yet the top still holds a sequence, not one vector.
"""

from __future__ import annotations

import torch
from torch import nn

from teacher.attention import AttentionPooling, make_attention
from teacher.config import FMConfig
from teacher.wukong import WukongLayer, mlp


class SequenceSummary(nn.Module):
    """(B, C + T, D) tokens -> (B, C + P + K, D): CLS, pooled, K most recent; gated."""

    def __init__(self, d_model: int, n_cls: int, n_queries: int, n_recent: int) -> None:
        super().__init__()
        self.n_cls, self.n_recent = n_cls, n_recent
        self.pool = AttentionPooling(d_model, n_queries)
        self.gate = nn.Linear(d_model, d_model)

    def forward(self, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`mask` (B, C + T): True for CLS and real history tokens."""
        c, k = self.n_cls, self.n_recent
        cls = seq[:, :c]  # (B, C, D)
        pooled = self.pool(seq, mask)  # (B, P, D)
        recent = seq[:, c : c + k] * mask[:, c : c + k, None].to(seq.dtype)  # (B, K, D), padding -> 0
        summary = torch.cat([cls, pooled, recent], dim=1)  # (B, S, D)
        return summary * torch.sigmoid(self.gate(summary))


class Personalisation(nn.Module):
    """Non-sequence fields -> MLP -> per-sample d x d M; tokens become `seq + seq · M`.

    The MLP's last layer starts at zero, so a fresh block is the identity.
    """

    def __init__(self, n_fields: int, d_model: int, hidden: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.mlp = mlp((n_fields * d_model, hidden, d_model * d_model))
        last = self.mlp[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, fields: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        """fields (B, n, D), seq (B, T, D) -> (B, T, D)."""
        m = self.mlp(fields.flatten(1)).view(-1, self.d_model, self.d_model)  # (B, D, D)
        return seq + seq @ m


class InterleavedLayer(nn.Module):
    """One pyramid level: both arms updated in parallel, each from the other's input state."""

    def __init__(self, config: FMConfig, n_in_fields: int, keep: int) -> None:
        super().__init__()
        d = config.d_model
        self.n_tokens = config.n_cls + keep  # CLS + the `keep` most recent history tokens
        self.summary = SequenceSummary(d, config.n_cls, config.n_pool_queries, config.n_recent)
        self.interaction = WukongLayer(
            n_in_fields + config.n_summary,
            config.fmb_fields,
            config.n_fields - config.fmb_fields,
            d,
            config.wukong_rank,
            config.wukong_mlp,
            config.dropout,
        )
        self.personalise = Personalisation(n_in_fields, d, config.personal_hidden)
        max_tokens = config.n_cls + config.history_length
        self.attention = make_attention(
            config.attention,
            d,
            config.n_heads,
            max_tokens,
            config.n_time_buckets,
            config.ffn_mult,
            config.dropout,
        )

    def forward(
        self, fields: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor, age_s: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """fields (B, n_in, D), seq (B, T_in, D), mask/age_s (B, T_in) -> the same, with n_fields and T_i."""
        seq, mask, age_s = seq[:, : self.n_tokens], mask[:, : self.n_tokens], age_s[:, : self.n_tokens]
        summary = self.summary(seq, mask)  # (B, S, D)
        new_fields = self.interaction(torch.cat([fields, summary], dim=1))  # (B, n_fields, D)
        tokens = self.personalise(fields, seq)  # (B, T_i, D)
        return new_fields, self.attention(tokens, mask, age_s), mask, age_s


class InterleavedStack(nn.Module):
    """The pyramid of `InterleavedLayer`s plus the top sequence summary."""

    def __init__(self, config: FMConfig, n_raw_fields: int) -> None:
        super().__init__()
        widths = [n_raw_fields] + [config.n_fields] * (config.n_layers - 1)
        keeps = config.tokens_per_layer()
        self.layers = nn.ModuleList(
            InterleavedLayer(config, n, k) for n, k in zip(widths, keeps, strict=True)
        )
        self.top_summary = SequenceSummary(
            config.d_model, config.n_cls, config.n_pool_queries, config.n_recent
        )

    def forward(
        self, fields: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor, age_s: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (top fields (B, n_fields, D), top sequence summary (B, S, D))."""
        for layer in self.layers:
            fields, seq, mask, age_s = layer(fields, seq, mask, age_s)
        return fields, self.top_summary(seq, mask)
