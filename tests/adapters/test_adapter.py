"""Student adapter: identity when fresh, learns a stale teacher's shift, context, masked labels."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from adapters.adapter import StudentAdapter, adapted_probabilities, fit_student_adapter


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: one thread avoids OpenMP spin-waits on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_fresh_adapter_returns_the_teacher_logits_exactly() -> None:
    torch.manual_seed(0)
    f = torch.randn(32, 2) * 3
    assert torch.equal(StudentAdapter(2)(f), f)
    context = torch.randn(32, 5)
    assert torch.equal(StudentAdapter(2, context_dim=5)(f, context), f)
    assert torch.equal(adapted_probabilities(StudentAdapter(2), f), torch.sigmoid(f))


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
