#!/usr/bin/env bash
# Profiles `sizeup run` on the client-ceiling scenario (zero-service simulator, non-streamed
# 1-token requests, --concurrency 64): where the client's CPU goes, how many allocations a
# request costs, and which threads wake which. Findings are written up in benches/PROFILE.md.
#
#   bash benches/profile.sh [OUT_DIR]        # about 3 minutes on 2 cores
#
# Uses perf (cpu-clock sampling: hardware counters are often unavailable in VMs) when it
# works, valgrind's callgrind (instructions, inclusive per function) and DHAT (allocations;
# the per-request figure is the difference between a 6,000- and a 2,000-request run, so
# start-up and the validation pass cancel out). Set CARGO_TARGET_DIR to use your own target.
set -eu  # no pipefail: `| head` closing a pipe early is fine here
cd "$(dirname "$0")/.."
OUT=${1:-$(mktemp -d /tmp/sizeup-profile.XXXXXX)}
mkdir -p "$OUT"
TARGET=${CARGO_TARGET_DIR:-target}
# The release code with symbols and line tables (the release profile itself ships stripped).
cargo build --profile profiling --locked >&2
EXE=$TARGET/profiling/sizeup
PORT=${PORT:-18901}

gen() { # gen N FILE: N OpenAI-batch lines
    awk -v n="$1" 'BEGIN { for (i = 0; i < n; i++) printf "{\"custom_id\":\"req-%08d\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{\"prompt\":\"say hello to number %d\",\"max_tokens\":1}}\n", i, i }' >"$2"
}
gen 60000 "$OUT/in60k.jsonl"
gen 5000 "$OUT/in5k.jsonl"
gen 2000 "$OUT/in2k.jsonl"
gen 6000 "$OUT/in6k.jsonl"

"$EXE" sim --addr 127.0.0.1:$PORT --gpus 1 --batch 4096 --decode-step-ms 0.001 \
    --decode-step-ms-per-seq 0 --prefill-ms-per-1k 0 --default-max-tokens 1 2>"$OUT/sim.log" &
SIM=$!
trap 'kill $SIM 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:$PORT/health >/dev/null && break; sleep 0.1; done
run() { # run INPUT OUTPUT [wrapper...]
    local input=$1 output=$2
    shift 2
    rm -f "$output"
    "$@" "$EXE" -q run --endpoint http://127.0.0.1:$PORT --input "$input" --output "$output" \
        --summary "$output.summary.json" --concurrency 64
}

echo "== plain run, 60,000 requests (load: $(cut -d' ' -f1-3 /proc/loadavg))"
run "$OUT/in60k.jsonl" "$OUT/o60k.jsonl" /usr/bin/time -f "%e s wall, %U s user, %S s sys, %M KiB peak" 2>&1 | tail -1
grep -E '"(requests_ok|wall_time_s)"' "$OUT/o60k.jsonl.summary.json"

if perf record -e cpu-clock -o /dev/null -- true >/dev/null 2>&1; then
    echo "== perf (cpu-clock, dwarf call graphs), 60,000 requests"
    run "$OUT/in60k.jsonl" "$OUT/o-perf.jsonl" perf record -q -e cpu-clock -F 2000 \
        --call-graph dwarf,16384 -o "$OUT/perf.data" 2>/dev/null
    perf report -i "$OUT/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null |
        grep -E '^ +[0-9]' | head -5
    perf report -i "$OUT/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null |
        grep -E '^ +[0-9]' | head -25
fi

echo "== callgrind, 5,000 requests (inclusive instructions of the main suspects)"
run "$OUT/in5k.jsonl" "$OUT/o-cg.jsonl" valgrind -q --tool=callgrind --callgrind-out-file="$OUT/cg.out"
callgrind_annotate --inclusive=yes "$OUT/cg.out" 2>/dev/null |
    grep -E 'PROGRAM TOTALS|Client::send::|url::ParseOptions::parse |validate_input |Reader as core::iter::traits::iterator::Iterator>::next |parse_object |write_result |output_record |drop_in_place<sizeup::client::Outcome>|drop_in_place<sizeup::batch::writer::OutputRecord>|malloc.c:malloc |malloc.c:free |url_segments |claim_id ' |
    grep -v '=>' | awk '{ $2 = ""; print }' | cut -c1-200

echo "== DHAT: allocations per request (6,000-request run minus 2,000-request run, / 4,000)"
for n in 2k 6k; do
    run "$OUT/in$n.jsonl" "$OUT/o-dhat$n.jsonl" valgrind --tool=dhat --dhat-out-file="$OUT/dhat.$n.json" 2>&1 |
        grep -E 'Total:' | sed "s/^==[0-9]*== /$n: /"
done
python3 - "$OUT" <<'EOF'
import json, sys
d = sys.argv[1]
t = {}
for n in ("2k", "6k"):
    j = json.load(open(f"{d}/dhat.{n}.json"))
    t[n] = (sum(p["tbk"] for p in j["pps"]), sum(p["tb"] for p in j["pps"]))
print("per request: %.1f allocations, %.0f bytes allocated" % ((t["6k"][0] - t["2k"][0]) / 4000, (t["6k"][1] - t["2k"][1]) / 4000))
EOF
echo "== memory: reading 1,000,000 lines (--shard 0/1000000 sends one request), openai-batch vs text"
awk 'BEGIN { for (i = 0; i < 1000000; i++) printf "{\"custom_id\":\"req-%08d\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{\"prompt\":\"say hello to number %d\",\"max_tokens\":1}}\n", i, i }' >"$OUT/in1m.jsonl"
awk 'BEGIN { for (i = 0; i < 1000000; i++) printf "say hello to number %d\n", i }' >"$OUT/in1m.txt"
for f in in1m.jsonl in1m.txt; do
    rm -f "$OUT/o1m.jsonl"
    /usr/bin/time -f "$f: %e s wall, %M KiB peak RSS" "$EXE" -q run --endpoint http://127.0.0.1:$PORT \
        --input "$OUT/$f" --output "$OUT/o1m.jsonl" --summary "$OUT/o1m.summary.json" \
        --concurrency 64 --max-tokens 1 --shard 0/1000000 2>&1 | tail -1
done
echo "profile data in $OUT"
