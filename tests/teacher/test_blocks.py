"""Blocks: shapes, padding that changes nothing, pyramid token counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from teacher.attention import AttentionPooling, HSTUAttention, SoftmaxAttention, make_attention
from teacher.blocks import InterleavedLayer, InterleavedStack, Personalisation, SequenceSummary
from teacher.config import config_for
from teacher.wukong import WukongLayer

B, T, D = 4, 10, 16
KINDS = ("softmax", "hstu")


def _sequence(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens (B, T, D), a mask with rows of 1, 4, 7 and 10 real tokens, token ages (B, T)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=g)
    mask = torch.arange(T)[None, :] < torch.tensor([1, 4, 7, 10])[:, None]
    age = torch.rand(B, T, generator=g) * 1e5
    return x, mask, age


def _scramble_padding(x: torch.Tensor, mask: torch.Tensor, age: torch.Tensor):
    """Same real tokens, garbage at every padded position."""
    pad = ~mask
    x2 = torch.where(pad[..., None], torch.randn_like(x) * 100, x)
    age2 = torch.where(pad, torch.rand_like(age) * 1e9, age)
    return x2, age2


def _block(kind: str) -> nn.Module:
    torch.manual_seed(0)
    block = make_attention(kind, D, n_heads=2, max_tokens=T, n_time_buckets=32, ffn_mult=2, dropout=0.0)
    if isinstance(block, HSTUAttention):  # its relative biases start at zero: make them matter
        nn.init.normal_(block.pos_bias, std=0.3)
        nn.init.normal_(block.time_bias, std=0.3)
    return block.eval()


@pytest.mark.parametrize("kind", KINDS)
def test_attention_shape_and_padded_positions_change_nothing(kind: str) -> None:
    block = _block(kind)
    assert isinstance(block, SoftmaxAttention if kind == "softmax" else HSTUAttention)
    x, mask, age = _sequence()
    out = block(x, mask, age)
    assert out.shape == (B, T, D)
    x2, age2 = _scramble_padding(x, mask, age)
    out2 = block(x2, mask, age2)
    assert torch.allclose(out[mask], out2[mask], atol=1e-6, rtol=0)
    assert not torch.allclose(out[~mask], out2[~mask])  # the check can fail: padded rows did change


@pytest.mark.parametrize("kind", KINDS)
def test_attention_mixes_real_tokens(kind: str) -> None:
    block = _block(kind)
    x, mask, age = _sequence()
    x2 = x.clone()
    x2[3, 5] += torch.linspace(-1.0, 1.0, D)  # a real token of the full row (not a shift: LN removes those)
    diff = (block(x, mask, age) - block(x2, mask, age)).abs().sum(-1)  # (B, T)
    assert (diff[3, :5] > 0).all() and (diff[:3] == 0).all()


def test_hstu_time_bias_reads_token_ages() -> None:
    block = _block("hstu")
    x, mask, age = _sequence()
    assert not torch.allclose(block(x, mask, age)[mask], block(x, mask, age * 7)[mask])


def test_attention_pooling_and_summary_ignore_padding() -> None:
    torch.manual_seed(0)
    x, mask, age = _sequence()
    mask[:, 0] = True  # a CLS position, always real
    pool = AttentionPooling(D, n_queries=3)
    summary = SequenceSummary(D, n_cls=1, n_queries=3, n_recent=4)
    x2, _ = _scramble_padding(x, mask, age)
    assert pool(x, mask).shape == (B, 3, D)
    assert torch.allclose(pool(x, mask), pool(x2, mask), atol=1e-6)
    s = summary(x, mask)
    assert s.shape == (B, 1 + 3 + 4, D)
    assert torch.allclose(s, summary(x2, mask), atol=1e-6)
    assert (s[0, 4:] == 0).all()  # only the CLS is real in row 0: its "recent" slots are empty


def test_wukong_layer_shapes_and_residual() -> None:
    torch.manual_seed(0)
    x = torch.randn(B, 9, D)
    same = WukongLayer(9, n_fmb=5, n_lcb=4, d_model=D, rank=3, hidden=(32,), dropout=0.0)
    assert same.residual is None and same(x).shape == (B, 9, D)
    wider = WukongLayer(9, n_fmb=6, n_lcb=6, d_model=D, rank=3, hidden=(32, 16), dropout=0.0)
    out = wider(x)
    assert out.shape == (B, 12, D)
    assert torch.allclose(out.mean(-1), torch.zeros(B, 12), atol=1e-5)  # ends in a LayerNorm


def test_wukong_fmb_is_a_second_order_interaction() -> None:
    torch.manual_seed(0)
    layer = WukongLayer(4, n_fmb=2, n_lcb=2, d_model=D, rank=2, hidden=(8,), dropout=0.0)
    x = torch.randn(B, 4, D)
    inter = x @ torch.einsum("bnd,nk->bdk", x, layer.y)  # (B, n, k)
    assert torch.allclose(inter, torch.einsum("bnd,bmd,mk->bnk", x, x, layer.y), atol=1e-5)


def test_personalisation_starts_as_identity_and_is_per_sample() -> None:
    torch.manual_seed(0)
    block = Personalisation(n_fields=5, d_model=D, hidden=8)
    fields, seq = torch.randn(B, 5, D), torch.randn(B, T, D)
    assert torch.equal(block(fields, seq), seq)
    nn.init.normal_(block.mlp[-1].weight, std=0.1)
    out = block(fields, seq)
    assert out.shape == (B, T, D)
    swapped = block(fields.flip(0), seq)  # other samples' fields: another projection
    assert not torch.allclose(out, swapped)


@pytest.mark.parametrize("kind", KINDS)
def test_interleaved_layer_trims_tokens_and_ignores_padding(kind: str) -> None:
    config = config_for("tiny", attention=kind, history_length=8, n_cls=2)
    torch.manual_seed(0)
    layer = InterleavedLayer(config, n_in_fields=9, keep=4).eval()
    fields = torch.randn(B, 9, config.d_model)
    seq = torch.randn(B, 2 + 8, config.d_model)
    mask = torch.arange(10)[None, :] < torch.tensor([2, 4, 6, 10])[:, None]
    age = torch.rand(B, 10) * 1e4
    out_fields, out_seq, out_mask, out_age = layer(fields, seq, mask, age)
    assert out_fields.shape == (B, config.n_fields, config.d_model)
    assert out_seq.shape == (B, 2 + 4, config.d_model) and out_mask.shape == out_age.shape == (B, 6)
    seq2, age2 = _scramble_padding(seq, mask, age)
    again = layer(fields, seq2, mask, age2)
    assert torch.allclose(out_fields, again[0], atol=1e-6)
    assert torch.allclose(out_seq[out_mask], again[1][out_mask], atol=1e-6)


def test_pyramid_halves_tokens_per_layer() -> None:
    config = config_for("tiny", history_length=16, n_layers=3, n_cls=1, n_recent=2)
    assert config.tokens_per_layer() == (16, 8, 4)
    stack = InterleavedStack(config, n_raw_fields=9)
    seen: list[int] = []
    for layer in stack.layers:
        layer.attention.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[1]))
    fields, seq = torch.randn(2, 9, config.d_model), torch.randn(2, 1 + 16, config.d_model)
    top, summary = stack(fields, seq, torch.ones(2, 17, dtype=torch.bool), torch.zeros(2, 17))
    assert seen == [17, 9, 5]  # CLS + kept history tokens
    assert top.shape == (2, config.n_fields, config.d_model)
    assert summary.shape == (2, config.n_summary, config.d_model)


def test_pyramid_schedule_is_validated() -> None:
    assert config_for("tiny", history_length=6, n_layers=4, n_recent=2).tokens_per_layer() == (6, 3, 2, 2)
    assert config_for("tiny", pyramid=(12, 12)).tokens_per_layer() == (12, 12)
    for bad in ((16,), (8, 16), (32, 16), (16, 1)):
        with pytest.raises(ValueError, match="pyramid"):
            config_for("tiny", pyramid=bad)
