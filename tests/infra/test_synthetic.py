"""The synthetic ads world: contract, label rates, drift, intent, churn, chunking."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from infra.schema import DOMAINS, EVENTS_SCHEMA, SURFACE_DOMAINS, SURFACES
from infra.sources.files import FileSource
from infra.sources.synthetic import SyntheticWorld, WorldConfig, write_world_events

SMALL = WorldConfig(seed=7, events_per_day=20_000, chunk_size=4_000)
DAY, NEXT = "2026-01-03", "2026-01-04"
NO_DRIFT = {"user_drift": 0.0, "ad_drift": 0.0, "ad_bias_drift": 0.0, "ad_churn": 0.0}


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(SMALL)


@pytest.fixture(scope="module")
def day(world: SyntheticWorld) -> pa.Table:
    return world.day_table(DAY)


def _ads(table: pa.Table) -> pa.Table:
    return table.filter(pc.equal(table["item_kind"], "ad"))


def _labels(table: pa.Table) -> np.ndarray:
    return table["click"].to_numpy().astype(np.float64)


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def test_same_seed_same_day_is_identical_and_another_seed_differs(day: pa.Table) -> None:
    again = SyntheticWorld(SMALL)
    again.day_table("2026-01-06")  # visiting a later day first must not change DAY
    assert again.day_table(DAY).equals(day)
    rechunked = SyntheticWorld(replace(SMALL, chunk_size=777)).day_table(DAY)
    assert rechunked.equals(day)
    other = SyntheticWorld(replace(SMALL, seed=8)).day_table(DAY)
    assert not other.equals(day)
    assert not np.array_equal(other["user_id"].to_numpy(), day["user_id"].to_numpy())


def test_schema_timestamps_and_event_ids(world: SyntheticWorld, day: pa.Table) -> None:
    assert day.schema.equals(EVENTS_SCHEMA)
    assert day.num_rows == SMALL.events_per_day
    assert pc.all(pc.equal(day["ds"], DAY)).as_py()
    ts = day["ts"].cast(pa.int64()).to_numpy()
    start = int(datetime(2026, 1, 3, tzinfo=UTC).timestamp()) * 1_000_000
    assert ts.min() >= start and ts.max() < start + 86_400_000_000
    assert np.all(np.diff(ts) >= 0)
    ids = day["event_id"].to_pylist() + world.day_table(NEXT)["event_id"].to_pylist()
    assert len(set(ids)) == len(ids) == 2 * SMALL.events_per_day


def test_label_rates_and_conversions(day: pa.Table) -> None:
    ads, organic = _ads(day), day.filter(pc.equal(day["item_kind"], "organic"))
    click, conv = ads["click"].to_numpy(), ads["conversion"].to_numpy()
    assert 0.01 <= click.mean() <= 0.05
    assert 0.05 <= conv.sum() / click.sum() <= 0.35
    assert np.all(conv <= click)  # conversions only on clicked ads
    assert 0.05 <= organic["click"].to_numpy().mean() <= 0.15
    converted = ads.filter(pc.equal(ads["conversion"], 1))
    assert ads["conversion_ts"].null_count == ads.num_rows - converted.num_rows
    delay = (
        converted["conversion_ts"].cast(pa.int64()).to_numpy() - converted["ts"].cast(pa.int64()).to_numpy()
    ) / 1e6
    assert delay.min() > 0 and delay.max() <= 3 * 86_400
    day_end = datetime(2026, 1, 4, tzinfo=UTC)
    assert 0 < sum(t >= day_end for t in converted["conversion_ts"].to_pylist()) < converted.num_rows
    assert organic["advertiser_id"].null_count == organic["ad_format"].null_count == organic.num_rows
    assert (
        organic["conversion"].to_numpy().sum() == 0
        and organic["conversion_ts"].null_count == organic.num_rows
    )
    assert ads["advertiser_id"].null_count == ads["ad_format"].null_count == 0


def test_all_surfaces_and_domains_appear(day: pa.Table) -> None:
    counts = dict(
        zip(*np.unique(day["surface"].to_numpy(zero_copy_only=False), return_counts=True), strict=True)
    )
    assert set(counts) == set(SURFACES) and len({SURFACE_DOMAINS[s] for s in counts}) == len(DOMAINS) == 3
    assert counts["facebook_feed"] > 2 * counts["messaging_inbox"]  # traffic shares differ
    assert {"ad", "organic"} == set(day["item_kind"].unique().to_pylist())


def _fit_ctr(train: pa.Table) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
    """A smoothed CTR model: base rate times per-ad, per-user, per-(user, category) lifts."""
    y = _labels(train)
    p0 = float(y.mean())
    pred, tables = np.full(len(y), p0), []
    for key, prior in zip(_keys(train), (50.0, 20.0, 20.0), strict=True):
        ids, inverse = np.unique(key, return_inverse=True)
        lift = (np.bincount(inverse, y) + prior * p0) / (np.bincount(inverse, pred) + prior * p0)
        pred, tables = pred * lift[inverse], [*tables, (ids, lift)]
    return p0, tables


def _keys(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    user = table["user_id"].to_numpy()
    return table["item_id"].to_numpy(), user, user * 1_000 + table["category_id"].to_numpy()


def _predict_ctr(model: tuple[float, list[tuple[np.ndarray, np.ndarray]]], table: pa.Table) -> np.ndarray:
    p0, tables = model
    p = np.full(table.num_rows, p0)
    for key, (ids, lift) in zip(_keys(table), tables, strict=True):
        at = np.minimum(np.searchsorted(ids, key), len(ids) - 1)
        p *= np.where(ids[at] == key, lift[at], 1.0)  # unseen ad / user: no lift
    return np.clip(p, 1e-4, 0.5)


def _excess_loss_by_day(config: WorldConfig, fit_ds: str, later_ds: str) -> tuple[float, float]:
    """Fit on 3/4 of fit_ds; expected log loss above the true P(click) on the held-out 1/4 and on later_ds.

    Expected under the hidden truth (a KL divergence) rather than on the drawn labels,
    so label noise does not blur the comparison; intent is off so the oracle is exact.
    """
    world = SyntheticWorld(config)
    fit_day, later = _ads(world.day_table(fit_ds)), _ads(world.day_table(later_ds))
    rows = np.arange(fit_day.num_rows)
    model = _fit_ctr(fit_day.take(rows[rows % 4 != 0]))
    held_out = fit_day.take(rows[rows % 4 == 0])

    def excess(table: pa.Table, ds: str) -> float:
        p, q = world.click_probability(ds, table), _predict_ctr(model, table)
        return float(np.mean(p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))))

    return excess(held_out, fit_ds), excess(later, later_ds)


def test_a_model_fitted_days_ago_is_worse_today() -> None:
    # Few ads and users so the simple model is precise enough for 5 days of drift to show.
    config = WorldConfig(
        seed=7,
        events_per_day=100_000,
        n_users=100,
        n_active_ads=30,
        n_advertisers=20,
        n_categories=6,
        n_organic_items=500,
        intent_strength=0.0,
    )
    held_out, five_days_later = _excess_loss_by_day(config, "2026-01-02", "2026-01-07")
    assert five_days_later > 1.15 * held_out
    # Control: the same world frozen in time does not degrade.
    held_out, five_days_later = _excess_loss_by_day(replace(config, **NO_DRIFT), "2026-01-02", "2026-01-07")
    assert five_days_later < 1.1 * held_out


def test_yesterdays_true_model_is_worse_on_todays_labels() -> None:
    world = SyntheticWorld(replace(SMALL, events_per_day=40_000))
    today = _ads(world.day_table(NEXT))
    y = _labels(today)
    assert _log_loss(world.click_probability(DAY, today), y) > _log_loss(
        world.click_probability(NEXT, today), y
    )
    frozen = SyntheticWorld(replace(SMALL, events_per_day=40_000, **NO_DRIFT))
    today = _ads(frozen.day_table(NEXT))
    assert np.array_equal(frozen.click_probability(DAY, today), frozen.click_probability(NEXT, today))


def test_a_moving_market_shifts_every_ad_click_logit_by_its_days_level_and_draws_the_rest_as_before(
    world: SyntheticWorld,
) -> None:
    moving = SyntheticWorld(replace(SMALL, market_drift=0.25))
    levels = [moving.state(f"2026-01-0{d}").market for d in range(1, 8)]
    assert levels[0] == 0.0 and len(set(levels)) == len(levels)  # day 0 at 0, then a new level daily
    assert all(world.state(f"2026-01-0{d}").market == 0.0 for d in range(1, 8))  # the default stands
    still, moved = world.state(NEXT), moving.state(NEXT)
    for name in ("user_vec", "ad_id", "ad_own_vec", "ad_bias", "ad_budget"):
        assert np.array_equal(getattr(still, name), getattr(moved, name)), name
    ads = _ads(world.day_table(NEXT))
    logit = [
        np.log(p / (1 - p)) for p in (world.click_probability(NEXT, ads), moving.click_probability(NEXT, ads))
    ]
    np.testing.assert_allclose(logit[1] - logit[0], moved.market, atol=1e-9)


def _primed_ctr_lift(table: pa.Table) -> float:
    """Ad CTR after the user engaged with the ad's category earlier that day, over CTR otherwise."""
    key = table["user_id"].to_numpy() * 1_000 + table["category_id"].to_numpy()
    ts, click = table["ts"].cast(pa.int64()).to_numpy(), table["click"].to_numpy()
    first = np.full(key.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, key[click == 1], ts[click == 1])  # first engagement: ad click or organic
    is_ad = pc.equal(table["item_kind"], "ad").to_numpy(zero_copy_only=False)
    primed = ts > first[key]
    return click[is_ad & primed].mean() / click[is_ad & ~primed].mean()


