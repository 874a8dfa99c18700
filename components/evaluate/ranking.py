"""The product's combined ranking score and its per-user grouped AUROC (GAUC), in bounded memory.

Score = sum over tasks of engagement weight * probability, as the product combines the
heads (docs/model.md); the engagement value of an impression is the same sum over its labels.

GAUC here is, per user, the concordance between score and engagement value: over pairs of
the user's impressions with different values, the share where the higher-valued one got the
higher score (ties in score count 1/2). With 0/1 values it is exactly that user's AUROC; with
graded values it rewards putting a reply above a fav, as the weights intend. Users are
averaged weighted by their impression count (the usual GAUC weighting); users whose
impressions all have one value carry no ranking signal and are skipped. Example weights do
not enter GAUC.

Bounded memory: GAUC needs all of a user's impressions together, and the eval data is not
sorted by user. We keep every impression of a deterministic hash sample of users: a user is
kept while the low `level` bits of hash(user_id) are zero. When the kept impressions exceed
`max_examples` the level rises (halving the sample) and dropped users' rows are freed.
Every kept user is complete, so the estimate is GAUC over a uniform random subset of users;
below the budget it is exact. Users with more than `max_examples_per_user` impressions are
scored on an evenly spaced subset of them (their pair matrix would be quadratic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from components.common.hashing import splitmix64
from components.metrics.binary import weighted_sum

PAIR_BLOCK_ELEMENTS = 1 << 19  # users x n x n pair cells evaluated per vectorized step


def engagement_value(labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[B, T] labels x [T] engagement weights -> [B] value of each impression."""
    return np.asarray(labels, dtype=np.float64) @ np.asarray(weights, dtype=np.float64)


def ranking_score(probabilities: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[B, T] probabilities x [T] engagement weights -> [B] score the product ranks by."""
    return np.asarray(probabilities, dtype=np.float64) @ np.asarray(weights, dtype=np.float64)


@dataclass(frozen=True)
class GroupedAUROC:
    gauc: float
    users: int  # users that entered the average (at least two distinct values)
    sampled_users: int  # users kept by the hash sample
    sampled_examples: int
    sample_fraction: float  # 2**-level: share of users kept
    capped_users: int  # users scored on a subset of their impressions


class GroupedAUROCAccumulator:
    """Keeps (user, score, value) of a hash sample of users within `max_examples` rows."""

    def __init__(self, max_examples: int = 1_000_000, max_examples_per_user: int = 1024) -> None:
        if max_examples < 1 or max_examples_per_user < 2:
            raise ValueError("max_examples must be >= 1 and max_examples_per_user >= 2")
        self.max_examples = max_examples
        self.max_examples_per_user = max_examples_per_user
        self.level = 0
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (user, score, value)
        self._rows = 0

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for chunk in self._chunks for a in chunk)

    def _kept(self, users: np.ndarray) -> np.ndarray:
        return (splitmix64(users) & np.uint64((1 << self.level) - 1)) == 0

    def update(self, user_ids: np.ndarray, scores: np.ndarray, values: np.ndarray) -> None:
        users = np.asarray(user_ids, dtype=np.int64).reshape(-1)
        keep = self._kept(users)
        if keep.any():
            chunk = (users[keep], np.asarray(scores, dtype=np.float64).reshape(-1)[keep],
                     np.asarray(values, dtype=np.float64).reshape(-1)[keep])
            self._chunks.append(chunk)
            self._rows += len(chunk[0])
        while self._rows > self.max_examples and self.level < 63:
            self.level += 1
            masks = [self._kept(c[0]) for c in self._chunks]
            self._chunks = [(c[0][m], c[1][m], c[2][m]) for c, m in zip(self._chunks, masks, strict=True) if m.any()]
            self._rows = sum(len(c[0]) for c in self._chunks)

    def compute(self) -> GroupedAUROC:
        fraction = 2.0 ** -self.level
        if not self._chunks:
            return GroupedAUROC(float("nan"), 0, 0, 0, fraction, 0)
        users = np.concatenate([c[0] for c in self._chunks])
        scores = np.concatenate([c[1] for c in self._chunks])
        values = np.concatenate([c[2] for c in self._chunks])
        order = np.argsort(users, kind="stable")  # stable: a user's rows stay in arrival order
        users, scores, values = users[order], scores[order], values[order]
        starts = np.concatenate(([0], np.nonzero(users[1:] != users[:-1])[0] + 1))
        sizes = np.diff(np.append(starts, len(users)))
        total_auc, total_weight, counted = 0.0, 0.0, 0
        capped = int((sizes > self.max_examples_per_user).sum())
        eligible = sizes >= 2
        for width, group in _size_buckets(starts[eligible], sizes[eligible], self.max_examples_per_user):
            auc, ok = _concordance_block(scores, values, group, width, self.max_examples_per_user)
            weight = np.minimum(group[:, 1], self.max_examples_per_user).astype(np.float64)
            total_auc += weighted_sum(auc[ok], weight[ok])
            total_weight += float(weight[ok].sum())
            counted += int(ok.sum())
        gauc = total_auc / total_weight if total_weight > 0 else float("nan")
        return GroupedAUROC(gauc, counted, len(starts), len(users), fraction, capped)


def _size_buckets(starts: np.ndarray, sizes: np.ndarray, cap: int):
    """Users grouped by padded width (next power of two), in blocks of bounded pair cells."""
    widths = np.minimum(sizes, cap)
    padded = np.maximum(2, 2 ** np.ceil(np.log2(np.maximum(widths, 2)))).astype(np.int64)
    for width in np.unique(padded):
        members = np.nonzero(padded == width)[0]
        per_block = max(1, PAIR_BLOCK_ELEMENTS // int(width * width))
        for begin in range(0, len(members), per_block):
            idx = members[begin:begin + per_block]
            yield int(width), np.stack([starts[idx], sizes[idx]], axis=1)


def _concordance_block(scores: np.ndarray, values: np.ndarray, group: np.ndarray,
                       width: int, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user concordance for users padded to `width`; returns (auc, has_pairs)."""
    n_users = len(group)
    starts, sizes = group[:, 0], np.minimum(group[:, 1], cap)
    offsets = np.arange(width)
    valid = offsets[None, :] < sizes[:, None]
    positions = np.where(valid, starts[:, None] + offsets[None, :], 0)
    for row in np.nonzero(group[:, 1] > cap)[0]:  # evenly spaced subset of a very active user
        positions[row, :cap] = starts[row] + np.linspace(0, group[row, 1] - 1, cap).round().astype(np.int64)
    s = np.where(valid, scores[positions], 0.0)
    v = np.where(valid, values[positions], -math.inf)  # padding never wins a pair...
    both = valid[:, :, None] & valid[:, None, :]  # ...and never enters one
    higher_value = (v[:, :, None] > v[:, None, :]) & both
    concordant = (higher_value & (s[:, :, None] > s[:, None, :])).sum(axis=(1, 2)) + \
        0.5 * (higher_value & (s[:, :, None] == s[:, None, :])).sum(axis=(1, 2))
    pairs = higher_value.sum(axis=(1, 2))
    ok = pairs > 0
    auc = np.divide(concordant, pairs, out=np.full(n_users, np.nan), where=ok)
    return auc, ok
