//! The GPU model: one scheduler task per GPU and a router in front of them.
//!
//! Each GPU admits at most `batch` sequences; the rest wait in its FIFO queue. A running
//! sequence receives one token per decode step, where a step lasts
//! `decode_step_ms + decode_step_ms_per_seq * running` (evaluated when the step starts), and its
//! first token also pays its prefill (`prefill_ms_per_1k * prompt_tokens / 1000`). A
//! prefill-only sequence (`max_tokens == 0`, an embedding) holds its slot for its prefill alone
//! and ends without a token. Each
//! sequence's steps are timed from its own admission, so a sequence that joins a busy GPU starts
//! decoding at once (continuous batching without step alignment): in a closed loop nothing is
//! lost between a finished request and its replacement, and throughput follows the formula in
//! `sizeup sim --help` exactly. One timer per GPU (the earliest next token in a heap), never a
//! timer per token per request, so ten thousand open requests cost only memory.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Step costs of one GPU; shared by all GPUs of a deployment.
#[derive(Clone, Copy, Debug)]
pub struct GpuParams {
    pub batch: usize,
    pub prefill_ms_per_1k: f64,
    pub decode_step_ms: f64,
    pub decode_step_ms_per_seq: f64,
    /// Tokens each GPU's prefix cache holds (`--prefix-cache-tokens`, vLLM's automatic prefix
    /// caching); 0: off. A cached token skips its prefill.
    pub prefix_cache_tokens: u64,
}

impl GpuParams {
    fn step(&self, running: usize) -> f64 {
        self.decode_step_ms + self.decode_step_ms_per_seq * running as f64
    }

    fn prefill(&self, prompt_tokens: u32) -> f64 {
        self.prefill_ms_per_1k * f64::from(prompt_tokens) / 1000.0
    }
}

/// How the router in front of the GPUs picks one for each request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RoutePolicy {
    /// The GPU with the fewest running + waiting requests (lowest index on ties): the best case
    /// the formula in `sizeup sim --help` describes.
    #[default]
    LeastLoaded,
    /// The next GPU in turn, whatever its load (a router counting requests, not their cost).
    RoundRobin,
    /// The GPU the request's connection was pinned to when it opened, picked at random, as
    /// kube-proxy balances a Service per connection: kept-alive connections stay on one replica
    /// whatever its queue.
    Connection,
}

/// What a sequence hears from its GPU.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// One more token; the last one closes the channel after it.
    Token,
    /// The resource was switched off while the sequence ran.
    Aborted,
}

/// A request handed to the cluster.
pub(super) struct NewSeq {
    pub prompt_tokens: u32,
    /// Tokens to generate; 0 makes a prefill-only sequence (embeddings), whose channel closes
    /// without a token once its prompt is processed.
    pub max_tokens: u32,
    /// Per-request service multiplier from `--jitter` (1.0 without jitter).
    pub mult: f64,
    /// The random draw of the connection the request came on: the GPU under
    /// [`RoutePolicy::Connection`] (its remainder by the number of active GPUs).
    pub conn: u64,
    pub events: mpsc::UnboundedSender<Event>,
    /// The prompt's block hashes (`prefix.rs`), looked up in the GPU's prefix cache; empty
    /// with the cache off.
    pub blocks: Vec<u64>,
    /// Set at admission: the prompt tokens the GPU's prefix cache served.
    pub cached: Arc<std::sync::atomic::AtomicU32>,
}

enum Cmd {
    Admit(NewSeq),
    AbortAll,
    /// Empties the GPU's prefix cache (vLLM's `POST /reset_prefix_cache`).
    ResetPrefixCache,
}

/// Live counters, read by `/metrics`.
#[derive(Default, Debug)]
pub(super) struct Gauges {
    pub running: AtomicUsize,
    pub waiting: AtomicUsize,
    pub generation_tokens: AtomicU64,
    pub cancelled: AtomicU64,
    /// Tokens the running sequences hold in KV cache at their longest (prompt + max_tokens).
    pub kv_tokens: AtomicU64,
    /// Prompt tokens looked up in the prefix caches, and those found (vLLM's
    /// `prefix_cache_queries_total`, `prefix_cache_hits_total`).
    pub prefix_queries: AtomicU64,
    pub prefix_hits: AtomicU64,
}