def test_same_day_engagement_raises_click_odds_in_its_category() -> None:
    config = replace(SMALL, events_per_day=40_000, n_users=300, n_categories=8)
    with_intent = _primed_ctr_lift(SyntheticWorld(config).day_table(DAY))
    # Without intent a lift remains (users who engage with a category like it): the control.
    without = _primed_ctr_lift(SyntheticWorld(replace(config, intent_strength=0.0)).day_table(DAY))
    assert with_intent > 1.5 * without and without > 1.0


def test_ads_launch_and_retire_daily(world: SyntheticWorld) -> None:
    days = [world.active_ads(f"2026-01-0{d}")["item_id"].to_numpy() for d in (3, 4, 5)]
    launched, retired = np.setdiff1d(days[1], days[0]), np.setdiff1d(days[0], days[1])
    assert len(launched) == len(retired) == round(SMALL.ad_churn * SMALL.n_active_ads)
    assert launched.min() > days[0].max()  # new ids, never used before
    assert not np.isin(retired, days[2]).any()  # retired ads never come back
    events = _ads(world.day_table(NEXT))["item_id"].to_numpy()
    assert np.isin(events, days[1]).all() and np.isin(launched, events).any()


def test_written_day_files_read_back_as_the_days_events(tmp_path: Path) -> None:
    world = SyntheticWorld(replace(SMALL, events_per_day=3_000))
    days = ["2026-01-01", "2026-01-02"]
    write_world_events(world, tmp_path, days)
    write_world_events(world, tmp_path, days[:1])  # a re-run replaces the file
    for ds in days:
        assert [p.name for p in (tmp_path / f"ds={ds}").iterdir()] == ["events.parquet"]
        read = pa.Table.from_batches(list(FileSource(str(tmp_path)).day_batches(ds)))
        assert read.cast(EVENTS_SCHEMA).equals(world.day_table(ds))


