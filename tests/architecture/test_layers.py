"""The layers the layout promises, checked on every import of our own code (also inside functions).

  pipeline/                        KFP: the DAG and its thin component wrappers
  components/cli.py                the `recap` router
  components/<step>/               datagen validate convert train evaluate push launch data_service
  components/<contract>/           records ranker exported_model metrics trainer_command
  components/common/               schema, configs, storage, manifests, errors, logging

A module imports only from its own layer and below. A step imports common, the shared contracts,
its own package, and of another step only its `constants` module (the names of its outputs).
"""

from __future__ import annotations

import ast

import pytest

from tests.architecture.imports import REPO_ROOT, cycles, graph, imports, modules, third_party

STEPS = ("datagen", "validate", "convert", "train", "evaluate", "push", "launch", "data_service")
CONTRACTS = ("records", "ranker", "exported_model", "metrics", "trainer_command")

EDGES = graph()


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "pipeline":
        return "pipeline"
    if len(parts) == 1 or parts[1] == "cli":
        return "router"
    return parts[1] if parts[1] in STEPS + CONTRACTS + ("common",) else "unknown"


def allowed(source: str, target: str) -> bool:
    here, there = layer(source), layer(target)
    if here == "pipeline" or here == there or there == "common":
        return True
    if here == "router":
        return False  # the router names step modules by string and imports them lazily
    if here in CONTRACTS:
        return there in CONTRACTS
    if here in STEPS:
        return there in CONTRACTS or (there in STEPS and target == f"components.{there}.constants")
    return False


def test_every_module_belongs_to_a_layer():
    assert [m for m in modules() if layer(m) == "unknown"] == []


@pytest.mark.parametrize("source", sorted(m for m in EDGES if m.startswith("components")))
def test_components_import_only_their_layer_and_below(source):
    bad = sorted(t for t in EDGES[source] if not allowed(source, t))
    assert bad == [], f"{source} imports {bad}"


def test_components_never_import_pipeline_or_kfp_nor_name_them():
    for name, path in modules().items():
        if not name.startswith("components"):
            continue
        assert not {"pipeline", "kfp"} & third_party(path) and not any(
            t.startswith("pipeline") for t in EDGES[name]), name
        strings = [n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)
                   and isinstance(n.value, str)]
        assert not [s for s in strings if s.startswith("pipeline.")], f"{name} names a pipeline module"


def test_no_import_cycles():
    assert cycles(EDGES) == []


def closure(start: str) -> set[str]:
    seen, pending = set(), [start]
    while pending:
        module = pending.pop()
        if module not in seen:
            seen.add(module)
            pending.extend(EDGES.get(module, ()))
    return seen


def test_loading_an_exported_model_needs_nothing_of_training():
    reached = closure("components.exported_model.model_dir") | closure("components.evaluate.evaluator")
    assert not [m for m in reached if m.startswith("components.train")]
    # and nothing of DMP, the distributed checkpoint or the optimizers from our own modules
    imported = {module for name in reached for module, _ in imports(modules()[name])}
    assert not {"torch.distributed.checkpoint", "torchrec.distributed", "torchrec.optim"} & imported


def test_no_module_of_pipeline_shadows_a_package():
    """`kfp dsl compile --py pipeline/dag.py` puts pipeline/ first on sys.path: a module there
    named like a package (ours or one we import) would be imported in its place."""
    imported = set().union(*(third_party(path) for path in modules().values())) | {"components", "pipeline"}
    assert sorted(p.stem for p in (REPO_ROOT / "pipeline").glob("*.py") if p.stem in imported) == []
