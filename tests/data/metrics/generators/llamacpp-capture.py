"""Capture llama-server /metrics idle and under 10 concurrent chat requests (loopback only)."""
import http.client, json, os, sys, threading, time

port, out = int(sys.argv[1]), sys.argv[2]
os.makedirs(out, exist_ok=True)


def get_metrics():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/metrics")
    r = c.getresponse()
    body = r.read()
    hdrs = dict(r.getheaders())
    c.close()
    return r.status, hdrs, body


def val(body, name):
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


log = []
st, hdrs, body = get_metrics()
open(os.path.join(out, "idle.prom"), "wb").write(body)
log.append({"t": 0.0, "what": "idle", "status": st, "headers": hdrs,
            "processing": val(body, "llamacpp:requests_processing"),
            "deferred": val(body, "llamacpp:requests_deferred")})

results = []


def chat(i):
    t0 = time.time()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = {"messages": [{"role": "user", "content": f"Request {i}: write a short story about a lighthouse."}],
            "max_tokens": 64, "ignore_eos": True}
    c.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"})
    r = c.getresponse()
    data = json.loads(r.read())
    results.append({"i": i, "status": r.status, "s": round(time.time() - t0, 3),
                    "usage": data.get("usage")})


threads = [threading.Thread(target=chat, args=(i,)) for i in range(10)]
T0 = time.time()
for t in threads:
    t.start()
k = 0
while any(t.is_alive() for t in threads):
    time.sleep(0.2)
    ts = time.time()
    st, hdrs, body = get_metrics()
    lat = round(time.time() - ts, 3)
    k += 1
    name = f"busy-{k:03d}.prom"
    open(os.path.join(out, name), "wb").write(body)
    log.append({"t": round(time.time() - T0, 3), "what": name, "status": st, "scrape_s": lat, "sent_at": round(ts - T0, 3),
                "processing": val(body, "llamacpp:requests_processing"),
                "deferred": val(body, "llamacpp:requests_deferred"),
                "prompt_tokens_total": val(body, "llamacpp:prompt_tokens_total"),
                "tokens_predicted_total": val(body, "llamacpp:tokens_predicted_total")})
for t in threads:
    t.join()
time.sleep(0.5)
st, hdrs, body = get_metrics()
open(os.path.join(out, "idle-after.prom"), "wb").write(body)
log.append({"t": round(time.time() - T0, 3), "what": "idle-after", "status": st,
            "processing": val(body, "llamacpp:requests_processing"),
            "deferred": val(body, "llamacpp:requests_deferred"),
            "prompt_tokens_total": val(body, "llamacpp:prompt_tokens_total"),
            "tokens_predicted_total": val(body, "llamacpp:tokens_predicted_total")})
json.dump({"captures": log, "requests": sorted(results, key=lambda r: r["i"])},
          open(os.path.join(out, "log.json"), "w"), indent=1)
for e in log:
    print(e.get("sent_at"), e.get("scrape_s"), e["t"], e["what"], "processing", e["processing"], "deferred", e["deferred"],
          "prompt", e.get("prompt_tokens_total"), "pred", e.get("tokens_predicted_total"))
print(sorted(results, key=lambda r: r["i"]))
