#!/usr/bin/env bash
# nefeled under systemd (issue 15): the shipped unit brings a killed agent back,
# and the new agent re-adopts the tenant processes the old one started.
#
#   scripts/systemd-test.sh          # .ci/run calls it
#
# The machine's own PID 1 need not be systemd: the test boots the machine's
# systemd in a container (systemd-nspawn, --volatile=yes: the host's /usr on an
# empty root, so nothing of the host's configuration or services is used or
# touched), installs host-linux/nefeled/dist/nefeled.service there unchanged
# (a drop-in only points ExecStart at the binary under test and its
# configuration), and starts it. Then:
#   1. `nef spawn` of a sleeper through the agent's API socket (bound into the
#      container, so nef runs outside it);
#   2. SIGKILL to the agent's main process;
#   3. systemd starts it again (a new main pid, NRestarts >= 1, a second start in
#      the agent's journal, which took the tenant's agent socket over from its
#      holder), and `nef ps` lists the sleeper running, the same Linux process
#      as before (KillMode=process: the unit's restart leaves it);
#   4. `nef kill` and `nef wait` end it through the new agent.
#
# The container shares the machine's network namespace; the agent listens on
# loopback only. Its cgroup v1 hierarchies are mounted read-only by nspawn (it
# cannot delegate them), so the test makes them writable inside the container,
# as a real host's are. The container runs in its own pid namespace: the EXIT
# trap kills its init, which ends every process in it, then removes the agent's
# cgroups and the work directory.
#
# Needs root and systemd-nspawn (Debian's systemd-container; .ci/run installs
# it): missing, the test fails under CI (NEFELE_CI=1) and is skipped elsewhere.
# A container that does not boot (a kernel that refuses what nspawn needs) is a
# property of the machine: the test is then skipped by name, under CI too, and
# says why. Binaries are built with cargo (debug) unless $NEFELE_BIN_DIR names a
# directory that holds nefeled and nef.
set -euo pipefail
cd "$(dirname "$0")/.."

NAME="systemd-test"
BIN_DIR=${NEFELE_BIN_DIR:-target/debug}
TAG="nflsd$$"
PORT=$(( 20000 + $$ % 20000 ))
WORK=""
NSPAWN_PID=""
LEADER=""

say() { printf '[systemd-test] %s\n' "$*" >&2; }
fail() { say "FAIL: $*"; exit 1; }

record_skip() {
    local line="SKIPPED: $NAME: $1"
    say "$line"
    if [ -n "${NEFELE_SKIP_LOG:-}" ]; then
        printf '%s\n' "$line" >>"$NEFELE_SKIP_LOG" || fail "cannot record the skip in $NEFELE_SKIP_LOG"
    fi
}

# A prerequisite CI provides: under CI its absence fails the test.
missing() {
    if [ "${NEFELE_CI:-}" = 1 ]; then
        fail "missing prerequisite: $1 (NEFELE_CI=1: CI must provide it, so this fails instead of skipping)"
    fi
    record_skip "needs $1"
    exit 0
}

cleanup() {
    local status=$?
    set +e
    [ "$status" -ne 0 ] && [ -n "$LEADER" ] && journal
    # Killing the container's init ends its pid namespace: the agent, its
    # holders and every tenant process go with it.
    [ -n "$LEADER" ] && kill -KILL "$LEADER" 2>/dev/null
    if [ -n "$NSPAWN_PID" ]; then
        local i
        for i in $(seq 1 40); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.25; done
        kill -KILL "$NSPAWN_PID" 2>/dev/null
        wait "$NSPAWN_PID" 2>/dev/null
    fi
    if [ "$status" -ne 0 ] && [ -n "$WORK" ]; then
        say "---- the container's journal of nefeled (last 30 lines)"
        tail -n 30 "$WORK/journal.txt" >&2 2>/dev/null
        say "---- the container's console (last 15 lines)"
        tail -n 15 "$WORK/container.log" >&2 2>/dev/null
    fi
    local dir
    for dir in $(find /sys/fs/cgroup -maxdepth 5 -type d -name "nefele-$TAG" 2>/dev/null); do
        find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null
        [ -d "$dir" ] && say "warning: could not remove $dir"
    done
    [ -n "$WORK" ] && rm -rf "$WORK"
    exit "$status"
}

