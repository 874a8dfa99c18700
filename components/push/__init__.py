"""Push: publish a blessed model to the serving location (see serving.py).

Its own package because push is its own DAG step and runs in the small launch image, which
has no torch or TensorFlow: it needs `components.common.storage` and nothing else.
"""

from components.push.serving import LATEST_FILE, push_model, serving_root

__all__ = ["LATEST_FILE", "push_model", "serving_root"]
