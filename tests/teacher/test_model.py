"""GemFM: shapes, padding, surface heads, embed(), init determinism, sizes, a training sanity check."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from infra.registry import config_hash
from teacher.config import SIZES, FMConfig, config_for
from teacher.features import FeatureBatch, random_batch
from teacher.model import GemFM, SurfaceHeads, count_parameters, forward_flops_per_example

KINDS = ("softmax", "hstu")
HISTORY = ("hist_item", "hist_category", "hist_surface", "hist_event", "hist_time", "hist_dt_s")


def _model(kind: str = "softmax", seed: int = 0, **overrides: object) -> GemFM:
    torch.manual_seed(seed)
    return GemFM(config_for("tiny", attention=kind, **overrides)).eval()


@pytest.mark.parametrize("kind", KINDS)
def test_forward_and_embed_shapes(kind: str) -> None:
    model = _model(kind)
    batch = random_batch(model.config, 6, seed=1)
    logits, emb = model(batch), model.embed(batch)
    assert logits.shape == (6, len(model.config.tasks)) and torch.isfinite(logits).all()
    assert emb.shape == (6, model.config.embed_dim)
    assert torch.allclose(logits, model.heads(emb, batch["surface"]), atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_padded_history_positions_change_nothing(kind: str) -> None:
    model = _model(kind)
    batch = random_batch(model.config, 8, seed=2)
    batch["hist_len"][:4] = torch.tensor([0, 1, 3, 7])  # empty and short histories included
    scrambled = FeatureBatch(**batch)  # type: ignore[typeddict-item]
    pad = torch.arange(model.config.history_length)[None, :] >= batch["hist_len"][:, None]
    g = torch.Generator().manual_seed(3)
    for name in HISTORY:
        noise = torch.randint(1, 5, batch[name].shape, generator=g).to(batch[name].dtype) * 1000
        if name != "hist_dt_s":  # ids: any valid code
            noise = noise % 5 + 1
        scrambled[name] = torch.where(pad, noise, batch[name])  # type: ignore[literal-required]
    assert torch.allclose(model(batch), model(scrambled), atol=1e-6, rtol=0)


def test_real_history_and_fields_matter() -> None:
    model = _model()
    batch = random_batch(model.config, 4, seed=4, full_history=True)
    base = model(batch)
    for name in ("hist_item", "user", "advertiser"):
        changed = FeatureBatch(**batch)  # type: ignore[typeddict-item]
        changed[name] = batch[name] % 7 + 1  # type: ignore[literal-required]
        assert not torch.allclose(base, model(changed)), name


def test_each_surface_reads_its_own_head() -> None:
    model = _model()
    batch = random_batch(model.config, 5, seed=5)
    emb = model.embed(batch)
    surface = torch.zeros(5, dtype=torch.long)
    by_head = [model.heads(emb, surface + s) for s in range(model.config.n_surfaces)]
    for s in range(1, model.config.n_surfaces):
        assert not torch.allclose(by_head[0], by_head[s])
    with torch.no_grad():
        model.heads.weight[3].zero_()
        model.heads.bias[3].fill_(2.0)
    moved = FeatureBatch(**batch)  # type: ignore[typeddict-item]
    moved["surface"] = torch.full((5,), 3)
    assert torch.equal(model(moved), torch.full((5, 2), 2.0))  # head 3 alone decides


def test_surface_heads_sum_their_gradients_in_one_order_on_two_threads() -> None:
    """4,096 rows on two threads: indexing the weights per row (`weight[surface]`) gave a different
    weight gradient on some of eight identical backward passes; the gathered scores never do."""
    heads = SurfaceHeads(n_surfaces=4, embed_dim=32, n_tasks=2)
    g = torch.Generator().manual_seed(0)
    embedding, surface = torch.randn(4096, 32, generator=g), torch.randint(0, 4, (4096,), generator=g)
    with torch.no_grad():
        per_row = torch.einsum("be,bet->bt", embedding, heads.weight[surface]) + heads.bias[surface]
        assert torch.allclose(heads(embedding, surface), per_row, atol=1e-5)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        grads = []
        for _ in range(8):
            heads.zero_grad()
            (heads(embedding, surface) * torch.tensor([0.3, 1.0])).sum().backward()
            grads.append(heads.weight.grad.clone())
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(grads[0], grad) for grad in grads[1:])


def test_init_is_deterministic_for_a_seed() -> None:
    a, b, c = _model(seed=11), _model(seed=11), _model(seed=12)
    twin = b.state_dict()
    for name, value in a.state_dict().items():
        assert torch.equal(value, twin[name]), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))


def test_config_round_trips_beside_the_weights() -> None:
    config = config_for("tiny", attention="hstu", pyramid=(12, 6))
    stored = json.loads(json.dumps(config.to_dict()))
    rebuilt = FMConfig.from_dict(stored)
    assert rebuilt == config and config_hash(rebuilt.to_dict()) == config_hash(config.to_dict())
    assert config_hash(config.to_dict()) != config_hash(SIZES["tiny"].to_dict())
    model = _model("hstu", pyramid=(12, 6))
    twin = GemFM(rebuilt).eval()
    twin.load_state_dict(model.state_dict())
    batch = random_batch(config, 3, seed=6)
    assert torch.equal(model(batch), twin(batch))
    with pytest.raises(KeyError, match="unknown size"):
        config_for("huge")
    with pytest.raises(ValueError, match="attention"):
        config_for("tiny", attention="linear")


def test_sizes_grow_in_parameters_and_flops() -> None:
    tiny, base = SIZES["tiny"], SIZES["base"]
    assert count_parameters(GemFM(tiny)) < count_parameters(GemFM(base))
    flops_tiny = forward_flops_per_example(tiny)
    assert 0 < flops_tiny < forward_flops_per_example(base)
    assert SIZES["large"].d_model > base.d_model and SIZES["large"].n_layers > base.n_layers


def _learnable_batch(config: FMConfig, n: int, seed: int) -> tuple[FeatureBatch, torch.Tensor]:
    """Clicks follow the item's bucket parity, conversions the latest history event; -> (batch, (B, 2))."""
    batch = random_batch(config, n, seed=seed)
    batch["click"] = (batch["item"] % 2 == 0).float()
    batch["conversion"] = ((batch["hist_event"][:, 0] == 2) & (batch["hist_len"] > 0)).float()
    return batch, torch.stack([batch["click"], batch["conversion"]], dim=1)  # config.tasks order


def test_a_few_hundred_adam_steps_reduce_held_out_loss() -> None:
    torch.manual_seed(0)
    config = config_for("tiny", item_buckets=64)
    model = GemFM(config)
    held_out, held_out_labels = _learnable_batch(config, 512, seed=10_000)

    def held_out_loss() -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            logits = model(held_out)
        model.train()
        return F.binary_cross_entropy_with_logits(logits, held_out_labels, reduction="none").mean(0)  # (2,)

    before = held_out_loss()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3, foreach=True)
    for step in range(120):  # a fresh batch each step: the rule must be learned, not the rows
        batch, labels = _learnable_batch(config, 64, seed=step)
        optimiser.zero_grad()
        F.binary_cross_entropy_with_logits(model(batch), labels).backward()
        optimiser.step()
    assert (held_out_loss() < 0.3 * before).all()