[ "$(id -u)" -eq 0 ] || missing "root (containers, namespaces, cgroups)"
command -v systemd-nspawn >/dev/null || missing "systemd-nspawn (Debian's systemd-container)"
[ -x /lib/systemd/systemd ] || missing "systemd (/lib/systemd/systemd)"
command -v python3 >/dev/null || missing "python3"
if [ -z "${NEFELE_BIN_DIR:-}" ]; then
    say "building nefeled and nef (debug)"
    cargo build --locked -p nefele-daemon -p nefele-cli >&2
fi
[ -x "$BIN_DIR/nefeled" ] && [ -x "$BIN_DIR/nef" ] || fail "no nefeled or nef in $BIN_DIR"

trap cleanup EXIT
WORK=$(mktemp -d /tmp/nefele-systemd.XXXXXX)
mkdir -p "$WORK/bin" "$WORK/unit.d" "$WORK/data"
install -m 0755 "$BIN_DIR/nefeled" "$BIN_DIR/nef" "$WORK/bin/"
(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/cluster.key")
# Paths as the container sees them: $WORK is bound at /nefele.
cat >"$WORK/nefeled.toml" <<EOF
# A one-agent cluster on loopback (written by scripts/systemd-test.sh)
node_id = 1
listen = "127.0.0.1:$PORT"
data_dir = "/nefele/data"
cluster_key_file = "/nefele/cluster.key"
api_socket = "/nefele/api.sock"
cgroup_name = "nefele-$TAG"

[discovery]
seeds = []

[resources]
cpu_millicores = 1000
memory_bytes = 1073741824

[[tenant]]
name = "test"
id = 1
tokens = ["test-token"]
EOF
chmod 600 "$WORK/nefeled.toml"
cat >"$WORK/unit.d/test.conf" <<'EOF'
# The binary under test and its configuration; everything else is the shipped unit.
[Service]
ExecStart=
ExecStart=/nefele/bin/nefeled --config /nefele/nefeled.toml
EOF

# basic.target: no login prompts; first-boot questions off; nothing waits for a
# network the container does not configure.
say "booting systemd in a container"
systemd-nspawn --quiet --register=no --keep-unit --volatile=yes --directory=/ \
    --machine="$TAG" --bind="$WORK:/nefele" \
    --bind-ro="$PWD/host-linux/nefeled/dist/nefeled.service:/etc/systemd/system/nefeled.service" \
    --bind-ro="$WORK/unit.d:/etc/systemd/system/nefeled.service.d" \
    --system-call-filter=pidfd_getfd \
    --boot systemd.firstboot=off systemd.unit=basic.target \
    systemd.mask=systemd-networkd-wait-online.service >"$WORK/container.log" 2>&1 &
NSPAWN_PID=$!

now_ms() { date +%s%3N; }
deadline=$(( $(now_ms) + 30000 ))
# The container's init: nspawn's child once it has become systemd (before that,
# nspawn's own helper processes come and go there).
while [ -z "$LEADER" ]; do
    LEADER=$(ps --ppid "$NSPAWN_PID" -o pid=,comm= 2>/dev/null | awk '$2 == "systemd" { print $1; exit }') || true
    if ! kill -0 "$NSPAWN_PID" 2>/dev/null || [ "$(now_ms)" -gt "$deadline" ]; then
        record_skip "this machine cannot boot a systemd container: $(tail -n 3 "$WORK/container.log" | tr '\n' ' ')"
        exit 0
    fi
    sleep 0.1
done
in_container() { nsenter --target "$LEADER" --all "$@"; }
journal() { in_container journalctl --unit nefeled --no-pager >"$WORK/journal.txt" 2>&1 || true; }
# Its bus comes up a moment after it starts: ask until it answers.
state=""
deadline=$(( $(now_ms) + 60000 ))
while [ -z "$state" ] && [ "$(now_ms)" -lt "$deadline" ]; do
    state=$(timeout 60 nsenter --target "$LEADER" --all systemctl is-system-running --wait 2>/dev/null) || true
    [ -n "$state" ] || sleep 0.2
done
case "$state" in
    running | degraded) say "systemd in the container: $state" ;;
    *) record_skip "this machine cannot boot a systemd container (state '$state'): $(tail -n 3 "$WORK/container.log" | tr '\n' ' ')"
       exit 0 ;;
