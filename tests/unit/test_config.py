"""The cluster file and mirror policies: valid files load, invalid ones are refused whole.

Each file in tests/configs/ states the problems it must produce in `# expect:` lines at its top;
`bad-*.toml` are cluster files checked with `takeover check`, `policy-*.toml` are policy files
checked with `mirrord check` beside a valid cluster file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mirrord import cli as mirrord_cli
from mirrord.policy import CLASS_DEFAULTS, load_policies, load_policy_file
from takeover import cli as takeover_cli
from takeover.config import config_digest, load_cluster, resolve_node
from takeover.configparse import ConfigError, parse_duration

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "tests" / "configs"
CONF = ROOT / "conf"
BAD_CLUSTERS = sorted(CONFIGS.glob("bad-*.toml"))
BAD_POLICIES = sorted(CONFIGS.glob("policy-*.toml"))
MINIMAL = CONFIGS / "valid-minimal.toml"
# The checkout under test (subprocesses import its code).
REPO = str(Path(__file__).resolve().parents[2])


def expectations(path: Path) -> list[str]:
    """Return the `# expect:` lines at the top of a test file."""
    return [
        line.removeprefix("# expect: ")
        for line in path.read_text().splitlines()
        if line.startswith("# expect: ")
    ]


def error_lines(stderr: str) -> list[str]:
    """Return the `prog: error: ` lines of a CLI's stderr."""
    return [line for line in stderr.splitlines() if ": error: " in line]


def assert_reported(stderr: str, prog: str, label: str, expected: list[str]) -> None:
    """Assert stderr has exactly one error line per expectation, each naming file and key."""
    lines = error_lines(stderr)
    assert len(lines) == len(expected), lines
    for want in expected:
        prefix = f"{prog}: error: {label}: {want}"
        assert any(line.startswith(prefix) for line in lines), (prefix, lines)


def write_cluster(tmp_path: Path, extra: str = "", base: Path = MINIMAL) -> Path:
    """Write a copy of a cluster file (plus `extra` TOML) into tmp_path and return its path."""
    path = tmp_path / "cluster.toml"
    path.write_text(base.read_text() + extra)
    return path


MIRROR_NODES = """
[mirror]
policies = ["mirror.d/*.toml"]
"""


def mirror_cluster(tmp_path: Path) -> Path:
    """Write a valid cluster file with a [mirror] table and node mirror addresses."""
    text = MINIMAL.read_text()
    text = text.replace('name = "a"\n', 'name = "a"\nmirror_address = "192.0.2.11"\n')
    text = text.replace('name = "b"\n', 'name = "b"\nmirror_address = "192.0.2.12"\n')
    path = tmp_path / "cluster.toml"
    path.write_text(text + MIRROR_NODES)
    (tmp_path / "mirror.d").mkdir()
    return path


# --- the table of refused files ----------------------------------------------------------------


def test_the_table_is_large_enough() -> None:
    """At least 20 malformed or inconsistent files are in the table, each with expectations."""
    assert len(BAD_CLUSTERS) + len(BAD_POLICIES) >= 20
    for path in BAD_CLUSTERS + BAD_POLICIES:
        assert expectations(path), path.name


