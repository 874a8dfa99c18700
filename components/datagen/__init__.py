"""Synthetic raw data with a planted, learnable signal, and its oracle (see generate.py)."""

from components.datagen.generate import GenerateResult, generate
from components.datagen.oracle import read_oracle

__all__ = ["GenerateResult", "generate", "read_oracle"]
