# rsync daemon "pre-xfer exec" of hapair's mirror modules (mirrord.rsyncd); POSIX sh, sourced
# by the `sh -c` rsync starts (so `exit` ends that shell with the verdict).
#
# Runs on the receiving node before every push, as root, with rsync's RSYNC_* variables. Exit 0
# lets the push in; otherwise what this prints on stdout is shown to the sending mirrord and the
# push is refused (the sender's rsync exits 4 and mirrord retries).
#
# 1. The root must exist: it is never created here (on a standby whose disk failed to mount,
#    that would fill the wrong file system).
# 2. While this node is (or was, until it stopped) the source of the root, the root holds
#    .hapair-backup/source (mirrord.orphans); only a push that can replace or delete nothing
#    (--ignore-existing and no --delete*: an orphan's conflict copy) is let in meanwhile.

root=$RSYNC_MODULE_PATH
if [ ! -d "$root" ]; then
    echo "mirrord: $root does not exist on this node (create it, or mount its disk)"
    exit 1
fi
# 3. The backup area (where this push keeps what it replaces) must be this account's own
#    directory, never a symlink someone who can write into the root planted (mirrord.backups);
#    a missing one is created 0700 (mkdir never follows a symlink in its last component).
area=$root/.hapair-backup
if [ ! -e "$area" ] && [ ! -L "$area" ]; then
    mkdir -m 700 "$area" 2>/dev/null
fi
if [ -L "$area" ] || [ ! -d "$area" ] || [ ! -O "$area" ]; then
    echo "mirrord: $area is a symlink, not a directory, or not owned by the receiving account: push refused (move it away)"
    exit 1
fi
# 4. A set-aside here may have moved files a push had written (the peer counts them sent):
#    the first push after it is refused, once, asking the sender for a full pass.
if [ -e "$area/resend" ] && [ ! -e "$area/source" ]; then
    rm -f "$area/resend"
    echo "mirrord: $root: this node set aside files a push may have written; it wants a full pass"
    exit 1
fi
[ -e "$area/source" ] || exit 0
harmless=no
i=1
while eval "[ -n \"\${RSYNC_ARG$i+set}\" ]"; do
    eval "arg=\$RSYNC_ARG$i"
    case $arg in
        .) break ;;
        --delete*) harmless=no; break ;;
        --ignore-existing) harmless=yes ;;
    esac
    i=$((i + 1))
done
[ "$harmless" = yes ] && exit 0
echo "mirrord: $root: this node is (or was, until it stopped) the source of this root; it accepts pushes once its mirrord has set its unsynced changes aside"
exit 1
