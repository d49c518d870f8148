"""Student adapter: identity when fresh, learns a stale teacher's shift, context, masked labels."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from adapters.adapter import (
    StudentAdapter,
    adapted_probabilities,
    cross_fitted_logits,
    fit_student_adapter,
    fit_student_adapter_to_interval,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: one thread avoids OpenMP spin-waits on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("hidden", [0, 16])
def test_a_fresh_adapter_returns_the_teacher_logits_exactly(hidden: int) -> None:
    torch.manual_seed(0)
    f = torch.randn(32, 2) * 3
    assert torch.equal(StudentAdapter(2, hidden=hidden)(f), f)
    context = torch.randn(32, 5)
    assert torch.equal(StudentAdapter(2, context_dim=5, hidden=hidden)(f, context), f)
    assert torch.equal(adapted_probabilities(StudentAdapter(2, hidden=hidden), f), torch.sigmoid(f))
    assert len(StudentAdapter(2, hidden=hidden).mlp) == (3 if hidden else 1), "0 hidden units: affine"


def test_context_must_match_the_build() -> None:
    f = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="context_dim=3"):
        StudentAdapter(2, context_dim=3)(f)
    with pytest.raises(ValueError, match="context_dim=0"):
        StudentAdapter(2)(f, torch.zeros(4, 3))


def _stale_toy(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher logits f, labels drawn from sigmoid(f - 2): the teacher is 2 nats too high."""
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, 2, generator=g)
    return f, torch.bernoulli(torch.sigmoid(f - 2.0), generator=g)


def _loss(adapter: StudentAdapter, f: torch.Tensor, y: torch.Tensor) -> float:
    p = adapted_probabilities(adapter, f)
    return float(torch.nn.functional.binary_cross_entropy(p, y))


def test_fit_reduces_the_adapter_loss_on_a_stale_teacher() -> None:
    torch.manual_seed(0)
    adapter = StudentAdapter(2)
    optimizer = torch.optim.Adam(adapter.parameters(), lr=3e-2)
    f, y = _stale_toy(4_096, seed=1)
    before = _loss(adapter, f, y)
    for step in range(60):
        rows = slice((step * 256) % 4_096, (step * 256) % 4_096 + 256)
        fit_student_adapter(adapter, optimizer, f[rows], y[rows], torch.ones(256, 2))
    assert _loss(adapter, f, y) < before - 0.05
    assert adapted_probabilities(adapter, f).mean() < torch.sigmoid(f).mean() - 0.1  # learned the shift


def test_the_interval_fit_learns_more_of_the_shift_than_a_day_of_steps() -> None:
    """One interval of 16 minibatches: Adam's per-step fit (at a small step) moves the adapter
    little; the interval fit reads every label at once and comes near the labels' own loss."""
    f, y = _stale_toy(4_096, seed=1)
    torch.manual_seed(0)
    stepped, fitted = StudentAdapter(2, hidden=16), StudentAdapter(2, hidden=16)
    fitted.load_state_dict(stepped.state_dict())
    optimizer = torch.optim.Adam(stepped.parameters(), lr=1e-3)
    for begin in range(0, 4_096, 256):
        rows = slice(begin, begin + 256)
        fit_student_adapter(stepped, optimizer, f[rows], y[rows], torch.ones(256, 2))
    final = fit_student_adapter_to_interval(fitted, f, y, torch.ones(4_096, 2))
    truth = float(torch.nn.functional.binary_cross_entropy(torch.sigmoid(f - 2.0), y))
    assert _loss(fitted, f, y) < _loss(stepped, f, y) - 0.05
    assert _loss(fitted, f, y) < truth + 0.01  # as good as knowing the shift
    assert final == pytest.approx(2 * _loss(fitted, f, y), rel=1e-4)  # L_a sums the 2 tasks' means