/// The KV cache one batch slot has room for, in tokens: what `/metrics` relates `kv_tokens`
/// to (a GPU holds `batch` of them), so long sequences fill the simulated cache.
pub(super) const KV_TOKENS_PER_SLOT: u64 = 2048;

struct GpuHandle {
    tx: mpsc::UnboundedSender<Cmd>,
    /// Running + waiting on this GPU: what the router balances.
    load: Arc<AtomicUsize>,
}

/// All GPUs of the deployment and the router in front of them.
pub(super) struct Cluster {
    params: GpuParams,
    route: RoutePolicy,
    /// Requests routed so far: round-robin's turn.
    turn: AtomicU64,
    gauges: Arc<Gauges>,
    /// Grows when the resource API asks for more GPUs; GPUs beyond `active` take no new work.
    gpus: Mutex<Vec<GpuHandle>>,
    active: AtomicUsize,
}

impl Cluster {
    /// Must be called inside a tokio runtime: it spawns one scheduler task per GPU.
    pub fn new(params: GpuParams, route: RoutePolicy, gpus: usize, gauges: Arc<Gauges>) -> Cluster {
        let cluster = Cluster {
            params,
            route,
            turn: AtomicU64::new(0),
            gauges,
            gpus: Mutex::new(Vec::new()),
            active: AtomicUsize::new(0),
        };
        cluster.resize(gpus);
        cluster
    }

