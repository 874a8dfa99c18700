"""Sample one block of rows from the world: features, IDs, labels and their true probabilities.

Everything is vectorized over the block (numpy, no per-row Python), so a row group of the
prod schema (6000 continuous values per row) costs milliseconds per hundred rows.

`shift` moves the marginals in a documented way, for drift tests and demos:
continuous locations move by `0.5 * shift` (in log units for counts) along a fixed
per-element direction and their zero shares change; binary logits move by `0.7 * shift`;
embeddings move by `0.5 * shift` along a fixed direction; discrete values skew towards 0;
label base logits move by `0.3 * shift`. `shift=0` is the reference distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from components.common.hashing import GOLDEN_GAMMA, splitmix64

if TYPE_CHECKING:  # world.py builds the World with the functions below
    from components.datagen.world import IdSpace, World

LATENT_DIM = 8
# Continuous feature kinds: zero-inflated heavy-tailed counts, signed Gaussian-ish values, ratios.
KIND_COUNT, KIND_SIGNED, KIND_RATIO = 0, 1, 2
_MASK62 = np.uint64((1 << 62) - 1)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """The model's continuous transform: non-finite -> 0, then sign(x) * log1p(|x|)."""
    x = np.where(np.isfinite(x), x, 0.0)
    return np.sign(x) * np.log1p(np.abs(x))


def zipf_ranks(rng: np.random.Generator, space: IdSpace, rows: int) -> np.ndarray:
    """Ranks 0..size-1 with P(rank) roughly proportional to (rank+1)^-exponent (inverse CDF)."""
    u = rng.random(rows)
    a, n = space.exponent, float(space.size)
    x = ((n ** (1 - a) - 1) * u + 1) ** (1 / (1 - a))
    return np.minimum(x.astype(np.int64) - 1, space.size - 1).clip(0)


def rank_to_id(space: IdSpace, ranks: np.ndarray) -> np.ndarray:
    """A stable, non-negative 62-bit ID per rank (splitmix64), so IDs look like real IDs."""
    return (splitmix64(ranks, increment=space.salt * GOLDEN_GAMMA) & _MASK62).astype(np.int64)


@dataclass
class SignalInputs:
    """What the label logits depend on (signal columns only, or the full block)."""

    users: np.ndarray
    authors: np.ndarray
    g_cont: np.ndarray  # [R, S_c] sign*log1p of the signal continuous elements
    bin_signal: np.ndarray  # [R, S_b] the signal binary elements, as float
    embeddings: list[np.ndarray]  # each [R, dim]


@dataclass
class RowBlock:
    """A block of generated rows in schema roles; labels and probabilities in label order."""

    continuous: np.ndarray  # [R, C] float32
    binary: np.ndarray  # [R, B] int8
    discrete: np.ndarray  # [R, D] int64
    embeddings: list[np.ndarray]  # float32 [R, dim], schema embedding order
    user_id: np.ndarray
    author_id: np.ndarray
    tweet_id: np.ndarray
    labels: np.ndarray  # [R, L] int8
    probabilities: np.ndarray  # [R, L] float64, the true P(label = 1 | row, user, author)


def _latent(world: World, rng: np.random.Generator, users: np.ndarray, authors: np.ndarray) -> np.ndarray:
    """Row-level latent factors: part user, part author, part noise, so features correlate."""
    noise = rng.standard_normal((len(users), LATENT_DIM), dtype=np.float32)
    return 0.55 * world.user_latent[users] + 0.35 * world.author_latent[authors] + 0.75 * noise


def _continuous(world: World, rng: np.random.Generator, h: np.ndarray, cols: np.ndarray, shift: float) -> np.ndarray:
    """Values of the continuous elements `cols`: many zeros, heavy tails, a few NaN/inf."""
    rows = h.shape[0]
    z = h @ world.cont_loading[:, cols].astype(np.float32)
    z += 0.8 * rng.standard_normal((rows, len(cols)), dtype=np.float32)
    kind = world.cont_kind[cols]
    direction = world.cont_shift[cols]
    loc = world.cont_loc[cols] + 0.5 * shift * direction * np.where(kind == KIND_SIGNED, world.cont_scale[cols], 1.0)
    zero_z = world.cont_zero_z[cols] + 0.3 * shift * direction
    out = np.empty((rows, len(cols)), dtype=np.float32)
    for which in (KIND_COUNT, KIND_SIGNED, KIND_RATIO):
        idx = np.flatnonzero(kind == which)
        if not len(idx):
            continue
        zk = z[:, idx]
        raw = loc[idx] + world.cont_scale[cols][idx] * zk
        if which == KIND_COUNT:
            values = np.floor(np.exp(np.minimum(raw, 60.0)))
        elif which == KIND_RATIO:
            values = sigmoid(raw)
        else:
            values = raw
        if which != KIND_SIGNED:
            values = np.where(zk < zero_z[idx], 0.0, values)
        out[:, idx] = values
    p_bad = world.cont_nonfinite_p[cols]
    bad_cols = np.flatnonzero(p_bad > 0)
    if len(bad_cols):
        u = rng.random((rows, len(bad_cols)), dtype=np.float32)
        hit = u < p_bad[bad_cols]
        kind_of_bad = np.where(u < 0.7 * p_bad[bad_cols], np.nan, np.where(u < 0.9 * p_bad[bad_cols], np.inf, -np.inf))
        block = out[:, bad_cols]
        block[hit] = kind_of_bad[hit]
        out[:, bad_cols] = block
    return out


