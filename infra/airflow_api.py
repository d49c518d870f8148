"""A small client of Airflow's REST API v2, the API the UI calls, authenticated with a JWT.

Under the simple auth manager, `POST /auth/token` with `{"username", "password"}` returns
`{"access_token": ...}`; every other call sends `Authorization: Bearer <token>`.
Backfills: `POST /api/v2/backfills` creates the runs of a date range at once; the
scheduler runs them (at most `max_active_runs` together) and sets the backfill's
`completed_at` once none is queued or running.

An api-server over SQLite answers 503 when the database is locked (the transaction was rolled
back, so trying again is safe); the client retries a 503 with backoff before it gives up.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

TOKEN_ROUTE = "/auth/token"
PAGE = 100  # the api-server's default `[api] maximum_page_limit`
# 503 only, any method: about 30 s of backoff (0, 2, 4, 8, 16 s), or the server's Retry-After.
RETRY_UNAVAILABLE = Retry(
    total=5, status_forcelist=[503], allowed_methods=None, backoff_factor=1, raise_on_status=False
)


class AirflowAPIError(RuntimeError):
    """An Airflow REST call answered with an error status (`status`)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _midnight(day: str) -> str:
    """`YYYY-MM-DD` as the UTC timestamp the API takes for a logical date."""
    return f"{day}T00:00:00Z"


class AirflowClient:
    """Authenticated calls to one Airflow api-server (`base_url`, e.g. `http://127.0.0.1:8080`)."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        timeout_s: float = 30.0,
        retry: Retry = RETRY_UNAVAILABLE,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._session = requests.Session()
        self._session.mount(self.base_url, HTTPAdapter(max_retries=retry))
        token = self._call("POST", TOKEN_ROUTE, json={"username": username, "password": password})
        self._session.headers["Authorization"] = f"Bearer {token['access_token']}"

    def _call(self, method: str, path: str, **kwargs: Any) -> dict:
        """One request; the decoded JSON answer, or `AirflowAPIError` naming the status and body."""
        response = self._session.request(method, self.base_url + path, timeout=self.timeout_s, **kwargs)
        if response.status_code >= 400:
            raise AirflowAPIError(
                f"{method} {path}: HTTP {response.status_code}: {response.text[:500]}", response.status_code
            )
        return response.json()

    def wait_for_dag(self, dag_id: str, timeout_s: float, poll_s: float = 2.0) -> dict:
        """The DAG once the DAG processor has registered it (`GET /api/v2/dags/{dag_id}`)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self._call("GET", f"/api/v2/dags/{dag_id}")
            except AirflowAPIError as missing:
                if missing.status != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(poll_s)

    def set_paused(self, dag_id: str, paused: bool) -> dict:
        """Pause or unpause the DAG (`PATCH /api/v2/dags/{dag_id}`); a paused DAG's runs all wait."""
        return self._call("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": paused})

    def create_backfill(
        self,
        dag_id: str,
        from_date: str,
        to_date: str,
        reprocess_behavior: str = "completed",
        max_active_runs: int = 1,
    ) -> dict:
        """Create a backfill of the logical days `from_date`..`to_date` (both included); returns it.

        `reprocess_behavior` is `none`, `failed` or `completed` (which days that already have a
        run are run again); with `depends_on_past` tasks it must not be `none`.
        """
        body = {
            "dag_id": dag_id,
            "from_date": _midnight(from_date),
            "to_date": _midnight(to_date),
            "reprocess_behavior": reprocess_behavior,
            "max_active_runs": max_active_runs,
        }
        return self._call("POST", "/api/v2/backfills", json=body)

    def _pages(self, path: str, key: str, params: dict[str, Any]) -> list[dict]:
        """Every item of a paged collection (`key` of each answer), one page of `PAGE` at a time."""
        items: list[dict] = []
        while True:
            page = self._call("GET", path, params={**params, "limit": PAGE, "offset": len(items)})
            items += page[key]
            if not page[key] or len(items) >= page["total_entries"]:
                return items

    def dag_runs(self, dag_id: str, from_date: str, to_date: str) -> list[dict]:
        """The runs of `dag_id` with a logical day in `from_date`..`to_date`, in date order."""
        params = {
            "logical_date_gte": _midnight(from_date),
            "logical_date_lte": _midnight(to_date),
            "order_by": "logical_date",
        }
        return self._pages(f"/api/v2/dags/{dag_id}/dagRuns", "dag_runs", params)

    def backfills(self, dag_id: str) -> list[dict]:
        """Every backfill of `dag_id`, oldest first; `completed_at` is null while one is active."""
        return self._pages("/api/v2/backfills", "backfills", {"dag_id": dag_id, "order_by": "id"})

    def dag_run_states(self, dag_id: str, from_date: str, to_date: str) -> dict[str, str]:
        """The state of each run of `dag_id` with a logical day in `from_date`..`to_date`, by day."""
        return {run["logical_date"][:10]: run["state"] for run in self.dag_runs(dag_id, from_date, to_date)}

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """The task instances of one run, mapped ones once per map index (`map_index` -1 if not mapped)."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances"
        return self._pages(path, "task_instances", {"order_by": "map_index"})

    def wait_for_backfill(self, backfill: dict, timeout_s: float, poll_s: float = 10.0) -> dict[str, str]:
        """Poll until the backfill is complete; returns the final state of each of its runs, by day.

        A failed day holds the later ones (`depends_on_past`) until it is cleared, so the
        backfill never completes: the timeout error names every run's state.
        """
        dag_id, first, last = backfill["dag_id"], backfill["from_date"][:10], backfill["to_date"][:10]
        deadline = time.monotonic() + timeout_s
        while True:
            done = self._call("GET", f"/api/v2/backfills/{backfill['id']}")["completed_at"] is not None
            states = self.dag_run_states(dag_id, first, last)
            if done:
                return states
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"backfill {backfill['id']} of {dag_id} not complete after {timeout_s:.0f} s: {states}"
                )
            time.sleep(poll_s)
