"""schedule.timer: schedules, their systemd units and cron lines, and that both run exactly the job's argv."""

import os
import re
import shlex
import shutil
import subprocess

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.schedule import timer

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")  # `make deps` installs it (Debian's systemd package): no test skips without it


def needs_systemd_analyze(test):
    return test


def test_systemd_analyze_is_installed():
    assert SYSTEMD_ANALYZE, "systemd-analyze is missing: make apt installs the systemd package"


# words every quoting must survive: spaces, quotes, backslashes, specifiers, variables, separators, control characters
NASTY = ["plain", "a b", "", "100%", "%n", "$HOME", "${HOME}", "$$", "x\"y", "it's", "back\\slash", ";", "\\;", "a;b", "tab\there",
         "new\nline", "*", "~", "é", "-", "--opt=v a l", "#hash", "`cmd`", "@at"]
ARGV = ["/usr/local/lib/pgdr/pgdr-backup", "run", "--job", "/etc/pgdr/backup/nightly.json", "--random-delay", "600"]


def daily(**kw):
    return timer.parse_schedule(list(timer.WEEKDAYS), "02:30", **kw)


# --- parse_schedule -----------------------------------------------------------------------------------------


def test_parse_schedule_orders_and_normalizes():
    schedule = timer.parse_schedule(["fri", "Mon", " wed"], "02:30", "Europe/Paris", 600, False)
    assert schedule == timer.Schedule(("mon", "wed", "fri"), "02:30", "Europe/Paris", 600, False)
    assert timer.parse_schedule(["mon"], "00:00") == timer.Schedule(("mon",), "00:00", "", 0, True)
    assert timer.parse_schedule(["sun"], "23:59", None).timezone == ""


@pytest.mark.parametrize("args, words", [
    ((["mon", "funday"], "02:30"), ["schedule.weekdays", "'funday'", "mon, tue"]),
    ((["mon", "wed", "mon"], "02:30"), ["schedule.weekdays", "twice"]),
    (([], "02:30"), ["schedule.weekdays", "non-empty list"]),
    (("mon", "02:30"), ["schedule.weekdays", "list"]),
    ((None, "02:30"), ["schedule.weekdays"]),
    ((["mon"], "24:00"), ["schedule.time", "HH:MM", "00:00 to 23:59"]),
    ((["mon"], "2:30"), ["schedule.time", "HH:MM"]),
    ((["mon"], "02:60"), ["schedule.time"]),
    ((["mon"], "02:30:00"), ["schedule.time"]),
    ((["mon"], 230), ["schedule.time"]),
    ((["mon"], "02:30", "Mars/Olympus"), ["schedule.timezone", "'Mars/Olympus'", "Europe/Paris"]),
    ((["mon"], "02:30", "../../../etc/passwd"), ["schedule.timezone"]),
    ((["mon"], "02:30", "Europe/../../../etc/passwd"), ["schedule.timezone"]),
    ((["mon"], "02:30", "/usr/share/zoneinfo/UTC"), ["schedule.timezone"]),
    ((["mon"], "02:30", "zone.tab"), ["schedule.timezone"]),
    ((["mon"], "02:30", "Europe"), ["schedule.timezone"]),  # a folder, not a zone
    ((["mon"], "02:30", "", -1), ["schedule.randomized_delay", "0 or more"]),
    ((["mon"], "02:30", "", True), ["schedule.randomized_delay"]),
    ((["mon"], "02:30", "", "60"), ["schedule.randomized_delay"]),
    ((["mon"], "02:30", "", 0, "yes"), ["schedule.persistent"]),
])
def test_parse_schedule_refuses_in_one_line(args, words):
    with pytest.raises(PgdrError) as caught:
        timer.parse_schedule(*args)
    assert "\n" not in caught.value.msg
    for word in words:
        assert word in caught.value.msg


