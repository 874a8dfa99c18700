"""The failing rank's one-line error, handed from the trainer to whoever started torchrun.

torchrun ends a failed job with its own block (the agent's traceback and `ChildFailedError`),
which names the first rank to exit and its exit code but not why it failed, and it exits 1
whatever the rank's code was. So a launcher that wants the rank's own one line and exit code
(`recap train`, the local backend) names a directory in RECAP_RANK_ERRORS_DIR; every rank that
stops on an error writes `rank-<r>.json` there instead of printing it, and the launcher shows the
root cause: the first rank whose error is its own (not "rank N failed", which only relays
another rank's failure), else the first to fail. Without the variable (a PyTorchJob pod) a rank
prints its line as before.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from components.common.errors import RecapError

ENV = "RECAP_RANK_ERRORS_DIR"
_RELAYED = re.compile(r"\brank \d+ failed\b")  # components.train.ranks / distributed: another rank's failure


@dataclass(frozen=True)
class RankError:
    rank: int
    exit_code: int
    message: str
    time: float
    unexpected: bool = False  # not one of our errors (a bug, or a library error we do not map)

    @property
    def relayed(self) -> bool:
        return bool(_RELAYED.search(self.message))


class RankFailed(RecapError):
    """A training rank stopped on an error; carries that rank's message and exit code."""

    def __init__(self, cause: RankError) -> None:
        super().__init__(cause.message)
        self.exit_code = cause.exit_code
        self.cause = cause


def report(exit_code: int, message: str, unexpected: bool = False) -> bool:
    """Write this rank's error for the launcher; False when no launcher asked for it (then print it)."""
    directory = os.environ.get(ENV)
    if not directory:
        return False
    rank = int(os.environ.get("RANK", "0"))
    error = RankError(rank, exit_code, message.splitlines()[0] if message else "", time.time(), unexpected)
    path = Path(directory) / f"rank-{rank}.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(error)))
    os.replace(temporary, path)  # the launcher never reads half a report
    return True


def reported(directory: str | os.PathLike[str]) -> list[RankError]:
    """Every rank's report in `directory`, first failure first."""
    errors = [RankError(**json.loads(path.read_text())) for path in Path(directory).glob("rank-*.json")]
    return sorted(errors, key=lambda error: (error.time, error.rank))


def root_cause(errors: list[RankError]) -> RankError | None:
    """The error to show: a rank's own error before one relayed from another rank, ours before an unexpected one."""
    return min(errors, key=lambda e: (e.relayed, e.unexpected, e.time, e.rank), default=None)
