"""A gs:// resume on 2 ranks sharing a node's staging directory downloads the checkpoint once.

Bytes are counted per rank around `storage.download` against the GCS emulator: the lowest rank
of the node fetches every file of the step directory, the other fetches nothing and reads the
same local copy. The separate-nodes case (a staging directory per rank, each rank fetches it)
is asserted by test_rank_faults' gcs resume test, on the runs it makes anyway.
"""

from __future__ import annotations

import pytest

from components.common import storage
from components.train import checkpoint
from tests.train.conftest import tiny_config_data
from tests.train.test_rank_faults import rank_results, run_ranks

pytestmark = pytest.mark.integration


def checkpoint_bytes(directory: str) -> int:
    return sum(storage.size(uri) for uri in storage.list_uris(directory))


def test_gcs_resume_on_one_node_downloads_once(tmp_path, gcs_bucket, monkeypatch):
    save_dir = storage.join(gcs_bucket, "run")
    monkeypatch.setenv("RECAP_SPOOL_DIR", str(tmp_path / "spool" / "node"))
    common = {"checkpoint_every_n": 4, "num_eval_steps": 0}
    first, _, _ = run_ranks(tmp_path, "first", tiny_config_data(save_dir, steps=4, **common))
    assert [done.returncode for done in first] == [0, 0], [done.stdout[-3000:] for done in first]
    second, result, _ = run_ranks(tmp_path, "second", tiny_config_data(save_dir, steps=6, **common),
                                  "--count_downloads")
    assert [done.returncode for done in second] == [0, 0], [done.stdout[-3000:] for done in second]
    results = rank_results(result)
    assert [(r["resumed_from"], r["step"]) for r in results] == [(4, 6), (4, 6)]
    resumed = checkpoint.step_dir(save_dir, 4)
    whole = checkpoint_bytes(resumed)
    fetched = [sum(n for uri, n in r["downloaded"].items() if uri.startswith(resumed + "/")) for r in results]
    assert fetched == [whole, 0]
