"""Durations and times of the catalog's options: what parses, what it means, and the one-line refusals."""

import datetime

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.catalog import timespec as ts
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 12, 7, 3, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("text, seconds", [
    ("45s", 45), ("90m", 5400), ("12h", 43200), ("14d", 14 * 86400), ("2w", 14 * 86400), ("1d12h", 129600), (" 30D ", 30 * 86400),
    ("0s", 0),
])
def test_durations(text, seconds):
    assert ts.parse_duration(text, "keep_within") == datetime.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "14", "d", "14x", "-1d", "1.5d", "14 d", "1d 12h", "fortnight", None, 14])
def test_bad_durations_fail_in_one_line_naming_the_option(text):
    with pytest.raises(PgdrError, match=r"^keep_within .* is not a duration: use a number and a unit such as 12h, 14d") as caught:
        ts.parse_duration(text, "keep_within")
    assert "\n" not in caught.value.msg


def test_a_zero_duration_is_refused_where_it_must_be_positive():
    with pytest.raises(PgdrError, match="^max_age '0h' is zero"):
        ts.parse_positive_duration("0h", "max_age")
    assert ts.parse_positive_duration("1s", "max_age") == datetime.timedelta(seconds=1)


@pytest.mark.parametrize("text, expected", [
    ("2026-11-21T14:00:51Z", datetime.datetime(2026, 11, 21, 14, 0, 51, tzinfo=UTC)),
    ("2026-11-21T14:00:51.25Z", datetime.datetime(2026, 11, 21, 14, 0, 51, 250000, tzinfo=UTC)),
    ("2026-11-21T16:00:51+02:00", datetime.datetime(2026, 11, 21, 14, 0, 51, tzinfo=UTC)),
    ("2026-11-21 14:00", datetime.datetime(2026, 11, 21, 14, 0, tzinfo=UTC)),  # no offset: UTC
    ("2026-11-21", datetime.datetime(2026, 11, 21, tzinfo=UTC)),
    ("20261121T140051Z", datetime.datetime(2026, 11, 21, 14, 0, 51, tzinfo=UTC)),
])
def test_times(text, expected):
    assert ts.parse_time(text, "since") == expected
    assert ts.parse_moment(text, "since", NOW) == expected


def test_a_yaml_timestamp_arrives_as_a_datetime_and_is_taken_as_utc():
    assert ts.parse_time(datetime.datetime(2026, 11, 21, 14, 0), "until") == datetime.datetime(2026, 11, 21, 14, 0, tzinfo=UTC)
    assert ts.parse_time(datetime.date(2026, 11, 21), "until") == datetime.datetime(2026, 11, 21, tzinfo=UTC)


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "2026-11-21T25:00:00Z", "21.11.2026", "20261399T000000Z", ""])
def test_bad_times_fail_in_one_line(text):
    with pytest.raises(PgdrError, match=r"^newest_before .* is not a time: use ISO 8601 such as 2026-11-21T14:00:00Z") as caught:
        ts.parse_moment(text, "newest_before", NOW)
    assert "\n" not in caught.value.msg


def test_a_duration_is_counted_back_from_now_or_forward_for_an_expiry():
    assert ts.parse_moment("2d", "since", NOW) == NOW - datetime.timedelta(days=2)
    assert ts.parse_moment("30d", "pin_expires", NOW, future=True) == NOW + datetime.timedelta(days=30)


def test_backup_id_time_only_for_generated_ids():
    assert ts.backup_id_time("20261121T140051Z") == datetime.datetime(2026, 11, 21, 14, 0, 51, tzinfo=UTC)
    assert ts.backup_id_time("before-upgrade") is None
    assert ts.backup_id_time("20261399T000000Z") is None


def test_show_duration_reads_back():
    for text in ("1d12h", "14d", "26h", "45s", "1d1h1m1s"):
        delta = ts.parse_duration(text, "x")
        assert ts.parse_duration(ts.show_duration(delta), "x") == delta
    assert ts.show_duration(datetime.timedelta(hours=26)) == "1d2h"
    assert ts.iso(datetime.datetime(2026, 11, 21, 16, 0, 51, 9, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))) == "2026-11-21T14:00:51Z"
