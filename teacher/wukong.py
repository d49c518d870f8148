"""The non-sequence arm: Wukong interaction layers over field embeddings (n fields x d)."""

from __future__ import annotations

import itertools

import torch
from torch import nn


def mlp(
    widths: tuple[int, ...] | list[int], dropout: float = 0.0, last_activation: bool = False
) -> nn.Sequential:
    """Linear layers through `widths` (input first) with SiLU (and dropout) between them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2 or last_activation:
            layers.append(nn.SiLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class WukongLayer(nn.Module):
    """`LN(concat(FMB(X), LCB(X)) + X)` on (B, n_in, d) -> (B, n_fmb + n_lcb, d).

    FMB: flatten(X · (Xᵀ · Y)) with a learned n_in x k Y (a rank-k dot-product
    interaction, O(n·d·k) instead of O(n²·d)), an MLP, reshaped to n_fmb fields.
    LCB: a learned linear mix along the field axis to n_lcb fields. When n_in
    differs from the output's field count, the residual is a linear field mix too.
    """

    def __init__(
        self,
        n_in: int,
        n_fmb: int,
        n_lcb: int,
        d_model: int,
        rank: int,
        hidden: tuple[int, ...],
        dropout: float,
    ) -> None:
        super().__init__()
        self.n_fmb, self.d_model = n_fmb, d_model
        self.y = nn.Parameter(torch.randn(n_in, rank) * n_in**-0.5)
        self.interaction_norm = nn.LayerNorm(n_in * rank)
        self.fmb = mlp((n_in * rank, *hidden, n_fmb * d_model), dropout)
        self.lcb = nn.Linear(n_in, n_lcb, bias=False)
        n_out = n_fmb + n_lcb
        self.residual = None if n_in == n_out else nn.Linear(n_in, n_out, bias=False)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_in, d) -> (B, n_out, d)."""
        compressed = torch.einsum("bnd,nk->bdk", x, self.y)  # (B, d, k): Xᵀ·Y
        interaction = x @ compressed  # (B, n_in, k): X·(Xᵀ·Y)
        fmb = self.fmb(self.interaction_norm(interaction.flatten(1)))  # (B, n_fmb·d)
        fmb = fmb.view(-1, self.n_fmb, self.d_model)  # (B, n_fmb, d)
        lcb = self.lcb(x.transpose(1, 2)).transpose(1, 2)  # (B, n_lcb, d)
        skip = x if self.residual is None else self.residual(x.transpose(1, 2)).transpose(1, 2)
        return self.norm(torch.cat([fmb, lcb], dim=1) + skip)  # (B, n_out, d)
