"""Domain FMs and vertical models, distillation losses, parameter sharing."""
