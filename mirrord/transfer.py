"""rsync passes: command lines, running them, exit-code classes, and their counts.

An incremental pass sends exactly the snapshot of dirty paths:

    rsync -a --files-from=- --from0 --relative --delete-missing-args --force ...

(`-a` does not recurse with --files-from, so a listed directory carries only itself; the change
tracker lists the contents of directories that appear. A listed path that vanished is deleted on
the peer thanks to --delete-missing-args, and --force lets that remove a non-empty directory.)

No pass updates a file in place (--inplace): rsync writes each file to a temp name beside it and
renames it over the old one once complete, so a pass killed at any point (the active crashing
mid-pass: the failover case) leaves the peer's file old or new, never torn, and only a stray
`.NAME.XXXXXX` temp that the next full pass deletes. With --backup on, in place saves nothing:
rsync first copies the whole old file into the backup dir, where without it the old file is
just renamed there (256 MiB with 1 MiB changed: 1.15 s in place, 1.06 s by temp file).
A full pass is `rsync -a --delete` over the whole root, with `--checksum` for audits.

Metadata converges on every pass: times are compared to the nanosecond (`--modify-window=-1`;
rsync's default compares whole seconds, so a directory that a deletion or creation on the peer
stamped within the same second as the source's change kept the peer's time, and a full pass
never fixed it). --relative sends the parents of every listed path along as implied
directories, and rsync sets their times again after it has deleted or created entries in
them. The root itself is nobody's implied parent, and listing `.` would send its whole first
level: an incremental pass lists the root's own backup area `./.hapair-backup` first, when the
source has one (a pushing node keeps its source marker there), and its implied parent `./`
carries the root's times and modes. Never a path missing on the source: a receiver that is
rsync's daemon or `rsync --server` (every real peer) is not sent the sender's excludes when only
--delete-missing-args deletes, so a listed backup area missing here was deleted there (moved,
with everything kept so far, into the new pass's backup dir inside itself); and Debian 12's
rsync 3.2.7 refuses any missing argument ("invalid file mode 00", protocol incompatibility),
which failed every incremental pass while the carrier was a name missing on both sides.

On the receiving side, whatever a pass overwrites or deletes is kept under
`<root>/.hapair-backup/<UTC hour>/<MMSS.mmm>/`, one directory per pass, under its own name (no
suffix: mirrord.backups): the backup dir is relative (inside the peer's module,
mirrord.rsyncd), excluded from every pass (an excluded path is never deleted by --delete), and
pruned by the receiving node's mirrord after the backup retention. A path too deep for its
backup path to be named is not sent (the daemon names it, `not_mirrored` in status) rather
than failing the whole pass again and again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import shlex
import shutil
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from mirrord import deletions, excludes
from mirrord.backups import BACKUP_DIR, backup_args
from mirrord.outcome import Messages, Outcome, explain
from mirrord.planner import Result
from mirrord.rsyncd import TUNNEL_HOST, TUNNEL_USER, module_name

log = logging.getLogger(__name__)

# How much of rsync's stderr a result keeps for the log and the journal.
STDERR_KEEP: Final = 4000


# After lsyncd's rsyncExitCodes: each row says why it is classed the way it is.
RSYNC_OUTCOME: Final[dict[int, Outcome]] = {
    0: Outcome(Result.OK, "success"),
    1: Outcome(
        Result.ALARM,
        "syntax or usage error: our command line, or an option the peer's rsync daemon refused",
    ),
    # Also what some failures on the peer end in: a cause in the messages says which.
    2: Outcome(Result.ALARM, "protocol incompatibility: the peer's rsync may need an upgrade"),
    3: Outcome(
        Result.ALARM, "errors selecting input/output files: the root is missing on one side"
    ),
    4: Outcome(
        Result.ALARM, "action not supported: e.g. -A/-X on a file system without ACLs/xattrs"
    ),
    5: Outcome(
        Result.RETRY, "error starting the client-server protocol: the peer side did not come up"
    ),
    6: Outcome(Result.ALARM, "daemon unable to append to log file"),
    10: Outcome(Result.RETRY, "socket I/O error: the connection dropped; resend the snapshot"),
    11: Outcome(
        Result.RETRY, "file I/O error (e.g. peer disk full); resend, escalate if it persists"
    ),
    12: Outcome(
        Result.RETRY, "protocol data stream error: usually the connection dropped mid-pass"
    ),
    13: Outcome(Result.ALARM, "errors with program diagnostics"),
    14: Outcome(Result.RETRY, "IPC error"),
    20: Outcome(Result.RETRY, "rsync was interrupted (SIGINT/SIGUSR1): we were stopping"),
    21: Outcome(Result.RETRY, "waitpid() error"),
    22: Outcome(Result.RETRY, "could not allocate memory buffers"),
    # We cannot tell which listed file failed, so the whole snapshot goes back; the planner's
    # consecutive-failure count turns a file that always fails (unreadable) into an alarm.
    23: Outcome(Result.RETRY, "partial transfer due to error: the snapshot is resent"),
    # A file vanished between rsync's file list and its transfer: the watcher saw it vanish,
    # so it is dirty again and the next pass propagates the deletion (--delete-missing-args).
    24: Outcome(Result.OK, "some source files vanished during the pass: already dirty again"),
    25: Outcome(Result.ALARM, "--max-delete stopped deletions: an operator must look"),
    30: Outcome(Result.RETRY, "timeout in data send/receive"),
    35: Outcome(Result.RETRY, "timeout waiting for the daemon connection"),
    # ssh itself failed: peer down, network cut, or (persistently) authentication.
    255: Outcome(Result.RETRY, "ssh failed: peer unreachable or connection refused"),
}


def classify(rc: int, stderr: str | Messages = "") -> Outcome:
    """Return the outcome of rsync exit code `rc` (killed or unknown codes included), with the
    cause its messages name (mirrord.outcome): everything rsync printed, not its last line."""
    if rc in RSYNC_OUTCOME:
        by_code = RSYNC_OUTCOME[rc]
    elif rc < 0:
        by_code = Outcome(Result.RETRY, f"rsync killed by signal {-rc}")
    else:
        by_code = Outcome(Result.ALARM, f"unknown rsync exit code {rc}")
    messages = Messages.of(stderr) if isinstance(stderr, str) else stderr
    return explain(rc, by_code, messages)


@dataclass(frozen=True)
class Peer:
    """Where and how to reach the receiving node."""

    # Account on the peer (its authorized_keys restricts it to the roots).
    user: str
    # The peer's mirror_address.
    address: str
    port: int = 22
    # Private key file; None uses ssh's defaults.
    key: str | None = None
    # ssh ControlPath of the one persistent connection per peer.
    control_path: str | None = None
    # How long the master connection outlives its last pass.
    control_persist: str = "10m"
    # Extra ssh options (e.g. "-o", "UserKnownHostsFile=...").
    ssh_options: tuple[str, ...] = ()
    # Seconds of I/O silence after which rsync gives up (rc 30).
    io_timeout: int = 60
    # The peer's mirror key starts rsync's daemon (address a root by its module); False: it
    # runs mirrord.receive + rrsync (address a root by its path).
    daemon: bool = True
    # The standing daemon's port ([mirror] tunnel_port; 0: none), and whether this pass goes
    # to it through the forward (mirrord.tunnel) instead of an ssh session.
    tunnel_port: int = 0
    via_tunnel: bool = False

    def ssh_argv(self) -> list[str]:
        """Return the ssh command rsync runs (`-e`)."""
        argv = [
            "ssh", "-p", str(self.port),
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=10",
            "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=3",
        ]  # fmt: skip
        if self.key:
            argv += ["-i", self.key, "-o", "IdentitiesOnly=yes"]
        if self.control_path:
            argv += [
                "-o", "ControlMaster=auto",
                "-o", f"ControlPath={self.control_path}",
                "-o", f"ControlPersist={self.control_persist}",
            ]  # fmt: skip
        return argv + list(self.ssh_options)

    @property
    def local_port(self) -> int:
        """The forward's port on this node's loopback (the tunnel port is the peer's daemon's,
        and this node's own daemon listens there too)."""
        return self.tunnel_port + 1

    def forward_argv(self) -> list[str]:
        """Return the ssh command that adds the tunnel's forward to the ControlMaster."""
        spec = f"{TUNNEL_HOST}:{self.local_port}:{TUNNEL_HOST}:{self.tunnel_port}"
        return [*self.ssh_argv(), "-O", "forward", "-L", spec, self.login]

    @property
    def login(self) -> str:
        """Return user@host (an IPv6 address in brackets)."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.user}@{host}"

    def target(self, root: str) -> str:
        """Return the rsync destination for `root`: its module on the peer's rsync daemon
        (started by sshd for the mirror key, mirrord.rsyncd), which writes the same path; or,
        with the rrsync receiver, the path itself."""
        if self.via_tunnel:
            return f"rsync://{TUNNEL_USER}@{TUNNEL_HOST}:{self.local_port}/{module_name(root)}/"
        if self.daemon:
            return f"{self.login}::{module_name(root)}/"
        return f"{self.login}:{root.rstrip('/')}/"


@dataclass(frozen=True)
class TransferOptions:
    """rsync options of one directory (built from its mirror policy)."""

    # rsync exclude patterns from the policy.
    excludes: tuple[str, ...] = ()
    # Propagate deletions (--delete / --delete-missing-args).
    delete: bool = True
    # Backstop for the guard: rsync stops deleting after this many (exit 25). None: no limit.
    max_delete: int | None = None
    # KiB/s; 0 means no limit.
    bwlimit: int = 0
    hard_links: bool = False
    acls: bool = False
    xattrs: bool = False
    sparse: bool = False
    # Audit passes compare content by checksum, not size and mtime.
    verify_checksum: bool = False
    # Keep overwritten/deleted files on the receiver under BACKUP_DIR.
    backup: bool = True


def _common(opts: TransferOptions, now: float) -> list[str]:
    # Times to the nanosecond (receivers since rsync 3.1.3): see the module docstring.
    argv = ["-a", "--modify-window=-1", "--numeric-ids", "--itemize-changes", "--stats"]
    if opts.hard_links:
        argv.append("-H")
    if opts.acls:
        argv.append("-A")
    if opts.xattrs:
        argv.append("-X")
    if opts.sparse:
        argv.append("-S")
    # Anchored, so only the root's own backup area is skipped (and protected from --delete);
    # whatever its type, so a symlink by that name is never sent.
    argv.append(f"--exclude=/{BACKUP_DIR}")
    argv += [f"--exclude={p}" for p in opts.excludes]
    if opts.bwlimit > 0:
        argv.append(f"--bwlimit={opts.bwlimit}")
    if opts.max_delete is not None:
        argv.append(f"--max-delete={opts.max_delete}")
    if opts.backup:
        argv += backup_args(now)
    return argv


_WILDCARDS: Final = re.compile(r"([*?\[\\])")


def literal_pattern(rel: str) -> str:
    """Return an rsync pattern matching exactly `rel` (relative to the root), for --exclude.

    rsync reads a backslash as an escape only in a pattern that has a wildcard, so a name with
    none is left as it is.
    """
    if not any(c in rel for c in "*?["):
        return f"/{rel}"
    return "/" + _WILDCARDS.sub(r"\\\1", rel)


# Listed first in an incremental pass when the source has it: its implied parent is the root
# (module docstring). Never listed when missing here: the peer would delete its own.
ROOT_CARRIER: Final = f"./{BACKUP_DIR}"


def files_from(paths: Iterable[str], carried: bool = False) -> list[str]:
    """Return what an incremental pass lists for the dirty `paths`: the root's carrier if
    `carried` (the source has its backup area as a real directory), then the paths in order
    (the root's own `.` is carried, never listed)."""
    listed = sorted(p for p in paths if p != ".")
    return [ROOT_CARRIER, *listed] if carried else listed


def incremental_argv(
    root: str,
    peer: Peer | None,
    opts: TransferOptions,
    now: float,
    dest: str | None = None,
    *,
    dry_run: bool = False,
    pin: int | None = None,
) -> list[str]:
    """Return the rsync argv of a pass over the paths fed on stdin (NUL-separated, as
    `files_from` lists them)."""
    # -I: the watcher says these paths changed, so never trust rsync's size+mtime quick check
    # (a same-size rewrite within the mtime granularity would otherwise be skipped).
    argv = ["rsync", *_common(opts, now), "-I", "--files-from=-", "--from0", "--relative"]
    if opts.delete:
        argv += ["--delete-missing-args", "--force"]
    else:
        # A vanished path is neither an error nor a deletion.
        argv.append("--ignore-missing-args")
    if dry_run:
        argv.append("--dry-run")
    return argv + _ends(root, peer, dest, pin)


def sendable(root: str, paths: Iterable[str], patterns: tuple[str, ...]) -> list[str]:
    """Return the dirty paths an incremental pass may list: those no exclude pattern covers
    (rsync sends a path listed in --files-from whatever its --exclude rules say)."""

    def is_dir(rel: str) -> bool | None:
        try:
            return stat.S_ISDIR(os.lstat(os.path.join(root, rel)).st_mode)
        except OSError:
            return None

    return excludes.keep(patterns, paths, is_dir)


def full_argv(
    root: str,
    peer: Peer | None,
    opts: TransferOptions,
    now: float,
    *,
    audit: bool = False,
    dry_run: bool = False,
    dest: str | None = None,
    pin: int | None = None,
) -> list[str]:
    """Return the rsync argv of a whole-tree pass (an audit may add --checksum)."""
    argv = ["rsync", *_common(opts, now)]
    if opts.delete:
        argv.append("--delete")
    if audit and opts.verify_checksum:
        argv.append("--checksum")
    if dry_run:
        argv.append("--dry-run")
    return argv + _ends(root, peer, dest, pin)


def _ends(root: str, peer: Peer | None, dest: str | None, pin: int | None = None) -> list[str]:
    """Return `-e ssh ... SRC DEST` (or a local DEST, used by tests and the bench). `pin`: the
    descriptor of the pinned root, which rsync inherits (`run_rsync(pin=...)`) and reads through
    /proc/self/fd, so that it reads the tree the guard passed, whatever its path leads to now.
    rsync itself starts in / and forks ssh before it enters the source: the ControlMaster ssh
    may fork outlives the pass, and started in the root it would keep the root's filesystem
    busy (no unmount) until it exits."""
    src = root.rstrip("/") + "/" if pin is None else f"/proc/self/fd/{pin}/"
    if peer is None:
        if dest is None:
            raise ValueError("transfer: need a peer or a local destination")
        return [src, dest.rstrip("/") + "/"]
    ssh = peer.ssh_argv()
    return [f"--timeout={peer.io_timeout}", "-e", shlex.join(ssh), src,
            peer.target(root)]  # fmt: skip


def tunneled(argv: Sequence[str], peer: Peer, root: str) -> list[str]:
    """Return `argv`, built by `_ends` for an ssh session to `peer`, sent through the tunnel
    instead: to the forward's end on this node's loopback, Nagle's algorithm off (rsync's
    password comes from the environment, `tunnel_env`)."""
    if len(argv) < 5 or argv[-4] != "-e" or not argv[-5].startswith("--timeout="):
        raise ValueError("transfer: not the command of an ssh session")
    via = replace(peer, via_tunnel=True)
    return [*argv[:-4], "--sockopts=TCP_NODELAY", argv[-2], via.target(root)]


def tunnel_env(password: str) -> dict[str, str]:
    """The environment that gives rsync the tunnel's password (never on its command line)."""
    return {"RSYNC_PASSWORD": password}


async def add_forward(peer: Peer, timeout: float = 10.0) -> str | None:
    """Add the tunnel's forward to the ControlMaster; return None, or why it failed."""
    proc = await asyncio.create_subprocess_exec(
        *peer.forward_argv(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError) as exc:
        await _reap(proc)
        if isinstance(exc, asyncio.CancelledError):
            raise
        return f"ssh -O forward did not answer in {timeout:g} s"
    if proc.returncode == 0:
        return None
    text = err.decode("utf-8", "replace").strip()
    return text.splitlines()[-1] if text else f"ssh -O forward exited {proc.returncode}"


@dataclass
class Stats:
    """Counts from --itemize-changes and --stats."""

    # Entries created or updated (itemized lines other than deletions; -i lists only changes).
    changed: int = 0
    # Entries deleted on the receiver ("*deleting" lines; a dry run counts them too).
    deleted: int = 0
    # Bytes rsync sent over the wire ("Total bytes sent").
    bytes_sent: int = 0
    # Entries in the file list ("Number of files").
    files: int = 0
    # The first deleted paths (as many as the caller asked), for the guard's report.
    deleted_paths: list[str] = field(default_factory=list)
    # Entries created (itemized as all new: "+++++++++"), for the tree size between full passes.
    created: int = 0
    # Deletions that are part of a rename inside the root (counted in `deleted` too).
    renamed: int = 0


_STAT_RE: Final = re.compile(r"^(Number of files|Total bytes sent): ([\d,]+)")
# An itemized line: the 11-character YXcstpoguax code, a space, the name.
_ITEM_RE: Final = re.compile(r"^[<>ch.][fdLDS][.+?a-zA-Z ]{9} ")
_DELETING: Final = "*deleting "
# The attribute columns of an itemized entry that did not exist on the receiver.
_NEW: Final = "+" * 9


# What rsync gets of the path list, and what is read of its stdout, per write or read: a pass
# of thousands of paths is a few pipe writes, not a write and a drain per path.
FEED_CHUNK: Final = 64 * 1024
READ_CHUNK: Final = 64 * 1024


def nul_chunks(paths: Iterable[str], size: int = FEED_CHUNK) -> Iterator[bytes]:
    """Yield `paths` NUL-terminated (as --from0 reads them), joined into chunks of about
    `size` bytes (a chunk ends after a whole path)."""
    batch: list[bytes] = []
    held = 0
    for p in paths:
        b = p.encode("utf-8", "surrogateescape") + b"\0"
        batch.append(b)
        held += len(b)
        if held >= size:
            yield b"".join(batch)
            batch, held = [], 0
    if batch:
        yield b"".join(batch)


class Lines:
    """Split a byte stream read in chunks into lines (decoded, without their newline)."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, chunk: bytes) -> list[str]:
        """The lines that `chunk` completes."""
        *whole, self._rest = (self._rest + chunk).split(b"\n")
        return [w.decode("utf-8", "replace") for w in whole]

    def end(self) -> list[str]:
        """The last line, if the stream did not end with a newline."""
        rest, self._rest = self._rest, b""
        return [rest.decode("utf-8", "replace")] if rest else []


def parse_line(
    line: str, stats: Stats, keep_deleted: int = 0, renamed: frozenset[str] = frozenset()
) -> None:
    """Fold one line of rsync's stdout into `stats` (`renamed`: paths renamed away inside the
    root, whose deletions are not the guard's business, mirrord.deletions)."""
    if m := _STAT_RE.match(line):
        value = int(m.group(2).replace(",", ""))
        if m.group(1) == "Number of files":
            stats.files = value
        else:
            stats.bytes_sent = value
    elif line.startswith(_DELETING):
        stats.deleted += 1
        path = line[len(_DELETING) :].strip()
        if renamed and deletions.covered(path, renamed):
            stats.renamed += 1
        elif len(stats.deleted_paths) < keep_deleted:
            stats.deleted_paths.append(path)
    elif _ITEM_RE.match(line):
        stats.changed += 1
        if line[2:11] == _NEW:
            stats.created += 1


@dataclass(frozen=True)
class TransferResult:
    """How one rsync run ended."""

    rc: int
    outcome: Outcome
    stats: Stats
    duration: float
    stderr: str


_LIBC: Final = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG: Final = 1
# util-linux (essential on Debian): sets the parent-death signal, then execs rsync.
SETPRIV: Final = shutil.which("setpriv")


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when mirrord dies (the fallback without setpriv)."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def with_parent_death(argv: Sequence[str]) -> tuple[list[str], Callable[[], None] | None]:
    """Return (argv, preexec_fn) that make rsync get SIGTERM when mirrord dies, even by SIGKILL.

    Otherwise an orphaned rsync keeps writing to the peer while the restarted daemon starts its
    own pass of the same root (two writers in one tree). `setpriv --pdeathsig` costs one exec;
    a preexec_fn would make Python fork the whole daemon instead of using vfork (measured: a
    12 ms spawn instead of 0.6 ms, on every pass).
    """
    if SETPRIV:
        return [SETPRIV, "--pdeathsig", "TERM", "--", *argv], None
    return list(argv), _die_with_parent


def use_pidfd_watcher(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """On Python 3.11, have asyncio learn of rsync's exit through a pidfd on the loop (Linux
    5.3+) instead of its default, a thread started per child: a pass's spawn took 1.3-1.8 ms
    that way, 0.3 ms this way (30 spawns each in a process the daemon's size). Python 3.12
    does this by itself (and deprecates choosing). `loop`: the running loop, to attach it to
    (asyncio.run attaches it to the loops it makes). Return whether it was set."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False  # a kernel without pidfds: keep asyncio's default
    if isinstance(asyncio.get_child_watcher(), asyncio.PidfdChildWatcher):
        # Set already (another daemon of this process, or an earlier run): attaching it again
        # would drop the children it waits for.
        return True
    watcher = asyncio.PidfdChildWatcher()
    asyncio.set_child_watcher(watcher)
    if loop is not None:
        watcher.attach_loop(loop)
    return True


# Seconds a terminated rsync gets to exit before it is killed.
TERM_GRACE: Final = 5.0


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Terminate rsync and return once it is reaped (killed if SIGTERM is not enough within
    TERM_GRACE): a pass being stopped is over before the daemon goes on (mirrord.stopping).

    A second cancellation meanwhile (shutdown) only hastens the kill: the caller re-raises
    its own once rsync is gone.
    """
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    waiter = asyncio.ensure_future(proc.wait())
    killed = False
    while not waiter.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({waiter}, timeout=TERM_GRACE)
        if not waiter.done() and not killed:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            killed = True


async def run_rsync(
    argv: Sequence[str],
    paths: Iterable[str] | None = None,
    *,
    keep_deleted: int = 0,
    renamed: frozenset[str] = frozenset(),
    pin: int | None = None,
    env: Mapping[str, str] | None = None,
) -> TransferResult:
    """Run rsync, feed `paths` NUL-separated on stdin, and classify the result. `pin`: the
    pinned root (`guard.pin_root`) rsync inherits, in /, its argv built with the same `pin`.
    `env`: added to this process's environment for rsync.

    Cancelling the task terminates rsync and returns once it is reaped (the daemon does that on
    shutdown and when a pass must stop, mirrord.stopping).
    """
    started = time.monotonic()
    command, preexec = with_parent_death(argv)
    proc = await asyncio.create_subprocess_exec(
        *command,
        preexec_fn=preexec,
        # The child inherits the descriptor (its source, /proc/self/fd/PIN) and starts in /
        # (so does the ssh it forks: `_ends`).
        cwd=None if pin is None else "/",
        pass_fds=() if pin is None else (pin,),
        stdin=asyncio.subprocess.PIPE if paths is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=None if env is None else {**os.environ, **env},
    )
    stats = Stats()

    async def feed() -> None:
        assert proc.stdin is not None
        try:
            for chunk in nul_chunks(paths or ()):
                proc.stdin.write(chunk)
                await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # rsync exited early; its exit code says why
        finally:
            proc.stdin.close()

    async def read_out() -> None:
        assert proc.stdout is not None
        lines = Lines()
        while chunk := await proc.stdout.read(READ_CHUNK):
            for line in lines.feed(chunk):
                parse_line(line, stats, keep_deleted, renamed)
        for line in lines.end():
            parse_line(line, stats, keep_deleted, renamed)

    messages = Messages()

    async def read_err() -> bytes:
        # Every line is read for causes (mirrord.outcome); the tail is kept for the journal.
        assert proc.stderr is not None
        kept = b""
        async for raw in proc.stderr:
            messages.feed(raw.decode("utf-8", "replace"))
            kept = (kept + raw)[-STDERR_KEEP:]
        return kept

    try:
        jobs: list[asyncio.Future[object]] = [
            asyncio.ensure_future(read_out()), asyncio.ensure_future(read_err())
        ]  # fmt: skip
        if paths is not None:
            jobs.append(asyncio.ensure_future(feed()))
        done = await asyncio.gather(*jobs)
        rc = await proc.wait()
    except asyncio.CancelledError:
        await _reap(proc)
        raise
    err = done[1]
    assert isinstance(err, bytes)
    stderr = err.decode("utf-8", "replace").strip()
    outcome = classify(rc, messages)
    result = TransferResult(
        rc=rc, outcome=outcome, stats=stats, duration=time.monotonic() - started, stderr=stderr
    )
    log.info(
        "transfer.done rc=%d result=%s changed=%d deleted=%d bytes=%d duration=%.3f",
        rc, outcome.result.value, stats.changed, stats.deleted, stats.bytes_sent,
        result.duration,
    )  # fmt: skip
    return result
