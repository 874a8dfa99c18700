"""KFP only: thin component wrappers over `components.*`, the DAG, compile / run-local / submit."""
