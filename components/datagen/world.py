"""The hidden "world" behind the synthetic data: feature marginals, ID effects and label weights.

The world depends only on the schema (never on the sampling seed), so data generated with
different seeds comes from the same distribution and the same true model: a model trained on
seed 1 can be evaluated on seed 2, and validation must not see drift between them. The
`shift` knob (see `rows.sample_rows`) moves the marginals on purpose.

Label logits are smooth functions of what the model sees (sign*log1p of continuous
features, binary features, TwHIN embeddings) plus per-user and per-author effects, so the
Heavy Ranker can learn them and the ID embedding tables are worth learning.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from statistics import NormalDist

import numpy as np

from components.common.schema import Role, Schema
from components.datagen.rows import (
    KIND_COUNT,
    KIND_RATIO,
    KIND_SIGNED,
    LATENT_DIM,
    label_logits,
    sigmoid,
    signal_inputs,
)

# Fixed seed of the world; the `--seed` of a run only drives row sampling.
WORLD_SEED = 20230331

# Marginal positive rates, roughly those of home-timeline engagement data.
BASE_RATES: dict[str, float] = {
    "is_favorited": 0.07,
    "is_retweeted": 0.012,
    "is_replied": 0.012,
    "is_replied_reply_engaged_by_author": 0.002,
    "is_good_clicked_convo_desc_favorited_or_replied": 0.02,
    "is_good_clicked_convo_desc_v2": 0.03,
    "is_profile_clicked_and_profile_engaged": 0.006,
    "is_negative_feedback_v2": 0.004,
    "is_report_tweet_clicked": 0.0008,
    "is_video_playback_50": 0.05,
    "is_bookmarked": 0.004,
    "is_shared": 0.003,
    "is_tweet_detail_dwelled_15_sec": 0.12,
}
DEFAULT_BASE_RATE = 0.02
# A nested label is its parent AND an extra Bernoulli: it can only be 1 when the parent is.
NESTED_LABELS: dict[str, str] = {"is_replied_reply_engaged_by_author": "is_replied"}
# Negative engagements share the common propensity with the opposite sign.
NEGATIVE_LABELS = frozenset({"is_negative_feedback_v2", "is_report_tweet_clicked"})

# Standard deviation of each logit component (before task mixing), in logit units.
SIGNAL_SCALES = {"continuous": 0.85, "binary": 0.4, "embedding": 0.55, "user": 0.5, "author": 0.35}
# How much of each task's weights is shared by all tasks (makes the tasks correlated).
SHARED_WEIGHT = 0.6
MAX_SIGNAL_CONTINUOUS = 24
MAX_SIGNAL_BINARY = 8
# The original trainer keeps the first 2117 continuous and 59 binary values: signal lives there.
SIGNAL_CONTINUOUS_PREFIX = 128
SIGNAL_BINARY_PREFIX = 32
ID_UNIVERSES = {"local": (2_000, 800, 200_000), "prod": (100_000, 20_000, 10_000_000)}
ZIPF_EXPONENT = 1.1


@dataclass(frozen=True)
class IdSpace:
    """A Zipf-popular ID universe; rank r (0 = most popular) maps to a stable 62-bit ID."""

    size: int
    exponent: float
    salt: int


@dataclass(frozen=True)
class World:
    schema_name: str
    # continuous group, one entry per element
    cont_kind: np.ndarray  # int8
    cont_loc: np.ndarray
    cont_scale: np.ndarray
    cont_zero_z: np.ndarray  # latent threshold below which the value is exactly 0 (-inf: never)
    cont_loading: np.ndarray  # [LATENT_DIM, C]
    cont_shift: np.ndarray  # direction of `shift`, per element
    cont_nonfinite_p: np.ndarray
    # binary group
    bin_logit: np.ndarray
    bin_loading: np.ndarray  # [LATENT_DIM, B]
    bin_shift: np.ndarray
    # discrete group: values 0..card-1, Zipf-like
    disc_card: np.ndarray
    # IDs and their hidden effects
    users: IdSpace
    authors: IdSpace
    tweets: IdSpace
    user_latent: np.ndarray  # [U, LATENT_DIM]
    author_latent: np.ndarray  # [A, LATENT_DIM]
    user_effect: np.ndarray  # [U, 2]
    author_effect: np.ndarray  # [A, 2]
    # embeddings: name -> (side, projection [LATENT_DIM, dim]); side is "user" or "author"
    emb_side: tuple[str, ...]
    emb_proj: tuple[np.ndarray, ...]
    emb_shift: tuple[np.ndarray, ...]
    # labels, in schema label order
    label_names: tuple[str, ...]
    signal_cont: np.ndarray  # indices of continuous elements the labels depend on
    signal_bin: np.ndarray
    g_mean: np.ndarray  # mean / std of sign*log1p(x) on the signal elements (standardizes weights)
    g_std: np.ndarray
    w_cont: np.ndarray  # [L, S_c]
    w_bin: np.ndarray  # [L, S_b]
    w_emb: tuple[np.ndarray, ...]  # per embedding [L, dim]
    w_user: np.ndarray  # [L, 2]
    w_author: np.ndarray  # [L, 2]
    base_logit: np.ndarray  # [L], calibrated so the marginal rates match BASE_RATES
    nested_parent: np.ndarray  # [L] index of the parent label, or -1


def _mixed_weights(rng: np.random.Generator, signs: np.ndarray, width: int, scale: float) -> np.ndarray:
    """Per-label weight vectors sharing one common direction (with the label's sign), norm ~`scale`."""
    shared = rng.standard_normal(width)
    own = rng.standard_normal((len(signs), width))
    mixed = signs[:, None] * np.sqrt(SHARED_WEIGHT) * shared + np.sqrt(1 - SHARED_WEIGHT) * own
    return scale * mixed / np.sqrt(width)


def _id_spaces(schema: Schema) -> tuple[IdSpace, IdSpace, IdSpace]:
    users, authors, tweets = ID_UNIVERSES["prod" if schema.name == "prod" else "local"]
    return (IdSpace(users, ZIPF_EXPONENT, 0x5EED01), IdSpace(authors, ZIPF_EXPONENT, 0x5EED02),
            IdSpace(tweets, 0.8, 0x5EED03))


@functools.lru_cache(maxsize=4)
def build_world(schema: Schema) -> World:
    """The world for a schema: deterministic, independent of the run's seed."""
    rng = np.random.default_rng([WORLD_SEED, len(schema.name), *schema.name.encode()])
    n_cont = schema.group(Role.CONTINUOUS).length
    n_bin = schema.group(Role.BINARY).length
    n_disc = schema.group(Role.DISCRETE).length

    kind = rng.choice([KIND_COUNT, KIND_SIGNED, KIND_RATIO], size=n_cont, p=[0.55, 0.2, 0.25]).astype(np.int8)
    zero_share = np.where(kind == KIND_SIGNED, 0.0, rng.uniform(0.1, 0.85, n_cont))
    inv = NormalDist().inv_cdf
    zero_z = np.array([inv(p) if p > 0 else -np.inf for p in zero_share])
    loc = np.select([kind == KIND_COUNT, kind == KIND_SIGNED], [rng.uniform(0.5, 5.0, n_cont),
                    rng.normal(0, 2.0, n_cont)], rng.normal(0, 1.0, n_cont))
    scale = np.select([kind == KIND_COUNT, kind == KIND_SIGNED], [rng.uniform(0.6, 2.0, n_cont),
                      np.exp(rng.normal(0, 1.5, n_cont))], rng.uniform(0.5, 1.5, n_cont))
    loading = rng.standard_normal((LATENT_DIM, n_cont)) * rng.uniform(0.2, 0.6, n_cont) / np.sqrt(LATENT_DIM)
    nonfinite = np.where(rng.random(n_cont) < 0.1, rng.uniform(0.0005, 0.004, n_cont), 0.0)

    users, authors, tweets = _id_spaces(schema)
    emb_side, emb_proj, emb_shift = [], [], []
    for spec in schema.embeddings:
        side = "author" if "author" in spec.name else "user"
        emb_side.append(side)
        emb_proj.append(rng.standard_normal((LATENT_DIM, spec.length)) / np.sqrt(LATENT_DIM))
        emb_shift.append(rng.standard_normal(spec.length))

    labels = tuple(spec.name for spec in schema.labels)
    signs = np.array([-1.0 if name in NEGATIVE_LABELS else 1.0 for name in labels])
    signal_cont = np.sort(rng.choice(min(n_cont, SIGNAL_CONTINUOUS_PREFIX),
                                     min(n_cont, MAX_SIGNAL_CONTINUOUS), replace=False))
    signal_bin = np.sort(rng.choice(min(n_bin, SIGNAL_BINARY_PREFIX), min(n_bin, MAX_SIGNAL_BINARY), replace=False))
    parent = np.array([labels.index(NESTED_LABELS[n]) if NESTED_LABELS.get(n) in labels else -1 for n in labels])

    world = World(
        schema_name=schema.name,
        cont_kind=kind, cont_loc=loc, cont_scale=scale, cont_zero_z=zero_z, cont_loading=loading,
        cont_shift=rng.standard_normal(n_cont), cont_nonfinite_p=nonfinite,
        bin_logit=rng.normal(-1.2, 1.0, n_bin).clip(-3.5, 1.5),
        bin_loading=rng.standard_normal((LATENT_DIM, n_bin)) * 0.5 / np.sqrt(LATENT_DIM),
        bin_shift=rng.standard_normal(n_bin),
        disc_card=rng.integers(2, 60, n_disc),
        users=users, authors=authors, tweets=tweets,
        user_latent=rng.standard_normal((users.size, LATENT_DIM)).astype(np.float32),
        author_latent=rng.standard_normal((authors.size, LATENT_DIM)).astype(np.float32),
        user_effect=rng.standard_normal((users.size, 2)).astype(np.float32),
        author_effect=rng.standard_normal((authors.size, 2)).astype(np.float32),
        emb_side=tuple(emb_side), emb_proj=tuple(emb_proj), emb_shift=tuple(emb_shift),
        label_names=labels, signal_cont=signal_cont, signal_bin=signal_bin,
        g_mean=np.zeros(len(signal_cont)), g_std=np.ones(len(signal_cont)),
        w_cont=_mixed_weights(rng, signs, len(signal_cont), SIGNAL_SCALES["continuous"]),
        w_bin=_mixed_weights(rng, signs, len(signal_bin), SIGNAL_SCALES["binary"] * 2.2),
        w_emb=tuple(_mixed_weights(rng, signs, spec.length, SIGNAL_SCALES["embedding"] / np.sqrt(len(emb_side)))
                    for spec in schema.embeddings),
        w_user=_mixed_weights(rng, signs, 2, SIGNAL_SCALES["user"]),
        w_author=_mixed_weights(rng, signs, 2, SIGNAL_SCALES["author"]),
        base_logit=np.zeros(len(labels)), nested_parent=parent,
    )
    return _calibrate(world, rng)


def _calibrate(world: World, rng: np.random.Generator) -> World:
    """Standardize the signal features and solve each label's base logit for its target rate."""
    sample = signal_inputs(world, rng, rows=40_000, shift=0.0)
    g = sample.g_cont
    world = replace(world, g_mean=g.mean(axis=0), g_std=g.std(axis=0) + 1e-6)
    signal = label_logits(world, sample)  # base logits are still zero here
    base = np.zeros(len(world.label_names))
    # Parents first: a nested label's rate is its parent's probability times its own.
    order = sorted(range(len(world.label_names)), key=lambda i: world.nested_parent[i] >= 0)
    for index in order:
        target = BASE_RATES.get(world.label_names[index], DEFAULT_BASE_RATE)
        parent_index = world.nested_parent[index]
        factor = sigmoid(base[parent_index] + signal[:, parent_index]) if parent_index >= 0 else 1.0
        base[index] = _solve_base_logit(factor, signal[:, index], target)
    return replace(world, base_logit=base)


def _solve_base_logit(factor: np.ndarray | float, signal: np.ndarray, target: float) -> float:
    """The base logit b with mean(factor * sigmoid(b + signal)) == target.

    The mean rate is increasing in b, so the root is bracketed in [-20, 10]; Newton steps
    converge in a handful of iterations, a bisection step is taken whenever Newton would leave the
    bracket. It stops at a step below 1e-12: the root the 60-step bisection this replaces found,
    to ~1e-14, at a tenth of its cost (world building runs in every
    `recap data generate` and in every eval oracle).
    """
    lo, hi, b = -20.0, 10.0, 0.0
    for _ in range(100):
        p = sigmoid(b + signal)
        rate = float(np.mean(factor * p))
        if rate < target:
            lo = b
        else:
            hi = b
        slope = float(np.mean(factor * p * (1.0 - p)))
        step = (target - rate) / slope if slope > 0 else 0.0
        nxt = b + step
        if not lo < nxt < hi:
            nxt = (lo + hi) / 2
        if abs(nxt - b) <= 1e-12 or hi - lo <= 1e-12:  # Newton's next error: ~1e-24, below float noise
            return nxt
        b = nxt
    return b