def test_zone_must_be_a_zone_file_inside_the_folder(tmp_path):
    zoneinfo = tmp_path / "zoneinfo"
    (zoneinfo / "Good").mkdir(parents=True)
    (zoneinfo / "Good" / "Zone").write_bytes(b"TZif2" + b"\0" * 40)
    (zoneinfo / "Good" / "Alias").symlink_to("Zone")  # tzdata's own links stay inside: fine
    (zoneinfo / "leapseconds").write_text("# not a zone\n")
    outside = tmp_path / "outside"
    outside.write_bytes(b"TZif2" + b"\0" * 40)
    (zoneinfo / "Escape").symlink_to(outside)
    assert timer.parse_schedule(["mon"], "01:00", "Good/Zone", zoneinfo_dir=str(zoneinfo)).timezone == "Good/Zone"
    assert timer.parse_schedule(["mon"], "01:00", "Good/Alias", zoneinfo_dir=str(zoneinfo)).timezone == "Good/Alias"
    for zone in ("Escape", "leapseconds", "Good", "Good/Missing"):
        with pytest.raises(PgdrError, match="schedule.timezone"):
            timer.parse_schedule(["mon"], "01:00", zone, zoneinfo_dir=str(zoneinfo))


def test_real_zones_of_this_host():
    for zone in ("UTC", "Europe/Paris", "America/Argentina/Buenos_Aires", "Etc/GMT+5"):
        assert timer.parse_schedule(["mon"], "01:00", zone).timezone == zone


# --- names --------------------------------------------------------------------------------------------------


def test_job_names():
    assert timer.validate_job_name("nightly_db-1") == "nightly_db-1"
    assert timer.validate_job_name("a" * 63) == "a" * 63
    for bad in ("", "-x", "_x", "Nightly", "a.b", "a/b", "a b", "a" * 64, None, "ü"):
        with pytest.raises(PgdrError, match="backup job name .* a-z, 0-9"):
            timer.validate_job_name(bad)
    assert timer.unit_names("nightly") == ("pgdr-backup-nightly.service", "pgdr-backup-nightly.timer")
    assert timer.cron_path("nightly") == "/etc/cron.d/pgdr-backup-nightly"
    assert timer.SYSTEMD_DIR == "/etc/systemd/system"
    with pytest.raises(PgdrError):
        timer.cron_path("../x")


# --- OnCalendar ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weekdays, time, zone, expected", [
    (["mon", "wed", "fri"], "02:30", "Europe/Paris", "Mon,Wed,Fri *-*-* 02:30:00 Europe/Paris"),
    (["sun"], "00:05", "", "Sun *-*-* 00:05:00"),
    (list(timer.WEEKDAYS), "23:59", "", "*-*-* 23:59:00"),
    (["sat", "tue"], "12:00", "UTC", "Tue,Sat *-*-* 12:00:00 UTC"),
])
def test_on_calendar(weekdays, time, zone, expected):
    assert timer.on_calendar(timer.parse_schedule(weekdays, time, zone)) == expected


@needs_systemd_analyze
@pytest.mark.parametrize("event", ["Mon,Wed,Fri *-*-* 02:30:00 Europe/Paris", "Sun *-*-* 00:05:00", "*-*-* 23:59:00"])
def test_systemd_reads_our_calendar_events_as_written(event):
    schedule_args = {
        "Mon,Wed,Fri *-*-* 02:30:00 Europe/Paris": (["mon", "wed", "fri"], "02:30", "Europe/Paris"),
        "Sun *-*-* 00:05:00": (["sun"], "00:05", ""),
        "*-*-* 23:59:00": (list(timer.WEEKDAYS), "23:59", ""),
    }[event]
    rendered = timer.on_calendar(timer.parse_schedule(*schedule_args))
    done = subprocess.run([SYSTEMD_ANALYZE, "calendar", rendered], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "Normalized form: %s" % event in done.stdout


# --- the command lines parse back to the argv ---------------------------------------------------------------


def unquote_systemd(line, specifiers=True):
    """The argv systemd makes of an ExecStart= value (systemd.service(5) "Command lines"), for what we write:
    specifiers first (only '%%' is expected), then words split on blanks with double/single quotes and C escapes,
    then at exec time '$$' -> '$' (a lone '$' would be a variable: refused here). ``specifiers=False`` reads the
    already-resolved command line systemd-analyze dumps."""
    if specifiers:
        if re.search(r"%[^%]", line.replace("%%", "")) or line.replace("%%", "").endswith("%"):
            raise AssertionError("an unescaped specifier in %r" % line)
        line = line.replace("%%", "\0pct\0")
    escapes = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "\\": "\\", '"': '"', "'": "'", "$": "$", "s": " ",
               ";": ";", "`": "`"}
    words, word, quote, started, pos = [], [], None, False, 0
    while pos < len(line):
        char = line[pos]
        if quote is None and char in " \t":
            if started:
                words.append("".join(word))
            word, started = [], False
        elif char == "\\":
            nxt = line[pos + 1]
            if nxt == "x":
                word.append(chr(int(line[pos + 2:pos + 4], 16)))
                pos += 3
            else:
                word.append(escapes[nxt])
                pos += 1
            started = True
        elif quote is None and char in "\"'":
            quote, started = char, True
        elif char == quote:
            quote = None
        else:
            word.append(char)
            started = True
        pos += 1
    assert quote is None, "unbalanced quotes in %r" % line
    if started:
        words.append("".join(word))
    argv = []
    for arg in words:
        if re.search(r"\$[^$]", arg.replace("$$", "")) or arg.replace("$$", "").endswith("$"):
            raise AssertionError("an unescaped variable in %r" % arg)
        argv.append(arg.replace("$$", "$").replace("\0pct\0", "%"))
    return argv


