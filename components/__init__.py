"""recap-pipeline: the step implementations and the contracts between them; no KFP here (docs/architecture.md)."""
