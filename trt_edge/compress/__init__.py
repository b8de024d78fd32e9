"""Model compression: pruning (and, later, distillation, low-rank, weight sharing, QAT)."""
