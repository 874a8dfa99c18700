"""The trainer's command line, the contract between whoever starts training and the trainer.

`python -m components.train --config_path=... [--train_data=...]` under torchrun is what runs on
every rank, whether `recap train`, the local launcher or a PyTorchJob starts it. Its flags are
declared once (flags.py): the trainer parses them, launchers forward them, and `--help` and the
docs are generated from the same table. torchrun.py builds the whole command line.
"""
