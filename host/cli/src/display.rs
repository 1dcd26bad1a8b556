//! What the CLI prints: tables, truncation of long server-sent text, error
//! chains said once, and whether to use colour.

use std::borrow::Cow;
use std::io::IsTerminal;

/// Longest cell of a table, in characters; longer ones are cut with `…`.
const MAX_CELL: usize = 100;

/// Whether to colour output to `stream`: only on a terminal, and never
/// when `NO_COLOR` is set (<https://no-color.org>).
pub fn colour(stream: &impl IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

pub use sluice_cluster::truncate;

/// A table's lines: the header, then a line per row, columns padded to
/// their widest cell (cells cut at [`MAX_CELL`] characters).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let cells: Vec<Vec<Cow<'_, str>>> =
        std::iter::once(header.iter().map(|h| Cow::Borrowed(*h)).collect::<Vec<_>>())
            .chain(
                rows.iter()
                    .map(|r| r.iter().map(|c| truncate(c, MAX_CELL)).collect()),
            )
            .collect();
    let mut widths = vec![0; header.len()];
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    cells
        .iter()
        .map(|row| {
            let mut line = String::new();
            for (c, w) in row.iter().zip(&widths) {
                line.push_str(c);
                line.extend(std::iter::repeat_n(' ', w - c.chars().count() + 2));
            }
            line.trim_end().to_owned()
        })
        .collect()
}

/// An error and its causes, each said once.
pub fn chain(e: &anyhow::Error) -> String {
    sluice_cluster::error_chain(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_cuts_at_characters_and_marks_the_cut() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
        assert_eq!(truncate("ééééé", 4), "ééé…");
        assert_eq!(truncate("", 0), "");
    }

    #[test]
    fn a_table_with_a_huge_cell_stays_narrow() {
        let huge = "x".repeat(100_000);
        let lines = table(&["A", "B"], &[vec![huge, "1".into()]]);
        assert_eq!(lines.len(), 2);
        assert!(lines[1].chars().count() < MAX_CELL + 10, "{}", lines[1]);
        assert!(lines[1].ends_with("…  1"), "{}", lines[1]);
    }

    #[test]
    fn a_cause_already_in_the_message_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = anyhow::Error::new(io).context("cannot read x: No such file or directory");
        assert_eq!(chain(&e), "cannot read x: No such file or directory");
        let e = anyhow::anyhow!("timed out").context("connection lost");
        assert_eq!(chain(&e), "connection lost: timed out");
    }
}
