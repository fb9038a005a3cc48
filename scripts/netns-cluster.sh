#!/usr/bin/env bash
# Four real nefeled agents on one machine, each in its own network namespace,
# joined by veth pairs to a bridge that lives in a fifth ("switch") namespace, so
# the machine's own network is never touched.
#
#   scripts/netns-cluster.sh test    # the end-to-end test (.ci/run calls it)
#   scripts/netns-cluster.sh bench   # convergence, spawn round trip, messaging request/response,
#                                    # stream and publication rates, name lookups
#
# The test: the four agents form one top group; `nef spawn -n 8` from host 1
# lands on several hosts and `nef ps` on host 3 lists all 8; SIGKILL to an agent
# that runs some of them: ps reports those lost and the rest running; restarting
# it re-adopts them (all 8 running again); `nef kill`/`nef wait` end them from
# host 4; a tenant process on host 2 finds neither the key nor the agent's
# config, cannot write outside /data and /tmp nor mount, and has no capability
# and no_new_privs; the C example (libnefele's C ABI) spawns, lists and kills on host 2;
# messaging: two tenant processes on two hosts, then two on one host, exchange a
# ping and a pong by name and by pid through their agents (`nef` run inside each
# process, through the endpoint it inherited), and a process sending as its
# sibling's pid gets the typed refusal; a second tenant's send to the first's pid
# answers exactly as one to a made-up pid; a publication reaches a subscriber on
# every host once; a failover group's primary loses its agent (SIGKILL) and reliable
# sends reach the next member, each once; the swarm runs 4 seeds as tenant processes
# (`nefele-sim swarm --on-cluster`) and prints what a local swarm prints; the
# external proxy (agent 1, `[proxy]`) carries a tenant process's send from another
# host to a TCP echo server in the switch namespace (outside every host's
# namespace) and the echo back, and carries nothing to a port its rules do not allow.
#
# Needs root, iproute2, util-linux (unshare), python3 (reads `nef --json`) and
# cc (the C example). Without one of them the test is skipped (and the skip
# recorded in $NEFELE_SKIP_LOG), or fails under CI (NEFELE_CI=1). Binaries are built with cargo (debug for
# `test`, release for `bench`) unless $NEFELE_BIN_DIR names a directory that
# holds nefeled, nef, nefele-sim and libnefele.so.
#
# Everything the cluster starts runs inside one fresh pid namespace: when the
# script ends, for any reason, the kernel kills every agent, holder and tenant
# process in it. The EXIT trap then removes the namespaces, the agents' cgroups
# and the data directories, so nothing is left behind even when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-test}
HOSTS=4
if [ "$MODE" = bench ]; then PROFILE=release; else PROFILE=debug; fi
BIN_DIR=${NEFELE_BIN_DIR:-target/$PROFILE}
# Names and addresses unique to this run (inherited by the inner half).
TAG=${TAG:-nfl$$}
SUBNET=${SUBNET:-$(( $$ % 200 ))}
SWITCH="${TAG}sw"
WORK=${WORK:-}

say() { printf '[netns-cluster] %s\n' "$*" >&2; }
fail() { say "FAIL: $*"; exit 1; }

# A missing prerequisite (WHAT) of the test or of its part NAME: under CI
# (NEFELE_CI=1, set by .ci/run) it fails the run, naming what is missing; elsewhere
# that part is skipped and the skip recorded, as the Rust tests do
# (test-support/src/lib.rs): a line on stderr and in $NEFELE_SKIP_LOG when set.
missing() {
    local name=$1 what=$2
    if [ "${NEFELE_CI:-}" = 1 ]; then
        fail "missing prerequisite: $what (NEFELE_CI=1: CI must provide it, so this fails instead of skipping)"
    fi
    record_skip "$name" "needs $what"
}

# A property of the machine no install step changes (as test-support's
# `machine_has`): part NAME is skipped and the skip recorded, under CI too.
machine_lacks() {
    record_skip "$1" "this machine lacks $2"
}

record_skip() {
    local line="SKIPPED: $1: $2"
    say "$line"
    if [ -n "${NEFELE_SKIP_LOG:-}" ]; then
        printf '%s\n' "$line" >>"$NEFELE_SKIP_LOG" || fail "cannot record the skip in $NEFELE_SKIP_LOG"
    fi
}

host_ns() { printf '%sh%d' "$TAG" "$1"; }
host_ip() { printf '10.77.%d.%d' "$SUBNET" "$1"; }
# The switch namespace's own address: the external echo service lives there.
ext_ip() { printf '10.77.%d.254' "$SUBNET"; }
# The echo ports: the proxy's rules allow the first only.
ECHO_PORT=7007
DENIED_PORT=7008
cgroup_name() { printf 'nefele-%s-h%d' "$TAG" "$1"; }

cleanup() {
    local status=$?
    set +e
    # The pid namespace is gone by now (its init was our child); give the kernel
    # a moment to finish killing its members before removing their cgroups.
    sleep 0.2
    for i in $(seq 1 "$HOSTS"); do
        # The agents' cgroups are below the script's own cgroup in each hierarchy.
        for dir in $(find /sys/fs/cgroup -maxdepth 5 -type d -name "$(cgroup_name "$i")" 2>/dev/null); do
            [ -d "$dir" ] || continue
            find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null
            [ -d "$dir" ] && say "warning: could not remove $dir"
        done
        ip netns del "$(host_ns "$i")" 2>/dev/null
    done
    ip netns del "$SWITCH" 2>/dev/null
    [ -n "$WORK" ] && rm -rf "$WORK"
    # Nothing of this run may be left behind.
    local left
    left=$(ip netns list | grep "$TAG"; find /sys/fs/cgroup -maxdepth 5 -type d -name "nefele-$TAG-*" 2>/dev/null)
    if [ -n "$left" ]; then
        say "leftovers: $left"
        [ "$status" -eq 0 ] && status=1
    fi
    if [ "$status" -eq 0 ]; then say "cleaned up"; else say "cleaned up after a failure (exit $status)"; fi
    exit "$status"
}

