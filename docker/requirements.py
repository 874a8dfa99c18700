"""Write the requirement lists of the image layers from pyproject.toml (run inside the build).

`python3 requirements.py pyproject.toml OUT_DIR` writes OUT_DIR/<layer>.txt. Only these lists
(never the source tree) reach the dependency stages of docker/Dockerfile, so a layer is rebuilt
only when its own list or configs/constraints.txt changes. The project itself is not in them:
the images put its source on the path instead of installing it.
"""

import sys
import tomllib
from pathlib import Path

# layer -> (with the core dependencies?, extras). A layer stacked on another lists only what
# it adds: convert and launch sit on `pipeline`, train on `evaluate` (the shared torch layer).
LAYERS = {
    "pipeline": (True, ("validate", "pipeline")),
    "convert": (False, ("convert",)),
    "launch": (False, ("launch",)),
    "evaluate": (True, ("evaluate",)),
    "train": (True, ("train",)),
}


def main(pyproject: str, out_dir: str) -> None:
    project = tomllib.loads(Path(pyproject).read_text())["project"]
    extras = project["optional-dependencies"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for layer, (core, names) in LAYERS.items():
        lines = list(project["dependencies"]) if core else []
        for name in names:
            lines += extras[name]
        (out / f"{layer}.txt").write_text("".join(f"{line}\n" for line in sorted(set(lines))))


if __name__ == "__main__":
    main(*sys.argv[1:])
