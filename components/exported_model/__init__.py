"""The exported model directory: written once by training, loaded anywhere in one process.

Loading needs only the ranker and the records batch, nothing of training (no process group,
no DistributedModelParallel, no distributed checkpoint, no optimizer).
"""
