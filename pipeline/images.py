"""The one place that names container images. Registry and tag are overridable at compile time
(`recap pipeline compile --registry ... --tag ...`) or through RECAP_IMAGE_REGISTRY / RECAP_IMAGE_TAG.
docker/ builds exactly these images (tests/docker checks both sides agree).
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


@dataclass(frozen=True)
class ImageSettings:
    registry: str = os.environ.get("RECAP_IMAGE_REGISTRY", DEFAULT_REGISTRY)
    tag: str = os.environ.get("RECAP_IMAGE_TAG", DEFAULT_TAG)

    def image(self, name: str) -> str:
        if name not in IMAGES:
            raise KeyError(f"unknown image {name!r}; known: {', '.join(IMAGES)}")
        return f"{self.registry.rstrip('/')}/{name}:{self.tag}"
