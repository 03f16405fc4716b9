//! CSV exporters: `levels.csv` (one row per level) and `requests.csv` (one row per
//! request, written incrementally).
//!
//! Rows are written field by field rather than through serde so that floats can be
//! rounded for humans (a CSV is read by people as well as by pandas) while staying
//! plain numbers. Non-finite floats and `None` become empty cells, which every CSV
//! consumer treats as "missing".

use super::exporter::Exporter;
use crate::model::{LevelRow, RequestRow, Summary};
use std::io::Write;
use std::marker::PhantomData;

/// Header of `levels.csv`; the field names of [`LevelRow`], in order.
pub const LEVELS_HEADER: [&str; 32] = [
    "concurrency",
    "duration_s",
    "requests_ok",
    "requests_failed",
    "rpm",
    "rpm_ci_low",
    "rpm_ci_high",
    "rpm_per_gpu",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "ttft_p50_ms",
    "ttft_p95_ms",
    "tpot_p50_ms",
    "output_tokens_per_s",
    "error_rate",
    "client_limited",
    "input_tokens_per_s",
    "repeated_requests",
    "server_running_mean",
    "server_running_max",
    "server_waiting_mean",
    "server_kv_cache_usage_max",
    "server_preemptions",
    "server_output_tokens_per_s",
    "rate_limited",
    "cached_prompt_tokens_per_s",
    "server_prefix_cache_hit_rate",
    "own_prefix_share",
    "cache_inflated",
    "warm_requests",
];

/// Header of `requests.csv`; the field names of [`RequestRow`], in order.
pub const REQUESTS_HEADER: [&str; 8] = [
    "concurrency",
    "start_ms",
    "latency_ms",
    "ttft_ms",
    "prompt_tokens",
    "output_tokens",
    "status",
    "error",
];

/// Decimals kept per kind of column.
const MS: i32 = 3;
const SECS: i32 = 3;
const RPM: i32 = 1;
const TOKENS_PER_S: i32 = 2;
/// Error rate is a fraction; 6 decimals still resolves one failure in 100k requests.
const FRACTION: i32 = 6;
/// Server gauges (requests running, waiting) averaged over scrapes.
const GAUGE: i32 = 2;

/// Rounds to `decimals` places and prints the shortest form (`12.5`, not `12.500`),
/// so the cell stays a plain number. Non-finite values give an empty cell.
fn num(value: f64, decimals: i32) -> String {
    if !value.is_finite() {
        return String::new();
    }
    let scale = 10f64.powi(decimals);
    let rounded = (value * scale).round() / scale;
    // Huge values overflow the scaling; printing them unrounded is still correct.
    let v = if rounded.is_finite() { rounded } else { value };
    // `-0` would look odd to a human and means the same as `0`.
    if v == 0.0 {
        "0".to_string()
    } else {
        v.to_string()
    }
}

fn opt_num(value: Option<f64>, decimals: i32) -> String {
    value.map(|v| num(v, decimals)).unwrap_or_default()
}

fn opt_int(value: Option<u64>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

/// A row type of one of the CSV files: the file's name, its header and the row's cells.
/// Both files are written by the one [`CsvWriter`].
pub trait CsvRow {
    /// For error messages.
    const FILE: &'static str;
    /// The field names, in order; the user contract (see the tests below).
    const HEADER: &'static [&'static str];
    type Record: IntoIterator<Item = String>;
    fn record(&self) -> Self::Record;
}

impl CsvRow for LevelRow {
    const FILE: &'static str = "levels.csv";
    const HEADER: &'static [&'static str] = &LEVELS_HEADER;
    type Record = [String; 32];

    fn record(&self) -> [String; 32] {
        [
            self.concurrency.to_string(),
            num(self.duration_s, SECS),
            self.requests_ok.to_string(),
            self.requests_failed.to_string(),
            num(self.rpm, RPM),
            num(self.rpm_ci_low, RPM),
            num(self.rpm_ci_high, RPM),
            num(self.rpm_per_gpu, RPM),
            num(self.latency_p50_ms, MS),
            num(self.latency_p90_ms, MS),
            num(self.latency_p95_ms, MS),
            num(self.latency_p99_ms, MS),
            opt_num(self.ttft_p50_ms, MS),
            opt_num(self.ttft_p95_ms, MS),
            opt_num(self.tpot_p50_ms, MS),
            num(self.output_tokens_per_s, TOKENS_PER_S),
            num(self.error_rate, FRACTION),
            self.client_limited.to_string(),
            num(self.input_tokens_per_s, TOKENS_PER_S),
            self.repeated_requests.to_string(),
            opt_num(self.server_running_mean, GAUGE),
            opt_num(self.server_running_max, GAUGE),
            opt_num(self.server_waiting_mean, GAUGE),
            opt_num(self.server_kv_cache_usage_max, FRACTION),
            opt_num(self.server_preemptions, GAUGE),
            opt_num(self.server_output_tokens_per_s, TOKENS_PER_S),
            self.rate_limited.to_string(),
            opt_num(self.cached_prompt_tokens_per_s, TOKENS_PER_S),
            opt_num(self.server_prefix_cache_hit_rate, FRACTION),
            opt_num(self.own_prefix_share, FRACTION),
            self.cache_inflated.to_string(),
            self.warm_requests.map_or_else(String::new, |w| w.to_string()),
        ]
    }
}

