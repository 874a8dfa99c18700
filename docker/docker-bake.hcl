# Builds every recap-pipeline image: `make images`, i.e.
#   docker buildx bake -f docker/docker-bake.hcl            build all six
#   docker buildx bake -f docker/docker-bake.hcl --push     build and push all six
#   docker buildx bake -f docker/docker-bake.hcl train      build one
# Run it from the repository root (the build context). Registry and tag use the same
# variables as pipeline/images.py, so an image built with
#   RECAP_IMAGE_REGISTRY=europe-docker.pkg.dev/my-project/recap RECAP_IMAGE_TAG=0.1.1 make images
# is the one a pipeline compiled in the same environment refers to.

variable "RECAP_IMAGE_REGISTRY" {
  default = "ghcr.io/recap-pipeline"
}

variable "RECAP_IMAGE_TAG" {
  default = "0.1.0"
}

# Commit the images are built from (OCI revision label), e.g. REVISION=$(git rev-parse HEAD).
variable "REVISION" {
  default = "unknown"
}

group "default" {
  targets = ["validate", "convert", "train", "train-cpu", "evaluate", "launch"]
}

# Shared settings; not built on its own.
target "_common" {
  context    = "."
  dockerfile = "docker/Dockerfile"
  # The CUDA fbgemm-gpu wheels exist for x86-64 only.
  platforms  = ["linux/amd64"]
  args = {
    VERSION  = "${RECAP_IMAGE_TAG}"
    REVISION = "${REVISION}"
    CREATED  = timestamp()
  }
}

target "validate" {
  inherits = ["_common"]
  target   = "validate"
  tags     = ["${RECAP_IMAGE_REGISTRY}/recap-validate:${RECAP_IMAGE_TAG}"]
}

target "convert" {
  inherits = ["_common"]
  target   = "convert"
  tags     = ["${RECAP_IMAGE_REGISTRY}/recap-convert:${RECAP_IMAGE_TAG}"]
}

target "train" {
  inherits = ["_common"]
  target   = "train"
  tags     = ["${RECAP_IMAGE_REGISTRY}/recap-train:${RECAP_IMAGE_TAG}"]
}

# Training without a GPU (CPU torch, gloo): what a laptop or a CPU-only cluster runs.
target "train-cpu" {
  inherits = ["_common"]
  target   = "train-cpu"
  tags     = ["${RECAP_IMAGE_REGISTRY}/recap-train-cpu:${RECAP_IMAGE_TAG}"]
}

target "evaluate" {
  inherits = ["_common"]
  target   = "evaluate"
  tags     = ["${RECAP_IMAGE_REGISTRY}/recap-evaluate:${RECAP_IMAGE_TAG}"]
}

target "launch" {
  inherits = ["_common"]
  target   = "launch"
  tags     = ["${RECAP_IMAGE_REGISTRY}/recap-launch:${RECAP_IMAGE_TAG}"]
}