    /// Sets the number of GPUs that take new work; sequences on retired GPUs finish normally.
    pub fn resize(&self, gpus: usize) {
        let mut list = self.gpus.lock().expect("gpu list lock poisoned");
        while list.len() < gpus {
            let (tx, rx) = mpsc::unbounded_channel();
            let load = Arc::new(AtomicUsize::new(0));
            tokio::spawn(gpu_loop(rx, load.clone(), self.params, self.gauges.clone()));
            list.push(GpuHandle { tx, load });
        }
        self.active.store(gpus, Ordering::SeqCst);
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Sends the sequence to the active GPU its route picks. Returns false when no GPU is active.
    pub fn submit(&self, seq: NewSeq) -> bool {
        let list = self.gpus.lock().expect("gpu list lock poisoned");
        let active = self.active().min(list.len());
        if active == 0 {
            return false;
        }
        let gpu = match self.route {
            RoutePolicy::LeastLoaded => list[..active]
                .iter()
                .min_by_key(|g| g.load.load(Ordering::SeqCst))
                .expect("at least one active GPU"),
            RoutePolicy::RoundRobin => &list[(self.turn.fetch_add(1, Ordering::Relaxed) % active as u64) as usize],
            RoutePolicy::Connection => &list[(seq.conn % active as u64) as usize],
        };
        gpu.load.fetch_add(1, Ordering::SeqCst);
        self.gauges.waiting.fetch_add(1, Ordering::SeqCst);
        if gpu.tx.send(Cmd::Admit(seq)).is_err() {
            gpu.load.fetch_sub(1, Ordering::SeqCst);
            self.gauges.waiting.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Empties every GPU's prefix cache.
    pub fn reset_prefix_cache(&self) {
        for gpu in self.gpus.lock().expect("gpu list lock poisoned").iter() {
            let _ = gpu.tx.send(Cmd::ResetPrefixCache);
        }
    }

    /// Aborts every running and waiting sequence (the resource was switched off).
    pub fn abort_all(&self) {
        for gpu in self.gpus.lock().expect("gpu list lock poisoned").iter() {
            let _ = gpu.tx.send(Cmd::AbortAll);
        }
    }
}

struct Running {
    tokens_left: u32,
    kv_tokens: u64,
    mult: f64,
    events: mpsc::UnboundedSender<Event>,
}

/// The prompt tokens of `seq` its GPU's prefix cache serves, looked up at admission as vLLM's
/// scheduler does, counted in the gauges and told to the request; 0 with the cache off.
fn cached_tokens(cache: Option<&mut super::prefix::PrefixCache>, seq: &NewSeq, gauges: &Gauges) -> u32 {
    let Some(c) = cache else { return 0 };
    let hit = ((c.admit(&seq.blocks) * super::prefix::BLOCK) as u32).min(seq.prompt_tokens);
    gauges
        .prefix_queries
        .fetch_add(u64::from(seq.prompt_tokens), Ordering::Relaxed);
    gauges.prefix_hits.fetch_add(u64::from(hit), Ordering::Relaxed);
    seq.cached.store(hit, Ordering::Relaxed);
    hit
}

/// One GPU: admits from its FIFO up to `batch`, delivers tokens in time order.
async fn gpu_loop(mut rx: mpsc::UnboundedReceiver<Cmd>, load: Arc<AtomicUsize>, p: GpuParams, gauges: Arc<Gauges>) {
    let mut waiting: VecDeque<NewSeq> = VecDeque::new();
    let mut slots: Vec<Option<Running>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut due: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    let mut running = 0usize;
    let mut cache = super::prefix::PrefixCache::new(p.prefix_cache_tokens);

    // Ends a sequence (finished, aborted or abandoned by its client) and frees its slot.
    let finish = |slots: &mut Vec<Option<Running>>, free: &mut Vec<usize>, idx: usize, running: &mut usize| {
        if let Some(r) = slots[idx].take() {
            gauges.kv_tokens.fetch_sub(r.kv_tokens, Ordering::SeqCst);
        }
        free.push(idx);
        *running -= 1;
        load.fetch_sub(1, Ordering::SeqCst);
        gauges.running.fetch_sub(1, Ordering::SeqCst);
    };

    loop {
        let now = Instant::now();
        while running < p.batch {
            let Some(seq) = waiting.pop_front() else { break };
            gauges.waiting.fetch_sub(1, Ordering::SeqCst);
            gauges.running.fetch_add(1, Ordering::SeqCst);
            running += 1;
            // A prefill-only sequence pays no decode step: its forward pass is the prefill.
            let decode = if seq.max_tokens == 0 { 0.0 } else { p.step(running) };
            let cached = cached_tokens(cache.as_mut(), &seq, &gauges);
            let first = (p.prefill(seq.prompt_tokens - cached) + decode) * seq.mult;
            let kv_tokens = u64::from(seq.prompt_tokens) + u64::from(seq.max_tokens);
            gauges.kv_tokens.fetch_add(kv_tokens, Ordering::SeqCst);
            let run = Running {
                kv_tokens,
                tokens_left: seq.max_tokens,
                mult: seq.mult,
                events: seq.events,
            };
            let idx = match free.pop() {
                Some(i) => {
                    slots[i] = Some(run);
                    i
                }
                None => {
                    slots.push(Some(run));
                    slots.len() - 1
                }
            };
            due.push(Reverse((now + ms(first), idx)));
        }

        let next = due.peek().map(|Reverse((t, _))| *t);
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => return,
                Some(Cmd::Admit(seq)) => waiting.push_back(seq),
                Some(Cmd::ResetPrefixCache) => cache = super::prefix::PrefixCache::new(p.prefix_cache_tokens),
                Some(Cmd::AbortAll) => {
                    for seq in waiting.drain(..) {
                        let _ = seq.events.send(Event::Aborted);
                        load.fetch_sub(1, Ordering::SeqCst);
                        gauges.waiting.fetch_sub(1, Ordering::SeqCst);
                    }
                    while let Some(Reverse((_, idx))) = due.pop() {
                        if let Some(run) = &slots[idx] {
                            let _ = run.events.send(Event::Aborted);
                        }
                        finish(&mut slots, &mut free, idx, &mut running);
                    }
                }
            },
            _ = tokio::time::sleep_until(next.unwrap_or(now).checked_sub(EARLY).unwrap_or(now)), if next.is_some() => {
                let now = Instant::now() + EARLY;
                while let Some(&Reverse((at, idx))) = due.peek() {
                    if at > now {
                        break;
                    }
                    due.pop();
                    let Some(run) = slots[idx].as_mut() else { continue };
                    if run.tokens_left == 0 {
                        // Prefill-only: done; dropping the sender closes the channel, which is
                        // the answer.
                        finish(&mut slots, &mut free, idx, &mut running);
                        continue;
                    }
                    if run.events.send(Event::Token).is_err() {
                        // The client went away: free the slot now, as an engine aborts a
                        // request whose connection closed.
                        gauges.cancelled.fetch_add(1, Ordering::Relaxed);
                        finish(&mut slots, &mut free, idx, &mut running);
                        continue;
                    }
                    gauges.generation_tokens.fetch_add(1, Ordering::Relaxed);
                    run.tokens_left -= 1;
                    if run.tokens_left == 0 {
                        finish(&mut slots, &mut free, idx, &mut running);
                    } else {
                        // Timed from the scheduled instant, not from `now`, so timer lateness
                        // never accumulates over a long sequence.
                        let step = p.step(running) * run.mult;
                        due.push(Reverse((at + ms(step), idx)));
                    }
                }
            }
        }
    }
}

/// Tokio's timer fires on the first millisecond tick at or after a deadline, half a
/// millisecond late on average. Delivering tokens due within the next half millisecond
/// centres that error on zero, so mean service times match the formula.
const EARLY: Duration = Duration::from_micros(500);

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64((v.max(0.0)) / 1000.0)
}