def test_exec_start_parses_back_to_the_argv():
    assert timer.exec_start(ARGV) == " ".join(ARGV)  # plain words stay as they are
    argv = ["/usr/local/lib/pgdr/pgdr-backup"] + NASTY
    assert unquote_systemd(timer.exec_start(argv)) == argv
    for arg in NASTY:
        assert unquote_systemd(timer.exec_start(["/bin/x", arg])) == ["/bin/x", arg]


def test_the_reverse_parser_is_strict():
    # the reverse is only worth something if it notices unescaped specifiers and variables
    with pytest.raises(AssertionError):
        unquote_systemd('/bin/x "100%"')
    with pytest.raises(AssertionError):
        unquote_systemd("/bin/x $HOME")
    assert unquote_systemd('/bin/x "a b" 100%% $$HOME') == ["/bin/x", "a b", "100%", "$HOME"]


def cron_entry(text):
    """(minute, hour, dom, month, dow, user, command) of the one job line of a cron.d file."""
    lines = [line for line in text.splitlines() if line and not line.startswith("#") and "=" not in line.split(" ")[0]]
    assert len(lines) == 1, text
    return lines[0].split(" ", 6)


def test_cron_file():
    schedule = timer.parse_schedule(["fri", "mon", "wed"], "02:30")
    text = timer.cron_file("nightly", schedule, ARGV, "postgres")
    assert text.endswith("\n") and text.startswith("# pgdr.backup")
    assert "SHELL=/bin/sh\n" in text
    assert re.search(r"^PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin$", text, re.M)
    assert cron_entry(text) == ["30", "2", "*", "*", "1,3,5", "postgres", timer.command_line(ARGV)]
    weekend = timer.cron_file("n", timer.parse_schedule(["sun", "sat"], "23:05"), ARGV, "backup")
    assert cron_entry(weekend)[:6] == ["5", "23", "*", "*", "0,6", "backup"]
    assert cron_entry(timer.cron_file("n", daily(), ARGV, "postgres"))[4] == "*"


def test_cron_command_is_the_command_line_and_parses_back():
    argv = ["/usr/local/lib/pgdr/pgdr-backup"] + [arg for arg in NASTY if "\n" not in arg and "%" not in arg]
    command = cron_entry(timer.cron_file("n", daily(), argv, "postgres"))[6]
    assert command == timer.command_line(argv)
    assert shlex.split(command) == argv


def test_cron_refuses_what_it_cannot_run_as_written():
    for arg in ("100%", "new\nline"):
        with pytest.raises(PgdrError, match="cron"):
            timer.cron_file("n", daily(), ["/bin/x", arg], "postgres")


@pytest.mark.parametrize("argv", [[], "/bin/true", ["true"], ["/bin/x", None], ["/bin/x", "a\0b"]])
def test_bad_argv_refused(argv):
    with pytest.raises(PgdrError, match="the job's"):
        timer.command_line(argv)
    with pytest.raises(PgdrError, match="the job's"):
        timer.exec_start(argv)


def test_bad_user_and_description_refused():
    with pytest.raises(PgdrError, match="os_user"):
        timer.systemd_units("n", daily(), ARGV, "postgres\nExecStart=/bin/sh", "d")
    with pytest.raises(PgdrError, match="os_user"):
        timer.cron_file("n", daily(), ARGV, "root postgres")
    with pytest.raises(PgdrError, match="description"):
        timer.systemd_units("n", daily(), ARGV, "postgres", "two\n[Service]")


