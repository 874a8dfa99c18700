"""recap-pipeline: the step implementations (no KFP imports here; see DESIGN.md)."""
