"""Combined ranking score and per-user GAUC: exact against references, bounded memory beyond."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from components.common.hashing import splitmix64
from components.evaluate.config import DEFAULT_ENGAGEMENT_WEIGHTS
from components.evaluate.ranking import (
    GroupedAUROCAccumulator,
    engagement_value,
    ranking_score,
)


def user_stream(n: int, users: int, seed: int, graded: bool = False):
    rng = np.random.default_rng(seed)
    user = rng.integers(-(2**40), 2**40, size=users)[rng.integers(0, users, size=n)]
    score = rng.normal(size=n)
    if graded:  # a few distinct engagement values, correlated with the score
        value = np.select([score + rng.normal(size=n) > t for t in (2.0, 1.0, 0.0)], [13.5, 1.0, 0.5], -74.0)
    else:
        value = (rng.random(n) < 1 / (1 + np.exp(-(score - 1)))).astype(float)
    return user, score, value


def feed(acc: GroupedAUROCAccumulator, user, score, value, batch: int = 512) -> GroupedAUROCAccumulator:
    for start in range(0, len(user), batch):
        part = slice(start, start + batch)
        acc.update(user[part], score[part], value[part])
    return acc


def impression_weighted(user, per_user_auc) -> float:
    numerator = denominator = 0.0
    for u in np.unique(user):
        mask = user == u
        auc = per_user_auc(mask)
        if auc is not None:
            numerator += mask.sum() * auc
            denominator += mask.sum()
    return numerator / denominator


def test_gauc_with_binary_labels_is_the_impression_weighted_mean_of_per_user_auroc() -> None:
    user, score, value = user_stream(20_000, 1_500, seed=1)

    def sklearn_auc(mask):
        return roc_auc_score(value[mask], score[mask]) if len(np.unique(value[mask])) == 2 else None

    result = feed(GroupedAUROCAccumulator(), user, score, value).compute()
    assert result.gauc == pytest.approx(impression_weighted(user, sklearn_auc), abs=1e-12)
    assert result.sample_fraction == 1.0 and result.sampled_examples == len(user)


def test_gauc_with_graded_values_is_pairwise_concordance() -> None:
    user, score, value = user_stream(3_000, 300, seed=2, graded=True)

    def brute_force(mask):
        s, v = score[mask], value[mask]
        good = total = 0.0
        for i, j in itertools.permutations(range(len(s)), 2):
            if v[i] > v[j]:
                total += 1
                good += 1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0
        return good / total if total else None

    result = feed(GroupedAUROCAccumulator(), user, score, value).compute()
    assert result.gauc == pytest.approx(impression_weighted(user, brute_force), abs=1e-12)
    assert 0.5 < result.gauc < 1.0


def test_score_ties_count_half_and_a_perfect_ranking_scores_one() -> None:
    user = np.array([7, 7, 7, 7, 9, 9])
    value = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    tied = feed(GroupedAUROCAccumulator(), user, np.zeros(6), value).compute()
    assert tied.gauc == pytest.approx(0.5)
    perfect = feed(GroupedAUROCAccumulator(), user, value * 2 - 1, value).compute()
    assert perfect.gauc == pytest.approx(1.0) and perfect.users == 2


def test_memory_budget_samples_whole_users_and_stays_close() -> None:
    user, score, value = user_stream(60_000, 6_000, seed=3)
    exact = feed(GroupedAUROCAccumulator(), user, score, value).compute()
    acc = GroupedAUROCAccumulator(max_examples=8_000)
    feed(acc, user, score, value)
    sampled = acc.compute()
    assert acc.rows <= 8_000 and sampled.sample_fraction < 1
    assert sampled.sampled_examples <= 8_000
    assert sampled.gauc == pytest.approx(exact.gauc, abs=0.02)
    # Every kept user is kept whole: their row count equals the full data's.
    kept = np.unique(np.concatenate([c[0] for c in acc._chunks]))
    for u in kept[:50]:
        assert (user == u).sum() == sum(int((c[0] == u).sum()) for c in acc._chunks)


def test_sampling_is_deterministic_and_order_independent() -> None:
    user, score, value = user_stream(20_000, 3_000, seed=4)
    a = feed(GroupedAUROCAccumulator(max_examples=3_000), user, score, value).compute()
    order = np.random.default_rng(0).permutation(len(user))
    b = feed(GroupedAUROCAccumulator(max_examples=3_000), user[order], score[order], value[order]).compute()
    assert a.sample_fraction == b.sample_fraction
    assert a.gauc == pytest.approx(b.gauc, abs=1e-12)


def test_very_active_users_are_capped_not_quadratic() -> None:
    rng = np.random.default_rng(5)
    n = 5_000
    user = np.zeros(n, dtype=np.int64)
    score = rng.normal(size=n)
    value = (score + rng.normal(size=n) > 0).astype(float)
    result = feed(GroupedAUROCAccumulator(max_examples_per_user=256), user, score, value).compute()
    assert result.capped_users == 1
    assert result.gauc == pytest.approx(roc_auc_score(value, score), abs=0.05)


def test_ranking_score_and_engagement_value_use_the_published_weights() -> None:
    tasks = list(DEFAULT_ENGAGEMENT_WEIGHTS)
    weights = np.array([DEFAULT_ENGAGEMENT_WEIGHTS[t] for t in tasks])
    labels = np.zeros((2, len(tasks)))
    labels[0, tasks.index("is_replied")] = 1
    labels[1, tasks.index("is_report_tweet_clicked")] = 1
    labels[1, tasks.index("is_favorited")] = 1
    assert engagement_value(labels, weights).tolist() == [13.5, -368.5]
    probabilities = np.full((1, len(tasks)), 0.5)
    assert ranking_score(probabilities, weights)[0] == pytest.approx(0.5 * sum(DEFAULT_ENGAGEMENT_WEIGHTS.values()))


def test_user_hash_spreads_ids_across_low_bits() -> None:
    hashes = splitmix64(np.arange(100_000))
    share_kept = np.mean((hashes & np.uint64(7)) == 0)
    assert share_kept == pytest.approx(1 / 8, abs=0.01)
