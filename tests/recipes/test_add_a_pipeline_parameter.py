"""Recipe: add a pipeline parameter. The DAG's signature and the component that uses it are the
whole change: the compiled pipeline has the parameter, wired to the task, and the CLI accepts it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.recipes.recipes import RECIPES, changed_files, copy_of, insert

NAME = "not_blessed_note"


def add_a_pipeline_parameter(pipeline) -> None:
    """The recipe: a typed parameter with a default, passed to the not-blessed step, which prints it."""
    insert(pipeline / "dag.py", '        cache_key: str = "",\n', f'        {NAME}: str = "",\n')
    insert(pipeline / "dag.py", 'ops.not_blessed(reason=evaluated.outputs["reason"]', f", note={NAME}")
    insert(pipeline / "kfp_components.py", "def not_blessed(reason: str", ", note: str")
    insert(pipeline / "kfp_components.py", '    print(f"model not blessed, not pushed: {reason}")\n',
           "    if note:\n        print(note)\n")


COMPILE = """
import json, sys
from pipeline.cli import _parameter_types, parse_params
from pipeline.dag import compile_pipeline
compile_pipeline(sys.argv[1])
print(json.dumps(parse_params([sys.argv[2]], _parameter_types())))
"""


@pytest.mark.integration
def test_a_new_parameter_reaches_the_compiled_pipeline_and_the_cli(tmp_path):
    copy = copy_of(tmp_path / "repo", "components", "pipeline", "configs")
    add_a_pipeline_parameter(copy / "pipeline")
    assert changed_files(copy, "components", "pipeline", "configs") == sorted(RECIPES["Add a pipeline parameter"])
    done = subprocess.run([sys.executable, "-c", COMPILE, str(tmp_path / "p.yaml"), f"{NAME}=call the on-call"],
                          cwd=copy, env={"PYTHONPATH": str(copy), "PATH": ""}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {NAME: "call the on-call"}
    spec = yaml.safe_load((tmp_path / "p.yaml").read_text())
    assert spec["root"]["inputDefinitions"]["parameters"][NAME] == {"defaultValue": "", "isOptional": True,
                                                                     "parameterType": "STRING"}
    tasks = [t for c in spec["components"].values() for t in c.get("dag", {}).get("tasks", {}).values()]
    note = next(t for t in tasks if t["taskInfo"]["name"] == "not-blessed")["inputs"]["parameters"]["note"]
    assert note["componentInputParameter"].endswith(NAME)
