"""Render vLLM /metrics text by running vLLM's own metric-definition code (loaded from the
release wheel) against prometheus_client, with vLLM's heavy imports stubbed out.

usage: gen_vllm.py v0.11.0 OUT MODEL[,MODEL2] [ENGINES]      (V1 engine, vllm/v1/metrics/loggers.py)
       gen_vllm.py v0.6.3  OUT MODEL                           (V0 engine, vllm/engine/metrics.py)
"""
import importlib.util, logging, os, random, sys, types
from types import SimpleNamespace as NS

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "src")
version, out, models = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
engines = [int(x) for x in sys.argv[4].split(",")] if len(sys.argv) > 4 else [0]


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


class Any_:  # stand-in for imported names only used in type hints
    pass


for pkg in ["vllm", "vllm.v1", "vllm.v1.core", "vllm.v1.metrics", "vllm.v1.spec_decode", "vllm.engine",
            "vllm.executor", "vllm.spec_decode", "vllm.distributed", "vllm.distributed.kv_transfer",
            "vllm.distributed.kv_transfer.kv_connector", "vllm.distributed.kv_transfer.kv_connector.v1"]:
    stub(pkg, __path__=[])
stub("vllm.logger", init_logger=logging.getLogger)
stub("vllm.config", SupportsMetricsInfo=Any_, VllmConfig=Any_, SpeculativeConfig=Any_)

R = random.Random(20250101)
MAX_MODEL_LEN = 8192


def requests(n):
    """n finished requests: chat traffic, prompts ~600 tokens, max_tokens 512."""
    out = []
    for _ in range(n):
        p = max(20, int(R.lognormvariate(6.2, 0.6)))
        length = R.random() < 0.35
        g = 512 if length else R.randint(40, 511)
        queued = R.expovariate(1 / 0.8)
        prefill = 0.02 + p / 25000 + R.random() * 0.05
        tpot = 0.018 + R.random() * 0.012
        decode = g * tpot
        out.append(NS(p=p, g=g, reason="length" if length else "stop", queued=queued, prefill=prefill,
                      ttft=queued + prefill + 0.005, tpot=tpot, decode=decode,
                      e2e=queued + prefill + decode + 0.01))
    return out


def cache_info(cls_fields):
    return {k: str(v) for k, v in cls_fields.items()}


if version == "v0.11.0":
    eng = stub("vllm.v1.engine")
    import enum
    FINISH = ("stop", "length", "abort")

    class FinishReason(enum.IntEnum):  # copied from vllm/v1/engine/__init__.py (0.11.0)
        STOP = 0
        LENGTH = 1
        ABORT = 2

        def __str__(self):
            return FINISH[self.value]
    eng.FinishReason = FinishReason
    stub("vllm.v1.core.kv_cache_utils", PrefixCachingMetrics=Any_)
    stub("vllm.v1.metrics.stats", IterationStats=Any_, SchedulerStats=Any_)
    stub("vllm.distributed.kv_transfer.kv_connector.v1.metrics", KVConnectorLogging=Any_)

    class SpecDecodingProm:  # speculative decoding off: the real class registers nothing then
        def __init__(self, *a):
            pass
    stub("vllm.v1.spec_decode.metrics", SpecDecodingLogging=Any_, SpecDecodingProm=SpecDecodingProm)
    base = os.path.join(SRC, "vllm-0.11.0/vllm/v1/metrics")
    load("vllm.v1.metrics.prometheus", os.path.join(base, "prometheus.py"))
    loggers = load("vllm.v1.metrics.loggers", os.path.join(base, "loggers.py"))
    import prometheus_client
    from prometheus_client import REGISTRY

    def cache_config():
        fields = dict(block_size=16, gpu_memory_utilization=0.9, swap_space=4, cache_dtype="auto",
                      is_attention_free=False, num_gpu_blocks_override=None, sliding_window=None,
                      enable_prefix_caching=True, prefix_caching_hash_algo="sha256", cpu_offload_gb=0,
                      calculate_kv_scales=False, cpu_kvcache_space_bytes=None, mamba_page_size_padded=None,
                      mamba_cache_dtype="auto", mamba_ssm_cache_dtype="auto", num_gpu_blocks=400,
                      num_cpu_blocks=None, kv_sharing_fast_prefill=False, kv_cache_memory_bytes=None)
        return NS(metrics_info=lambda: cache_info(fields))

    # state per (model, engine): running, waiting, kv usage, preemptions, finished requests
    STATE = {0: (8, 16, 0.873, 3, 1200), 1: (7, 11, 0.812, 1, 1150)}
    STATE2 = {0: (4, 2, 0.365, 0, 640)}  # the second model in the two-model fixture
    loggers_made = []
    for mi, model in enumerate(models):
        cfg = NS(observability_config=NS(show_hidden_metrics=os.environ.get("SHOW_HIDDEN") == "1"),
                 model_config=NS(served_model_name=model, max_model_len=MAX_MODEL_LEN),
                 speculative_config=None, lora_config=None, cache_config=cache_config())
        lg = loggers.PrometheusStatLogger(cfg, engines)
        lg.log_engine_initialized()
        mine = [c for c in list(REGISTRY._collector_to_names) if "vllm" in getattr(c, "_name", "")]
        loggers_made.append(mine)
        for e in engines:
            running, waiting, kv, preempt, n = (STATE if mi == 0 else STATE2)[e]
            reqs = requests(n)
            # one IterationStats per finished request (coarse but consistent with the counters)
            for i, r in enumerate(reqs):
                it = NS(num_preempted_reqs=1 if i < preempt else 0, num_prompt_tokens=r.p,
                        num_generation_tokens=r.g, max_num_generation_tokens_iter=[r.g], n_params_iter=[1],
                        time_to_first_tokens_iter=[r.ttft], inter_token_latencies_iter=[r.tpot] * 4,
                        finished_requests=[NS(finish_reason=FinishReason.LENGTH if r.reason == "length" else FinishReason.STOP,
                                              e2e_latency=r.e2e, queued_time=r.queued, prefill_time=r.prefill,
                                              inference_time=r.prefill + r.decode, decode_time=r.decode,
                                              num_prompt_tokens=r.p, num_generation_tokens=r.g,
                                              mean_time_per_output_token=r.tpot, max_tokens_param=512)],
                        running_lora_adapters={}, waiting_lora_adapters={})
                lg.record(None, it, e)
            # the requests now in flight: their prompts are prefilled, some tokens generated
            inflight = NS(num_preempted_reqs=0, num_prompt_tokens=running * 610, num_generation_tokens=running * 57,
                          max_num_generation_tokens_iter=[512] * running, n_params_iter=[1] * running,
                          time_to_first_tokens_iter=[1.9 + 0.1 * k for k in range(running)],
                          inter_token_latencies_iter=[0.024] * running, finished_requests=[],
                          running_lora_adapters={}, waiting_lora_adapters={})
            lg.record(NS(num_running_reqs=running, num_waiting_reqs=waiting, kv_cache_usage=kv,
                         prefix_cache_stats=NS(queries=sum(r.p for r in reqs) + running * 610,
                                               hits=int(0.31 * sum(r.p for r in reqs))),
                         spec_decoding_stats=None), inflight, e)
    if len(models) == 1:
        text = prometheus_client.generate_latest(REGISTRY)
    else:
        # Two models' metrics in one exposition: every vLLM family with both model_name label sets.
        from prometheus_client.registry import CollectorRegistry
        reg = CollectorRegistry()

        class Merged:
            def collect(self):
                fams = {}
                for group in loggers_made:
                    for c in group:
                        for f in c.collect():
                            if f.name in fams:
                                fams[f.name].samples.extend(f.samples)
                            else:
                                fams[f.name] = f
                return list(fams.values())
        reg.register(Merged())
        text = prometheus_client.generate_latest(reg)
