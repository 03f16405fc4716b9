//! The Prometheus text exposition format (version 0.0.4), as far as sizeup needs it: sample
//! lines `name{label="value",...} value [timestamp]`, comments skipped. Written by hand: the
//! format is small, and the crates for it pull in a regex engine and a date library.

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct PromSample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses an exposition; lines that are not samples (comments, blank lines, anything
/// malformed) are skipped, so one odd line never hides the others.
pub fn parse(text: &str) -> Vec<PromSample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<PromSample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    // The text format allows blanks between the name and its labels (`name {a="b"} 1`), as
    // the reference parser reads them.
    let mut rest = line[name_end..].trim_start();
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = parse_labels(after)?;
        labels = parsed;
        rest = tail;
    }
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(PromSample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Labels up to the closing brace; returns them and what follows the brace.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(tail) = s.strip_prefix('}') {
            return Some((labels, tail));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        // The value runs to the first unescaped quote; \\, \" and \n are its escapes.
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                other => value.push(other),
            }
        };
        labels.push((key, value));
        s = &s[end + 1..];
    }
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => v.parse().ok(),
    }
}

/// The sum of a metric over all its label sets (several models or engines behind one
/// endpoint), or `None` when no sample has this name.
pub fn sum(samples: &[PromSample], name: &str) -> Option<f64> {
    let mut found = false;
    let mut total = 0.0;
    for s in samples.iter().filter(|s| s.name == name && s.value.is_finite()) {
        found = true;
        total += s.value;
    }
    found.then_some(total)
}

/// The highest value of a metric over its label sets (for ratios such as KV usage, where a
/// sum over engines would mean nothing).
pub fn max(samples: &[PromSample], name: &str) -> Option<f64> {
    samples
        .iter()
        .filter(|s| s.name == name && s.value.is_finite())
        .map(|s| s.value)
        .reduce(f64::max)
}

/// The mean of a metric over its label sets (a rate each engine reports for its own share).
pub fn mean(samples: &[PromSample], name: &str) -> Option<f64> {
    let v: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == name && s.value.is_finite())
        .map(|s| s.value)
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_labels_and_comments() {
        let text = "# HELP vllm:num_requests_running Number of requests.\n\
                    # TYPE vllm:num_requests_running gauge\n\
                    vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 8.0\n\
                    vllm:num_requests_running{engine=\"1\",model_name=\"m\"} 7\n\
                    vllm:num_requests_running {engine=\"2\"} 4\n\
                    tgi_queue_size 3 1700000000000\n\
                    weird{path=\"a \\\"b\\\", c} d\\\\\"} 1e3\n\
                    h_bucket{le=\"+Inf\"} 12\n\
                    nan_metric NaN\n\
                    \n\
                    broken{a=\"x\" 1\n\
                    9starts_with_digit 1\n";
        let s = parse(text);
        assert_eq!(s.len(), 7, "{s:?}");
        assert_eq!(s[0].name, "vllm:num_requests_running");
        assert_eq!(
            s[0].labels,
            vec![("engine".into(), "0".into()), ("model_name".into(), "m".into())]
        );
        assert_eq!(s[2].labels, vec![("engine".into(), "2".into())]);
        assert_eq!(s[3].value, 3.0);
        assert_eq!(s[4].labels[0].1, "a \"b\", c} d\\");
        assert_eq!(s[4].value, 1000.0);
        assert_eq!(s[5].labels[0].1, "+Inf");
        assert_eq!(sum(&s, "vllm:num_requests_running"), Some(19.0));
        assert_eq!(max(&s, "vllm:num_requests_running"), Some(8.0));
        assert_eq!(sum(&s, "nan_metric"), None);
        assert_eq!(sum(&s, "absent"), None);
    }

    proptest::proptest! {
        /// Any text: no panic; a line we print ourselves always reads back.
        #[test]
        fn never_panics_and_reads_back(text in "\\PC{0,200}", v in -1e9f64..1e9, label in "[a-z \",{}\\\\]{0,12}") {
            let _ = parse(&text);
            let escaped = label.replace('\\', "\\\\").replace('"', "\\\"");
            let line = format!("m_x{{l=\"{escaped}\"}} {v}");
            let s = parse(&line);
            proptest::prop_assert_eq!(s.len(), 1);
            proptest::prop_assert_eq!(&s[0].labels[0].1, &label);
            proptest::prop_assert_eq!(s[0].value, v);
        }
    }
}
