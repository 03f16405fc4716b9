//! Render TGI v3.3.7's /metrics text: the same PrometheusBuilder bucket set-up and metric
//! descriptions as router/src/server.rs (v3.3.7, fn start), the same metrics 0.23.0 /
//! metrics-exporter-prometheus 0.15.3 versions as its Cargo.lock, then the metric calls of
//! router/src/server.rs, router/src/validation.rs, backends/v3/src/{backend.rs,queue.rs} for a
//! simulated history: 1200 finished requests, 8 in the running batch, 16 in the queue.
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64) / ((1u64 << 53) as f64)
    }
}

fn main() {
    let max_input_tokens: usize = 4096;
    let max_total_tokens: usize = 8192;
    // ---- router/src/server.rs v3.3.7 lines 1937-1993, verbatim logic ----
    let duration_matcher = Matcher::Suffix(String::from("duration"));
    let n_duration_buckets = 35;
    let mut duration_buckets = Vec::with_capacity(n_duration_buckets);
    let mut value = 0.0001;
    for _ in 0..n_duration_buckets {
        value *= 1.5;
        duration_buckets.push(value);
    }
    let input_length_matcher = Matcher::Full(String::from("tgi_request_input_length"));
    let input_length_buckets: Vec<f64> = (0..100)
        .map(|x| (max_input_tokens as f64 / 100.0) * (x + 1) as f64)
        .collect();
    let generated_tokens_matcher = Matcher::Full(String::from("tgi_request_generated_tokens"));
    let generated_tokens_buckets: Vec<f64> = (0..100)
        .map(|x| (max_total_tokens as f64 / 100.0) * (x + 1) as f64)
        .collect();
    let max_new_tokens_matcher = Matcher::Full(String::from("tgi_request_max_new_tokens"));
    let max_new_tokens_buckets: Vec<f64> = (0..100)
        .map(|x| (max_total_tokens as f64 / 100.0) * (x + 1) as f64)
        .collect();
    let batch_size_matcher = Matcher::Full(String::from("tgi_batch_next_size"));
    let batch_size_buckets: Vec<f64> = (0..1024).map(|x| (x + 1) as f64).collect();
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(duration_matcher, &duration_buckets)
        .unwrap()
        .set_buckets_for_metric(input_length_matcher, &input_length_buckets)
        .unwrap()
        .set_buckets_for_metric(generated_tokens_matcher, &generated_tokens_buckets)
        .unwrap()
        .set_buckets_for_metric(max_new_tokens_matcher, &max_new_tokens_buckets)
        .unwrap()
        .set_buckets_for_metric(batch_size_matcher, &batch_size_buckets)
        .unwrap();
    // TGI calls builder.build() (http-listener feature) and drops the exporter future; the
    // recorder is the same one build_recorder() returns.
    let recorder = builder.build_recorder();
    let prom_handle = recorder.handle();
    metrics::set_global_recorder(recorder).expect("Failed to set global recorder");

    metrics::describe_counter!("tgi_request_success", "Number of successful requests");
    metrics::describe_histogram!("tgi_request_duration", metrics::Unit::Seconds, "Request duration");
    metrics::describe_histogram!("tgi_request_validation_duration", metrics::Unit::Seconds, "Request validation duration");
    metrics::describe_histogram!("tgi_request_queue_duration", metrics::Unit::Seconds, "Request queue duration");
    metrics::describe_histogram!("tgi_request_inference_duration", metrics::Unit::Seconds, "Request inference duration");
    metrics::describe_histogram!("tgi_request_mean_time_per_token_duration", metrics::Unit::Seconds, "Mean time per token per request");
    metrics::describe_histogram!("tgi_request_generated_tokens", metrics::Unit::Count, "Generated tokens per request");
    metrics::describe_counter!("tgi_batch_inference_count", metrics::Unit::Count, "Inference calls per method (prefill or decode)");
    metrics::describe_counter!("tgi_request_count", metrics::Unit::Count, "Total number of requests");
    metrics::describe_counter!("tgi_batch_inference_success", metrics::Unit::Count, "Number of successful inference calls per method (prefill or decode)");
    metrics::describe_gauge!("tgi_batch_current_size", metrics::Unit::Count, "Current batch size");
    metrics::describe_gauge!("tgi_queue_size", metrics::Unit::Count, "Current queue size");
    metrics::describe_gauge!("tgi_batch_current_max_tokens", metrics::Unit::Count, "Maximum tokens for the current batch");
    metrics::describe_gauge!("tgi_batch_total_tokens", metrics::Unit::Count, "Maximum amount of tokens in total.");
    metrics::describe_histogram!("tgi_request_max_new_tokens", metrics::Unit::Count, "Maximum new tokens per request");
    metrics::describe_histogram!("tgi_batch_inference_duration", metrics::Unit::Seconds, "Batch inference duration");
    metrics::describe_histogram!("tgi_batch_forward_duration", metrics::Unit::Seconds, "Batch forward duration per method (prefill or decode)");
    metrics::describe_histogram!("tgi_request_skipped_tokens", metrics::Unit::Count, "Speculated tokens per request");
    metrics::describe_histogram!("tgi_batch_filter_duration", metrics::Unit::Seconds, "Time spent filtering batches and sending generated tokens per method (prefill or decode)");
    metrics::describe_histogram!("tgi_request_queue_duration", metrics::Unit::Seconds, "Time spent in the queue per request");
    metrics::describe_histogram!("tgi_request_validation_duration", metrics::Unit::Seconds, "Time spent validating the request");
    metrics::describe_histogram!("tgi_request_duration", metrics::Unit::Seconds, "Total time spent processing the request");
    metrics::describe_histogram!("tgi_batch_decode_duration", metrics::Unit::Seconds, "Time spent decoding a batch per method (prefill or decode)");
    metrics::describe_histogram!("tgi_request_input_length", metrics::Unit::Count, "Input token length per request");
    metrics::describe_histogram!("tgi_batch_next_size", metrics::Unit::Count, "Batch size of the next batch");

    // ---- simulated traffic ----
    let mut r = Lcg(20250303);
    let done = 1200;
    let (running, queued) = (8usize, 16usize);
    let in_flight = running + queued;
    let validation_failures = 3;
    for _ in 0..(done + in_flight + validation_failures) {
        metrics::counter!("tgi_request_count").increment(1);
    }
    for _ in 0..validation_failures {
        metrics::counter!("tgi_request_failure", "err" => "validation").increment(1);
    }
    for i in 0..(done + in_flight) {
        // validation.rs: input length and max_new_tokens of every valid request
        let input = 100.0 + (r.next() * 1400.0).floor();
        metrics::histogram!("tgi_request_input_length").record(input);
        metrics::histogram!("tgi_request_max_new_tokens").record(512.0);
        // queue.rs append: the queue grows by one
        metrics::gauge!("tgi_queue_size").increment(1.0);
        if i < done {
            // queue.rs next_batch: set to what is left in the queue
            metrics::gauge!("tgi_queue_size").set(queued as f64);
            metrics::histogram!("tgi_batch_next_size").record((1.0 + (r.next() * 7.0).floor()).min(8.0));
            let generated = if r.next() < 0.35 { 512.0 } else { 40.0 + (r.next() * 471.0).floor() };
            let queue_t = r.next() * 1.6;
            let tpot = 0.018 + r.next() * 0.012;
            let infer_t = 0.05 + generated * tpot;
            let valid_t = 0.0004 + r.next() * 0.0006;
            // backend.rs prefill for this request's batch
            metrics::counter!("tgi_batch_inference_count", "method" => "prefill").increment(1);
            metrics::histogram!("tgi_batch_forward_duration", "method" => "prefill").record(0.03 + input / 30000.0);
            metrics::histogram!("tgi_batch_decode_duration", "method" => "prefill").record(0.0004);
            metrics::histogram!("tgi_batch_filter_duration", "method" => "prefill").record(0.0002);
            metrics::histogram!("tgi_batch_inference_duration", "method" => "prefill").record(0.031 + input / 30000.0);
            metrics::counter!("tgi_batch_inference_success", "method" => "prefill").increment(1);
            metrics::counter!("tgi_batch_concat", "reason" => "chunking").increment(1);
            metrics::histogram!("tgi_request_skipped_tokens").record(0.0);
            // server.rs generate/generate_stream on success
            metrics::counter!("tgi_request_success").increment(1);
            metrics::histogram!("tgi_request_duration").record(valid_t + queue_t + infer_t);
            metrics::histogram!("tgi_request_validation_duration").record(valid_t);
            metrics::histogram!("tgi_request_queue_duration").record(queue_t);
            metrics::histogram!("tgi_request_inference_duration").record(infer_t);
            metrics::histogram!("tgi_request_mean_time_per_token_duration").record(tpot);
            metrics::histogram!("tgi_request_generated_tokens").record(generated);
        }
    }
    // decode steps of the batched engine: one decode call per step of the running batch
    for _ in 0..60000 {
        metrics::counter!("tgi_batch_inference_count", "method" => "decode").increment(1);
        metrics::histogram!("tgi_batch_concat_duration", "method" => "decode").record(0.0009);
        metrics::histogram!("tgi_batch_forward_duration", "method" => "decode").record(0.020 + r.next() * 0.006);
        metrics::histogram!("tgi_batch_decode_duration", "method" => "decode").record(0.0003);
        metrics::histogram!("tgi_batch_filter_duration", "method" => "decode").record(0.0004);
        metrics::histogram!("tgi_batch_inference_duration", "method" => "decode").record(0.022 + r.next() * 0.006);
        metrics::counter!("tgi_batch_inference_success", "method" => "decode").increment(1);
        metrics::histogram!("tgi_request_skipped_tokens").record(0.0);
    }
    // the batch now running (backend.rs batching_task)
    metrics::gauge!("tgi_batch_current_size").set(running as f64);
    metrics::gauge!("tgi_batch_current_max_tokens").set((running * 1300) as f64);
    metrics::gauge!("tgi_queue_size").set(queued as f64);
    // NOT rendered in TGI: backends/v3/src/lib.rs sets tgi_batch_max_total_tokens in
    // connect_backend(), before server::run installs the recorder, so it goes to the no-op recorder.
    print!("{}", prom_handle.render());
}