def test_cross_fitted_logits_never_see_their_own_label() -> None:
    f, y = _stale_toy(2_048, seed=2)
    adapter = StudentAdapter(2)
    adapted = cross_fitted_logits(adapter, f, y, torch.ones(2_048, 2))
    assert torch.equal(adapter(f), f), "the adapter given is only copied"
    flipped = y.clone()
    flipped[0] = 1 - flipped[0]  # row 0 is in fold 0: only fold 1's copy, fit on fold 0, reads it
    again = cross_fitted_logits(adapter, f, flipped, torch.ones(2_048, 2))
    assert torch.equal(again[0], adapted[0]) and torch.equal(again[::2], adapted[::2])
    assert not torch.equal(again[1::2], adapted[1::2])
    truth = float(torch.nn.functional.binary_cross_entropy(torch.sigmoid(f - 2.0), y))
    out_of_sample = float(torch.nn.functional.binary_cross_entropy_with_logits(adapted, y))
    assert out_of_sample < truth + 0.01, "an affine adapter learns the shift out of sample"


def test_an_interval_without_known_labels_leaves_the_adapter_as_it_was() -> None:
    adapter = StudentAdapter(2)
    before = {k: v.clone() for k, v in adapter.state_dict().items()}
    f, y = torch.randn(8, 2), torch.ones(8, 2)
    assert fit_student_adapter_to_interval(adapter, f, y, torch.zeros(8, 2)) == 0.0
    assert all(torch.equal(before[k], v) for k, v in adapter.state_dict().items())


def test_masked_labels_and_detached_inputs() -> None:
    torch.manual_seed(0)
    adapter = StudentAdapter(2)
    optimizer = torch.optim.SGD(adapter.parameters(), lr=0.1)
    f = torch.randn(8, 2, requires_grad=True)
    y = torch.ones(8, 2)
    assert fit_student_adapter(adapter, optimizer, f, y, torch.zeros(8, 2)) == 0.0  # nothing known: no step
    assert all(p.grad is None for p in adapter.parameters())
    mask = torch.zeros(8, 2)
    mask[:4, 0] = 1.0
    loss = fit_student_adapter(adapter, optimizer, f, y, mask)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(f.detach()[:4, 0], y[:4, 0])
    assert loss == pytest.approx(float(expected), rel=1e-6)  # only the known labels count
    assert f.grad is None  # teacher inputs are detached
    assert adapter.mlp[-1].weight.grad.abs().sum() > 0


def test_the_ridge_penalty_keeps_a_wide_context_from_overfitting_a_days_rows() -> None:
    """2,000 rows, 64 context dims of which one carries what the teacher's logit misses: penalised, the
    affine adapter's cross-fitted targets beat both the teacher's own and the unpenalised adapter's,
    which fits the other 63's noise too."""
    torch.manual_seed(0)
    f, context = torch.randn(2_000, 1), torch.randn(2_000, 64)
    y = torch.bernoulli(torch.sigmoid(f + context[:, :1]))
    mask = torch.ones(2_000, 1)

    def held_out(l2: float) -> float:
        adapted = cross_fitted_logits(StudentAdapter(1, context_dim=64, l2=l2), f, y, mask, context)
        return float(torch.nn.functional.binary_cross_entropy_with_logits(adapted, y))

    teacher = float(torch.nn.functional.binary_cross_entropy_with_logits(f, y))
    penalised = held_out(1e-2)
    assert penalised < teacher - 0.01
    assert penalised < held_out(0.0) - 0.005


def test_the_penalty_is_on_the_weights_only_and_never_negative() -> None:
    adapter = StudentAdapter(2, context_dim=3, l2=0.5)
    with torch.no_grad():
        adapter.mlp[-1].weight.fill_(1.0)
        adapter.mlp[-1].bias.fill_(7.0)
    assert float(adapter.penalty().detach()) == pytest.approx(0.5 * 2 * 5)
    assert float(StudentAdapter(2).penalty().detach()) == 0.0
    with pytest.raises(ValueError, match="l2"):
        StudentAdapter(2, l2=-1.0)
