//! Plain-text tables for terminal output.

use std::fmt::Write as _;

/// Appends `rows` (the first is the header) as left-aligned columns two spaces apart.
pub fn render(out: &mut String, rows: &[Vec<String>]) {
    let Some(header) = rows.first() else { return };
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
}