impl CsvRow for RequestRow {
    const FILE: &'static str = "requests.csv";
    const HEADER: &'static [&'static str] = &REQUESTS_HEADER;
    type Record = [String; 8];

    fn record(&self) -> [String; 8] {
        [
            self.concurrency.to_string(),
            num(self.start_ms, MS),
            num(self.latency_ms, MS),
            opt_num(self.ttft_ms, MS),
            opt_int(self.prompt_tokens),
            opt_int(self.output_tokens),
            self.status.clone(),
            self.error.clone(),
        ]
    }
}

/// Streaming CSV writer for one row type. The header is written on creation, so a sweep
/// with no finished level still yields a well-formed file; rows go out as they arrive (a
/// sweep may record 100k requests) instead of being collected first.
pub struct CsvWriter<W: Write, R: CsvRow> {
    inner: ::csv::Writer<W>,
    rows: PhantomData<fn(&R)>,
}

/// Writes `levels.csv`.
pub type LevelsCsvWriter<W> = CsvWriter<W, LevelRow>;
/// Writes `requests.csv`.
pub type RequestsCsv<W> = CsvWriter<W, RequestRow>;

impl<W: Write, R: CsvRow> CsvWriter<W, R> {
    /// Wraps `out` (no `BufWriter` needed: the csv writer buffers) and writes the header line.
    pub fn new(out: W) -> anyhow::Result<Self> {
        let mut inner = ::csv::WriterBuilder::new().has_headers(false).from_writer(out);
        inner.write_record(R::HEADER)?;
        Ok(Self {
            inner,
            rows: PhantomData,
        })
    }

    /// Appends one row.
    pub fn write_row(&mut self, row: &R) -> anyhow::Result<()> {
        self.inner.write_record(row.record())?;
        Ok(())
    }

    /// Flushes buffered rows; call it when a level finishes if a crash must not lose it.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.inner.flush()?;
        Ok(())
    }

    /// Flushes and returns the underlying writer. Dropping without calling this
    /// also flushes, but silently ignores errors.
    pub fn finish(self) -> anyhow::Result<W> {
        self.inner
            .into_inner()
            .map_err(|e| anyhow::anyhow!("flushing {}: {}", R::FILE, e.error()))
    }
}

/// Exporter for `levels.csv`: every level of the summary, in sweep order.
#[derive(Clone, Copy, Debug, Default)]
pub struct LevelsCsv;

