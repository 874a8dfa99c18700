"""The oracle under an evaluation protocol: the best any model could score on the eval rows.

`oracle.json` scores the true probabilities of every generated row, each user's and author's
hidden effect included. A model evaluated on a split cannot know the hidden effect of an ID it
never saw in training (under the default user split, no eval user is in training). So this
oracle recomputes the true logits of the raw rows from the world (the generator is a pure
function of the schema), applies the same split as convert (`eval_mask` on the split key),
and for each eval row:
- keeps the user's / author's effect when that ID occurs in a training row (a perfect model
  could have learned it),
- integrates it out over its prior N(0, I) otherwise (Gauss-Hermite quadrature; a nested
  label and its parent share the effect, so their product is integrated jointly in 2-D).
The result is the Bayes-optimal prediction given what the training split reveals: calibrated
in expectation, but with few heavy users in an eval split their realised effects can still
move the eval-set calibration (docs/quality.md shows by how much).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from components.common import storage
from components.common.errors import DataError
from components.common.manifest import read_manifest
from components.common.raw_inputs import list_raw_inputs
from components.common.schema import Role, Schema, load_schema
from components.datagen.oracle import OracleAccumulator
from components.datagen.rows import SignalInputs, label_logits, rank_to_id, sigmoid, signed_log1p
from components.datagen.world import IdSpace, World, build_world

QUADRATURE_NODES_1D = 40
QUADRATURE_NODES_2D = 16


@dataclass(frozen=True)
class EvalProtocol:
    """How convert splits rows (convert.ConvertSettings' split_key and eval_fraction)."""

    split_key: str = "user_id"
    eval_fraction: float = 0.1

    def to_json(self) -> dict[str, Any]:
        return {"split_key": self.split_key, "eval_fraction": self.eval_fraction}


class RankLookup:
    """Generated 62-bit ID -> its rank in the world's ID space (the generator's inverse)."""

    def __init__(self, space: IdSpace, what: str) -> None:
        ids = rank_to_id(space, np.arange(space.size))
        self.order = np.argsort(ids)
        self.sorted_ids = ids[self.order]
        self.what = what

    def __call__(self, ids: np.ndarray, uri: str) -> np.ndarray:
        pos = np.searchsorted(self.sorted_ids, ids).clip(0, len(self.sorted_ids) - 1)
        found = self.sorted_ids[pos] == ids
        if not found.all():
            bad = ids[~found][0]
            raise DataError(f"{uri}: {self.what} {bad} is not an ID of the generator's world "
                            f"(the eval oracle needs data made by `recap data generate`)")
        return self.order[pos]


def _column(table: Any, name: str) -> np.ndarray:
    column = table.column(name).combine_chunks()
    if hasattr(column.type, "list_size"):
        return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)
    return column.to_numpy(zero_copy_only=False)


def _gauss_hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights for E[f(e)], e ~ N(0, 1)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(n)
    return nodes, weights / weights.sum()


