"""Render SGLang /metrics text by running SGLang 0.5.3's own sglang/srt/metrics/collector.py
(loaded from the release wheel) in prometheus_client multiprocess mode, as `--enable-metrics` does:
scheduler process(es) and the tokenizer manager write to PROMETHEUS_MULTIPROC_DIR, and /metrics is a
MultiProcessCollector over it (sglang/srt/utils/common.py add_prometheus_middleware).

usage: PROMETHEUS_MULTIPROC_DIR=<empty dir> gen_sglang.py OUT MODEL TP
"""
import importlib.util, multiprocessing as mp, os, random, sys, types

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = os.path.join(HERE, "../src/sglang-0.5.3/sglang/srt")
out, model, tp = sys.argv[1], sys.argv[2], int(sys.argv[3])
assert os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def stub(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


for pkg in ["sglang", "sglang.srt", "sglang.srt.metrics", "sglang.srt.disaggregation"]:
    stub(pkg, __path__=[])
import enum


class DisaggregationMode(enum.Enum):
    NULL = "null"
    PREFILL = "prefill"
    DECODE = "decode"


stub("sglang.srt.disaggregation.utils", DisaggregationMode=DisaggregationMode)
stub("sglang.srt.server_args", ServerArgs=object)
stub("sglang.srt.utils", get_bool_env_var=lambda *a, **k: False)
load("sglang.srt.metrics.utils", os.path.join(BASE, "metrics/utils.py"))
collector = load("sglang.srt.metrics.collector", os.path.join(BASE, "metrics/collector.py"))

R = random.Random(20250202)
N_DONE = 1200
MAX_TOTAL_TOKENS = 6500          # KV pool of a 24 GB GPU with an 8B bf16 model
RUNNING, QUEUED = 8, 16
USED = 5655                      # tokens held by the 8 running requests


def reqs():
    rr = random.Random(7)
    out = []
    for _ in range(N_DONE):
        p = max(20, int(rr.lognormvariate(6.2, 0.6)))
        g = 512 if rr.random() < 0.35 else rr.randint(40, 511)
        q = rr.expovariate(1 / 0.8)
        ttft = q + 0.02 + p / 25000
        tpot = 0.018 + rr.random() * 0.012
        out.append((p, g, q, ttft, tpot, ttft + g * tpot, int(p * 0.3 * rr.random())))
    return out


def scheduler(tp_rank):
    labels = {"model_name": model, "engine_type": "unified", "tp_rank": tp_rank, "pp_rank": 0}
    c = collector.SchedulerMetricsCollector(labels=labels)
    for (p, g, q, *_rest) in reqs():
        # scheduler.py get_new_batch_prefill: every rank records queue time and the stage latency
        c.observe_per_stage_req_latency("prefill_waiting", q)
        c.observe_queue_time(q)
    for _ in range(RUNNING):
        c.observe_per_stage_req_latency("prefill_waiting", 2.4)
        c.observe_queue_time(2.4)
    if tp_rank == 0:  # current_scheduler_metrics_enabled(): attn_tp_rank == 0 only
        st = collector.SchedulerStats()
        st.num_running_reqs = RUNNING
        st.num_used_tokens = USED
        st.token_usage = USED / MAX_TOTAL_TOKENS  # _get_token_info(): num_used / max_total_num_tokens
        st.gen_throughput = 301.7
        st.num_queue_reqs = QUEUED
        st.cache_hit_rate = 0.0
        c.log_stats(st)


def tokenizer():
    labels = {"model_name": model}
    c = collector.TokenizerMetricsCollector(server_args=None, labels=labels, collect_tokens_histogram=False)
    for (p, g, q, ttft, tpot, e2e, cached) in reqs():
        c.observe_time_to_first_token(labels, ttft)
        # streamed in chunks of ~8 tokens: observe_inter_token_latency(interval, num_new_tokens)
        left = g - 1
        while left > 0:
            n = min(8, left)
            c.observe_inter_token_latency(labels, tpot * n, n)
            left -= n
        c.observe_one_finished_request(labels, p, g, cached, e2e, False)
    for _ in range(RUNNING):
        c.observe_time_to_first_token(labels, 2.5)
    c.observe_one_aborted_request(labels)


if __name__ == "__main__":
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=scheduler, args=(r,)) for r in range(tp)] + [ctx.Process(target=tokenizer)]
    for pr in procs:
        pr.start()
        pr.join()
        assert pr.exitcode == 0
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess
    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg)
    text = generate_latest(reg)
    open(out, "wb").write(text)
    print(out, len(text))
