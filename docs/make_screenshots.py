"""Make the screenshots of docs/ui.md: the Dagster UI and the segment report, in headless Chromium.

    .venv/bin/python docs/make_screenshots.py [--customers 600] [--months 4]

Generates a small sample in a temporary folder, materializes every month in one run into a
temporary on-disk Dagster instance, starts ``dagster-webserver`` on it as ``make ui`` does, and
photographs it with Debian's Chromium through Playwright (the same helpers as
tests/test_browser.py). Writes docs/img/{lineage,checks,metadata-plots,report}.png.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from segpipe.timeutil import month_key, month_start, next_month  # noqa: E402
from tests.browser_support import (  # noqa: E402
    chromium,
    make_instance_home,
    make_sample_project,
    open_lineage,
    open_report,
    prepared_ui,
    settle,
)


FIRST_MONTH = "2024-11"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=600)
    parser.add_argument("--months", type=int, default=4)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="segpipe-screens-") as tmp:
        root = Path(tmp)
        config = make_sample_project(root, customers=args.customers, months=args.months, start=FIRST_MONTH)
        home = make_instance_home(root / "dagster_home")
        months = [month_key(next_month(month_start(FIRST_MONTH), i)) for i in range(args.months)]
        result, server = prepared_ui(config, home, months[0], months[-1])
        try:
            if not result.success:
                raise SystemExit("the pipeline run failed; see the log above")
            with chromium() as browser:
                page = open_lineage(browser, server.url, hide_sidebar=True, screenshot=out / "lineage.png",
                                    viewport={"width": 1600, "height": 900})
                page.close()

                page = browser.new_page(viewport={"width": 1500, "height": 900})
                page.goto(server.url + "/assets/orders_ingested?view=checks")
                page.get_by_text("Passed", exact=True).first.wait_for(timeout=30_000)
                page.wait_for_timeout(500)
                page.screenshot(path=str(out / "checks.png"))

                page.goto(server.url + "/assets/segment_membership?view=overview")
                plots = page.get_by_role("button", name="Plots")
                plots.wait_for(timeout=30_000)
                plots.click()
                page.get_by_text("Metadata", exact=True).first.scroll_into_view_if_needed()
                settle(page)
                page.get_by_text("Metadata", exact=True).first.evaluate("e => e.scrollIntoView({block: 'start'})")
                page.wait_for_timeout(300)
                page.screenshot(path=str(out / "metadata-plots.png"))
                page.close()

                report = config.parent / "lake" / "segment_report" / f"{months[-1]}.html"
                page, errors = open_report(browser, report, screenshot=out / "report.png")
                page.close()
                if errors:
                    raise SystemExit(f"console errors in the report: {errors}")
        finally:
            server.stop()
    for name in ("lineage", "checks", "metadata-plots", "report"):
        print(out / f"{name}.png")
    print(f"done in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