/// Requests per minute the model serves at `concurrency` requests in flight, spread evenly by
/// the router over `gpus` GPUs, each request with `prompt_tokens` and `output_tokens`.
/// This is the formula printed in `sizeup sim --help`; tests and benchmarks check sweeps against it.
pub fn expected_rpm(p: &GpuParams, gpus: usize, concurrency: usize, prompt_tokens: u32, output_tokens: u32) -> f64 {
    (0..gpus)
        .map(|g| {
            // Concurrency per GPU: the router's least-loaded rule gives each GPU
            // floor(C/G) or ceil(C/G) requests.
            let share = concurrency / gpus + usize::from(g < concurrency % gpus);
            let n = share.min(p.batch);
            if n == 0 {
                return 0.0;
            }
            let service_ms = p.prefill(prompt_tokens) + f64::from(output_tokens.max(1)) * p.step(n);
            60_000.0 * n as f64 / service_ms
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> GpuParams {
        GpuParams {
            batch: 8,
            prefill_ms_per_1k: 0.0,
            decode_step_ms: 50.0,
            decode_step_ms_per_seq: 0.0,
            prefix_cache_tokens: 0,
        }
    }

    #[test]
    fn formula_matches_the_issue_example() {
        // 2 GPUs x 8 slots, 50 ms per request: 9,600 RPM per GPU at saturation.
        let p = params();
        assert!((expected_rpm(&p, 2, 16, 0, 1) - 19_200.0).abs() < 1e-6);
        assert!((expected_rpm(&p, 2, 64, 0, 1) - 19_200.0).abs() < 1e-6);
        assert!((expected_rpm(&p, 2, 1, 0, 1) - 1_200.0).abs() < 1e-6);
        // Odd concurrency: 8 + 7 sequences.
        assert!((expected_rpm(&p, 2, 15, 0, 1) - 18_000.0).abs() < 1e-6);
    }

    /// Submits `(prompt_tokens, max_tokens)` sequences at once to one GPU with `batch` slots,
    /// 10 ms steps and 10 s per 1k prompt tokens; returns each one's tokens and end time.
    async fn serve_on_one_gpu(batch: usize, seqs: &[(u32, u32)]) -> (Vec<(u32, Duration)>, Arc<Gauges>) {
        let gauges = Arc::new(Gauges::default());
        let p = GpuParams {
            batch,
            prefill_ms_per_1k: 10_000.0,
            decode_step_ms: 10.0,
            decode_step_ms_per_seq: 0.0,
            prefix_cache_tokens: 0,
        };
        let cluster = Cluster::new(p, RoutePolicy::LeastLoaded, 1, gauges.clone());
        let start = Instant::now();
        let mut rxs = Vec::new();
        for &(prompt_tokens, max_tokens) in seqs {
            let (tx, rx) = mpsc::unbounded_channel();
            assert!(cluster.submit(NewSeq {
                prompt_tokens,
                max_tokens,
                mult: 1.0,
                conn: 0,
                events: tx,
                blocks: Vec::new(),
                cached: Default::default(),
            }));
            rxs.push(rx);
        }
        let mut ends = Vec::new();
        for mut rx in rxs {
            let mut n = 0;
            while let Some(ev) = rx.recv().await {
                assert_eq!(ev, Event::Token);
                n += 1;
            }
            ends.push((n, Instant::now() - start));
        }
        assert_eq!(gauges.running.load(Ordering::SeqCst), 0);
        assert_eq!(gauges.waiting.load(Ordering::SeqCst), 0);
        (ends, gauges)
    }

    #[tokio::test(start_paused = true)]
    async fn one_gpu_serves_batch_then_queues() {
        let (ends, _) = serve_on_one_gpu(2, &[(0, 3), (0, 3), (0, 3)]).await;
        // Two run together (30 ms); the third waits for a slot, then takes 30 ms more.
        let ms = Duration::from_millis;
        assert_eq!(ends, vec![(3, ms(30)), (3, ms(30)), (3, ms(60))]);
    }

    #[tokio::test(start_paused = true)]
    async fn prefill_only_sequences_take_slots_and_no_tokens() {
        // One decoding request, then two embeddings of 2 tokens (20 ms prefill each) behind it.
        let (ends, gauges) = serve_on_one_gpu(1, &[(0, 2), (2, 0), (2, 0)]).await;
        // One slot: the decode takes 20 ms, then each prefill 20 ms in turn, no decode step.
        let ms = Duration::from_millis;
        assert_eq!(ends, vec![(2, ms(20)), (0, ms(40)), (0, ms(60))]);
        assert_eq!(gauges.generation_tokens.load(Ordering::SeqCst), 2);
    }

    /// Submits four 3-token sequences (connection draws 0, 2, 4, 1) to 2 GPUs of one 10 ms
    /// slot each under `route`; returns each one's end time in ms.
    async fn route_four(route: RoutePolicy) -> Vec<u128> {
        let p = GpuParams {
            batch: 1,
            prefill_ms_per_1k: 0.0,
            decode_step_ms: 10.0,
            decode_step_ms_per_seq: 0.0,
            prefix_cache_tokens: 0,
        };
        let cluster = Cluster::new(p, route, 2, Arc::new(Gauges::default()));
        let start = Instant::now();
        let mut rxs = Vec::new();
        for conn in [0, 2, 4, 1] {
            let (tx, rx) = mpsc::unbounded_channel();
            assert!(cluster.submit(NewSeq {
                prompt_tokens: 0,
                max_tokens: 3,
                mult: 1.0,
                conn,
                events: tx,
                blocks: Vec::new(),
                cached: Default::default(),
            }));
            rxs.push(rx);
        }
        // Each answer read by its own task, so a late one does not hold up reading the others.
        let readers: Vec<_> = rxs
            .into_iter()
            .map(|mut rx| {
                tokio::spawn(async move {
                    while rx.recv().await.is_some() {}
                    (Instant::now() - start).as_millis()
                })
            })
            .collect();
        let mut ends = Vec::new();
        for r in readers {
            ends.push(r.await.expect("reader"));
        }
        ends
    }

    #[tokio::test(start_paused = true)]
    async fn routers_spread_requests_their_own_way() {
        // Least-loaded: two at a time, one per GPU, whatever the connection.
        assert_eq!(route_four(RoutePolicy::LeastLoaded).await, vec![30, 30, 60, 60]);
        // Round-robin: GPU 0, 1, 0, 1 in turn: the same here, as all requests cost the same.
        assert_eq!(route_four(RoutePolicy::RoundRobin).await, vec![30, 30, 60, 60]);
        // Connection: draws 0, 2, 4 are all pinned to GPU 0 and queue there; draw 1 has GPU 1
        // to itself while GPU 0 works through its queue.
        assert_eq!(route_four(RoutePolicy::Connection).await, vec![30, 60, 90, 30]);
    }
}