require() {
    local me="netns-cluster ($MODE)"
    [ "$(id -u)" -eq 0 ] || { missing "$me" "root (network namespaces, cgroups)"; exit 0; }
    command -v ip >/dev/null || { missing "$me" "iproute2 (ip)"; exit 0; }
    command -v unshare >/dev/null || { missing "$me" "util-linux (unshare)"; exit 0; }
    command -v python3 >/dev/null || { missing "$me" "python3"; exit 0; }
    # Checked here too, so that CI fails before booting a cluster.
    if [ "$MODE" = test ] && [ "${NEFELE_CI:-}" = 1 ]; then
        command -v cc >/dev/null || missing "$me" "a C compiler (cc)"
    fi
    if [ -z "${NEFELE_BIN_DIR:-}" ]; then
        say "building nefeled and nef ($PROFILE)"
        cargo build --locked --profile "${PROFILE/debug/dev}" -p nefele-daemon -p nefele-cli -p nefele -p nefele-sim >&2
        if [ "$MODE" = bench ]; then
            cargo build --locked --profile "$PROFILE" -p nefele --example rr >&2
        fi
    fi
    [ -x "$BIN_DIR/nefeled" ] && [ -x "$BIN_DIR/nef" ] || fail "no nefeled or nef in $BIN_DIR"
}

# A bridge in the switch namespace and one veth pair per host.
make_network() {
    ip netns add "$SWITCH"
    ip -n "$SWITCH" link add br0 type bridge
    ip -n "$SWITCH" link set br0 up
    ip -n "$SWITCH" link set lo up
    ip -n "$SWITCH" addr add "$(ext_ip)/24" dev br0
    for i in $(seq 1 "$HOSTS"); do
        local ns
        ns=$(host_ns "$i")
        ip netns add "$ns"
        ip link add "${TAG}a$i" type veth peer name "${TAG}b$i"
        ip link set "${TAG}a$i" netns "$ns"
        ip link set "${TAG}b$i" netns "$SWITCH"
        ip -n "$ns" link set "${TAG}a$i" name eth0
        ip -n "$ns" addr add "$(host_ip "$i")/24" brd + dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
        ip -n "$SWITCH" link set "${TAG}b$i" master br0
        ip -n "$SWITCH" link set "${TAG}b$i" up
    done
}

if [ "${1:-}" != "__inner" ]; then
    require
    trap cleanup EXIT
    WORK=$(mktemp -d /tmp/nefele-cluster.XXXXXX)
    make_network
    # The rest runs as init of a new pid namespace (see the header).
    unshare --pid --fork --kill-child --mount-proc \
        env TAG="$TAG" SUBNET="$SUBNET" WORK="$WORK" NEFELE_BIN_DIR="$BIN_DIR" bash "$0" __inner "$MODE"
    exit $?
fi

