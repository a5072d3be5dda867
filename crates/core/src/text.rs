//! Plain-text tables for terminal output (`check`, `hpa replay --explain`, `simulate`).

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

#[cfg(test)]
mod tests {
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
