"""The sequence arm's self-attention blocks, switchable by `FMConfig.attention`.

Both take the same arguments: tokens (B, T, D), a key mask (B, T) that is True for
real tokens (CLS and history) and False for padding, and each token's age in
seconds (B, T) (0 for CLS). A padded key gets exactly zero weight, so what a
padded position holds never reaches a real one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_LOG_TIME_STEPS_PER_OCTAVE = 2.0  # as teacher.features.log_time_bucket


def log_time_bucket(seconds: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """Bucket 1..n_buckets-1 of `log2(1 + seconds)` in half-octave steps (torch twin of the features')."""
    steps = torch.floor(_LOG_TIME_STEPS_PER_OCTAVE * torch.log2(1.0 + seconds.clamp_min(0.0)))
    return 1 + steps.clamp(0, n_buckets - 2).long()


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, D) -> (B, H, T, D/H)."""
    b, t, d = x.shape
    return x.view(b, t, n_heads, d // n_heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, D/H) -> (B, T, D)."""
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)


class SoftmaxAttention(nn.Module):
    """Pre-LN transformer block: `x + MHA(LN(x))`, then `x + FFN(LN(x))`."""

    def __init__(self, d_model: int, n_heads: int, ffn_mult: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, ffn_mult * d_model), nn.SiLU(), nn.Linear(ffn_mult * d_model, d_model)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, age_s: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D); `age_s` is unused (time enters through the token embeddings)."""
        q, k, v = (_heads(t, self.n_heads) for t in self.qkv(self.norm1(x)).chunk(3, dim=-1))
        keys = mask[:, None, None, :]  # (B, 1, 1, T): True = attend
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=keys, dropout_p=p)  # (B, H, T, Dh)
        x = x + self.drop(self.out(_merge(a)))
        return x + self.drop(self.ffn(self.norm2(x)))


class HSTUAttention(nn.Module):
    """HSTU's pointwise block: `U,V,Q,K = split(SiLU(W·LN(x)))`, no softmax.

    `A = SiLU(QKᵀ/sqrt(d_h) + rab) / n` with rab a learned per-head relative-position and
    log-time-gap bias and n the number of real keys; output `W2(LN(A·V) ⊙ U) + x`.
    """

    def __init__(
        self, d_model: int, n_heads: int, max_tokens: int, n_time_buckets: int, dropout: float
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.max_tokens = max_tokens
        self.n_time_buckets = n_time_buckets
        self.norm_in = nn.LayerNorm(d_model)
        self.uvqk = nn.Linear(d_model, 4 * d_model)
        self.norm_out = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, d_model)
        self.pos_bias = nn.Parameter(torch.zeros(n_heads, 2 * max_tokens - 1))
        self.time_bias = nn.Parameter(torch.zeros(n_heads, n_time_buckets))
        self.drop = nn.Dropout(dropout)

    def _relative_bias(self, age_s: torch.Tensor) -> torch.Tensor:
        """(B, T) token ages -> (B, H, T, T) position + time-gap bias."""
        t = age_s.shape[1]
        pos = torch.arange(t, device=age_s.device)
        rel = (pos[:, None] - pos[None, :]).clamp(1 - self.max_tokens, self.max_tokens - 1)
        rel = rel + self.max_tokens - 1  # (T, T) index into pos_bias
        gap = log_time_bucket((age_s[:, :, None] - age_s[:, None, :]).abs(), self.n_time_buckets)  # (B,T,T)
        return self.pos_bias[:, rel][None] + self.time_bias[:, gap].transpose(0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, age_s: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        u, v, q, k = F.silu(self.uvqk(self.norm_in(x))).chunk(4, dim=-1)  # each (B, T, D)
        q, k, v = (_heads(t, self.n_heads) for t in (q, k, v))  # (B, H, T, Dh)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, T, T)
        keys = mask[:, None, None, :].to(x.dtype)  # (B, 1, 1, T)
        n_keys = keys.sum(-1, keepdim=True).clamp_min(1.0)  # (B, 1, 1, 1)
        weights = F.silu(scores + self._relative_bias(age_s)) * keys / n_keys  # padded keys: exactly 0
        a = _merge(weights @ v)  # (B, T, D)
        return x + self.drop(self.out(self.norm_out(a) * u))


class AttentionPooling(nn.Module):
    """Learned queries attend (softmax, one head) over the real tokens: (B, T, D) -> (B, P, D)."""

    def __init__(self, d_model: int, n_queries: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(n_queries, d_model) * d_model**-0.5)
        self.norm = nn.LayerNorm(d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`mask` (B, T) must hold a True per row (CLS tokens guarantee it)."""
        k, v = self.kv(self.norm(x)).chunk(2, dim=-1)  # (B, T, D)
        q = self.queries.expand(x.shape[0], -1, -1)  # (B, P, D)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, :])  # (B, P, D)


def make_attention(
    kind: str, d_model: int, n_heads: int, max_tokens: int, n_time_buckets: int, ffn_mult: int, dropout: float
) -> nn.Module:
    """The sequence block named by `FMConfig.attention` ("softmax" or "hstu")."""
    if kind == "softmax":
        return SoftmaxAttention(d_model, n_heads, ffn_mult, dropout)
    if kind == "hstu":
        return HSTUAttention(d_model, n_heads, max_tokens, n_time_buckets, dropout)
    raise ValueError(f"unknown attention kind {kind!r}")
