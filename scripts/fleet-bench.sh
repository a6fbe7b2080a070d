#!/usr/bin/env bash
# Times `fer fleet status`, `fer fleet flash` and `fer fleet collect` on N boards behind one
# sshd on 127.0.0.1 (a board root each), with --jobs 1, 4 and 8, and prints a Markdown table.
#
#   bash scripts/fleet-bench.sh EXPORT_DIR [BOARDS...]     (default boards: 8 32)
#
# EXPORT_DIR is an export folder of `fer-train export`, e.g. the demo's
# fer-demo/run/rounds/round-001/export. Each board logs 20 faces with `fer-edge run` on
# synthetic frames before the collect is timed. Needs openssh-server and the built programs
# (cargo build -p tools -p edge --bins); honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
export_dir="$(cd "${1:?usage: fleet-bench.sh EXPORT_DIR [BOARDS...]}" && pwd)"
shift
if [ $# -gt 0 ]; then counts=("$@"); else counts=(8 32); fi

target_dir=$(cargo metadata --format-version 1 --no-deps | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
fer="$target_dir/debug/fer"
edge="$target_dir/debug/fer-edge"
[ -x "$fer" ] && [ -x "$edge" ] || { echo "build first: cargo build -p tools -p edge --bins" >&2; exit 1; }

work=$(mktemp -d)
cleanup() { [ -f "$work/sshd.pid" ] && kill "$(cat "$work/sshd.pid")" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

ssh-keygen -q -t ed25519 -N "" -C host -f "$work/host_key"
ssh-keygen -q -t ed25519 -N "" -C client -f "$work/client_key"
cp "$work/client_key.pub" "$work/authorized_keys"
mkdir -p /run/sshd 2>/dev/null || true
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$work/host_key.pub")" >"$work/known_hosts"
cat >"$work/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $work/host_key
AuthorizedKeysFile $work/authorized_keys
PidFile $work/sshd.pid
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
PermitRootLogin prohibit-password
MaxStartups 200
MaxSessions 200
Subsystem sftp internal-sftp
LogLevel ERROR
EOF
/usr/sbin/sshd -f "$work/sshd_config"
for _ in $(seq 50); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null && break; sleep 0.1; done

"$fer" keygen --out "$work/fleet.key" >/dev/null
cat >"$work/board.toml" <<EOF
[device]
id = "bench-board"

[detector]
kind = "none"

[classifier]
default_threshold = 1.0

[field_log]
directory = "field-log"
max_records_per_minute = 0
dedup_window_ms = 0
EOF
"$fer" bundle --model "$export_dir" --config "$work/board.toml" --key "$work/fleet.key" \
    --out "$work/bundle" --version 1 >/dev/null

# Wall seconds of a command (its output dropped; a failure shows in the table as a warning).
seconds() {
    local start end
    start=$(date +%s%N)
    "$@" >"$work/last.out" 2>"$work/last.err" || { cat "$work/last.out" >&2; echo "warning: $* failed: $(tail -1 "$work/last.err")" >&2; }
    end=$(date +%s%N)
    python3 -c "print(($end - $start) / 1e9)"
}

echo "| boards | jobs | status s | flash s | collect s |"
echo "|---|---|---|---|---|"
for n in "${counts[@]}"; do
    for jobs in 1 4 8; do
        fleet="$work/fleet-$n-$jobs.toml"
        cat >"$fleet" <<EOF
[defaults]
ssh_options = ["UserKnownHostsFile=$work/known_hosts", "StrictHostKeyChecking=yes", "IdentityFile=$work/client_key", "IdentitiesOnly=yes", "IdentityAgent=none", "BatchMode=yes"]
agent = "$edge"
EOF
        for i in $(seq "$n"); do
            root="$work/boards-$n-$jobs/b$i"
            mkdir -p "$root"
            "$edge" bundle init --root "$root" --trust "$(cat "$work/fleet.key.pub")" >/dev/null
            printf '\n[[board]]\nname = "b%s"\naddress = "ssh://%s@127.0.0.1:%s%s"\n' \
                "$i" "$(id -un)" "$port" "$root" >>"$fleet"
        done
        status_s=$(seconds "$fer" fleet status --fleet "$fleet" --jobs "$jobs")
        flash_s=$(seconds "$fer" fleet flash --fleet "$fleet" --bundle "$work/bundle" --jobs "$jobs")
        logged=0
        for i in $(seq "$n"); do
            written=$("$edge" run --bundle "$work/boards-$n-$jobs/b$i" --source synthetic:$i --frames 20 2>/dev/null |
                tail -1 | python3 -c 'import json, sys; print(json.load(sys.stdin)["field_log"]["written"])')
            logged=$((logged + written))
        done
        collect_s=$(seconds "$fer" fleet collect --fleet "$fleet" --into "$work/field-$n-$jobs" --jobs "$jobs")
        collected=$(cat "$work/field-$n-$jobs"/*/records.jsonl 2>/dev/null | wc -l)
        [ "$collected" -eq "$logged" ] || echo "warning: collected $collected of the $logged records logged" >&2
        printf '| %s | %s | %.1f | %.1f | %.1f |\n' "$n" "$jobs" "$status_s" "$flash_s" "$collect_s"
    done
done
