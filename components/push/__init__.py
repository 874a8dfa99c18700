"""Push: publish a blessed model to the serving location (see serving.py).

Its own package because push is its own DAG step and runs in the small launch image, which
has no torch or TensorFlow: it needs `components.common` and evaluate's output names only.
"""

from components.push.constants import LATEST_FILE
from components.push.serving import PushConfig, push_model, run, serving_root

__all__ = ["LATEST_FILE", "PushConfig", "push_model", "run", "serving_root"]
