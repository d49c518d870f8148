"""The hidden ground truth of the synthetic ads world and how it drifts day by day.

Nothing here is observed by a model: latent vectors, biases and the response
constants only shape the labels that `infra.sources.synthetic` draws. The state
of day d is day 0 evolved d times, each step with its own RNG
(`np.random.default_rng([seed, d, TAG])`), so any day can be rebuilt alone.

Click logit of an ad impression (user i, ad j of advertiser a, surface s, format f):
    base + surface_base[s] + format_surface[f, s] + user_bias[i] + country/age bias
    + ad_bias[j] + advertiser_bias[a] + surface_scale[s] * sum(u_i * W_s * v_j)
    + market[d]
    (+ the intent term, added by the generator from the user's same-day history)
with v_j = category_vec + advertiser_vec + own_vec: the category and advertiser
parts are static, the user latent u_i, the ad's own part and its bias drift.
market[d] is the day's market-wide click level (seasons, holidays, auction
pressure): 0 on day 0, then a mean-reverting walk at `market_drift`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np

from infra.schema import AD_FORMATS, SURFACES

COUNTRIES: tuple[str, ...] = ("US", "BR", "IN", "ID", "MX", "GB", "DE", "FR")
COUNTRY_SHARES: tuple[float, ...] = (0.25, 0.15, 0.2, 0.12, 0.08, 0.07, 0.07, 0.06)
N_AGE_BUCKETS = 7
AD_ID_BASE = 1_000_000_000  # ads and organic items share the item_id space; ids >= this are ads

# Hidden per-surface response, in SURFACES order (feed, stories, ig feed, reels, inbox).
SURFACE_BASE = np.array([0.0, -0.3, 0.1, 0.2, -0.6])
SURFACE_SCALE = np.array([1.0, 0.9, 1.1, 1.2, 0.7])
# Format x surface affinity (AD_FORMATS rows): video wins on stories and reels.
FORMAT_SURFACE = np.array(
    [
        [0.1, -0.3, 0.1, -0.5, 0.2],  # image
        [-0.1, 0.4, 0.0, 0.6, -0.4],  # video
        [0.2, -0.2, 0.2, -0.3, 0.0],  # carousel
    ]
)
# Shares of an ad latent's variance: category, advertiser, the ad's own (drifting) part.
_CATEGORY_VAR, _ADVERTISER_VAR, _OWN_VAR = 0.5, 0.2, 0.3
# The market-wide click level's spread (logit) once its walk has settled: about +-20% click rate.
MARKET_STD = 0.2
_STATIC_TAG, _EVOLVE_TAG = 0, 1


@dataclass(frozen=True)
class WorldConfig:
    """Every knob of the synthetic world; defaults give ~2.5% ad CTR, ~15% CVR, ~10% organic engagement."""

    seed: int = 7
    start_date: str = "2026-01-01"  # day index 0
    events_per_day: int = 20_000
    n_users: int = 2_000
    chunk_size: int = 50_000  # rows per RecordBatch; bounds memory
    n_active_ads: int = 1_000
    n_advertisers: int = 200
    n_categories: int = 24
    n_organic_items: int = 5_000
    latent_dim: int = 16
    ad_share: float = 0.5  # share of events that are ad impressions
    surface_shares: tuple[float, ...] = (0.35, 0.15, 0.2, 0.2, 0.1)  # SURFACES order
    user_drift: float = 0.05  # share of a user's interest variance replaced per day
    ad_drift: float = 0.05  # same for an ad's own latent part
    ad_bias_drift: float = 0.05  # same for an ad's bias
    ad_churn: float = 0.05  # share of active ads retired (replaced by new ids) per day
    market_drift: float = 0.0  # share of the market-wide click level's variance replaced per day
    intent_strength: float = 1.5  # max logit boost from same-category engagement today
    intent_half_life_hours: float = 3.0
    ad_base_logit: float = -4.65
    organic_base_logit: float = -2.75
    conversion_base_logit: float = -2.6  # P(conversion | click) before advertiser effects
    conversion_delay_mean_hours: float = 12.0
    max_conversion_delay_days: float = 3.0
    activity_skew: float = 1.2  # sigma of the log-normal user activity
    diurnal_amplitude: float = 0.3  # traffic peaks at 18:00 UTC
    intent_update_every: int = 2048  # at most this many events between intent updates
    min_intent_updates_per_day: int = 288  # at least this many (every 5 min) for small days

    def __post_init__(self) -> None:
        date.fromisoformat(self.start_date)
        counts = ("events_per_day", "n_users", "chunk_size", "n_active_ads", "n_advertisers")
        counts += ("n_categories", "n_organic_items", "latent_dim", "intent_update_every")
        for name in (*counts, "min_intent_updates_per_day"):
            if getattr(self, name) < 1:
                raise ValueError(f"WorldConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("ad_share", "user_drift", "ad_drift", "ad_bias_drift", "ad_churn", "market_drift"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"WorldConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if len(self.surface_shares) != len(SURFACES) or min(self.surface_shares) < 0:
            raise ValueError(f"WorldConfig.surface_shares needs {len(SURFACES)} shares >= 0")
        if self.intent_half_life_hours < 0.25 or not 0 <= self.diurnal_amplitude < 1:
            raise ValueError("intent_half_life_hours must be >= 0.25, diurnal_amplitude in [0, 1)")
        if self.n_organic_items >= AD_ID_BASE:
            raise ValueError(f"n_organic_items must be < {AD_ID_BASE}")


@dataclass(frozen=True)
class StaticWorld:
    """Hidden truth that never changes: users' demographics and activity, advertisers,
    category centroids, per-surface latent weights, organic items."""

    category_vec: np.ndarray  # (K, D)
    surface_weight: np.ndarray  # (S, D) per-surface emphasis of latent dims
    user_age: np.ndarray  # (U,) int32
    user_country: np.ndarray  # (U,) index into COUNTRIES
    user_bias: np.ndarray  # (U,) includes country and age effects
    user_activity_cdf: np.ndarray  # (U,) who generates events (skewed)
    user_surface_cdf: np.ndarray  # (U, S) each user's own surface mix
    advertiser_category: np.ndarray  # (A,)
    advertiser_vec: np.ndarray  # (A, D)
    advertiser_bias: np.ndarray  # (A,)
    advertiser_conv_bias: np.ndarray  # (A,)
    organic_category: np.ndarray  # (M,)
    organic_vec: np.ndarray  # (M, D)
    organic_bias: np.ndarray  # (M,)
    organic_cdf: np.ndarray  # (M,) popularity
    diurnal_cdf: np.ndarray  # (G,) traffic CDF on a grid of day fractions


@dataclass(frozen=True)
class DayState:
    """Hidden truth of one day: user interests and the active ads (slot-aligned arrays)."""

    day: int
    user_vec: np.ndarray  # (U, D)
    ad_id: np.ndarray  # (N,) int64, never reused
    ad_advertiser: np.ndarray  # (N,) index into advertisers
    ad_category: np.ndarray  # (N,)
    ad_format: np.ndarray  # (N,) index into AD_FORMATS
    ad_own_vec: np.ndarray  # (N, D) drifting part of the ad latent
    ad_bias: np.ndarray  # (N,)
    ad_budget: np.ndarray  # (N,) serving weight
    next_ad_id: int
    market: float = 0.0  # the day's market-wide click level (logit)
    _ad_cdf: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ad_cdf", _cdf(self.ad_budget))

    @property
    def ad_cdf(self) -> np.ndarray:
        """Cumulative serving weights: an impression picks an ad by budget."""
        return self._ad_cdf


def _cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(weights, dtype=np.float64)
    return cdf / cdf[-1]


def _scale(config: WorldConfig) -> float:
    # Per-element std that gives sum(u * v) unit variance whatever latent_dim is.
    return float(config.latent_dim) ** -0.25


def _diurnal_cdf(amplitude: float, grid: np.ndarray) -> np.ndarray:
    # Traffic density 1 + a * cos(2 pi (x - 0.75)) over the day fraction x.
    phase = 2 * np.pi * (grid - 0.75)
    return grid + amplitude / (2 * np.pi) * (np.sin(phase) - np.sin(-1.5 * np.pi))


DIURNAL_GRID = np.linspace(0.0, 1.0, 4097)


def build_static(config: WorldConfig) -> StaticWorld:
    """Draw the static hidden truth from `[seed, 0, STATIC]`."""
    rng = np.random.default_rng([config.seed, 0, _STATIC_TAG])
    dim, s = config.latent_dim, _scale(config)
    n_users, n_adv, n_org = config.n_users, config.n_advertisers, config.n_organic_items
    shares = np.asarray(config.surface_shares, dtype=np.float64) + 1e-6
    surface_mix = rng.dirichlet(5.0 * shares / shares.sum(), size=n_users)
    user_age = rng.choice(N_AGE_BUCKETS, size=n_users, p=[0.08, 0.2, 0.24, 0.2, 0.14, 0.09, 0.05])
    user_country = rng.choice(len(COUNTRIES), size=n_users, p=COUNTRY_SHARES)
    age_bias = np.linspace(0.2, -0.25, N_AGE_BUCKETS)  # the young click more
    country_bias = rng.normal(0.0, 0.2, len(COUNTRIES))
    user_bias = rng.normal(0.0, 0.4, n_users) + age_bias[user_age] + country_bias[user_country]
    organic_category = rng.integers(0, config.n_categories, n_org)
    category_vec = rng.normal(0.0, s * np.sqrt(_CATEGORY_VAR), (config.n_categories, dim))
    organic_vec = category_vec[organic_category] + rng.normal(0.0, s * 0.7, (n_org, dim))
    return StaticWorld(
        category_vec=category_vec,
        surface_weight=np.exp(rng.normal(0.0, 0.3, (1, dim)) + rng.normal(0.0, 0.3, (len(SURFACES), dim))),
        user_age=user_age.astype(np.int32),
        user_country=user_country,
        user_bias=user_bias,
        user_activity_cdf=_cdf(rng.lognormal(0.0, config.activity_skew, n_users)),
        user_surface_cdf=np.cumsum(surface_mix, axis=1),
        advertiser_category=rng.integers(0, config.n_categories, n_adv),
        advertiser_vec=rng.normal(0.0, s * np.sqrt(_ADVERTISER_VAR), (n_adv, dim)),
        advertiser_bias=rng.normal(0.0, 0.3, n_adv),
        advertiser_conv_bias=rng.normal(0.0, 0.5, n_adv),
        organic_category=organic_category.astype(np.int32),
        organic_vec=organic_vec,
        organic_bias=rng.normal(0.0, 0.5, n_org),
        organic_cdf=_cdf(rng.lognormal(0.0, 1.0, n_org)),
        diurnal_cdf=_diurnal_cdf(config.diurnal_amplitude, DIURNAL_GRID),
    )


def _new_ads(rng: np.random.Generator, n: int, config: WorldConfig, static: StaticWorld) -> dict:
    """Attributes of `n` freshly launched ads (ids assigned by the caller)."""
    advertiser = rng.integers(0, config.n_advertisers, n)
    # Most ads sell in their advertiser's category; some advertisers diversify.
    other = rng.integers(0, config.n_categories, n)
    category = np.where(rng.random(n) < 0.8, static.advertiser_category[advertiser], other)
    own_std = _scale(config) * np.sqrt(_OWN_VAR)
    return {
        "ad_advertiser": advertiser,
        "ad_category": category.astype(np.int32),
        "ad_format": rng.choice(len(AD_FORMATS), size=n, p=[0.5, 0.3, 0.2]),
        "ad_own_vec": rng.normal(0.0, own_std, (n, config.latent_dim)),
        "ad_bias": rng.normal(0.0, 0.4, n),
        "ad_budget": rng.lognormal(0.0, 0.8, n),
    }


def initial_state(config: WorldConfig, static: StaticWorld) -> DayState:
    """Day 0: users' first interests and the launch catalog of `n_active_ads` ads."""
    rng = np.random.default_rng([config.seed, 0, _EVOLVE_TAG])
    n = config.n_active_ads
    user_vec = rng.normal(0.0, _scale(config), (config.n_users, config.latent_dim))
    ads = _new_ads(rng, n, config, static)
    ids = AD_ID_BASE + np.arange(n, dtype=np.int64)
    return DayState(day=0, user_vec=user_vec, ad_id=ids, next_ad_id=AD_ID_BASE + n, **ads)


