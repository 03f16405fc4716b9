// Renders llama.cpp's /metrics body exactly as examples/server/server.cpp handle_metrics does at
// ggml-org/llama.cpp@7841fc723e059d1fd9640e5c0ef19050fcc7c698 (vendored by llama-cpp-python 0.3.8):
// the same ordered_json definition, json_value(..., 0.) and std::stringstream printing.
// Inputs are the fields of server_task_result_metrics for a busy server.
#include "json.hpp"
#include <cstdint>
#include <iostream>
#include <sstream>
#include <algorithm>
using json = nlohmann::ordered_json;
template <typename T>
static T json_value(const json & body, const std::string & key, const T & default_value) {
    if (body.contains(key) && !body.at(key).is_null()) {
        try { return body.at(key); } catch (nlohmann::detail::type_error const &) { return default_value; }
    }
    return default_value;
}
struct M {
    uint64_t n_prompt_tokens_processed_total, t_prompt_processing_total, n_tokens_predicted_total,
        t_tokens_generation_total, n_prompt_tokens_processed, t_prompt_processing, n_tokens_predicted,
        t_tokens_generation, n_decode_total, n_busy_slots_total;
    int n_processing_slots, n_tasks_deferred;
    int32_t kv_cache_tokens_count, kv_cache_used_cells;
};
int main(int argc, char ** argv) {
    struct { int n_ctx; } params{16384};  // -c 16384 -np 4: 4096 tokens per slot
    M m{};
    // 300 finished chat requests plus the 4 in the slots now
    m.n_prompt_tokens_processed_total = 187342; m.t_prompt_processing_total = 41873;
    m.n_tokens_predicted_total = 96512;         m.t_tokens_generation_total = 1812345;
    // since the previous scrape (metrics_reset_bucket = true resets these "bucket" counts)
    m.n_prompt_tokens_processed = 2400; m.t_prompt_processing = 540;
    m.n_tokens_predicted = 640;         m.t_tokens_generation = 11200;
    m.n_decode_total = 31020; m.n_busy_slots_total = 98000;
    m.n_processing_slots = 4; m.n_tasks_deferred = 6;
    m.kv_cache_tokens_count = 9000; m.kv_cache_used_cells = 9000;
    if (argc > 1 && std::string(argv[1]) == "idle") {
        m.n_prompt_tokens_processed = 0; m.t_prompt_processing = 0; m.n_tokens_predicted = 0; m.t_tokens_generation = 0;
        m.n_processing_slots = 0; m.n_tasks_deferred = 0; m.kv_cache_tokens_count = 0; m.kv_cache_used_cells = 0;
    }
    auto * res_metrics = &m;
    // ---- verbatim from handle_metrics ----
        json all_metrics_def = json {
            {"counter", {{
                    {"name",  "prompt_tokens_total"},
                    {"help",  "Number of prompt tokens processed."},
                    {"value",  (uint64_t) res_metrics->n_prompt_tokens_processed_total}
            }, {
                    {"name",  "prompt_seconds_total"},
                    {"help",  "Prompt process time"},
                    {"value",  (uint64_t) res_metrics->t_prompt_processing_total / 1.e3}
            }, {
                    {"name",  "tokens_predicted_total"},
                    {"help",  "Number of generation tokens processed."},
                    {"value",  (uint64_t) res_metrics->n_tokens_predicted_total}
            }, {
                    {"name",  "tokens_predicted_seconds_total"},
                    {"help",  "Predict process time"},
                    {"value",  (uint64_t) res_metrics->t_tokens_generation_total / 1.e3}
            }, {
                    {"name",  "n_decode_total"},
                    {"help",  "Total number of llama_decode() calls"},
                    {"value",  res_metrics->n_decode_total}
            }, {
                    {"name",  "n_busy_slots_per_decode"},
                    {"help",  "Average number of busy slots per llama_decode() call"},
                    {"value",  (float) res_metrics->n_busy_slots_total / std::max((float) res_metrics->n_decode_total, 1.f)}
            }}},
            {"gauge", {{
                    {"name",  "prompt_tokens_seconds"},
                    {"help",  "Average prompt throughput in tokens/s."},
                    {"value",  res_metrics->n_prompt_tokens_processed ? 1.e3 / res_metrics->t_prompt_processing * res_metrics->n_prompt_tokens_processed : 0.}
            },{
                    {"name",  "predicted_tokens_seconds"},
                    {"help",  "Average generation throughput in tokens/s."},
                    {"value",  res_metrics->n_tokens_predicted ? 1.e3 / res_metrics->t_tokens_generation * res_metrics->n_tokens_predicted : 0.}
            },{
                    {"name",  "kv_cache_usage_ratio"},
                    {"help",  "KV-cache usage. 1 means 100 percent usage."},
                    {"value",  1. * res_metrics->kv_cache_used_cells / params.n_ctx}
            },{
                    {"name",  "kv_cache_tokens"},
                    {"help",  "KV-cache tokens."},
                    {"value",  (uint64_t) res_metrics->kv_cache_tokens_count}
            },{
                    {"name",  "requests_processing"},
                    {"help",  "Number of requests processing."},
                    {"value",  (uint64_t) res_metrics->n_processing_slots}
            },{
                    {"name",  "requests_deferred"},
                    {"help",  "Number of requests deferred."},
                    {"value",  (uint64_t) res_metrics->n_tasks_deferred}
            }}}
        };

        std::stringstream prometheus;

        for (const auto & el : all_metrics_def.items()) {
            const auto & type        = el.key();
            const auto & metrics_def = el.value();

            for (const auto & metric_def : metrics_def) {
                const std::string name = metric_def.at("name");
                const std::string help = metric_def.at("help");

                auto value = json_value(metric_def, "value", 0.);
                prometheus << "# HELP llamacpp:" << name << " " << help  << "\n"
                            << "# TYPE llamacpp:" << name << " " << type  << "\n"
                            << "llamacpp:"        << name << " " << value << "\n";
            }
        }
    // ---- end verbatim ----
    std::cout << prometheus.str();
}
