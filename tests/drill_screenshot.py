"""A PNG of a drill report's HTML page, as headless Chromium renders it: the picture in docs/drill-reports.md.

    python -m tests.drill_screenshot [--out PNG] [REPORT_JSON]      (or: make drill-screenshot REPORT=REPORT_JSON)

REPORT_JSON is a run's report.json in its report folder (<folder>/<run id>/report.json): the page is made from it
and the folder's history with the collection's current html.render, as the drill role would make it, so the
picture always shows today's page. Without REPORT_JSON, the sample fleet of tests/drill_sample.py is used. The
PNG goes to docs/images/drill-report.png unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PNG = os.path.join(PROJECT_DIR, "docs", "images", "drill-report.png")
WIDTH = 1100  # CSS pixels: a laptop browser window; the page's own width is at most 1180


def _collection():
    collections = os.path.join(PROJECT_DIR, ".collections")
    if not os.path.isdir(os.path.join(collections, "ansible_collections", "pgdr", "backup")):
        raise SystemExit("drill_screenshot: %s is missing: run `make collection` first" % collections)
    if collections not in sys.path:
        sys.path.insert(0, collections)


def page_of(report_json):
    """The HTML text of the report in ``report_json``, with the history of its report folder when it lies in one."""
    from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
    from ansible_collections.pgdr.backup.plugins.module_utils.drill import html, report

    try:
        with open(report_json, encoding="utf-8") as handle:
            data = json.load(handle)
        run = report.check_report(data)
    except OSError as exc:
        raise SystemExit("drill_screenshot: cannot read %s: %s" % (report_json, exc.strerror)) from None
    except ValueError as exc:
        raise SystemExit("drill_screenshot: %s is not JSON (%s): pass a drill run's report.json" % (report_json, exc)) from None
    except PgdrError as exc:
        raise SystemExit("drill_screenshot: %s: %s" % (report_json, exc.msg)) from None
    run_folder = os.path.dirname(os.path.abspath(report_json))
    # only a run folder (named by its run id) sits in a report folder whose other runs are its history
    history = report.history(os.path.dirname(run_folder)) if os.path.basename(run_folder) == run.run_id else ()
    return html.render(data, history=history)


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m tests.drill_screenshot", description="A PNG of a drill report's HTML page.")
    parser.add_argument("--out", default=DEFAULT_PNG, help="the PNG to write (default: docs/images/drill-report.png)")
    parser.add_argument("report_json", nargs="?", help="a run's report.json in its report folder (default: the sample fleet)")
    args = parser.parse_args(argv)
    _collection()
    from tests.browser import BrowserError, Chromium
    from tests.drill_sample import write_sample

    png = os.path.abspath(args.out)
    with tempfile.TemporaryDirectory(prefix="pgdr-shot-") as scratch:
        report_json = args.report_json
        if report_json is None:
            run = write_sample(os.path.join(scratch, "reports"))
            report_json = os.path.join(scratch, "reports", run.run_id, "report.json")
        page = os.path.join(scratch, "report.html")
        with open(page, "w", encoding="utf-8") as handle:
            handle.write(page_of(report_json))
        os.makedirs(os.path.dirname(png), exist_ok=True)
        try:
            with Chromium() as browser:
                browser.open(page, width=WIDTH)
                browser.screenshot(png, width=WIDTH)
        except BrowserError as exc:
            raise SystemExit("drill_screenshot: %s" % exc) from None
    print("drill_screenshot: %s of %s" % (os.path.relpath(png), report_json if args.report_json else "the sample fleet (tests/drill_sample.py)"))


if __name__ == "__main__":
    main(sys.argv[1:])
