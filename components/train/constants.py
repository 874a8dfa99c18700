"""Output names of the trainer (under its save_dir, the `out_uri` of `train.run`).

  step_<n>/            a checkpoint (torch.distributed.checkpoint), valid once COMMIT_MARKER is in it
  tensorboard/         TensorBoard event files
  model/               the exported model (components/exported_model), unless training.model_dir says otherwise
"""

COMMIT_MARKER = "_COMMITTED"
TENSORBOARD_SUBDIR = "tensorboard"
MODEL_SUBDIR = "model"
