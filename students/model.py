"""`Student`: a GemFM-shaped backbone with a serving head, an optional ExFM distillation
head, and an optional teacher-representation input.

No I/O. The serving head is the backbone's own `SurfaceHeads` (`backbone.heads`),
the only head served. The distillation head is separate and reads the shared
embedding through `scale_gradient(., grad_scale)`, so the teacher reaches the
served head only through the backbone (and not at all with grad_scale 0).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from students.config import StudentConfig
from students.knowledge_inputs import Knowledge
from students.losses import scale_gradient
from teacher.features import FeatureBatch
from teacher.model import GemFM, SurfaceHeads


class StudentOutput(NamedTuple):
    """What one forward pass gives the losses."""

    serving: torch.Tensor  # (B, T) logits of the served head
    distill: torch.Tensor | None  # (B, T) logits of the auxiliary distillation head, None without one
    embedding: torch.Tensor  # (B, E) the representation both heads read


class RepresentationInput(nn.Module):
    """Teacher embeddings as a student feature, added to the backbone's embedding: -> (B, E).

    "input": a projection of the example's own logged teacher embedding (0 for rows
    without teacher output). "sequence" (LoopFM): a projection of the masked mean of
    the user's past teacher embeddings, never the example's own, so serving needs no
    teacher call. No bias: a row without knowledge gets exactly the backbone's embedding.

    The projection starts at zero (as ControlNet's zero convolutions and ReZero's residual
    gates do): a fresh student is the backbone alone, and the teacher's embedding joins it
    along the loss's gradient, instead of entering as a random projection whose draw decides
    how much of it a student given a few hundred steps can read.
    """

    def __init__(self, mode: str, teacher_embed_dim: int, embed_dim: int) -> None:
        super().__init__()
        if mode not in ("input", "sequence"):
            raise ValueError(f"representation mode must be 'input' or 'sequence', got {mode!r}")
        self.mode = mode
        self.project = nn.Linear(teacher_embed_dim, embed_dim, bias=False)
        nn.init.zeros_(self.project.weight)

    def forward(self, knowledge: Knowledge) -> torch.Tensor:
        """-> (B, E)."""
        if self.mode == "input":
            own = knowledge["teacher_embedding"] * knowledge["teacher_mask"][:, None]  # (B, E_t)
            return self.project(own)
        real = knowledge["past_mask"].to(knowledge["past_embeddings"].dtype)  # (B, K)
        total = (knowledge["past_embeddings"] * real[:, :, None]).sum(dim=1)  # (B, E_t)
        return self.project(total / real.sum(dim=1, keepdim=True).clamp(min=1.0))


class Student(nn.Module):
    """A domain FM or a VM; `config` is kept as an attribute for checkpoints."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        fm, transfer = config.backbone, config.transfer
        self.backbone = GemFM(fm)  # .heads is the serving head
        self.distill_head = (
            SurfaceHeads(fm.n_surfaces, fm.embed_dim, len(fm.tasks)) if transfer.aux_head else None
        )
        self.representation = (
            RepresentationInput(transfer.representation, config.teacher_embed_dim, fm.embed_dim)
            if transfer.representation != "none"
            else None
        )

    def embed(self, batch: FeatureBatch, knowledge: Knowledge) -> torch.Tensor:
        """The representation the heads read: backbone embedding [+ teacher representation], (B, E)."""
        embedding = self.backbone.embed(batch)
        if self.representation is not None:
            embedding = embedding + self.representation(knowledge)
        return embedding

    def forward(self, batch: FeatureBatch, knowledge: Knowledge) -> StudentOutput:
        """Serving logits, distillation logits (or None), embedding; tasks in `backbone.tasks` order."""
        embedding = self.embed(batch, knowledge)  # (B, E)
        surface = batch["surface"]
        distill = None
        if self.distill_head is not None:
            distill = self.distill_head(scale_gradient(embedding, self.config.transfer.grad_scale), surface)
        return StudentOutput(self.backbone.heads(embedding, surface), distill, embedding)

    def start_at_rates(self, rates: torch.Tensor) -> None:
        """Both heads' biases at the log-odds of the base `rates` (T,)."""
        self.backbone.heads.start_at_rates(rates)
        if self.distill_head is not None:
            self.distill_head.start_at_rates(rates)