def _walk(rng: np.random.Generator, x: np.ndarray, rate: float, std: float) -> np.ndarray:
    # Mean-reverting random walk: replaces `rate` of the variance, keeps its level.
    return np.sqrt(1.0 - rate) * x + np.sqrt(rate) * rng.normal(0.0, std, x.shape)


def evolve_state(state: DayState, config: WorldConfig, static: StaticWorld) -> DayState:
    """Day d -> d+1 with RNG `[seed, d+1, EVOLVE]`: drift interests, ads, biases; churn ads."""
    day = state.day + 1
    rng = np.random.default_rng([config.seed, day, _EVOLVE_TAG])
    s = _scale(config)
    user_vec = _walk(rng, state.user_vec, config.user_drift, s)
    cols = {
        "ad_advertiser": state.ad_advertiser.copy(),
        "ad_category": state.ad_category.copy(),
        "ad_format": state.ad_format.copy(),
        "ad_own_vec": _walk(rng, state.ad_own_vec, config.ad_drift, s * np.sqrt(_OWN_VAR)),
        "ad_bias": _walk(rng, state.ad_bias, config.ad_bias_drift, 0.4),
        "ad_budget": state.ad_budget.copy(),
    }
    ad_id = state.ad_id.copy()
    n_new = round(config.ad_churn * config.n_active_ads)
    retired = np.sort(rng.choice(config.n_active_ads, size=n_new, replace=False))
    for name, values in _new_ads(rng, n_new, config, static).items():
        cols[name][retired] = values
    ad_id[retired] = state.next_ad_id + np.arange(n_new, dtype=np.int64)
    # Drawn last, so a world whose market stands still draws every other number as before.
    market = float(_walk(rng, np.array(state.market), config.market_drift, MARKET_STD))
    return DayState(
        day=day, user_vec=user_vec, ad_id=ad_id, next_ad_id=state.next_ad_id + n_new, market=market, **cols
    )