# --- the systemd units --------------------------------------------------------------------------------------


def unit_settings(text):
    """{section: [(key, value)]} of a unit file (comments and blank lines dropped)."""
    sections, current = {}, None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        else:
            key, value = line.split("=", 1)
            current.append((key, value))
    return sections


def test_systemd_units():
    schedule = timer.parse_schedule(["mon", "wed", "fri"], "02:30", "Europe/Paris", 900)
    units = timer.systemd_units("nightly", schedule, ARGV, "postgres", "pgdr backup nightly (100% of db)")
    service, tmr = unit_settings(units["service"]), unit_settings(units["timer"])
    assert ("Description", "pgdr backup nightly (100%% of db)") in service["Unit"]
    settings = dict(service["Service"])
    assert settings["Type"] == "oneshot"
    assert settings["User"] == "postgres"
    assert unquote_systemd(settings["ExecStart"]) == ARGV
    assert settings["Nice"] == "10"
    assert "Restart" not in settings
    assert "Install" not in service  # started by its timer only
    assert tmr["Timer"] == [("OnCalendar", "Mon,Wed,Fri *-*-* 02:30:00 Europe/Paris"), ("Persistent", "true"), ("RandomizedDelaySec", "900"),
                            ("Unit", "pgdr-backup-nightly.service")]
    assert tmr["Install"] == [("WantedBy", "timers.target")]
    off = timer.systemd_units("n", timer.parse_schedule(["mon"], "01:00", persistent=False), ARGV, "postgres", "d")
    assert ("Persistent", "false") in unit_settings(off["timer"])["Timer"]


def analyze_verify(folder, units):
    """Write ``units`` ({file name: text}) into ``folder`` and run systemd-analyze verify on them; the findings that
    name our files (errors and warnings: an unknown key is only a warning, and must still fail a test)."""
    paths = []
    for file_name, text in units.items():
        path = os.path.join(folder, file_name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        paths.append(path)
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no"] + paths, capture_output=True, text=True, check=False, timeout=120)
    output = done.stdout + done.stderr
    findings = [line for line in output.splitlines() if any(name in line for name in units)]
    return done.returncode, findings


def job_units(name="pgdrt-verify", argv=None, **schedule_kw):
    schedule = timer.parse_schedule(["mon", "wed", "fri"], "02:30", **schedule_kw)
    units = timer.systemd_units(name, schedule, argv or ["/bin/true"] + NASTY, "postgres", "pgdr backup %s" % name)
    service, timer_unit = timer.unit_names(name)
    return {service: units["service"], timer_unit: units["timer"]}


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_our_units(tmp_path):
    # no systemd PID 1 here: verify loads the files itself and needs no manager (checked: systemd 252, --man=no)
    for kw in ({}, dict(timezone="Europe/Paris", randomized_delay=3600, persistent=False)):
        assert analyze_verify(str(tmp_path), job_units(**kw)) == (0, [])


@needs_systemd_analyze
@pytest.mark.parametrize("breakage", [
    ("service", "ExecStart=/bin/true", "ExecStart=bin/true"),  # not an absolute path
    ("service", "ExecStart=/bin/true", "ExecStart=/nonexistent/pgdrt-program"),  # not executable
    ("service", "Nice=10", "Nicety=10"),  # an unknown key: a warning only, exit code 0
    ("service", "Type=oneshot", "Type=oneshot-ish"),
    ("timer", "OnCalendar=Mon,Wed,Fri *-*-* 02:30:00", "OnCalendar=Mon,Wed,Fri *-*-* 25:30:00"),
    ("service", "Description=", "Description=%z"),  # an unknown specifier: a warning only
])
def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path, breakage):
    which, old, new = breakage
    units = job_units(argv=["/bin/true"])
    file_name = [name for name in units if name.endswith("." + which)][0]
    assert old in units[file_name]
    units[file_name] = units[file_name].replace(old, new, 1)
    code, findings = analyze_verify(str(tmp_path), units)
    assert code != 0 or findings