impl Exporter for LevelsCsv {
    fn write(&self, summary: &Summary, out: &mut dyn Write) -> anyhow::Result<()> {
        let mut w = LevelsCsvWriter::new(out)?;
        for row in &summary.levels {
            w.write_row(row)?;
        }
        w.finish()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures;

    /// The header constants are the user contract; check them against the
    /// field names serde derives, so renaming a field cannot drift silently.
    #[test]
    fn headers_match_struct_fields() {
        let mut w = ::csv::Writer::from_writer(Vec::new());
        w.serialize(fixtures::level(1, 1.0, 1.0)).unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        // `capacity_model` (last) is an object: summary.json only, not a CSV column.
        let header = text.lines().next().unwrap();
        assert_eq!(
            header.strip_suffix(",capacity_model"),
            Some(LEVELS_HEADER.join(",").as_str())
        );

        let mut w = ::csv::Writer::from_writer(Vec::new());
        w.serialize(RequestRow {
            concurrency: 1,
            start_ms: 0.0,
            latency_ms: 0.0,
            ttft_ms: None,
            prompt_tokens: None,
            output_tokens: None,
            status: String::new(),
            error: String::new(),
        })
        .unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(text.lines().next().unwrap(), REQUESTS_HEADER.join(","));
    }

    #[test]
    fn exact_headers() {
        assert_eq!(
            LEVELS_HEADER.join(","),
            "concurrency,duration_s,requests_ok,requests_failed,rpm,rpm_ci_low,rpm_ci_high,\
             rpm_per_gpu,latency_p50_ms,latency_p90_ms,latency_p95_ms,latency_p99_ms,\
             ttft_p50_ms,ttft_p95_ms,tpot_p50_ms,output_tokens_per_s,error_rate,client_limited,\
             input_tokens_per_s,repeated_requests,server_running_mean,server_running_max,\
             server_waiting_mean,server_kv_cache_usage_max,server_preemptions,\
             server_output_tokens_per_s,rate_limited,cached_prompt_tokens_per_s,\
             server_prefix_cache_hit_rate,own_prefix_share,cache_inflated,warm_requests"
        );
        assert_eq!(
            REQUESTS_HEADER.join(","),
            "concurrency,start_ms,latency_ms,ttft_ms,prompt_tokens,output_tokens,status,error"
        );
    }

    #[test]
    fn levels_csv_text() {
        let mut s = fixtures::summary();
        s.levels.truncate(2);
        s.levels[1].duration_s = 61.23456;
        s.levels[1].rpm = 4600.04;
        s.levels[1].latency_p50_ms = 104.00049;
        s.levels[1].ttft_p95_ms = None;
        s.levels[1].tpot_p50_ms = Some(12.3456);
        s.levels[1].error_rate = 1.0 / 3.0;
        s.levels[1].requests_failed = 3;
        s.levels[1].client_limited = true;
        s.levels[1].server_running_mean = Some(15.678);
        s.levels[1].server_running_max = Some(16.0);
        s.levels[1].server_waiting_mean = Some(0.0);
        s.levels[1].server_kv_cache_usage_max = Some(0.98765432);
        s.levels[1].server_preemptions = Some(2.0);
        s.levels[1].server_output_tokens_per_s = Some(1234.5678);
        let mut buf = Vec::new();
        LevelsCsv.write(&s, &mut buf).unwrap();
        let expected = "\
concurrency,duration_s,requests_ok,requests_failed,rpm,rpm_ci_low,rpm_ci_high,rpm_per_gpu,latency_p50_ms,latency_p90_ms,latency_p95_ms,latency_p99_ms,ttft_p50_ms,ttft_p95_ms,tpot_p50_ms,output_tokens_per_s,error_rate,client_limited,input_tokens_per_s,repeated_requests,server_running_mean,server_running_max,server_waiting_mean,server_kv_cache_usage_max,server_preemptions,server_output_tokens_per_s,rate_limited,cached_prompt_tokens_per_s,server_prefix_cache_hit_rate,own_prefix_share,cache_inflated,warm_requests
1,60,1200,0,1200,1188,1212,600,88,104.5,110,132,120.5,240.25,,4000,0,false,1000,0,,,,,,,0,,,,false,
4,61.235,4600,3,4600,4554,4646,2300,104,123.5,130,156,120.5,,12.346,15333.33,0.333333,true,3833.33,0,15.68,16,0,0.987654,2,1234.57,0,,,,false,
";
        assert_eq!(String::from_utf8(buf).unwrap(), expected);
    }

    #[test]
    fn levels_csv_empty_has_header_only() {
        let mut s = fixtures::summary();
        s.levels.clear();
        let mut buf = Vec::new();
        LevelsCsv.write(&s, &mut buf).unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            format!("{}\n", LEVELS_HEADER.join(","))
        );
    }

    #[test]
    fn requests_csv_streams_rows() {
        let mut out: Vec<u8> = Vec::new();
        {
            let dyn_out: &mut dyn Write = &mut out;
            let mut w = RequestsCsv::new(dyn_out).unwrap();
            w.write_row(&RequestRow {
                concurrency: 4,
                start_ms: 12.34567,
                latency_ms: 812.0,
                ttft_ms: Some(99.9999),
                prompt_tokens: Some(512),
                output_tokens: None,
                status: "200".into(),
                error: String::new(),
            })
            .unwrap();
            w.write_row(&RequestRow {
                concurrency: 4,
                start_ms: f64::NAN,
                latency_ms: -0.0001,
                ttft_ms: None,
                prompt_tokens: None,
                output_tokens: Some(0),
                status: "error".into(),
                error: "timeout, after \"30s\"\nretrying".into(),
            })
            .unwrap();
            w.finish().unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "concurrency,start_ms,latency_ms,ttft_ms,prompt_tokens,output_tokens,status,error\n\
             4,12.346,812,100,512,,200,\n\
             4,,0,,,0,error,\"timeout, after \"\"30s\"\"\nretrying\"\n"
        );
        // Quoted commas/newlines must survive a round trip through a CSV reader.
        let mut r = ::csv::Reader::from_reader(text.as_bytes());
        let rows: Vec<RequestRow> = r.deserialize().collect::<Result<_, _>>().unwrap();
        assert_eq!(rows[1].error, "timeout, after \"30s\"\nretrying");
        assert_eq!(rows[0].output_tokens, None);
    }

    #[test]
    fn requests_csv_empty_has_header() {
        let w = RequestsCsv::new(Vec::new()).unwrap();
        let text = String::from_utf8(w.finish().unwrap()).unwrap();
        assert_eq!(text, format!("{}\n", REQUESTS_HEADER.join(",")));
    }

    #[test]
    fn rounding_helper() {
        assert_eq!(num(0.1 + 0.2, 3), "0.3");
        assert_eq!(num(-0.0001, 3), "0");
        assert_eq!(num(f64::INFINITY, 3), "");
        assert_eq!(num(1e308, 3), "1e308".parse::<f64>().unwrap().to_string());
    }
}