def expected_probabilities(logits: np.ndarray, covariance: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """E[true probability] when a Gaussian offset N(0, covariance) [L, L] is added to `logits` [R, L].

    A label with a parent (`parent[l] >= 0`) is the product of its own and its parent's
    probabilities, integrated jointly because their offsets are correlated.
    """
    if not covariance.any():
        own = sigmoid(logits)
        out = own.copy()
        for index in np.flatnonzero(parent >= 0):
            out[:, index] = own[:, index] * own[:, parent[index]]
        return out
    nodes, weights = _gauss_hermite(QUADRATURE_NODES_1D)
    sigma = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    out = np.einsum("rlk,k->rl", sigmoid(logits[:, :, None] + sigma[None, :, None] * nodes), weights)
    nodes2, weights2 = _gauss_hermite(QUADRATURE_NODES_2D)
    grid = np.stack(np.meshgrid(nodes2, nodes2, indexing="ij"), axis=-1).reshape(-1, 2)
    grid_weights = np.outer(weights2, weights2).ravel()
    for index in np.flatnonzero(parent >= 0):
        pair = [index, parent[index]]
        values, vectors = np.linalg.eigh(covariance[np.ix_(pair, pair)])
        offsets = grid @ (vectors * np.sqrt(np.clip(values, 0.0, None))).T  # [K, 2]
        child = sigmoid(logits[:, index, None] + offsets[None, :, 0])
        parent_p = sigmoid(logits[:, pair[1], None] + offsets[None, :, 1])
        out[:, index] = (child * parent_p) @ grid_weights
    return out


EvalMask = Callable[[np.ndarray, float], np.ndarray]  # (split keys, eval fraction) -> True where eval


def _split_column(schema: Schema, split_key: str) -> str:
    for spec in schema.features:
        if split_key in (spec.column, spec.name, spec.feature) and spec.is_scalar:
            return spec.column
    raise DataError(f"split key {split_key!r} is not a scalar column of schema {schema.name}")


def _id_columns(schema: Schema) -> tuple[str, str]:
    ids = {("author" if "author" in s.name else "user" if "user" in s.name else "tweet"): s.column
           for s in schema.ids}
    return ids["user"], ids["author"]


def _signal_inputs(world: World, schema: Schema, table: Any, users: np.ndarray,
                   authors: np.ndarray) -> SignalInputs:
    continuous = _column(table, schema.group(Role.CONTINUOUS).column).astype(np.float32)
    binary = _column(table, schema.group(Role.BINARY).column)
    embeddings = [_column(table, spec.column).astype(np.float32) for spec in schema.embeddings]
    return SignalInputs(users, authors, signed_log1p(continuous[:, world.signal_cont]),
                        binary[:, world.signal_bin].astype(np.float32), embeddings)


def _labels(schema: Schema, table: Any) -> np.ndarray:
    return np.stack([_column(table, spec.column) for spec in schema.labels], axis=1).astype(np.int8)


def eval_oracle(raw_uri: str, schema: Schema | str, protocol: EvalProtocol, eval_mask: EvalMask) -> dict[str, Any]:
    """Metrics of the best predictions a model trained on the train split could make on the eval split.

    `eval_mask` is the split convert applies (`components.convert.plan.eval_mask`; passed in, as
    a step does not import another step). Two streaming passes over the raw Parquet: which users
    and authors occur in training rows, then the eval rows' expected true probabilities.
    """
    schema = load_schema(schema) if isinstance(schema, str) else schema
    split_column = _split_column(schema, protocol.split_key)

    def in_eval(table: Any) -> np.ndarray:
        return eval_mask(_column(table, split_column).astype(np.int64), protocol.eval_fraction)
    world = build_world(schema)
    try:
        shift = float(read_manifest(raw_uri)[0].extra.get("shift", 0.0))
    except Exception:  # no manifest (a bare Parquet directory): reference distribution
        shift = 0.0
    user_column, author_column = _id_columns(schema)
    user_rank, author_rank = RankLookup(world.users, "user_id"), RankLookup(world.authors, "author_id")
    files = list_raw_inputs(raw_uri).files
    seen_users = np.zeros(world.users.size, dtype=bool)
    seen_authors = np.zeros(world.authors.size, dtype=bool)
    split_columns = sorted({user_column, author_column, split_column})
    for uri in files:
        with storage.open_read(uri) as handle:
            table = pq.read_table(handle, columns=split_columns)
        train = ~in_eval(table)
        seen_users[user_rank(_column(table, user_column)[train], uri)] = True
        seen_authors[author_rank(_column(table, author_column)[train], uri)] = True

    oracle = OracleAccumulator([spec.name for spec in schema.labels])
    # The second pass reads what the true logits and the labels need, not the discrete features.
    columns = sorted({*split_columns, schema.group(Role.CONTINUOUS).column, schema.group(Role.BINARY).column,
                      *(spec.column for spec in schema.embeddings), *(spec.column for spec in schema.labels)})
    w_user, w_author = world.w_user, world.w_author
    unseen_user_rows = unseen_author_rows = 0
    for uri in files:
        with storage.open_read(uri) as handle:
            parquet = pq.ParquetFile(handle)
            for group in range(parquet.num_row_groups):
                table = parquet.read_row_group(group, columns=columns)
                keep = in_eval(table)
                if not keep.any():
                    continue
                table = table.filter(keep)
                users = user_rank(_column(table, user_column), uri)
                authors = author_rank(_column(table, author_column), uri)
                logits = label_logits(world, _signal_inputs(world, schema, table, users, authors), shift)
                known_user, known_author = seen_users[users], seen_authors[authors]
                unseen_user_rows += int((~known_user).sum())
                unseen_author_rows += int((~known_author).sum())
                probabilities = np.empty_like(logits)
                for ku in (True, False):
                    for ka in (True, False):
                        rows = (known_user == ku) & (known_author == ka)
                        if not rows.any():
                            continue
                        z = logits[rows]
                        covariance = np.zeros((z.shape[1], z.shape[1]))
                        if not ku:  # the effect was added by label_logits: take it back out
                            z = z - world.user_effect[users[rows]] @ w_user.T
                            covariance += w_user @ w_user.T
                        if not ka:
                            z = z - world.author_effect[authors[rows]] @ w_author.T
                            covariance += w_author @ w_author.T
                        probabilities[rows] = expected_probabilities(z, covariance, world.nested_parent)
                oracle.add(_labels(schema, table), probabilities)
    document = oracle.to_json(schema.name, -1, schema.task_names, shift)
    document.pop("seed")
    document["protocol"] = protocol.to_json()
    document["unseen_user_share"] = unseen_user_rows / max(oracle.count, 1)
    document["unseen_author_share"] = unseen_author_rows / max(oracle.count, 1)
    for name, accumulator in zip(oracle.labels, oracle.accumulators, strict=True):
        metrics = accumulator.compute()
        target = document["tasks"] if name in document["tasks"] else document["other_labels"]
        target[name]["calibration"] = None if not np.isfinite(metrics.calibration) else metrics.calibration
    return document
