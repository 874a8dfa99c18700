"""The trainer's command line, the contract between whoever starts training and the trainer.

`python -m components.train --config_path=... [--train_data=...]` under torchrun is what runs on
every rank, whether `recap train`, the local launcher or a PyTorchJob starts it. Its flags are
declared once (flags.py): the trainer, `recap train` and `recap launch` parse them from that
table, launchers pass them on as `TrainerArgs`, `--help` is generated from it, and tests/docs
holds the documented table to it. torchrun.py builds the whole command line.
"""
