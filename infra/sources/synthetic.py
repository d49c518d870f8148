"""The synthetic ads world: the embedded default event source.

Seeded and deterministic, generated one day at a time in time-ordered chunks whose
rows follow `infra.schema.EVENTS_SCHEMA`. The hidden truth (user interests, ad
latents, surface and format responses, advertiser effects) lives in
`infra.sources.world_state` and drifts day by day; this module draws what is
observed: who sees what, where and when, and the click / conversion labels.

Intent (hidden): a user's ad click or organic engagement with a category raises
their click odds on that category's ads later the same day, on every surface,
decaying with `intent_half_life_hours`. It is updated between small time-ordered
blocks (an engagement is felt from the next block on), and it starts empty each
day (it has decayed overnight), so every day can be generated on its own.

A day is a sequence of blocks, each with its own RNG `[seed, day, BLOCK, b]`;
block sizes depend on the config but not on `chunk_size`, so the day's rows are
the same whatever `chunk_size` cuts them into.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from infra.schema import AD_FORMATS, EVENTS_SCHEMA, ITEM_KINDS, SURFACES, TS_TYPE
from infra.sources.files import write_day_events
from infra.sources.world_state import (
    AD_ID_BASE,
    COUNTRIES,
    DIURNAL_GRID,
    DayState,
    StaticWorld,
    WorldConfig,
    ad_logit,
    ad_vectors,
    build_static,
    evolve_state,
    initial_state,
    organic_logit,
)

__all__ = ["AD_ID_BASE", "SyntheticWorld", "WorldConfig", "write_world_events"]

DAY_US = 86_400_000_000
_BLOCK_TAG = 2
_CACHED_STATES = 3
Rows = dict[str, np.ndarray]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _pick(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Indices drawn by the cumulative weights `cdf` from uniforms `u`."""
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


