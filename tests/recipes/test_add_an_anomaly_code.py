"""Recipe: add an anomaly code. Its code, its rule and (for a threshold) its config field are the
whole change: the validator reports it, the report shows it, severity overrides apply to it."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.common.schema import load_schema
from tests.convert.rawdata import make_table
from tests.recipes.recipes import RECIPES, changed_files, copy_of, insert

CODE = "dominant_id"


def add_an_anomaly_code(components) -> None:
    """The recipe: a code with its default severity and meaning, a threshold, a rule."""
    validate = components / "validate"
    insert(validate / "anomalies.py", "CODES: dict[str, tuple[str, str]] = {\n",
           f'    "{CODE}": (WARNING, "one ID covers more than max_top_id_share of an ID column (a join default?)"),\n')
    insert(validate / "config.py", "class ValidationConfig(StrictModel):\n",
           "    # Share of an ID column's rows one ID may cover before `dominant_id` fires.\n"
           "    max_top_id_share: float = Field(default=0.5, gt=0, le=1)\n")
    insert(validate / "rules.py", "def statistics_rules(", f'''def dominant_id_rule(column: str, stats: dict[str, Any], config: ValidationConfig) -> list[Anomaly]:
    rows = stats["summary"]["rows"] - stats["summary"]["null_rows"]
    top = stats["top_ids"][:1]
    if not rows or not top or top[0]["count"] / rows <= config.max_top_id_share:
        return []
    share = top[0]["count"] / rows
    return [make("{CODE}", column, top[0]["count"], f"column {{column}}: ID {{top[0]['id']}} is {{share:.0%}} of the rows",
                 config.severity, details={{"id": top[0]["id"], "share": share}})]


''', after=False)
    insert(validate / "rules.py", "        out += constant_rule(column, stats, config)\n",
           '        if stats["kind"] == "id":\n            out += dominant_id_rule(column, stats, config)\n')


VALIDATE = """
import json, sys
from components.common.schema import load_schema
from components.validate import load_validation_config, run
config = load_validation_config(None).model_copy(update={"severity": json.loads(sys.argv[3])})
result = run(sys.argv[1], load_schema("local"), sys.argv[2], config)
print(json.dumps([[a.code, a.severity, a.column] for a in result.anomalies]))
"""


@pytest.mark.integration
def test_a_new_anomaly_code_is_reported_with_only_the_recipe_files_changed(tmp_path):
    copy = copy_of(tmp_path / "repo", "components", "configs")
    add_an_anomaly_code(copy / "components")
    assert changed_files(copy, "components", "configs") == sorted(RECIPES["Add an anomaly code"])
    table = make_table(load_schema("local"), 400)
    authors = table.column("author_id").to_numpy().copy()
    authors[:300] = 7  # three quarters of the rows from one author
    raw = tmp_path / "raw"
    raw.mkdir()
    pq.write_table(table.set_column(table.schema.get_field_index("author_id"), "author_id", pa.array(authors)),
                   raw / "part-0.parquet")

    def anomalies(severity: dict) -> list:
        done = subprocess.run([sys.executable, "-c", VALIDATE, str(raw), str(tmp_path / "out"), json.dumps(severity)],
                              cwd=copy, env={"PYTHONPATH": str(copy), "PATH": ""}, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return [a for a in json.loads(done.stdout.splitlines()[-1]) if a[0] == CODE]

    assert anomalies({}) == [[CODE, "warning", "author_id"]]
    assert anomalies({CODE: "error"}) == [[CODE, "error", "author_id"]]
    assert CODE in (tmp_path / "out" / "report.html").read_text()