# ---- inside the pid namespace ------------------------------------------------
MODE=$2
NEFELED=$(realpath "$BIN_DIR/nefeled")
NEF=$(realpath "$BIN_DIR/nef")
KEY="$WORK/cluster.key"
(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$KEY")
declare -A AGENT_PID

# nef as a client of host $1's agent. The API is a Unix socket, a file: no need
# to enter the host's network namespace to reach it.
nef_on() {
    local i=$1
    shift
    "$NEF" --socket "$WORK/h$i/api.sock" --token test-token "$@"
}

write_config() {
    local i=$1 seeds="" j
    for j in $(seq 1 "$HOSTS"); do seeds+="\"$(host_ip "$j"):7600\", "; done
    mkdir -p "$WORK/h$i"
    cat >"$WORK/h$i/nefeled.toml" <<EOF
# nefeled config of host $i (written by scripts/netns-cluster.sh)
node_id = $i
listen = "$(host_ip "$i"):7600"
data_dir = "$WORK/h$i/data"
cluster_key_file = "$KEY"
api_socket = "$WORK/h$i/api.sock"
cgroup_name = "$(cgroup_name "$i")"

[discovery]
seeds = [${seeds%, }]

[resources]
cpu_millicores = 1000
memory_bytes = 1073741824

# Two hosts per rack: hosts 1 and 2 in rack 1, 3 and 4 in rack 2 (spread, near).
[host]
row = 0
rack = $(( (i + 1) / 2 ))

# Agent 1 is the cluster's external proxy; it may reach the echo port only.
[proxy]
agents = [1]
allow = ["$(ext_ip):$ECHO_PORT"]
connect_timeout_ms = 2000

[[tenant]]
name = "test"
id = 1
tokens = ["test-token"]

[[tenant]]
name = "other"
id = 2
tokens = ["other-token"]
EOF
    chmod 600 "$WORK/h$i/nefeled.toml" # it holds a token in clear
}

start_agent() {
    local i=$1
    # nsenter enters the network namespace only: `ip netns exec` would also mount
    # a fresh /sys, hiding the cgroup hierarchies, and the agent could enforce no
    # limit at all.
    nsenter --net="/run/netns/$(host_ns "$i")" "$NEFELED" --config "$WORK/h$i/nefeled.toml" \
        >"$WORK/h$i/nefeled.log" 2>&1 &
    AGENT_PID[$i]=$!
}

now_ms() { date +%s%3N; }

# Waits until host $1's agent shows one top group with all $2 agents; prints the ms it took.
wait_converged() {
    local i=$1 want=$2 start deadline
    start=$(now_ms)
    deadline=$(( start + 20000 ))
    while [ "$(now_ms)" -lt "$deadline" ]; do
        if [ -S "$WORK/h$i/api.sock" ] \
            && [ "$(nef_on "$i" members --json 2>/dev/null | top_group_size)" = "$want" ]; then
            echo $(( $(now_ms) - start ))
            return 0
        fi
        sleep 0.02
    done
    nef_on "$i" members >&2 || true
    return 1
}

# The size of the top group in `nef members --json` (the last group listed).
top_group_size() {
    python3 -c 'import json,sys; v=json.load(sys.stdin); print(len(v["groups"][-1]["members"]) if v["groups"] else 0)'
}

dump_logs() {
    for i in $(seq 1 "$HOSTS"); do
        say "---- nefeled log of host $i (last 30 lines)"
        tail -n 30 "$WORK/h$i/nefeled.log" >&2 || true
    done
}
trap 'status=$?; [ $status -ne 0 ] && dump_logs; exit $status' EXIT

boot_cluster() {
    for i in $(seq 1 "$HOSTS"); do write_config "$i"; done
    for i in $(seq 1 "$HOSTS"); do start_agent "$i"; done
    local ms
    ms=$(wait_converged 1 "$HOSTS") || fail "no top group of $HOSTS within 20 s"
    say "one top group of $HOSTS after ${ms} ms"
    echo "$ms"
}

run_test() {
    boot_cluster >/dev/null
    nef_on 1 members >&2

    say "spawning 8 sleepers from host 1"
    local pids
    pids=$(nef_on 1 spawn -n 8 --cpu 500m -- /bin/sleep 30) || fail "nef spawn failed"
    [ "$(wc -l <<<"$pids")" -eq 8 ] || fail "expected 8 pids, got: $pids"

    say "listing from host 3"
    local ps_json hosts
    ps_json=$(nef_on 3 ps --json) || fail "nef ps failed"
    nef_on 3 ps >&2
    for pid in $pids; do
        grep -q "$pid" <<<"$ps_json" || fail "pid $pid missing from ps on host 3"
    done
    hosts=$(python3 -c 'import json,sys; v=json.load(sys.stdin); print(len({p["host"] for p in v["processes"] if p["state"]=="Running"}))' <<<"$ps_json")
    [ "$hosts" -ge 2 ] || fail "8 processes of 500m on hosts of 1000m should span hosts, got $hosts"

    # Kill the agent of a host (not the one we list from) that runs some of them.
    local victim="" i
    for i in 1 2 4; do
        if python3 -c 'import json,sys; v=json.load(sys.stdin); sys.exit(0 if any(p["host"]==int(sys.argv[1]) for p in v["processes"]) else 1)' "$i" <<<"$ps_json"; then
            victim=$i
            break
        fi
    done
    [ -n "$victim" ] || fail "no process on hosts 1, 2 or 4"
    local victim_node=$victim
    say "SIGKILL to the agent of host $victim (node $victim_node)"
    kill -KILL "${AGENT_PID[$victim]}"

    local deadline lost running
    deadline=$(( $(now_ms) + 20000 ))
    while :; do
        ps_json=$(nef_on 3 ps --json) || fail "nef ps failed after the kill"
        lost=$(python3 -c 'import json,sys; v=json.load(sys.stdin); print(sum(1 for p in v["processes"] if p["state"]=="Lost"))' <<<"$ps_json")
        running=$(python3 -c 'import json,sys; v=json.load(sys.stdin); print(sum(1 for p in v["processes"] if p["state"]=="Running"))' <<<"$ps_json")
        [ $(( lost + running )) -eq 8 ] && [ "$lost" -ge 1 ] && break
        [ "$(now_ms)" -lt "$deadline" ] || { nef_on 3 ps >&2; fail "expected the dead host's processes lost and the rest running (lost=$lost running=$running)"; }
        sleep 0.2
    done
    nef_on 3 ps >&2
    say "after the kill: $lost lost, $running still running"

    say "restarting the agent of host $victim: it re-adopts its processes"
    start_agent "$victim"
    deadline=$(( $(now_ms) + 20000 ))
    while :; do
        ps_json=$(nef_on 3 ps --json 2>/dev/null) || ps_json='{"processes": []}'
        running=$(python3 -c 'import json,sys; v=json.load(sys.stdin); print(sum(1 for p in v["processes"] if p["state"]=="Running"))' <<<"$ps_json")
        [ "$running" -eq 8 ] && break
        [ "$(now_ms)" -lt "$deadline" ] || { nef_on 3 ps >&2; fail "after the restart, $running of 8 running"; }
        sleep 0.2
    done
    nef_on 3 ps >&2

    say "killing the 8 sleepers from host 4"
    for pid in $pids; do nef_on 4 kill --signal KILL "$pid" || fail "nef kill $pid failed"; done
    for pid in $pids; do nef_on 4 wait "$pid" >&2 || fail "nef wait $pid failed"; done

    run_spawn_parameters

    say "a tenant process is contained: no key, no config, no root on the host"
    local probe out
    # Each attempt must fail (the shell exits 0 only if all did); `id -u` is 0 inside,
    # an unprivileged range outside.
    probe=$(nef_on 2 spawn --mem 64M -- /bin/sh -c \
        "! cat '$KEY' && ! cat '$WORK/h2/nefeled.toml' && ! touch /etc/x /usr/x /x && ! mount -t tmpfs none /tmp && grep -q '^NoNewPrivs:.*1' /proc/self/status && grep -q '^CapEff:.*0000000000000000' /proc/self/status") \
        || fail "nef spawn of the containment probe failed"
    out=$(nef_on 2 wait "$probe") || fail "nef wait $probe failed"
    [ "$out" = "$probe exited with code 0" ] || fail "a tenant process escaped its containment: $out"

    say "the C example (libnefele's C ABI) on host 2: spawn, list, kill, wait"
    if command -v cc >/dev/null; then
        cc -Wall -Werror -o "$WORK/spawn" host-linux/libnefele/examples/c/spawn.c \
            -I host-linux/libnefele/include -L "$BIN_DIR" -lnefele || fail "the C example does not build"
        out=$(LD_LIBRARY_PATH="$BIN_DIR" "$WORK/spawn" "$WORK/h2/api.sock" test-token) \
            || { printf '%s\n' "$out" >&2; fail "the C example failed"; }
        printf '%s\n' "$out" >&2
        # Three processes spread over two racks: C is told the tag is not spread.
        grep -qx "spread tags not spread across racks: 1" <<<"$out" \
            || fail "the C example was not told its spread tag could not be spread"
    else
        missing "netns-cluster (test): the C example" "a C compiler (cc)"
    fi
    run_messaging
    run_external_proxy
    run_swarm
    say "PASS"
}

# The spawn parameters (issue 14) on real hosts: spread across the two racks,
# near a pid's host, and a memory limit enforced by the agents' cgroups (or, on a
# machine whose agents have no memory controller, refused at spawn naming the
# limit, and the check recorded as skipped).
run_spawn_parameters() {
    run_memory_limit
    say "spread: two processes of one tag from host 1 go to both racks (1-2, 3-4)"
    local pids racks p near_pid
    pids=$(nef_on 1 spawn -n 2 --cpu 100m --spread pair -- /bin/sleep 30) || fail "nef spawn --spread failed"
    racks=$(for p in $pids; do echo $(( ($(host_of "$p") + 1) / 2 )); done | sort -u | wc -l)
    [ "$racks" -eq 2 ] || fail "spread put both in one rack: $(for p in $pids; do host_of "$p"; done | tr '\n' ' ')"
    say "near: a process near one on host 3, asked from host 1, runs on host 3"
    near_pid=$(nef_on 3 spawn --cpu 100m -- /bin/sleep 30) || fail "nef spawn on host 3 failed"
    p=$(nef_on 1 spawn --cpu 100m --near "$near_pid" -- /bin/sleep 30) || fail "nef spawn --near failed"
    [ "$(host_of "$p")" -eq 3 ] || fail "near $near_pid (host 3) ran on host $(host_of "$p")"
    for q in $pids $near_pid $p; do nef_on 1 kill --signal KILL "$q" >/dev/null 2>&1 || true; done
}

# A process that touches 64 MiB under a 16 MiB limit is killed for it; one that
# touches 1 MiB ends well. Where no agent can enforce a memory limit the spawn
# fails at once naming it (a pid and a start failure, code 127, before).
run_memory_limit() {
    say "limits: over its memory limit a process is killed; within it, it ends well"
    local p out
    if ! out=$(nef_on 1 spawn --cpu 100m --mem-limit 16M -- /bin/dd if=/dev/zero of=/dev/null bs=64M count=1 2>&1); then
        grep -q "Limit(Memory)" <<<"$out" || fail "a memory-limited spawn failed without naming the limit: $out"
        say "no agent can enforce a memory limit here; the spawn says so: $out"
        machine_lacks "netns-cluster (test): memory limits" "a memory cgroup controller for the agents"
        return 0
    fi
    p=$out
    out=$(nef_on 1 wait "$p") || fail "nef wait $p failed"
    [ "$out" = "$p killed for going over its memory limit" ] || fail "64 MiB under a 16 MiB limit: $out"
    p=$(nef_on 1 spawn --cpu 100m --mem-limit 16M -- /bin/dd if=/dev/zero of=/dev/null bs=1M count=1) || fail "nef spawn --mem-limit failed"
    out=$(nef_on 1 wait "$p") || fail "nef wait $p failed"
    [ "$out" = "$p exited with code 0" ] || fail "1 MiB under a 16 MiB limit: $out"
}

# As nef_on, for the second tenant.
other_on() {
    local i=$1
    shift
    "$NEF" --socket "$WORK/h$i/api.sock" --token other-token "$@"
}

# Host of pid $1, from ps on host 1 (of the second tenant with $2 = other).
# `ps` is gathered from the agents, so a process just spawned on an agent that has
# just rejoined may be missing for a moment: asked again for up to 5 s.
host_of() {
    local ps=nef_on try h
    [ "${2:-}" = other ] && ps=other_on
    for try in $(seq 1 25); do
        h=$("$ps" 1 ps --json | python3 -c 'import json,sys; print(next((p["host"] for p in json.load(sys.stdin)["processes"] if p["pid"]==sys.argv[1]), ""))' "$1") || h=""
        if [ -n "$h" ]; then
            echo "$h"
            return 0
        fi
        sleep 0.2
    done
    echo "[netns-cluster] $1 is not listed by ps from host 1 after 5 s" >&2
    return 1
}

# Each process of a pair waits for its orders ("ping PEER" or "pong PEER"), then
# the pinger sends `ping` to the name ponger (retrying until the ponger has
# registered it), the ponger answers `pong` to the pinger's pid.
PAIR_SCRIPT='N=/data/nef
set -- $($N recv --data --timeout 30) || exit 2
if [ "$1" = pong ]; then
  $N register ponger || exit 3
  m=$($N recv --data --timeout 30) && [ "$m" = ping ] && $N send "$2" pong
else
  i=0; until $N send name:ponger ping; do i=$((i+1)); [ $i -lt 100 ] || exit 4; sleep 0.1; done
  m=$($N recv --data --timeout 30) && [ "$m" = pong ]
fi'

# Spawns a pair with affinity $1 (--apart/--together), gives them their orders,
# and checks both end with code 0; $2 says what must hold of their hosts.
ping_pong() {
    local affinity=$1 hosts=$2 pids a b ha hb out
    pids=$(nef_on 1 spawn -n 2 --mem 64M "$affinity" "pp$RANDOM" -- /bin/sh -c "$PAIR_SCRIPT") \
        || fail "spawn of the pair failed"
    a=$(sed -n 1p <<<"$pids"); b=$(sed -n 2p <<<"$pids")
    ha=$(host_of "$a"); hb=$(host_of "$b")
    say "pair: $a on host $ha, $b on host $hb"
    if [ "$hosts" = different ]; then [ "$ha" != "$hb" ] || fail "--apart put both on host $ha"
    else [ "$ha" = "$hb" ] || fail "--together put them on hosts $ha and $hb"; fi
    # Orders, sent as each process to itself through its own host's agent.
    nef_on "$ha" --as "$a" send "$a" "pong $b" >/dev/null || fail "orders to $a not sent"
    nef_on "$hb" --as "$b" send "$b" "ping $a" >/dev/null || fail "orders to $b not sent"
    for pid in $a $b; do
        out=$(nef_on 1 wait "$pid") || fail "nef wait $pid failed"
        [ "$out" = "$pid exited with code 0" ] || { tail -n 5 "$WORK"/h*/data/host/logs/*"$pid"* >&2 2>/dev/null; fail "ping-pong process: $out"; }
    done
}

run_messaging() {
    say "messaging: nef inside tenant processes, through their inherited endpoints"
    local i dir
    for i in $(seq 1 "$HOSTS"); do
        dir="$WORK/h$i/data/host/tenants/t1"
        mkdir -p "$dir"
        install -m 0755 "$NEF" "$dir/nef"
    done
    ping_pong --apart different
    say "ping-pong between two hosts: ok"
    ping_pong --together same
    say "ping-pong on one host: ok"

    say "a process sending as its sibling's pid is refused"
    local pids h s hh out
    pids=$(nef_on 1 spawn -n 2 --mem 64M --together "hh$RANDOM" -- /bin/sh -c \
        'N=/data/nef; s=$($N recv --data --timeout 30) || exit 2; $N --as "$s" send "$s" x 2>/tmp/err; [ $? -eq 1 ] && grep -q "not a live local process" /tmp/err') \
        || fail "spawn of the hostile pair failed"
    h=$(sed -n 1p <<<"$pids"); s=$(sed -n 2p <<<"$pids")
    hh=$(host_of "$h")
    nef_on "$hh" --as "$h" send "$h" "$s" >/dev/null || fail "orders to $h not sent"
    out=$(nef_on 1 wait "$h") || fail "nef wait $h failed"
    [ "$out" = "$h exited with code 0" ] || fail "the hostile process was not refused as it should be: $out"
    nef_on 1 kill --signal KILL "$s" || true
    # Its cpu is free once its agent saw it end: the next spawns need it.
    nef_on 1 wait "$s" >/dev/null || true
    run_messaging_patterns
}

# Two tenants; publish to subscribers on every host; a failover group whose
# primary's agent is SIGKILLed.
run_messaging_patterns() {
    say "another tenant's pid answers exactly as a pid that never existed"
    local p q hq unknown mine never
    p=$(nef_on 1 spawn --cpu 100m --mem 32M -- /bin/sleep 60) || fail "spawn of tenant 1's process failed"
    q=$(other_on 1 spawn --cpu 100m --mem 32M -- /bin/sleep 60) || fail "spawn of tenant 2's process failed"
    hq=$(host_of "$q" other)
    # The same host and life as p, a sequence number nobody reached.
    unknown=fff${p: -16}
    mine=$(other_on "$hq" --as "$q" send "$p" x 2>&1) && fail "a send to another tenant's pid succeeded"
    never=$(other_on "$hq" --as "$q" send "$unknown" x 2>&1) && fail "a send to a made-up pid succeeded"
    [ "${mine//$p/PID}" = "${never//$unknown/PID}" ] \
        || fail "another tenant's pid ($mine) answers unlike an unknown one ($never)"
    say "both answer: ${mine//$p/PID}"
    nef_on 1 kill --signal KILL "$p" >/dev/null
    other_on 1 kill --signal KILL "$q" >/dev/null

    say "publish: one subscriber on each of the $HOSTS hosts gets it once"
    local subs sub h pubr reached out
    # Small cpu asks: the processes killed just before may not have freed theirs yet.
    subs=$(nef_on 1 spawn -n "$HOSTS" --cpu 100m --mem 32M --apart "subs$RANDOM" -- /bin/sh -c \
        'm=$(/data/nef recv --max 10 --data --timeout 30) && [ "$m" = news ]') || fail "spawn of the subscribers failed"
    [ "$(for sub in $subs; do host_of "$sub"; done | sort -u | wc -l)" -eq "$HOSTS" ] \
        || fail "the subscribers are not on $HOSTS hosts"
    local subscribing=()
    for sub in $subs; do
        # nef sub subscribes, then would print what comes: stopped before anything is published.
        timeout 2 "$NEF" --socket "$WORK/h$(host_of "$sub")/api.sock" --token test-token --as "$sub" sub news >/dev/null 2>&1 &
        subscribing+=($!)
    done
    wait "${subscribing[@]}" || true
    pubr=$(nef_on 1 spawn --cpu 100m --mem 32M -- /bin/sleep 60) || fail "spawn of the publisher failed"
    reached=$(nef_on "$(host_of "$pubr")" --as "$pubr" pub news news) || fail "publish failed"
    [ "$reached" = "reached $HOSTS" ] || fail "publish: $reached, want reached $HOSTS"
    for sub in $subs; do
        out=$(nef_on 1 wait "$sub") || fail "nef wait $sub failed"
        [ "$out" = "$sub exited with code 0" ] || fail "subscriber $sub: $out"
    done
    nef_on 1 kill --signal KILL "$pubr" >/dev/null

    say "failover: the primary's agent is SIGKILLed, the next member takes over, reliable sends are not lost"
    local trio m1 m2 sender hs primary backup hp hb i got
    # A small cpu ask, as for the subscribers: without one the trio asks what
    # earlier /bin/sleep processes did (placement's history), and processes
    # killed just before may not have freed theirs yet.
    trio=$(nef_on 1 spawn -n 3 --cpu 100m --mem 32M --apart "fo$RANDOM" -- /bin/sleep 120) || fail "spawn of the failover trio failed"
    m1=$(sed -n 1p <<<"$trio"); m2=$(sed -n 2p <<<"$trio"); sender=$(sed -n 3p <<<"$trio")
    for m in $m1 $m2; do nef_on "$(host_of "$m")" --as "$m" groups join svc || fail "join failed"; done
    hs=$(host_of "$sender")
    out=$(nef_on "$hs" --as "$sender" send --reliable group:svc:failover first) || fail "the first failover send failed"
    primary=""
    for m in $m1 $m2; do
        if got=$(nef_on "$(host_of "$m")" --as "$m" recv --data --timeout 1 2>/dev/null) && [ "$got" = first ]; then
            primary=$m
        fi
    done
    [ -n "$primary" ] || fail "no member got the first failover message"
    if [ "$primary" = "$m1" ]; then backup=$m2; else backup=$m1; fi
    hp=$(host_of "$primary"); hb=$(host_of "$backup")
    say "primary $primary on host $hp, backup $backup on host $hb; SIGKILL to agent $hp"
    kill -KILL "${AGENT_PID[$hp]}"
    local asker=$hs
    [ "$asker" = "$hp" ] && fail "the sender shares the primary's host"
    # Sends go on; once the failure is detected they reach the backup. Each that
    # succeeded must be there exactly once.
    local deadline sent=""
    deadline=$(( $(now_ms) + 20000 ))
    for i in 1 2 3 4 5; do
        until out=$(nef_on "$hs" --as "$sender" send --reliable group:svc:failover "after$i" 2>&1); do
            [ "$(now_ms)" -lt "$deadline" ] || fail "no failover within 20 s: $out"
            sleep 0.2
        done
        sent+="after$i"$'\n'
    done
    got=$(nef_on "$hb" --as "$backup" recv --max 100 --data --timeout 5) || fail "the backup got nothing"
    [ "$(sort <<<"$got")" = "$(sort <<<"${sent%$'\n'}")" ] \
        || fail "the backup got [$got], want each of [$sent] once"
    say "the backup took over: got ${got//$'\n'/ }"
    start_agent "$hp"
    wait_converged 1 "$HOSTS" >/dev/null || fail "agent $hp did not rejoin"
    for m in $trio; do nef_on "$hs" kill --signal KILL "$m" >/dev/null 2>&1 || true; done
}

# A TCP echo server on the given ports of the switch namespace's address (the
# pid namespace ends it with the run).
ECHO_PY='import socketserver, sys, threading
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)
class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
servers = [Server((sys.argv[1], int(p)), Echo) for p in sys.argv[2:]]
for s in servers[1:]:
    threading.Thread(target=s.serve_forever, daemon=True).start()
servers[0].serve_forever()'

# The external proxy: a process on a host other than the proxy's (agent 1) sends
# to the echo server outside the cluster's hosts and gets its bytes back; a send
# to a port the proxy's rules do not allow (another echo, which would answer)
# gets no bytes back, only the notice that its connection closed, and the proxy
# logs why.
run_external_proxy() {
    say "external proxy: agent 1 carries a send to an echo server outside the hosts"
    ip netns exec "$SWITCH" python3 -c "$ECHO_PY" "$(ext_ip)" "$ECHO_PORT" "$DENIED_PORT" &
    local pids p="" h q out got
    pids=$(nef_on 3 spawn -n 2 --mem 32M --apart "ext$RANDOM" -- /bin/sleep 120) || fail "spawn of the external senders failed"
    for q in $pids; do
        [ "$(host_of "$q")" != 1 ] && { p=$q; break; }
    done
    [ -n "$p" ] || fail "both processes of an --apart pair on host 1"
    h=$(host_of "$p")
    # The echo server may still be starting: a send is retried until its echo comes.
    local i
    for i in $(seq 1 20); do
        out=$(nef_on "$h" --as "$p" send "ext:$(ext_ip):$ECHO_PORT" "hello $i") || fail "external send failed: $out"
        [ "$out" = "reached 1" ] || fail "external send: $out, want reached 1"
        # A connection tried before the server listened ends with a close notice.
        if got=$(nef_on "$h" --as "$p" recv --data --timeout 2 2>/dev/null) \
            && [[ $got != *"[external_closed]"* ]]; then break; fi
    done
    [ "$got" = "hello $i" ] || fail "the echo through the proxy came back as [$got], want [hello $i]"
    say "echo from $(ext_ip):$ECHO_PORT to $p on host $h through agent 1: ok ($i tries)"
    out=$(nef_on "$h" --as "$p" send "ext:$(ext_ip):$DENIED_PORT" "secret") || fail "external send failed: $out"
    got=$(nef_on "$h" --as "$p" recv --data --timeout 3 2>/dev/null) || true
    [[ $got == *"[external_closed] $(ext_ip):$DENIED_PORT Denied"* ]] \
        || fail "a port outside the proxy's rules: [$got], want only its close notice, saying Denied"
    grep -q "$(ext_ip):$DENIED_PORT is not allowed by the proxy's rules" "$WORK/h1/nefeled.log" \
        || fail "the proxy did not log the refused destination"
    say "a port outside the rules: nothing carried, the sender told it was denied, refusal logged"
    for q in $pids; do nef_on 1 kill --signal KILL "$q" >/dev/null 2>&1 || true; done
}

# The swarm's seeds as tenant processes (`nefele-sim swarm --on-cluster` from host
# 1): four small seeds, one worker each, placed by the cluster; the summary must be
# the one a local swarm of the same seeds prints.
run_swarm() {
    say "swarm: 4 seeds as tenant processes on the cluster"
    local sim=$BIN_DIR/nefele-sim i out local_summary
    [ -x "$sim" ] || fail "no nefele-sim in $BIN_DIR"
    for i in $(seq 1 "$HOSTS"); do
        install -m 0755 "$sim" "$WORK/h$i/data/host/tenants/t1/nefele-sim"
    done
    local limits=(--seeds 4 --min-nodes 5 --max-nodes 12 --min-duration 20s --max-duration 25s)
    out=$(NEFELE_TOKEN=test-token "$sim" swarm --on-cluster --socket "$WORK/h1/api.sock" \
        --sim-bin /data/nefele-sim --jobs 4 --worker-cpu 200m --worker-memory 128M \
        --out "$WORK/swarm-failures" "${limits[@]}" 2>&1) \
        || { printf '%s\n' "$out" >&2; fail "the swarm on the cluster failed"; }
    printf '%s\n' "$out" >&2
    local_summary=$("$sim" swarm --quiet --jobs 1 --out "$WORK/swarm-failures" "${limits[@]}" 2>/dev/null) \
        || fail "the same seeds fail locally"
    [ "$(grep '^swarm:' <<<"$out")" = "$(grep '^swarm:' <<<"$local_summary")" ] \
        || fail "the cluster's summary differs from a local swarm's: $(grep '^swarm:' <<<"$local_summary")"
    grep -q '^swarm: 4 seeds (1..=4), 4 passed, 0 failed' <<<"$out" || fail "not all 4 seeds passed"
    # A worker that cannot start is a failure by name, never a pass.
    if out=$(NEFELE_TOKEN=test-token "$sim" swarm --on-cluster --socket "$WORK/h1/api.sock" \
        --sim-bin /data/no-such-sim --seeds 1 --out "$WORK/swarm-failures" 2>&1); then
        fail "a swarm whose workers cannot start passed: $out"
    fi
    grep -q '^swarm.not-run ' <<<"$out" || fail "no swarm.not-run failure in: $out"
}

# Prints p50 of a list of numbers on stdin.
p50() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

run_bench() {
    local converge
    converge=$(boot_cluster)
    echo "convergence_ms=$converge"
    local i t0 samples=""
    for i in $(seq 1 50); do
        t0=$(now_ms)
        nef_on 1 spawn --cpu 10m --mem 8M -- /bin/true >/dev/null || fail "spawn failed"
        samples+="$(( $(now_ms) - t0 ))"$'\n'
    done
    echo "spawn_roundtrip_p50_ms=$(printf '%s' "$samples" | p50) (50 runs of nef spawn, process start included)"
    # 100 × 30m do not fit on one host of 1000m: the request spreads over the group.
    t0=$(now_ms)
    nef_on 1 spawn -n 100 --cpu 30m --mem 8M -- /bin/sleep 5 >/dev/null || fail "n_spawn failed"
    echo "n_spawn_100_ms=$(( $(now_ms) - t0 )) (100 × 30m over hosts of 1000m)"
    echo "hosts_used=$(nef_on 1 ps --json | python3 -c 'import json,sys; v=json.load(sys.stdin); print(len({p["host"] for p in v["processes"] if p["state"]=="Running"}))')"
    bench_messaging
}

# The `rr` line $3 (plain or async: n=.. p50_us=.. p99_us=..) in the stdout log of
# pid $2 on host $1.
rr_result() {
    sed -n "s/^$3: //p" "$WORK/h$1/data/host/logs/$2.out" 2>/dev/null | tail -n 1
}

# p50 of an rr result line.
p50_of() { sed -n 's/.*p50_us=\([0-9.]*\).*/\1/p' <<<"$1"; }

# 64-byte request/response between two tenant processes through Nefele (libnefele's
# rr example, through each process's endpoint), against raw sockets between the
# same network namespaces: TCP for two hosts, a Unix socket for one. Each Nefele
# round trip is a send (answered once the receiving agent has the message) and a
# receive of the answer; then the same on links between the two processes
# (libnefele's `link`, past both agents: a socket pair on one host, a sealed TCP
# connection across two), and on one host the raw Unix echo again between two
# tenant processes inside Nefele's sandbox. $NEFELE_BENCH_RR round trips each
# (default 5000).
#
# Each pair runs twice: placed by the scheduler (lines `rr64_2hosts_*`,
# `rr64_samehost_*`), then pinned (`*_pinned_*`: both ends of every path, Nefele's
# and the raw baseline's, on the same cpus: across two hosts each host's end on a
# cpu of its own, as two machines would have; on one host both ends on one cpu).
# On a small virtual machine a wake-up across cpus costs more than the whole round
# trip on one, and the scheduler places the baseline and Nefele's pair differently
# from run to run; pinned, both paths are compared under the same placement.
bench_messaging() {
    sleep 6 # the sleepers of the spawn figures end (their cpu is reserved)
    local rr i dir
    rr=$(realpath "$BIN_DIR/examples/rr") || fail "no rr example in $BIN_DIR/examples"
    for i in $(seq 1 "$HOSTS"); do
        dir="$WORK/h$i/data/host/tenants/t1"
        mkdir -p "$dir"
        install -m 0755 "$NEF" "$dir/nef"
        install -m 0755 "$rr" "$dir/rr"
    done
    local last_cpu=$(( $(nproc) - 1 ))
    bench_rr apart "" "" 7700
    bench_rr together "" "" 7701
    bench_rr apart 0 "$last_cpu" 7702
    bench_rr together 0 0 7703
    bench_messaging_rates
}

# One request/response pair under affinity $1 (apart: two hosts; together: one),
# its echo pinned to cpu $2 and its client to cpu $3 (neither pinned when empty),
# against the raw baseline placed the same way (on TCP port $4 across hosts).
bench_rr() {
    local affinity=$1 echo_cpu=$2 client_cpu=$3 port=$4 n=${NEFELE_BENCH_RR:-5000}
    local rr pin_echo="" pin_client="" on_echo=() on_client=() where pinned=""
    rr=$(realpath "$BIN_DIR/examples/rr")
    if [ -n "$echo_cpu" ]; then
        pin_echo="pin $echo_cpu "; pin_client="pin $client_cpu "; pinned="_pinned"
        on_echo=(taskset -c "$echo_cpu"); on_client=(taskset -c "$client_cpu")
    fi
    local pids a b ha hb nefele asynced linked linked_async raw sandboxed=""
    # Each waits for its orders (rr's arguments), then becomes rr; a limit of a
    # whole cpu (rr has one thread), so that the quota never throttles it.
    pids=$(nef_on 1 spawn -n 2 --cpu 450m --cpu-limit 1 --mem 64M "--$affinity" "rr$affinity$echo_cpu" -- /bin/sh -c \
        'set -- $(/data/nef recv --data --timeout 60) && exec /data/rr "$@"') || fail "spawn of the rr pair failed"
    a=$(sed -n 1p <<<"$pids"); b=$(sed -n 2p <<<"$pids")
    ha=$(host_of "$a"); hb=$(host_of "$b")
    nef_on "$ha" --as "$a" send "$a" "${pin_echo}echo" >/dev/null || fail "orders to $a"
    nef_on "$hb" --as "$b" send "$b" "${pin_client}client $a $n 64" >/dev/null || fail "orders to $b"
    nef_on 1 wait "$b" >/dev/null || fail "wait $b"
    nef_on 1 kill --signal KILL "$a" >/dev/null || true
    nefele=$(rr_result "$hb" "$b" plain)
    asynced=$(rr_result "$hb" "$b" async)
    linked=$(rr_result "$hb" "$b" linked)
    linked_async=$(rr_result "$hb" "$b" linked_async)
    [ -n "$nefele" ] && [ -n "$asynced" ] || fail "no result from the rr client $b on host $hb"
    local baseline placed
    if [ "$affinity" = apart ]; then
        where="2hosts$pinned" baseline=tcp placed="hosts $ha and $hb"
        ip netns exec "$(host_ns "$ha")" "${on_echo[@]}" "$rr" tcp-echo "$(host_ip "$ha"):$port" &
        sleep 0.3
        raw=$(ip netns exec "$(host_ns "$hb")" "${on_client[@]}" "$rr" tcp-client "$(host_ip "$ha"):$port" "$n" 64) \
            || fail "raw tcp client failed"
    else
        where="samehost$pinned" baseline=unix placed="host $ha"
        ip netns exec "$(host_ns "$ha")" "${on_echo[@]}" "$rr" unix-echo "$WORK/rr$port.sock" &
        sleep 0.3
        raw=$(ip netns exec "$(host_ns "$ha")" "${on_client[@]}" "$rr" unix-client "$WORK/rr$port.sock" "$n" 64) \
            || fail "raw unix client failed"
    fi
    wait
    echo "rr64_${where}_nefele: $nefele ($placed)"
    echo "rr64_${where}_nefele_async: $asynced"
    echo "rr64_${where}_linked: $linked"
    echo "rr64_${where}_linked_async: $linked_async"
    echo "rr64_${where}_${baseline}: $raw"
    if [ "$affinity" = together ]; then
        sandboxed=$(bench_sandboxed_unix "$n" "$pin_echo" "$pin_client")
        echo "rr64_${where}_unix_sandboxed: $sandboxed"
    fi
    local ratio='import sys; print(round(float(sys.argv[1])/float(sys.argv[2]), 2))'
    echo "rr64_${where}_p50_ratio=$(python3 -c "$ratio" "$(p50_of "$nefele")" "$(p50_of "$raw")") async=$(python3 -c "$ratio" "$(p50_of "$asynced")" "$(p50_of "$raw")")"
    if [ -n "$(p50_of "$linked")" ]; then
        echo "rr64_${where}_linked_p50_ratio=$(python3 -c "$ratio" "$(p50_of "$linked")" "$(p50_of "$raw")") async=$(python3 -c "$ratio" "$(p50_of "$linked_async")" "$(p50_of "$raw")")"
    fi
    if [ -n "$(p50_of "$sandboxed")" ] && [ -n "$(p50_of "$linked")" ]; then
        echo "rr64_${where}_linked_p50_ratio_to_sandboxed_unix=$(python3 -c "$ratio" "$(p50_of "$linked")" "$(p50_of "$sandboxed")") async=$(python3 -c "$ratio" "$(p50_of "$linked_async")" "$(p50_of "$sandboxed")")"
    fi
}

# The raw Unix-socket echo of $1 round trips between two processes of the tenant
# on one host, inside Nefele's sandbox (seccomp, cgroups, namespaces) as the
# linked pair is: what the sandbox alone costs. $2 and $3 begin the echo's and the
# client's orders (`pin CPU `, or nothing). Prints the client's result line.
bench_sandboxed_unix() {
    local pids e c
    pids=$(rr_spawn 2 --together "rrsandboxed${2// /}"); e=$(sed -n 1p <<<"$pids"); c=$(sed -n 2p <<<"$pids")
    rr_order "$e" "${2}unix-echo /data/rr.sock"
    sleep 0.3
    rr_order "$c" "${3}unix-client /data/rr.sock $1 64"
    nef_on 1 wait "$c" >/dev/null
    nef_on 1 kill --signal KILL "$e" >/dev/null || true
    tail -n 1 "$WORK/h${RR_HOST[$c]}/data/host/logs/$c.out" 2>/dev/null
}

# Spawns $1 rr processes under the affinity flags $2.. that wait for their orders
# (each limited to one cpu, all rr uses: no quota throttles a figure); prints their pids.
rr_spawn() {
    local n=$1
    shift
    nef_on 1 spawn -n "$n" --cpu 150m --cpu-limit 1 --mem 64M "$@" -- /bin/sh -c \
        'set -- $(/data/nef recv --data --timeout 60) && exec /data/rr "$@"' || fail "spawn of $n rr processes failed"
}

# Where each rr process given orders runs (ps forgets a process once it ended).
declare -A RR_HOST

# Gives rr process $1 its orders $2.
rr_order() {
    RR_HOST[$1]=$(host_of "$1")
    nef_on "${RR_HOST[$1]}" --as "$1" send "$1" "$2" >/dev/null || fail "orders to $1"
}

# The rr line $2 (a prefix) of pid $1; without one, what the process said on stderr.
rr_line() {
    local line
    line=$(rr_result "${RR_HOST[$1]}" "$1" "$2")
    if [ -n "$line" ]; then
        printf '%s' "$line"
    else
        printf 'NO RESULT: %s' "$(tail -n 3 "$WORK/h${RR_HOST[$1]}/data/host/logs/$1.err" 2>/dev/null | tr '\n' ' ')"
    fi
}

# One sender's stream of $1 64-byte messages to a sink on another host, through
# the agents (or on a link: $3 = linked); prints the lines named $2.
bench_stream() {
    local n=$1 name=$2 how=$3 pids a b
    pids=$(rr_spawn 2 --apart "${name//_/}"); a=$(sed -n 1p <<<"$pids"); b=$(sed -n 2p <<<"$pids")
    rr_order "$a" "sink $n"
    sleep 0.5
    rr_order "$b" "stream $a $n 64 $how"
    nef_on 1 wait "$b" >/dev/null; nef_on 1 wait "$a" >/dev/null
    echo "${name/stream/stream64_2hosts}_sender: $(rr_line "$b" "$name") (hosts ${RR_HOST[$b]} to ${RR_HOST[$a]})"
    echo "${name/stream/stream64_2hosts}_receiver: $(rr_line "$a" sink)"
}

# The other figures of issue 14: one sender's stream of 64-byte messages to another
# host, a publication to 5 subscribers on 4 hosts, name lookups warm and cold.
# $NEFELE_BENCH_MSGS messages each (default 200000).
bench_messaging_rates() {
    local n=${NEFELE_BENCH_MSGS:-200000} pids a b subs p s k=200
    bench_stream "$n" stream ""
    bench_stream "$n" stream_linked linked
    # Four subscribers one per host, a fifth and the publisher wherever placement puts them.
    subs=$(rr_spawn 4 --apart subs; rr_spawn 1)
    p=$(rr_spawn 1)
    for s in $subs; do rr_order "$s" "sub bench $n"; done
    sleep 2 # the subscriptions reach the root's filters
    rr_order "$p" "pub bench $n 64"
    nef_on 1 wait "$p" >/dev/null
    echo "pub64_5subs_publisher: $(rr_line "$p" pub)"
    for s in $subs; do
        nef_on 1 wait "$s" >/dev/null
        echo "pub64_5subs_subscriber: $(rr_line "$s" sub) (host ${RR_HOST[$s]})"
    done
    # Lookups from a host that is not the root of the tree (which holds the
    # directory), of names held on a third host.
    local root
    root=$(nef_on 1 members --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["root"])')
    a=""; b=""
    for p in $(rr_spawn 4 --apart lookup); do
        RR_HOST[$p]=$(host_of "$p")
        if [ "${RR_HOST[$p]}" = "$root" ]; then nef_on 1 kill --signal KILL "$p" >/dev/null || true
        elif [ -z "$a" ]; then a=$p
        elif [ -z "$b" ]; then b=$p
        else nef_on 1 kill --signal KILL "$p" >/dev/null || true
        fi
    done
    rr_order "$a" "names bn $k"
    sleep 2
    rr_order "$b" "lookup bn $k"
    nef_on 1 wait "$b" >/dev/null
    nef_on 1 kill --signal KILL "$a" >/dev/null || true
    echo "lookup_cold: $(rr_line "$b" lookup_cold) (from host ${RR_HOST[$b]}, names on ${RR_HOST[$a]}, root $root)"
    echo "lookup_warm: $(rr_line "$b" lookup_warm)"
}

case "$MODE" in
    test) run_test ;;
    bench) run_bench ;;
    *) fail "unknown mode $MODE (test or bench)" ;;
esac
