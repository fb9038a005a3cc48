#!/usr/bin/env bash
# Runs each given scenario with its own seed and with 20 other seeds, and prints one
# line per run: scenario, seed, invariant violations, convergence and repair times.
# Usage: scripts/sweep-seeds.sh scenarios/crash-10pct.toml [more.toml ...]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --bin nefele-sim
sim=target/release/nefele-sim
report=$(mktemp)
trap 'rm -f "$report"' EXIT
for scenario in "$@"; do
    for seed in default $(seq 101 120); do
        seed_flag=()
        [ "$seed" != default ] && seed_flag=(--seed "$seed")
        "$sim" run -q --scenario "$scenario" "${seed_flag[@]}" --report "$report" >/dev/null
        python3 - "$scenario" "$report" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
f = r["federation"]
print(f'{sys.argv[1]:32} seed={r["seed"]:<4} violations={r["invariants"]["violations"]} '
      f'converged_at_s={f.get("converged_at_s")} last_repair_s={f.get("last_repair_s")} '
      f'top_groups={f.get("top_groups")} depth={f.get("depth")} false_removals={f["false_removals"]} '
      f'detection_p99_ms={f["detection_p99_ms"]} msgs/agent/s={f["control_msgs_per_agent_per_s"]:.1f} wall_s={r["wall_seconds"]:.1f}')
PY
    done
done
