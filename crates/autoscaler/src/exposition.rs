//! A reader for the Prometheus text exposition format (0.0.4, and the OpenMetrics text the
//! same code emits): just the samples, as `name{labels} value`.

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A line that is not a sample, a comment or blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Every sample of an exposition, in order. Comments (`# HELP`, `# TYPE`, `# EOF`) and blank
/// lines are skipped; a timestamp after the value is ignored.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        samples.push(parse_line(line).map_err(|message| ParseError {
            line: i + 1,
            message,
        })?);
    }
    Ok(samples)
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("a sample needs a value")?;
    let name = &line[..name_end];
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        || name.is_empty()
    {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("a label needs =")?;
            let key = rest[..eq].trim().to_string();
            let (value, after) = quoted(rest[eq + 1..].trim_start())?;
            labels.push((key, value));
            rest = after;
        }
    }
    let value = rest
        .split_whitespace()
        .next()
        .ok_or("a sample needs a value")?;
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// A `"…"` label value with `\\`, `\"` and `\n` escapes, and what follows it.
fn quoted(s: &str) -> Result<(String, &str), String> {
    let body = s.strip_prefix('"').ok_or("a label value must be quoted")?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &body[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, e)) => out.push(e),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("unterminated label value".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_samples_and_skips_comments() {
        let text = "# HELP x_total Things\n# TYPE x_total counter\n\
                    x_total{tenant_id=\"media-1\",status=\"success\"} 12\n\
                    up 1 1700000000\nbucket{le=\"+Inf\"} 3\n# EOF\n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "x_total");
        assert_eq!(s[0].label("tenant_id"), Some("media-1"));
        assert_eq!(s[0].label("status"), Some("success"));
        assert_eq!(s[0].value, 12.0);
        assert_eq!(s[1].value, 1.0, "the timestamp is not the value");
        assert_eq!(s[2].label("le"), Some("+Inf"));
    }

    #[test]
    fn bad_lines_name_their_line() {
        let e = parse("ok 1\nbroken{a=\"x\" 1\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(parse("x abc").unwrap_err().message.contains("bad value"));
        assert!(parse("x{a=b} 1").unwrap_err().message.contains("quoted"));
    }

    proptest! {
        /// Whatever label values (escaped as Prometheus does) and value, the sample reads back.
        #[test]
        fn escaped_labels_round_trip(v in "[a-z\"\\\\\n ]{0,12}", x in -1e9f64..1e9) {
            let escaped = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let s = parse(&format!("m{{k=\"{escaped}\",j=\"2\"}} {x}\n")).unwrap();
            prop_assert_eq!(s[0].label("k"), Some(v.as_str()));
            prop_assert_eq!(s[0].label("j"), Some("2"));
            prop_assert_eq!(s[0].value, x);
        }
    }
}