@needs_systemd_analyze
def test_systemd_parses_exec_start_back_to_the_argv(tmp_path):
    """systemd's own parse of our ExecStart=: its debug dump prints the parsed command line (specifiers resolved,
    re-quoted by systemd); '$$' is turned into '$' later, at exec time."""
    argv = ["/bin/true"] + NASTY
    units = job_units(argv=argv)
    service = [name for name in units if name.endswith(".service")][0]
    path = tmp_path / service
    path.write_text(units[service])
    env = dict(os.environ, SYSTEMD_LOG_LEVEL="debug")
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(path)], capture_output=True, text=True, check=False, env=env, timeout=120)
    lines = [line.split("Command Line: ", 1)[1] for line in (done.stdout + done.stderr).splitlines() if "Command Line: " in line]
    assert len(lines) == 1, done.stderr[-2000:]
    assert unquote_systemd(lines[0], specifiers=False) == argv


# --- the host -----------------------------------------------------------------------------------------------


def test_timer_kind(tmp_path):
    booted = tmp_path / "systemd"
    assert timer.timer_kind("auto", str(booted)) == "cron"
    booted.mkdir()
    assert timer.timer_kind("auto", str(booted)) == "systemd"
    assert timer.timer_kind("cron", str(booted)) == "cron"
    assert timer.timer_kind("systemd", str(tmp_path / "nothing")) == "systemd"
    with pytest.raises(PgdrError, match="timer must be one of auto, systemd, cron"):
        timer.timer_kind("anacron")


def test_host_timezone(tmp_path):
    etc_timezone, localtime = tmp_path / "timezone", tmp_path / "localtime"
    assert timer.host_timezone(str(etc_timezone), str(localtime)) == "UTC"
    localtime.symlink_to("/usr/share/zoneinfo/America/New_York")
    assert timer.host_timezone(str(etc_timezone), str(localtime)) == "America/New_York"
    etc_timezone.write_text("Europe/Paris\n")
    assert timer.host_timezone(str(etc_timezone), str(localtime)) == "Europe/Paris"
    etc_timezone.write_text("\n")
    assert timer.host_timezone(str(etc_timezone), str(localtime)) == "America/New_York"
    localtime.unlink()
    localtime.write_bytes(b"TZif2")  # a copied file names no zone
    assert timer.host_timezone(str(etc_timezone), str(localtime)) == "UTC"


def test_cron_timezone_ok():
    paris = timer.parse_schedule(["mon"], "01:00", "Europe/Paris")
    assert timer.cron_timezone_ok(timer.parse_schedule(["mon"], "01:00"), "Asia/Tokyo")
    assert timer.cron_timezone_ok(paris, "Europe/Paris")
    assert not timer.cron_timezone_ok(paris, "Europe/Berlin")
    assert not timer.cron_timezone_ok(paris, "UTC")
    assert timer.cron_timezone_ok(timer.parse_schedule(["mon"], "01:00", "UTC"), "Etc/UTC")
    assert not timer.cron_timezone_ok(timer.parse_schedule(["mon"], "01:00", "UTC"), "Europe/London")


# --- interval schedules (the WAL archive's watcher) ----------------------------------------------------------


@pytest.mark.parametrize("minutes, event, cron", [(5, "*-*-* *:00/5:00", "*/5 * * * *"), (60, "*-*-* *:00:00", "0 * * * *"),
                                                  (1, "*-*-* *:00/1:00", "*/1 * * * *")])
def test_an_interval_runs_every_n_minutes_in_systemd_and_cron(tmp_path, minutes, event, cron):
    schedule = timer.parse_interval(minutes)
    assert timer.on_calendar(schedule) == event and not schedule.persistent
    done = subprocess.run([SYSTEMD_ANALYZE, "calendar", "--iterations=3", event], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    entry = cron_entry(timer.cron_file("watch", schedule, ARGV, "postgres"))
    assert " ".join(entry[:5]) == cron and entry[5:] == ["postgres", timer.command_line(ARGV)]
    units = timer.systemd_units("pgdrt-watch", schedule, ["/bin/true"], "postgres", "pgdr watch")
    service, timer_unit = timer.unit_names("pgdrt-watch")
    assert analyze_verify(str(tmp_path), {service: units["service"], timer_unit: units["timer"]}) == (0, [])


@pytest.mark.parametrize("minutes", [0, 7, 45, 90, True, "5"])
def test_an_interval_that_does_not_divide_the_hour_is_refused(minutes):
    with pytest.raises(PgdrError) as failed:
        timer.parse_interval(minutes)
    assert "divide an hour evenly" in failed.value.msg