def test_batches_are_bounded_by_chunk_size(world: SyntheticWorld) -> None:
    sizes = [batch.num_rows for batch in world.day_batches(DAY)]
    assert max(sizes) <= SMALL.chunk_size and sum(sizes) == SMALL.events_per_day and len(sizes) == 5


def test_bad_days_and_rows_are_refused(world: SyntheticWorld, day: pa.Table) -> None:
    with pytest.raises(ValueError, match="2025-12-31"):
        world.day_batches("2025-12-31")
    with pytest.raises(ValueError, match="20260103"):
        world.day_table("20260103")
    with pytest.raises(ValueError, match="ad-impression"):
        world.click_probability(DAY, day)
    p = world.click_probability(DAY, _ads(day))
    assert p.shape == (_ads(day).num_rows,) and p.min() > 0 and p.max() < 1


def test_the_days_click_probabilities_are_those_its_labels_were_drawn_with(
    world: SyntheticWorld, day: pa.Table
) -> None:
    truth = world.day_click_probabilities(DAY)
    assert truth["event_id"].equals(day["event_id"])
    p, clicks = truth["p_click"].to_numpy(), _labels(day)
    assert np.all((p > 0) & (p < 1))
    # The clicks are Bernoulli draws with these probabilities: their sum lies within 3 sigma of it.
    assert abs(clicks.sum() - p.sum()) < 3 * np.sqrt(np.sum(p * (1 - p)))
    # Intent lifts the clicks it was drawn with above the oracle, which leaves it out; without intent
    # they are the oracle's.
    ads = pc.equal(day["item_kind"], "ad").to_numpy(zero_copy_only=False)
    assert p[ads].sum() > world.click_probability(DAY, _ads(day)).sum()
    calm = SyntheticWorld(replace(SMALL, intent_strength=0.0))
    calm_day = calm.day_table(DAY)
    calm_ads = pc.equal(calm_day["item_kind"], "ad").to_numpy(zero_copy_only=False)
    calm_p = calm.day_click_probabilities(DAY)["p_click"].to_numpy()
    np.testing.assert_allclose(calm_p[calm_ads], calm.click_probability(DAY, _ads(calm_day)))
