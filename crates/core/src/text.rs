//! Plain text: tables for terminal output (`check`, `hpa replay --explain`, `simulate`), and
//! the Prometheus text format of an OpenMetrics exposition (pods and gateway serve it).

/// `rows` (the first is the header) as left-aligned columns two spaces apart, one line each.
pub fn table(rows: &[Vec<String>]) -> String {
    let Some(header) = rows.first() else {
        return String::new();
    };
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Rewrites an OpenMetrics exposition as the Prometheus text format (0.0.4) that older
/// scrapers and `promtool check metrics` read: a counter's HELP and TYPE name its `_total`
/// samples, and there is no `# EOF`.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| {
            l.strip_prefix("# TYPE ")
                .and_then(|r| r.strip_suffix(" counter"))
        })
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// An OpenMetrics exposition with families written in the Prometheus text format added
/// before its `# EOF`: a counter's HELP and TYPE lose the `_total` that OpenMetrics keeps for
/// samples only.
pub fn openmetrics_with(openmetrics: &str, prometheus_text: &str) -> String {
    let counters: Vec<&str> = prometheus_text
        .lines()
        .filter_map(|l| {
            l.strip_prefix("# TYPE ")
                .and_then(|r| r.strip_suffix(" counter"))
        })
        .collect();
    let mut out = openmetrics
        .strip_suffix("# EOF\n")
        .unwrap_or(openmetrics)
        .to_string();
    for line in prometheus_text.lines() {
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let (name, tail) = line.strip_prefix(prefix)?.split_once(' ')?;
            let family = name.strip_suffix("_total")?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{family} {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn prometheus_families_join_an_openmetrics_exposition_and_come_back_the_same() {
        let extra = "# HELP x_total Xs.\n# TYPE x_total counter\nx_total{a=\"b\"} 1\n\
                     # HELP g A gauge.\n# TYPE g gauge\ng 2\n";
        let joined = super::openmetrics_with("# HELP y Y.\n# TYPE y gauge\ny 3\n# EOF\n", extra);
        assert_eq!(
            joined,
            "# HELP y Y.\n# TYPE y gauge\ny 3\n# HELP x Xs.\n# TYPE x counter\n\
             x_total{a=\"b\"} 1\n# HELP g A gauge.\n# TYPE g gauge\ng 2\n# EOF\n"
        );
        assert_eq!(
            super::to_prometheus_text(&joined),
            format!("# HELP y Y.\n# TYPE y gauge\ny 3\n{extra}")
        );
    }

    #[test]
    fn aligns_columns() {
        let rows = vec![
            vec!["A".into(), "BB".into()],
            vec!["ccc".into(), "d".into()],
        ];
        assert_eq!(super::table(&rows), "A    BB\nccc  d\n");
        assert_eq!(super::table(&[]), "");
    }
}