class SyntheticWorld:
    """A seeded ads world that generates any day's events on demand."""

    def __init__(self, config: WorldConfig) -> None:
        self.config = config
        self.static: StaticWorld = build_static(config)
        self._start = date.fromisoformat(config.start_date)
        self._states: OrderedDict[int, DayState] = OrderedDict({0: initial_state(config, self.static)})
        self._decay = math.log(2.0) / (config.intent_half_life_hours * 3600.0)  # per second

    # --- days and their hidden state -------------------------------------------------

    def day_index(self, ds: str) -> int:
        """Days since `start_date`; ValueError for a malformed ds or one before the start."""
        try:
            parsed = date.fromisoformat(ds)
        except (TypeError, ValueError) as err:
            raise ValueError(f"ds {ds!r} is not a YYYY-MM-DD date") from err
        if parsed.isoformat() != ds:  # fromisoformat also takes 20260101
            raise ValueError(f"ds {ds!r} is not a YYYY-MM-DD date")
        day = (parsed - self._start).days
        if day < 0:
            raise ValueError(f"ds {ds} is before the world's start_date {self.config.start_date}")
        return day

    def state(self, ds: str) -> DayState:
        """The hidden state of day `ds`, evolved from the nearest cached earlier day."""
        day = self.day_index(ds)
        if day in self._states:
            return self._states[day]
        state = self._states[max(d for d in self._states if d < day)]
        while state.day < day:
            state = evolve_state(state, self.config, self.static)
        self._states[day] = state
        while len(self._states) > _CACHED_STATES + 1:  # day 0 always stays
            self._states.pop(next(d for d in self._states if d != 0))
        return state

    def active_ads(self, ds: str) -> pa.Table:
        """The ads that can be served on day `ds`: item_id, advertiser_id, category_id, ad_format."""
        s = self.state(ds)
        return pa.table(
            {
                "item_id": pa.array(s.ad_id, pa.int64()),
                "advertiser_id": pa.array(s.ad_advertiser + 1, pa.int64()),
                "category_id": pa.array(s.ad_category, pa.int32()),
                "ad_format": pa.array(AD_FORMATS).take(pa.array(s.ad_format)),
            }
        )

    # --- generation ------------------------------------------------------------------

    def day_batches(self, ds: str) -> Iterator[pa.RecordBatch]:
        """The day's events in ts order, EVENTS_SCHEMA, at most `chunk_size` rows each.

        A bad `ds` raises here, not on the first `next()`.
        """
        return self._generate(ds, self.state(ds))

    def _generate(self, ds: str, state: DayState) -> Iterator[pa.RecordBatch]:
        day_start_us = ((self._start - date(1970, 1, 1)).days + state.day) * DAY_US
        for rows in self._day_rows(state):
            yield self._record_batch(ds, day_start_us, rows)

    def _day_rows(self, state: DayState) -> Iterator[Rows]:
        """The day's rows, hidden columns included, in chunks of `chunk_size`."""
        cfg = self.config
        n_total = cfg.events_per_day
        size = max(1, min(cfg.intent_update_every, -(-n_total // cfg.min_intent_updates_per_day)))
        # Decayed same-day engagement per (user, category), stored as sum(exp(decay * t_engaged))
        # so that adding an engagement needs no per-user clock; float32 holds e^(decay * 86400).
        intent = np.zeros((cfg.n_users, cfg.n_categories), dtype=np.float32)
        blocks = (
            self._block(state, intent, b, lo, min(lo + size, n_total))
            for b, lo in enumerate(range(0, n_total, size))
        )
        yield from _rechunk(blocks, cfg.chunk_size)

    def day_table(self, ds: str) -> pa.Table:
        """All of day `ds` as one table (concatenated `day_batches`)."""
        return pa.Table.from_batches(list(self.day_batches(ds)), schema=EVENTS_SCHEMA)

    def _block(self, state: DayState, intent: np.ndarray, b: int, lo: int, hi: int) -> Rows:
        """Events `lo..hi` of the day: sample impressions, draw labels, feed intent."""
        cfg, st = self.config, self.static
        rng = np.random.default_rng([cfg.seed, state.day, _BLOCK_TAG, b])
        u = rng.random((8, hi - lo))  # one uniform stream per decision (ad and organic rows share u[5])
        pos = np.arange(lo, hi, dtype=np.int64)
        # Event i sits in its own slot of the day's traffic CDF: sorted without a sort.
        t_s = np.interp((pos + u[0]) / cfg.events_per_day, st.diurnal_cdf, DIURNAL_GRID) * 86_400.0
        user = _pick(st.user_activity_cdf, u[1])
        surface = np.minimum((u[2][:, None] > st.user_surface_cdf[user]).sum(axis=1), len(SURFACES) - 1)
        is_ad = u[3] < cfg.ad_share
        ad = _pick(state.ad_cdf, u[4][is_ad])
        organic = _pick(st.organic_cdf, u[4][~is_ad])
        rows: Rows = {
            "pos": pos,
            "offset_us": np.minimum((t_s * 1e6).astype(np.int64), DAY_US - 1),
            "user": user,
            "surface": surface,
            "is_ad": is_ad,
            "item_id": np.zeros(hi - lo, dtype=np.int64),
            "advertiser": np.zeros(hi - lo, dtype=np.int64),
            "category": np.zeros(hi - lo, dtype=np.int32),
            "format": np.zeros(hi - lo, dtype=np.int64),
            "click": np.zeros(hi - lo, dtype=np.int8),
            "p_click": np.zeros(hi - lo),  # the probability the click was drawn with (hidden)
            "conversion": np.zeros(hi - lo, dtype=np.int8),
            "delay_us": np.zeros(hi - lo, dtype=np.int64),
        }
        self._label_organic(rows, ~is_ad, organic, state, u[5])
        self._label_ads(rows, is_ad, ad, state, intent, t_s[is_ad], u[5:8])
        engaged = rows["click"] == 1
        np.add.at(intent, (user[engaged], rows["category"][engaged]), np.exp(self._decay * t_s[engaged]))
        return rows

    def _label_organic(
        self, rows: Rows, mask: np.ndarray, item: np.ndarray, state: DayState, u: np.ndarray
    ) -> None:
        """Organic views: item, category and the engagement label (in `click`)."""
        logit = organic_logit(
            self.static, self.config, state.user_vec, rows["user"][mask], rows["surface"][mask], item
        )
        rows["item_id"][mask] = item + 1
        rows["category"][mask] = self.static.organic_category[item]
        rows["p_click"][mask] = _sigmoid(logit)
        rows["click"][mask] = u[mask] < rows["p_click"][mask]

    def _label_ads(
        self,
        rows: Rows,
        mask: np.ndarray,
        ad: np.ndarray,
        state: DayState,
        intent: np.ndarray,
        t_s: np.ndarray,
        u: np.ndarray,
    ) -> None:
        """Ad impressions: ad attributes, click with intent, conversion and its delay."""
        cfg = self.config
        user, category = rows["user"][mask], state.ad_category[ad]
        advertiser = state.ad_advertiser[ad]
        ad_vec = ad_vectors(self.static, category, advertiser) + state.ad_own_vec[ad]
        logit, affinity = ad_logit(
            self.static,
            cfg,
            state.user_vec,
            user,
            rows["surface"][mask],
            ad_vec,
            state.ad_bias[ad],
            advertiser,
            state.ad_format[ad],
            state.market,
        )
        recent = intent[user, category] * np.exp(-self._decay * t_s)  # decayed engagements
        p_click = _sigmoid(logit + cfg.intent_strength * (1.0 - np.exp(-recent)))
        click = u[0][mask] < p_click
        conv_logit = cfg.conversion_base_logit + self.static.advertiser_conv_bias[advertiser] + 0.5 * affinity
        conversion = click & (u[1][mask] < _sigmoid(conv_logit))
        # Truncated exponential delay (inverse CDF), at least 1 s so it lands after the click.
        mean_s, cap_s = cfg.conversion_delay_mean_hours * 3600.0, cfg.max_conversion_delay_days * 86_400.0
        delay_s = -mean_s * np.log1p(-u[2][mask] * -np.expm1(-cap_s / mean_s))
        rows["item_id"][mask] = state.ad_id[ad]
        rows["advertiser"][mask] = advertiser + 1
        rows["category"][mask] = category
        rows["format"][mask] = state.ad_format[ad]
        rows["p_click"][mask] = p_click
        rows["click"][mask] = click
        rows["conversion"][mask] = conversion
        rows["delay_us"][mask] = np.where(conversion, np.maximum(delay_s * 1e6, 1e6), 0).astype(np.int64)

    def _record_batch(self, ds: str, day_start_us: int, rows: Rows) -> pa.RecordBatch:
        """Observed columns of `rows`, cast to EVENTS_SCHEMA."""
        n, is_ad, st = len(rows["pos"]), rows["is_ad"], self.static
        ts_us = day_start_us + rows["offset_us"]
        arrays = [
            _event_ids(ds, rows["pos"]),
            pa.array(ts_us, TS_TYPE),
            pa.array([ds]).take(pa.array(np.zeros(n, dtype=np.int32))),
            pa.array(rows["user"] + 1, pa.int64()),
            pa.array(st.user_age[rows["user"]], pa.int32()),
            pa.array(COUNTRIES).take(pa.array(st.user_country[rows["user"]])),
            pa.array(rows["item_id"], pa.int64()),
            pa.array(ITEM_KINDS).take(pa.array((~is_ad).astype(np.int8))),
            pa.array(SURFACES).take(pa.array(rows["surface"])),
            pa.array(rows["advertiser"], pa.int64(), mask=~is_ad),
            pa.array(rows["category"], pa.int32()),
            pa.array(AD_FORMATS).take(pa.array(rows["format"], mask=~is_ad)),
            pa.array(rows["click"], pa.int8()),
            pa.array(rows["conversion"], pa.int8()),
            pa.array(ts_us + rows["delay_us"], TS_TYPE, mask=rows["conversion"] == 0),
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=EVENTS_SCHEMA)

    # --- the oracle ------------------------------------------------------------------

    def click_probability(self, ds: str, events: pa.Table) -> np.ndarray:
        """Hidden true P(click) in day `ds`'s world for ad-impression rows, ignoring intent.

        Ads unknown to that day (launched later, or retired) get their prior: the
        static category + advertiser latent and a zero own bias. For tests and
        benchmarks only; a model never sees this.
        """
        if events.num_rows == 0:
            return np.zeros(0)
        if not pc.all(pc.equal(events.column("item_kind"), "ad")).as_py():
            raise ValueError("click_probability takes ad-impression rows only (item_kind 'ad')")
        state, st = self.state(ds), self.static
        user = _column(events, "user_id") - 1
        advertiser = _column(events, "advertiser_id") - 1
        category = _column(events, "category_id")
        surface = _index_in(events, "surface", SURFACES)
        ad_format = _index_in(events, "ad_format", AD_FORMATS)
        if user.min() < 0 or user.max() >= self.config.n_users:
            raise ValueError("user_id outside this world's users")
        if advertiser.min() < 0 or advertiser.max() >= self.config.n_advertisers:
            raise ValueError("advertiser_id outside this world's advertisers")
        order = np.argsort(state.ad_id)
        item = _column(events, "item_id")
        at = np.minimum(np.searchsorted(state.ad_id[order], item), len(order) - 1)
        known = state.ad_id[order][at] == item
        slot = order[at[known]]
        ad_vec = ad_vectors(st, category, advertiser)
        ad_vec[known] += state.ad_own_vec[slot]
        ad_bias = np.zeros(len(item))
        ad_bias[known] = state.ad_bias[slot]
        logit, _ = ad_logit(
            st,
            self.config,
            state.user_vec,
            user,
            surface,
            ad_vec,
            ad_bias,
            advertiser,
            ad_format,
            state.market,
        )
        return _sigmoid(logit)

    def day_click_probabilities(self, ds: str) -> pa.Table:
        """Every event of day `ds` with the true P(click) its label was drawn with, intent included:
        `event_id`, `p_click`. Their sum over any rows is those rows' expected clicks. For benchmarks
        and tests only; a model never sees this."""
        state = self.state(ds)
        parts = [(rows["pos"], rows["p_click"]) for rows in self._day_rows(state)]
        return pa.table(
            {
                "event_id": _event_ids(ds, np.concatenate([p for p, _ in parts])),
                "p_click": pa.array(np.concatenate([p for _, p in parts])),
            }
        )


def _column(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy().astype(np.int64)


def _index_in(table: pa.Table, name: str, values: tuple[str, ...]) -> np.ndarray:
    index = pc.index_in(table.column(name), value_set=pa.array(values))
    if index.null_count:
        raise ValueError(f"{name} holds values outside {values}")
    return index.to_numpy().astype(np.int64)


def _event_ids(ds: str, pos: np.ndarray) -> pa.Array:
    """The event ids of day `ds`'s events at positions `pos`: `<ds>-<pos, 9 digits>`."""
    padded = pc.utf8_lpad(pc.cast(pa.array(pos), pa.string()), width=9, padding="0")
    return pc.binary_join_element_wise(f"{ds}-", padded, "")


def _rechunk(blocks: Iterator[Rows], size: int) -> Iterator[Rows]:
    """Re-cut a stream of row blocks into chunks of exactly `size` rows (the last may be shorter)."""
    buffer: list[Rows] = []
    held = 0
    for block in blocks:
        buffer.append(block)
        held += len(block["pos"])
        while held >= size:
            rows = (
                buffer[0] if len(buffer) == 1 else {k: np.concatenate([b[k] for b in buffer]) for k in block}
            )
            yield {k: v[:size] for k, v in rows.items()}
            buffer = [{k: v[size:] for k, v in rows.items()}]
            held -= size
    if held:
        yield {k: np.concatenate([b[k] for b in buffer]) for k in buffer[0]}


def write_world_events(world: SyntheticWorld, events_dir: Path, days: list[str]) -> None:
    """Write `<events_dir>/ds=<ds>/events.parquet` (EVENTS_SCHEMA) for each of `days`: the world's
    events as a user's own logs, for the `files` source (`write_day_events`: a re-run replaces a file)."""
    for ds in days:
        write_day_events(events_dir, ds, world.day_table(ds))
