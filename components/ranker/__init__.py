"""The Heavy Ranker itself: its config section, its layers and the model, shared by training
(which shards and trains it) and by everything that loads an exported model."""
