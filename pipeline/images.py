"""The one place that names container images. Registry and tag are overridable at compile time
(`recap pipeline compile --registry ... --tag ...`) or through RECAP_IMAGE_REGISTRY / RECAP_IMAGE_TAG.
docker/ builds exactly these images (tests/docker checks both sides agree).

Each image is also a whole-value pipeline parameter (`IMAGE_PARAMETERS`), defaulting to the
compile-time registry/tag, so a UI rerun can run other images. A whole value, never a tag spliced
into a longer string: the KFP backend resolves a task's image only when the image *is* one
`{{$.inputs.parameters[...]}}` placeholder (pipeline/backend_resolve.py models that rule).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_REGISTRY = "ghcr.io/recap-pipeline"
DEFAULT_TAG = "0.1.0"

# image name -> the `recap` subcommand its ENTRYPOINT runs
IMAGES: dict[str, tuple[str, ...]] = {
    "recap-validate": ("validate",),
    "recap-convert": ("convert",),
    "recap-train": ("train",),
    "recap-evaluate": ("evaluate",),
    "recap-launch": ("launch",),
}

# image name -> the pipeline parameter holding the whole image reference
IMAGE_PARAMETERS: dict[str, str] = {
    "recap-validate": "validate_image",
    "recap-convert": "convert_image",
    "recap-train": "train_image",
    "recap-evaluate": "evaluate_image",
    "recap-launch": "launch_image",
}


@dataclass(frozen=True)
class ImageSettings:
    registry: str = os.environ.get("RECAP_IMAGE_REGISTRY", DEFAULT_REGISTRY)
    tag: str = os.environ.get("RECAP_IMAGE_TAG", DEFAULT_TAG)

    def image(self, name: str) -> str:
        if name not in IMAGES:
            raise KeyError(f"unknown image {name!r}; known: {', '.join(IMAGES)}")
        return f"{self.registry.rstrip('/')}/{name}:{self.tag}"

    def parameter_defaults(self) -> dict[str, str]:
        """Pipeline parameter name -> default image reference."""
        return {parameter: self.image(name) for name, parameter in IMAGE_PARAMETERS.items()}