def _embeddings(world: World, rng: np.random.Generator, users: np.ndarray, authors: np.ndarray,
                shift: float) -> list[np.ndarray]:
    out = []
    for side, proj, direction in zip(world.emb_side, world.emb_proj, world.emb_shift, strict=True):
        latent = world.user_latent[users] if side == "user" else world.author_latent[authors]
        emb = 0.8 * (latent @ proj.astype(np.float32))
        emb += 0.6 * rng.standard_normal(emb.shape, dtype=np.float32)
        if shift:
            emb += np.float32(0.5 * shift) * direction.astype(np.float32)
        out.append(emb)
    return out


def _binary(world: World, rng: np.random.Generator, h: np.ndarray, cols: np.ndarray, shift: float) -> np.ndarray:
    logit = world.bin_logit[cols] + h @ world.bin_loading[:, cols].astype(np.float32) + 0.7 * shift * world.bin_shift[cols]
    return (rng.random(logit.shape, dtype=np.float32) < sigmoid(logit)).astype(np.int8)


def _discrete(world: World, rng: np.random.Generator, rows: int, shift: float) -> np.ndarray:
    """Categorical codes 0..card-1, log-uniform (Zipf-like) so small codes dominate."""
    u = rng.random((rows, len(world.disc_card)))
    if shift:
        u = u ** max(0.2, 1.0 + 0.5 * shift)
    codes = np.exp(u * np.log(world.disc_card + 1.0)) - 1.0
    return np.minimum(codes.astype(np.int64), world.disc_card - 1)


def signal_inputs(world: World, rng: np.random.Generator, rows: int, shift: float) -> SignalInputs:
    """Only the inputs the labels depend on (cheap: used to calibrate the world)."""
    users, authors = zipf_ranks(rng, world.users, rows), zipf_ranks(rng, world.authors, rows)
    h = _latent(world, rng, users, authors)
    cont = _continuous(world, rng, h, world.signal_cont, shift)
    binary = _binary(world, rng, h, world.signal_bin, shift)
    return SignalInputs(users, authors, signed_log1p(cont), binary.astype(np.float32),
                        _embeddings(world, rng, users, authors, shift))


def label_logits(world: World, inputs: SignalInputs, shift: float = 0.0) -> np.ndarray:
    """[R, L] logits: base + linear terms on what the model sees + hidden per-ID effects."""
    gz = (inputs.g_cont - world.g_mean) / world.g_std
    logits = gz @ world.w_cont.T + inputs.bin_signal @ world.w_bin.T
    for emb, weights in zip(inputs.embeddings, world.w_emb, strict=True):
        logits += emb @ weights.T
    logits += world.user_effect[inputs.users] @ world.w_user.T
    logits += world.author_effect[inputs.authors] @ world.w_author.T
    return logits + world.base_logit + 0.3 * shift


def sample_rows(world: World, rng: np.random.Generator, rows: int, shift: float = 0.0) -> RowBlock:
    """A block of `rows` rows; same (world, rng state, rows, shift) -> same block."""
    users, authors = zipf_ranks(rng, world.users, rows), zipf_ranks(rng, world.authors, rows)
    tweets = zipf_ranks(rng, world.tweets, rows)
    h = _latent(world, rng, users, authors)
    all_cont = np.arange(len(world.cont_kind))
    continuous = _continuous(world, rng, h, all_cont, shift)
    binary = _binary(world, rng, h, np.arange(len(world.bin_logit)), shift)
    discrete = _discrete(world, rng, rows, shift)
    embeddings = _embeddings(world, rng, users, authors, shift)
    inputs = SignalInputs(users, authors, signed_log1p(continuous[:, world.signal_cont]),
                          binary[:, world.signal_bin].astype(np.float32), embeddings)
    logits = label_logits(world, inputs, shift)
    probabilities = sigmoid(logits)
    u = rng.random(probabilities.shape)
    labels = u < probabilities
    for index in np.flatnonzero(world.nested_parent >= 0):
        parent = world.nested_parent[index]
        labels[:, index] &= labels[:, parent]
        probabilities[:, index] *= probabilities[:, parent]
    return RowBlock(
        continuous=continuous, binary=binary, discrete=discrete, embeddings=embeddings,
        user_id=rank_to_id(world.users, users), author_id=rank_to_id(world.authors, authors),
        tweet_id=rank_to_id(world.tweets, tweets), labels=labels.astype(np.int8),
        probabilities=probabilities,
    )