elif version == "v0.6.3":
    base = os.path.join(SRC, "vllm-0.6.3/vllm/engine")
    stub("vllm.spec_decode.metrics", SpecDecodeWorkerMetrics=Any_)
    stub("vllm.executor.ray_utils", ray=None)
    stub("numpy", sum=lambda xs: sum(xs))  # metrics.py only uses np.sum (get_throughput)
    # V0's OpenAI server runs the engine in its own process (MQLLMEngine) and sets
    # PROMETHEUS_MULTIPROC_DIR; /metrics is then a MultiProcessCollector over that folder.
    mpdir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    mt = load("vllm.engine.metrics_types", os.path.join(base, "metrics_types.py"))
    metrics = load("vllm.engine.metrics", os.path.join(base, "metrics.py"))
    model = models[0]
    lg = metrics.PrometheusStatLogger(local_interval=5, labels=dict(model_name=model),
                                      max_model_len=MAX_MODEL_LEN)
    fields = dict(block_size=16, gpu_memory_utilization=0.9, swap_space_bytes=4 * 2**30,
                  num_gpu_blocks_override=None, cache_dtype="auto", is_attention_free=False,
                  sliding_window=None, enable_prefix_caching=False, cpu_offload_gb=0,
                  num_gpu_blocks=400, num_cpu_blocks=2048)
    lg.info("cache_config", NS(metrics_info=lambda: cache_info(fields)))
    reqs = requests(1200)
    running, waiting, kv, preempt = 8, 16, 0.873, 3
    t = 1000.0
    for i, r in enumerate(reqs):
        t += 0.35
        st = mt.Stats(now=t, num_running_sys=running, num_waiting_sys=waiting, num_swapped_sys=0,
                      gpu_cache_usage_sys=kv, cpu_cache_usage_sys=0.0, cpu_prefix_cache_hit_rate=-1,
                      gpu_prefix_cache_hit_rate=-1, num_prompt_tokens_iter=r.p, num_generation_tokens_iter=r.g,
                      time_to_first_tokens_iter=[r.ttft], time_per_output_tokens_iter=[r.tpot] * 4,
                      num_preemption_iter=1 if i < preempt else 0, time_e2e_requests=[r.e2e],
                      num_prompt_tokens_requests=[r.p], num_generation_tokens_requests=[r.g],
                      n_requests=[1], finished_reason_requests=[r.reason], spec_decode_metrics=None)
        lg.log(st)
    # last iteration: the 8 running requests decode, nothing finishes
    lg.log(mt.Stats(now=t + 5.1, num_running_sys=running, num_waiting_sys=waiting, num_swapped_sys=0,
                    gpu_cache_usage_sys=kv, cpu_cache_usage_sys=0.0, cpu_prefix_cache_hit_rate=-1,
                    gpu_prefix_cache_hit_rate=-1, num_prompt_tokens_iter=0, num_generation_tokens_iter=running,
                    time_to_first_tokens_iter=[], time_per_output_tokens_iter=[0.024] * running,
                    num_preemption_iter=0, time_e2e_requests=[], num_prompt_tokens_requests=[],
                    num_generation_tokens_requests=[], n_requests=[], finished_reason_requests=[]))
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess
    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg)
    text = generate_latest(reg)
with open(out, "wb") as f:
    f.write(text)
print(out, len(text))