@pytest.mark.parametrize("path", BAD_CLUSTERS, ids=lambda p: p.stem)
def test_takeover_check_refuses_bad_cluster_file(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`takeover check` exits 2 and names the file and key of every problem, nothing else."""
    code = takeover_cli.main(["-c", str(path), "--node", "a", "check", "--no-fs"])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert_reported(err, "takeover", path.name, expectations(path))


@pytest.mark.parametrize("path", BAD_CLUSTERS, ids=lambda p: p.stem)
def test_load_cluster_raises_with_the_same_problems(path: Path) -> None:
    """load_cluster raises one ConfigError whose lines are the file's expected problems."""
    with pytest.raises(ConfigError) as info:
        load_cluster(path)
    lines = str(info.value).splitlines()
    assert lines == info.value.problems
    assert len(lines) == len(expectations(path))


@pytest.mark.parametrize("path", BAD_POLICIES, ids=lambda p: p.stem)
def test_mirrord_check_refuses_bad_policy_file(
    path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mirrord check` exits 2 and names the policy file and key of every problem."""
    cluster = mirror_cluster(tmp_path)
    shutil.copy(path, tmp_path / "mirror.d" / path.name)
    code = mirrord_cli.main(["-c", str(cluster), "--node", "a", "check", "--no-fs"])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert_reported(err, "mirrord", f"mirror.d/{path.name}", expectations(path))


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    """A file with problems in several tables reports every one of them at once."""
    text = MINIMAL.read_text().replace('name = "b"', 'name = "a"')
    text = text.replace('key_file = "/etc/hapair/authkey"', 'key_file = "authkey"')
    text += 'interval = "5"\nport = 0\n\n[[vip]]\naddress = "192.0.2.100"\n'
    text += "\n[announce]\ngarp_count = 0\nbogus = 1\n"
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_cluster(path)
    keys = [line.split(": ")[1] for line in info.value.problems]
    assert keys == [
        "heartbeat.port",
        "heartbeat.interval",
        "heartbeat.key_file",
        "node[1].name",
        "announce.garp_count",
        "announce.bogus",
        "vip[0].address",
    ]


def test_missing_cluster_file_exits_not_configured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cluster file that does not exist gives exit 6 (not configured) and names the file."""
    code = takeover_cli.main(["-c", str(tmp_path / "nowhere.toml"), "check"])
    assert code == 6
    assert "takeover: error: nowhere.toml: cannot read" in capsys.readouterr().err


def test_unknown_node_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """--node naming no node of the cluster exits 2 and names the node and the known ones."""
    code = takeover_cli.main(["-c", str(MINIMAL), "--node", "gamma", "check", "--no-fs"])
    err = capsys.readouterr().err
    assert code == 2
    assert 'valid-minimal.toml: node: "gamma" is not a node of cluster "lab" (a, b)' in err


def test_check_without_no_fs_wants_the_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --no-fs, `takeover check` refuses a key file that does not exist, then accepts it."""
    key = tmp_path / "authkey"
    text = MINIMAL.read_text().replace("/etc/hapair/authkey", str(key))
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    assert takeover_cli.main(["-c", str(path), "--node", "a", "check"]) == 2
    assert f"heartbeat.key_file: {key}: key file not found" in capsys.readouterr().err
    key.write_bytes(os.urandom(32).hex().encode() + b"\n")
    key.chmod(0o600)
    assert takeover_cli.main(["-c", str(path), "--node", "a", "check"]) == 0


@pytest.mark.parametrize(
    ("content", "mode", "problem"),
    [
        (b"", 0o600, "key too short: 0 bytes"),
        (b" \n\n", 0o600, "key too short: 0 bytes"),
        (b"abc", 0o600, "key too short: 3 bytes"),
        (b"k" * 32, 0o644, "key file is accessible by group or others (mode 0644)"),
        (b"k" * 32, 0o640, "key file is accessible by group or others (mode 0640)"),
    ],
    ids=["empty", "whitespace", "three_bytes", "mode_0644", "mode_0640"],
)
def test_check_refuses_every_key_that_run_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, mode: int, problem: str
) -> None:
    """`takeover check` (ExecStartPre) refuses a key file `run` would refuse, in the same words."""
    key = tmp_path / "authkey"
    key.write_bytes(content)
    key.chmod(mode)
    path = tmp_path / "cluster.toml"
    path.write_text(MINIMAL.read_text().replace("/etc/hapair/authkey", str(key)))
    assert takeover_cli.main(["-c", str(path), "--node", "a", "check"]) == 2
    err = capsys.readouterr().err
    assert f"takeover: error: cluster.toml: heartbeat.key_file: {key}: {problem}" in err
    assert takeover_cli.main(["-c", str(path), "--node", "a", "check", "--no-fs"]) == 0


# --- valid files -----------------------------------------------------------------------------


@pytest.mark.parametrize("node", ["alpha", "beta"])
def test_example_cluster_file_passes_check(node: str, capsys: pytest.CaptureFixture[str]) -> None:
    """conf/cluster.toml passes `takeover check` for both of its nodes."""
    args = ["-c", str(CONF / "cluster.toml"), "--node", node, "check", "--no-fs"]
    assert takeover_cli.main(args) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert len(out.splitlines()) == 1
    assert f'ok: cluster "mail", node {node}' in out


def test_example_policies_pass_mirrord_check(capsys: pytest.CaptureFixture[str]) -> None:
    """conf/mirror.d/*.toml pass `mirrord check` through conf/cluster.toml."""
    args = ["-c", str(CONF / "cluster.toml"), "--node", "alpha", "check", "--no-fs"]
    assert mirrord_cli.main(args) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "ok: 4 directories from 2 policy files" in out


def test_check_options_work_after_the_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    """`takeover check -c FILE --node NAME` means the same as options before the subcommand."""
    assert takeover_cli.main(["check", "-c", str(MINIMAL), "--node", "b", "--no-fs"]) == 0
    assert "node b (peer a)" in capsys.readouterr().out


def test_check_json_prints_one_document(capsys: pytest.CaptureFixture[str]) -> None:
    """`check --json` prints one JSON document with the problems, for a bad file too."""
    path = CONFIGS / "bad-port.toml"
    assert takeover_cli.main(["-c", str(path), "--node", "a", "check", "--no-fs", "--json"]) == 2
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert document["ok"] is False
    assert document["problems"] == [f"bad-port.toml: {expectations(path)[0]}"]
    assert err == ""


def test_console_entry_point_exits_2_on_a_bad_file() -> None:
    """`python -m takeover check` on a bad file exits 2 with the error on stderr."""
    path = CONFIGS / "bad-deadtime-not-above-interval.toml"
    result = subprocess.run(
        [sys.executable, "-m", "takeover", "-c", str(path), "--node", "a", "check", "--no-fs"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert error_lines(result.stderr) == [
        f"takeover: error: {path.name}: {expectations(path)[0]}",
    ]


def test_minimal_file_gets_documented_defaults() -> None:
    """A file with only required keys gets the defaults the reference documents."""
    cluster = load_cluster(MINIMAL)
    hb = cluster.heartbeat
    assert (hb.port, hb.interval, hb.deadtime, hb.initdead) == (7405, 0.2, 0.6, 2.0)
    assert cluster.announce.garp_count == 5
    assert cluster.arbitration.targets == ()
    assert cluster.mirror is None
    assert cluster.auto_failback is False
    assert cluster.failback_delay == 60.0
    assert [n.run_dir for n in cluster.nodes] == [Path("/run/hapair")] * 2
    assert [n.priority for n in cluster.nodes] == [100, 100]


def test_deadtime_and_initdead_follow_interval_by_default(tmp_path: Path) -> None:
    """Without deadtime/initdead, deadtime is 3 x interval and initdead max(2 s, 2 x deadtime)."""
    cluster = load_cluster(write_cluster(tmp_path, 'interval = "1s"\n'))
    assert (cluster.heartbeat.deadtime, cluster.heartbeat.initdead) == (3.0, 6.0)


def test_example_values_are_typed() -> None:
    """The example file's values arrive parsed: addresses, interfaces, seconds, paths."""
    cluster = load_cluster(CONF / "cluster.toml")
    alpha = cluster.node("alpha")
    assert str(alpha.heartbeat["direct"]) == "198.51.100.1"
    assert [str(v.address) for v in cluster.vips] == ["192.0.2.100/24", "2001:db8::100/64"]
    assert cluster.vips[0].interface_for(alpha) == "eth0"
    assert alpha.fencing is not None
    assert alpha.fencing.password_file == Path("/etc/hapair/alpha.ipmi")
    assert cluster.checks[0].target == ("127.0.0.1", 25)
    assert cluster.checks[1].command[0] == "/usr/lib/nagios/plugins/check_imap"
    assert cluster.mirror is not None
    assert cluster.mirror.backup_retention == 7 * 86400
    assert cluster.mirror.backup_budget == "10%"


def test_peer_of_and_node_lookup() -> None:
    """peer_of returns the other node; an unknown name raises KeyError."""
    cluster = load_cluster(MINIMAL)
    assert cluster.peer_of("a").name == "b"
    assert cluster.peer_of("b").name == "a"
    with pytest.raises(KeyError):
        cluster.peer_of("c")


def test_resolve_node_defaults_to_the_host_name(tmp_path: Path) -> None:
    """resolve_node(cluster, None) picks the node named like this host (its short name)."""
    host = os.uname().nodename.split(".", 1)[0]
    text = MINIMAL.read_text().replace('name = "a"', f'name = "{host}"')
    text = text.replace('name = "b"', 'name = "not-this-host-0"')
    cluster = load_cluster(_write(tmp_path, text))
    assert resolve_node(cluster, None).name == host


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return path


def test_resolve_node_applies_directory_overrides(tmp_path: Path) -> None:
    """--run-dir/--state-dir override the node's directories; the file's per-node ones otherwise."""
    text = MINIMAL.read_text().replace('name = "a"\n', 'name = "a"\nrun_dir = "/tmp/lab/a/run"\n')
    cluster = load_cluster(_write(tmp_path, text))
    assert resolve_node(cluster, "a").run_dir == Path("/tmp/lab/a/run")
    assert resolve_node(cluster, "b").run_dir == Path("/run/hapair")
    node = resolve_node(cluster, "a", run_dir=tmp_path / "r", state_dir=tmp_path / "s")
    assert (node.run_dir, node.state_dir) == (tmp_path / "r", tmp_path / "s")


def test_resolve_unknown_name_raises_config_error() -> None:
    """resolve_node with an unknown name raises ConfigError naming that node."""
    with pytest.raises(ConfigError, match='"zed" is not a node'):
        resolve_node(load_cluster(MINIMAL), "zed")


# --- durations -------------------------------------------------------------------------------

GOOD_DURATIONS = [
    ("200ms", 0.2),
    ("20ms", 0.02),
    ("5s", 5.0),
    ("1.5s", 1.5),
    ("0s", 0.0),
    ("10m", 600.0),
    ("1h", 3600.0),
    ("7d", 604800.0),
    (" 3s ", 3.0),
]
BAD_DURATIONS = [
    (5, "bare number 5"),
    (0.5, "bare number 0.5"),
    ("5", 'got "5": write the unit'),
    ("5 sec", 'got "5 sec"'),
    ("-1s", 'got "-1s"'),
    ("1h30m", 'got "1h30m"'),
    ("", 'got ""'),
    ("ms", 'got "ms"'),
    (True, "a boolean"),
    ([1], "an array"),
]


@pytest.mark.parametrize(("text", "seconds"), GOOD_DURATIONS)
def test_duration_parses_to_seconds(text: str, seconds: float) -> None:
    """A duration string with a unit parses to float seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("value", "fragment"), BAD_DURATIONS)
def test_duration_refuses_values_without_a_unit(value: object, fragment: str) -> None:
    """Bare numbers and malformed strings are refused with a message that says what to write."""
    with pytest.raises(ValueError, match="must be a duration with a unit") as info:
        parse_duration(value)
    assert fragment in str(info.value)


# --- digest ----------------------------------------------------------------------------------


def test_digest_ignores_spelling_but_not_meaning(tmp_path: Path) -> None:
    """Key order, node order, explicit defaults and location leave the digest; values change it."""
    first = tmp_path / "one" / "cluster.toml"
    first.parent.mkdir()
    first.write_text(MINIMAL.read_text())
    reordered = """
[heartbeat]
key_file = "/etc/hapair/authkey"
port = 7405
links = ["hb", "lan"]
interval = "200ms"

[[node]]
interface = "lan0"
name = "b"
heartbeat = { lan = "192.0.2.12", hb = "198.51.100.2" }

[[node]]
priority = 100
name = "a"
interface = "lan0"
heartbeat = { lan = "192.0.2.11", hb = "198.51.100.1" }

[cluster]
auto_failback = false
name = "lab"
"""
    second = tmp_path / "two" / "elsewhere.toml"
    second.parent.mkdir()
    second.write_text(reordered)
    digest = config_digest(load_cluster(first))
    assert len(digest) == 32
    assert config_digest(load_cluster(second)) == digest
    changed = tmp_path / "three.toml"
    changed.write_text(reordered.replace('"200ms"', '"100ms"'))
    assert config_digest(load_cluster(changed)) != digest


# --- policies ---------------------------------------------------------------------------------


def test_policy_classes_have_ordered_defaults() -> None:
    """Each volatility class's interval lies within its range, hot faster than warm than static."""
    for defaults in CLASS_DEFAULTS.values():
        assert defaults.min_interval <= defaults.interval <= defaults.max_interval
    hot, warm, static = (CLASS_DEFAULTS[c].interval for c in ("hot", "warm", "static"))
    assert hot < warm < static


def test_policies_resolve_class_and_explicit_intervals() -> None:
    """A class gives its interval range; an explicit interval without class is custom."""
    policies = load_policies(load_cluster(CONF / "cluster.toml"), check_fs=False)
    by_path = {str(p.path): p for p in policies}
    mail = by_path["/var/mail"]
    assert (mail.volatility, mail.interval, mail.min_interval, mail.max_interval) == (
        "hot",
        5.0,
        1.0,
        30.0,
    )
    assert (mail.max_delete_count, mail.max_delete_percent) == (None, 50.0)
    uploads = by_path["/srv/uploads"]
    assert (uploads.volatility, uploads.interval, uploads.min_interval) == ("custom", 120.0, 30.0)
    assert by_path["/var/spool/postfix"].max_delete_count == 10000
    assert mail.source == "mirror.d/mail.toml: directory[0]"


def test_fixed_interval_without_class(tmp_path: Path) -> None:
    """A policy with only `interval` syncs at that fixed interval (min = max = interval)."""
    path = tmp_path / "p.toml"
    path.write_text('[[directory]]\npath = "/srv/x"\ninterval = "42s"\n')
    (policy,) = load_policy_file(path, check_fs=False)
    assert (policy.interval, policy.min_interval, policy.max_interval) == (42.0, 42.0, 42.0)


def test_a_schedule_replaces_the_periodic_audit(tmp_path: Path) -> None:
    """A valid crontab `schedule` is kept, and verify_every then defaults to 0 unless set."""
    path = tmp_path / "p.toml"
    path.write_text('[[directory]]\npath = "/srv/x"\nschedule = "0 3 * * *"\n'
                    '[[directory]]\npath = "/srv/y"\nschedule = "*/15 * * * 1-5"\n'
                    'verify_every = "1h"\n[[directory]]\npath = "/srv/z"\n')  # fmt: skip
    x, y, z = load_policy_file(path, check_fs=False)
    assert (x.schedule, x.verify_every) == ("0 3 * * *", 0.0)
    assert (y.schedule, y.verify_every) == ("*/15 * * * 1-5", 3600.0)
    assert (z.schedule, z.verify_every) == (None, 86400.0)


def test_apscheduler_is_loaded_only_for_a_policy_with_a_schedule(tmp_path: Path) -> None:
    """mirrord's daemon and policies without a `schedule` leave APScheduler unimported (3.5 MiB
    of the daemon's resident memory); a policy with one loads and checks it."""
    path = tmp_path / "p.toml"
    path.write_text('[[directory]]\npath = "/srv/x"\n')
    code = ("import sys; import mirrord.cli, mirrord.daemon; from mirrord.policy import "
            "load_policy_file as f; p = f(sys.argv[1], check_fs=False); "
            "print(sorted(m for m in sys.modules if m.startswith('apscheduler'))[:1])")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": REPO})  # fmt: skip
    assert out.stdout.strip() == "[]"
    path.write_text('[[directory]]\npath = "/srv/x"\nschedule = "0 3 * * *"\n')
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": REPO})  # fmt: skip
    assert out.stdout.strip() == "['apscheduler']"


def test_nested_directories_across_files_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A directory inside one mirrored by another policy file is refused, naming both."""
    cluster = mirror_cluster(tmp_path)
    (tmp_path / "mirror.d" / "a.toml").write_text('[[directory]]\npath = "/srv/www"\n')
    (tmp_path / "mirror.d" / "b.toml").write_text('[[directory]]\npath = "/srv/www/img"\n')
    assert mirrord_cli.main(["-c", str(cluster), "--node", "a", "check", "--no-fs"]) == 2
    assert error_lines(capsys.readouterr().err) == [
        "mirrord: error: mirror.d/b.toml: directory[0].path: /srv/www/img is inside /srv/www "
        "(mirror.d/a.toml: directory[0]): nested directories are not allowed"
    ]


def test_glob_matching_nothing_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A policies glob that matches no file is an error naming the cluster file and the glob."""
    cluster = mirror_cluster(tmp_path)
    assert mirrord_cli.main(["-c", str(cluster), "--node", "a", "check", "--no-fs"]) == 2
    assert 'cluster.toml: mirror.policies[0]: "mirror.d/*.toml" matches no file' in (
        capsys.readouterr().err
    )


def test_cluster_without_mirror_table_is_refused_by_mirrord(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`mirrord check` on a cluster file without [mirror] exits 2 and says why."""
    assert mirrord_cli.main(["-c", str(MINIMAL), "--node", "a", "check", "--no-fs"]) == 2
    assert "valid-minimal.toml: mirror: no [mirror] table" in capsys.readouterr().err


def test_mirrord_check_looks_at_the_file_system(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --no-fs, a missing directory and a missing ssh key are errors; present, it passes."""
    cluster = mirror_cluster(tmp_path)
    data = tmp_path / "data"
    key = tmp_path / "mirror_key"
    text = cluster.read_text() + f'ssh_key = "{key}"\n'
    cluster.write_text(text)
    (tmp_path / "mirror.d" / "d.toml").write_text(f'[[directory]]\npath = "{data}"\n')
    assert mirrord_cli.main(["-c", str(cluster), "--node", "a", "check"]) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"mirrord: error: mirror.d/d.toml: directory[0].path: {data}: no such directory on "
        "this node",
        f"mirrord: error: cluster.toml: mirror.ssh_key: {key}: no such file",
    ]
    data.mkdir()
    key.write_text("not really a key\n")
    assert mirrord_cli.main(["-c", str(cluster), "--node", "a", "check"]) == 0
    assert "ok: 1 directories from 1 policy files" in capsys.readouterr().out


# second root -> how it overlaps the first, /t/a (None: it does not)
SYMLINKED_ROOTS = [
    ("link-into", "is inside /t/a ("),  # link-into -> a/sub
    ("link-same", "is already mirrored by"),  # link-same -> a
    ("link-parent", "contains /t/a ("),  # link-parent -> /t (holds a)
    ("via/sub", "is inside /t/a ("),  # via -> a, so via/sub is a/sub
    ("link-other", None),  # link-other -> other
]


@pytest.mark.parametrize(("second", "overlap"), SYMLINKED_ROOTS)
def test_a_root_reached_through_a_symlink_overlaps_like_a_nested_one(
    tmp_path: Path, second: str, overlap: str | None
) -> None:
    """Roots are compared by their real paths: a symlink into (or onto, or above) another root
    is refused as an overlap, naming the real path; a symlink elsewhere is accepted."""
    t = tmp_path / "t"
    (t / "a" / "sub").mkdir(parents=True)
    (t / "other").mkdir()
    os.symlink(t / "a" / "sub", t / "link-into")
    os.symlink(t / "a", t / "link-same")
    os.symlink(t, t / "link-parent")
    os.symlink(t / "a", t / "via")
    os.symlink(t / "other", t / "link-other")
    path = tmp_path / "p.toml"
    path.write_text(f'[[directory]]\npath = "{t / "a"}"\n[[directory]]\npath = "{t / second}"\n')
    if overlap is None:
        assert len(load_policy_file(path)) == 2
        return
    with pytest.raises(ConfigError) as info:
        load_policy_file(path)
    (line,) = info.value.problems
    assert line.startswith(f"p.toml: directory[1].path: {t / second} (really ")
    assert overlap.replace("/t/a", str(t / "a")) in line
    # Without looking at the file system (--no-fs) only the written paths are compared.
    assert len(load_policy_file(path, check_fs=False)) == 2


@pytest.mark.parametrize(
    ("extra", "duty"),
    [
        ('class = "hot"\n', 0.5),
        ('class = "warm"\n', 0.2),
        ('class = "static"\n', 0.1),
        ("", 0.2),  # no class: warm
        ('interval = "42s"\n', 0.2),  # custom interval: warm's duty
        ('class = "hot"\nmax_duty = 0.25\n', 0.25),  # explicit wins
        ('class = "static"\nmax_duty = 1\n', 1.0),
    ],
)
def test_max_duty_defaults_by_class(tmp_path: Path, extra: str, duty: float) -> None:
    """Each class brings its own max_duty (hot syncs more of the time); an explicit one wins."""
    path = tmp_path / "p.toml"
    path.write_text('[[directory]]\npath = "/srv/x"\n' + extra)
    (policy,) = load_policy_file(path, check_fs=False)
    assert policy.max_duty == duty


def test_hotter_classes_may_sync_a_larger_share_of_the_time() -> None:
    """max_duty grows from static to warm to hot, and stays within (0, 1]."""
    hot, warm, static = (CLASS_DEFAULTS[c].max_duty for c in ("hot", "warm", "static"))
    assert 0 < static < warm < hot <= 1


# --- the witness section ------------------------------------------------------------------


WITNESS = """
[witness]
address = "203.0.113.10"
key_file = "{key}"
"""


def test_witness_section_defaults(tmp_path: Path) -> None:
    """A [witness] with address and key only gets port 7406, a 5 s lease and ping-list."""
    c = load_cluster(write_cluster(tmp_path, WITNESS.format(key="/etc/hapair/witness.key")))
    assert c.witness is not None
    assert (c.witness.port, c.witness.lease, c.witness.on_unreachable) == (7406, 5.0, "ping-list")


def test_witness_default_lease_covers_the_vms_stop_budgets(tmp_path: Path) -> None:
    """With a slow VM to stop, the default lease grows past its stop budget."""
    vm = '\n[[vm]]\nname = "db"\nxml = "/srv/db.xml"\nstop_timeout = "60s"\n'
    c = load_cluster(write_cluster(tmp_path, WITNESS.format(key="/k") + vm))
    assert c.witness is not None and c.witness.lease > 70.0


def test_check_refuses_a_bad_witness_key_and_run_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`takeover check` and `run` refuse a witness key file by the heartbeat key's rules."""
    hb_key = tmp_path / "authkey"
    hb_key.write_bytes(b"h" * 32)
    hb_key.chmod(0o600)
    wkey = tmp_path / "witness.key"
    wkey.write_bytes(b"w" * 32)
    wkey.chmod(0o644)
    text = MINIMAL.read_text().replace("/etc/hapair/authkey", str(hb_key))
    path = tmp_path / "cluster.toml"
    path.write_text(text + WITNESS.format(key=wkey))
    assert takeover_cli.main(["-c", str(path), "--node", "a", "check"]) == 2
    err = capsys.readouterr().err
    assert f"cluster.toml: witness.key_file: {wkey}: key file is accessible by group" in err
    assert takeover_cli.main(["-c", str(path), "--node", "a", "run"]) == 2
    assert "witness.key_file" in capsys.readouterr().err
    wkey.chmod(0o600)
    assert takeover_cli.main(["-c", str(path), "--node", "a", "check"]) == 0
    assert "witness 203.0.113.10" in capsys.readouterr().out


def test_hung_after_defaults_past_two_deadtimes_and_zero_means_never(tmp_path: Path) -> None:
    """[node.fencing] hung_after is max(10 s, 2 x deadtime) unless given; 0 is allowed (never)."""
    fencing = (
        '[node.fencing]\ntype = "ipmi"\naddress = "192.0.2.201"\nuser = "u"\n'
        'password_file = "/etc/hapair/a.ipmi"\n'
    )
    text = MINIMAL.read_text().replace('[[node]]\nname = "b"', fencing + '\n[[node]]\nname = "b"')
    assert text.count("[node.fencing]") == 1
    for interval, given, want in [("200ms", "", 10.0), ("5s", "", 30.0), ("1s", "0s", 0.0)]:
        body = text.replace("[heartbeat]\n", f'[heartbeat]\ninterval = "{interval}"\n', 1)
        if given:
            body = body.replace("[node.fencing]\n", f'[node.fencing]\nhung_after = "{given}"\n')
        path = tmp_path / "cluster.toml"
        path.write_text(body)
        fencing_cfg = load_cluster(path).nodes[0].fencing
        assert fencing_cfg is not None and fencing_cfg.hung_after == want, (interval, given)
