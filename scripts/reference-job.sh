#!/usr/bin/env bash
# Reference resource of known truth: 2 GPUs x 8 slots; service = 20 ms (prefill of the 2-word
# prompt at 10,000 ms per 1k tokens) + 1 ms per output token. 12,000 lines sorted by length:
# first half 8 output tokens, second half 128. Truth per GPU: 8 x 60000 / mean(28, 148) ms
# = 5,455 RPM; 8,000 RPM x 1.1 headroom needs 2 GPUs.
# Run from the repository root: `cargo build && scripts/reference-job.sh` (about 2 minutes).
set -u
B="$(pwd)/target/debug/sizeup"
WORK="$(mktemp -d)"
cd "$WORK"
python3 - <<'GEN'
with open('job.jsonl', 'w') as f:
    for i in range(12000):
        mx = 8 if i < 6000 else 128
        f.write('{"custom_id":"r%d","method":"POST","url":"/v1/completions","body":{"model":"m","prompt":"line %05d","max_tokens":%d}}\n' % (i, i, mx))
GEN
$B sim --addr 127.0.0.1:18555 --gpus 2 --batch 8 --decode-step-ms 1 --decode-step-ms-per-seq 0 --prefill-ms-per-1k 10000 2>sim.log &
SIM=$!
sleep 1
$B auto --endpoint http://127.0.0.1:18555 --gpus 2 --input job.jsonl --target-rpm 8000 --yes --out auto 2>auto.log >auto.out
echo "auto exit $?"
curl -s 127.0.0.1:18555/metrics | grep '^sizeup_sim_requests_total'
kill $SIM
grep -E "gpus|rpm_per_gpu|expected_rpm|chosen_conc" auto/plan.json
grep -E "predicted|sweep budget|sweep:" auto.log
python3 - <<'PY'
import json
s=json.load(open('auto/summary.json')); r=json.load(open('auto/run-summary.json'))
print('sweep distinct', s['distinct_requests'], 'repeated', s['repeated_requests'], 'knee', s['knee'])
print('run total', r['requests_total'], 'skipped', r['skipped_already_done'], 'pred', r['predicted_duration_s'], 'ach', r['achieved_duration_s'])
ids=[json.loads(l)['custom_id'] for l in open('auto/output.jsonl')]
print('output lines', len(ids), 'unique', len(set(ids)))
PY
echo "files in $WORK"