esac
for dir in $(in_container sh -c 'mount -t cgroup | cut -d" " -f3'); do
    in_container mount -o remount,bind,rw "$dir" || fail "cannot make $dir writable in the container"
done

unit_prop() { in_container systemctl show --property "$1" --value nefeled; }
nef() { "$WORK/bin/nef" --socket "$WORK/api.sock" --token test-token "$@"; }

in_container systemctl start nefeled || fail "systemctl start nefeled failed"
deadline=$(( $(now_ms) + 20000 ))
until nef members >/dev/null 2>&1; do
    [ "$(now_ms)" -lt "$deadline" ] || fail "the agent did not answer within 20 s"
    sleep 0.1
done
say "the agent runs under systemd: main pid $(unit_prop MainPID)"

pid=$(nef spawn --cpu 10m --mem 8M -- /bin/sleep 600) || fail "nef spawn failed"
state_of() { nef ps --json | python3 -c 'import json,sys
v = json.load(sys.stdin)
print(next((p["state"] for p in v["processes"] if str(p["pid"]) == sys.argv[1]), "absent"))' "$1"; }
deadline=$(( $(now_ms) + 10000 ))
until [ "$(state_of "$pid")" = Running ]; do
    [ "$(now_ms)" -lt "$deadline" ] || fail "$pid is $(state_of "$pid"), not running"
    sleep 0.1
done
sleeper=$(in_container pgrep -x sleep) || fail "no sleep process in the container"
[ "$(wc -l <<<"$sleeper")" -eq 1 ] || fail "several sleep processes: $sleeper"
say "$pid runs (Linux pid $sleeper in the container)"

old_main=$(unit_prop MainPID)
say "SIGKILL to the agent (main pid $old_main)"
in_container kill -KILL "$old_main"
deadline=$(( $(now_ms) + 20000 ))
while :; do
    new_main=$(unit_prop MainPID)
    if [ "$new_main" != 0 ] && [ "$new_main" != "$old_main" ] && nef members >/dev/null 2>&1; then
        break
    fi
    [ "$(now_ms)" -lt "$deadline" ] || fail "systemd did not bring the agent back within 20 s (main pid $new_main)"
    sleep 0.1
done
restarts=$(unit_prop NRestarts)
[ "$restarts" -ge 1 ] || fail "NRestarts is $restarts after the kill"
say "systemd restarted the agent: main pid $new_main, NRestarts $restarts"
journal
lives=$(grep -c 'agent started' "$WORK/journal.txt") || true
[ "$lives" -ge 2 ] || fail "the journal shows $lives agent starts, not 2"
# The new agent took the tenant's agent socket over from its holder (the
# endpoint of the re-adopted process lives on).
if grep -q 'no agent socket from the holder' "$WORK/journal.txt"; then
    fail "the new agent could not take over the holder's agent socket: $(grep 'no agent socket' "$WORK/journal.txt" | tail -n 1)"
fi

deadline=$(( $(now_ms) + 10000 ))
until [ "$(state_of "$pid")" = Running ]; do
    [ "$(now_ms)" -lt "$deadline" ] || fail "after the restart $pid is $(state_of "$pid"), not running"
    sleep 0.1
done
[ "$(in_container pgrep -x sleep)" = "$sleeper" ] || fail "the sleeper is not the same Linux process"
say "the new agent re-adopted $pid (the same Linux process, $sleeper)"

nef kill "$pid" >/dev/null || fail "nef kill $pid through the new agent failed"
status=$(timeout 20 "$WORK/bin/nef" --socket "$WORK/api.sock" --token test-token wait "$pid") \
    || fail "nef wait $pid failed"
say "nef wait $pid: $status"
in_container pgrep -x sleep >/dev/null && fail "the sleeper still runs after nef kill"
say "PASS"