def ad_logit(
    static: StaticWorld,
    config: WorldConfig,
    user_vec: np.ndarray,
    user: np.ndarray,
    surface: np.ndarray,
    ad_vec: np.ndarray,
    ad_bias: np.ndarray,
    advertiser: np.ndarray,
    ad_format: np.ndarray,
    market: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Hidden click logit of ad impressions without intent, and the user-ad affinity.

    `user`, `surface`, `advertiser`, `ad_format` are row indices; `ad_vec` (n, D)
    and `ad_bias` (n,) are already gathered per row; `market` is the day's click level.
    """
    affinity = np.einsum("nd,nd->n", user_vec[user] * static.surface_weight[surface], ad_vec)
    logit = (
        config.ad_base_logit
        + SURFACE_BASE[surface]
        + FORMAT_SURFACE[ad_format, surface]
        + static.user_bias[user]
        + ad_bias
        + static.advertiser_bias[advertiser]
        + SURFACE_SCALE[surface] * affinity
        + market
    )
    return logit, affinity


def ad_vectors(static: StaticWorld, category: np.ndarray, advertiser: np.ndarray) -> np.ndarray:
    """The static part of ad latents (category + advertiser): the prior of an unseen ad."""
    return static.category_vec[category] + static.advertiser_vec[advertiser]


def organic_logit(
    static: StaticWorld,
    config: WorldConfig,
    user_vec: np.ndarray,
    user: np.ndarray,
    surface: np.ndarray,
    item: np.ndarray,
) -> np.ndarray:
    """Hidden engagement logit of organic views (like/share), item = index into organic items."""
    affinity = np.einsum(
        "nd,nd->n", user_vec[user] * static.surface_weight[surface], static.organic_vec[item]
    )
    return config.organic_base_logit + 0.5 * static.user_bias[user] + static.organic_bias[item] + affinity
