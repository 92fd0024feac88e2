"""The live status page at `/`, in a real headless Chromium (the system's /usr/bin/chromium, driven
by Playwright): it shows the dependencies of a running Janus with the numbers /metrics gives,
updates without a reload while jobs flow, and its `why` box answers."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from janus.client import Producer, ReadyJob, Worker
from tests.integration.harness import eventually, make_config, running_janus
from tests.integration.test_status import http, scrape

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "img" / "status-page.png"
POLICIES = {
    "payments-api": {
        "rate_limits": ["20/1s", "600/1m"],
        "concurrency": 6,
        "admission_ttl": "0.5s",
        "lease_timeout": "10s",
        "fairness": {"scope_concurrency": 3},
    },
    "email": {"concurrency": 2, "admission_ttl": "0.5s"},
    # Adaptive under a static ceiling: its card shows the rate it found (its first, with no traffic).
    "search": {"rate_limits": ["50/1s"], "adaptive": {"enabled": True, "max_rate": "50/1s"}},
}
DEADLINE_MS = 20_000


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(
                "chromium is missing: CI=true, so this is a failure (scripts/ensure-tools installs it)"
            )
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


@asynccontextmanager
async def browser_page(base: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 760})
            await page.goto(f"{base}/")
            yield page
        finally:
            await browser.close()


async def card_value(page: Any, dependency: str, field: str) -> str:
    text: str = await page.locator(f'article[data-dependency="{dependency}"] .value.{field}').inner_text()
    return text


async def test_the_page_shows_updates_and_answers_why(database: str, vhost: str, tmp_path: Path) -> None:
    config = make_config(database, vhost, POLICIES)

    async def work(job: ReadyJob) -> None:
        await asyncio.sleep(0.05)  # the call to the dependency

    async with running_janus(config) as service, http(service) as base, browser_page(base) as page:
        async with await Producer.connect(vhost) as producer:
            jobs = [(f"order-{i}", "payments-api", None, f"tenant-{i % 4}") for i in range(300)]
            jobs += [(f"mail-{i}", "email", None, "default") for i in range(5)]
            await producer.submit_many(jobs)
        registry = service.metrics.registry
        async with Worker(vhost, {"payments-api": work, "search": work}, max_in_flight=6):
            # It shows every dependency, and updates without a reload while jobs flow.
            for dependency in POLICIES:
                await page.wait_for_selector(f'article[data-dependency="{dependency}"]', timeout=DEADLINE_MS)
            await page.wait_for_function(
                """() => Number(document.querySelector('article[data-dependency="payments-api"] .value.admissions')
                      .textContent) >= 20""",
                timeout=DEADLINE_MS,
            )
            seen = int(await card_value(page, "payments-api", "admissions"))
            updates = int(await page.evaluate("document.body.dataset.updates"))
            await page.wait_for_function(
                f"""() => Number(document.querySelector('article[data-dependency="payments-api"] .value.admissions')
                      .textContent) > {seen} && Number(document.body.dataset.updates) > {updates}""",
                timeout=DEADLINE_MS,
            )
            assert await page.evaluate("performance.getEntriesByType('navigation').length") == 1, "no reload"
            # A sparkline of some length, for the screenshot (the limit, 600/1m, allows 10 a second).
            await page.wait_for_function(
                """() => Number(document.querySelector('article[data-dependency="payments-api"] .value.admissions')
                      .textContent) >= 100""",
                timeout=DEADLINE_MS,
            )
            await page.screenshot(path=str(tmp_path / "status-page.png"), full_page=True)
            if os.environ.get("JANUS_UPDATE_SCREENSHOT"):
                await page.screenshot(path=str(SCREENSHOT), full_page=True)
        # The worker has gone: once nothing moves, every number on the page is the one /metrics gives.
        await eventually(
            lambda: (
                registry.get_sample_value("janus_held_slots", {"dependency": "payments-api"}) == 0
                and registry.get_sample_value(
                    "janus_waiting_jobs_by_reason", {"dependency": "payments-api", "reason": "no_worker"}
                )
                == sum(
                    registry.get_sample_value("janus_waiting_jobs", {"dependency": "payments-api", "kind": k})
                    or 0
                    for k in ("ready", "stored", "delayed")
                )
            ),
            timeout=30,
        )
        metrics = await scrape(registry)
        updates = int(await page.evaluate("document.body.dataset.updates"))
        await page.wait_for_function(
            f"() => Number(document.body.dataset.updates) > {updates + 1}", timeout=DEADLINE_MS
        )

        def metric(name: str, **labels: str) -> float:
            return metrics.get((name, tuple(sorted(labels.items()))), 0.0)

        for dependency in POLICIES:
            d = {"dependency": dependency}
            waiting = sum(metric("janus_waiting_jobs", **d, kind=k) for k in ("ready", "stored", "delayed"))
            assert int(await card_value(page, dependency, "admissions")) == metric(
                "janus_admissions_total", **d
            )
            assert int(await card_value(page, dependency, "waiting")) == waiting
            held, cap = (await card_value(page, dependency, "held")).split("/")
            assert int(held) == metric("janus_held_slots", **d)
            if dependency != "search":
                assert int(cap) == metric("janus_concurrency_limit", **d)
        found = metric("janus_adaptive_rate", dependency="search")
        assert found > 0
        assert await card_value(page, "search", "adaptive") == f"rate {float(f'{found:.3g}'):g}/1s"
        assert await card_value(page, "payments-api", "adaptive") == "–"
        assert await page.locator('article[data-dependency="email"] .state').inner_text() == "no worker"
        # The why box answers for a job that waits.
        waiting_job = "mail-0"
        await page.fill("#why-job", waiting_job)
        await page.click("#why-form button")
        await page.wait_for_selector('#why-answer li[data-reason="no_worker"]', timeout=DEADLINE_MS)
        assert waiting_job in await page.locator("#why-answer .why-head").inner_text()
        # An operator's pause shows on the card (who, why) and in the recent changes.
        from tests.integration.harness import janus_cli

        code, out, err = await janus_cli(
            "pause", "search", "--actor", "alice", "--reason", "incident 7", database=database
        )
        assert code == 0, err + out
        await page.wait_for_function(
            """() => (document.querySelector('article[data-dependency="search"] .value.steering') || {})
                  .textContent === 'paused by alice: incident 7 until resumed'""",
            timeout=DEADLINE_MS,
        )
        assert await page.locator('article[data-dependency="search"] .state').inner_text() == "paused"
        await page.wait_for_selector('#changes-list li[data-what="pause"]', timeout=DEADLINE_MS)
        assert "pause search until resumed by alice: incident 7" in " ".join(
            (await page.locator('#changes-list li[data-what="pause"]').inner_text()).split()
        )
