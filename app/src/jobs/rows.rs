//! The log viewer's rows: one per stored line, in seq order, except that
//! lines omitted from the middle of an over-long log collapse into a single
//! marker row. Pure arithmetic, shared by the viewer and its tests.

use crate::model::job::Gap;

/// What sits on a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    Line(i64),
    Gap(Gap),
}

/// The rows of a log with seqs `1..=last_seq` and maybe one omitted range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rows {
    pub last_seq: i64,
    pub gap: Option<Gap>,
}

impl Rows {
    fn gap_len(&self) -> i64 {
        self.gap.map_or(0, |g| g.to - g.from + 1)
    }

    /// How many rows there are.
    pub fn total(&self) -> i64 {
        match self.gap {
            Some(_) => self.last_seq - self.gap_len() + 1,
            None => self.last_seq,
        }
        .max(0)
    }

    /// What is on row `r` (0-based).
    pub fn row(&self, r: i64) -> Row {
        match self.gap {
            Some(g) if r + 1 == g.from => Row::Gap(g),
            Some(g) if r + 1 > g.from => Row::Line(r + self.gap_len()),
            _ => Row::Line(r + 1),
        }
    }

    /// The row showing `seq` (an omitted seq maps to the marker row).
    pub fn row_of(&self, seq: i64) -> i64 {
        match self.gap {
            Some(g) if seq >= g.from && seq <= g.to => g.from - 1,
            Some(g) if seq > g.to => seq - self.gap_len(),
            _ => seq - 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_gap_rows_are_seqs() {
        let r = Rows {
            last_seq: 10,
            gap: None,
        };
        assert_eq!(r.total(), 10);
        assert_eq!(r.row(0), Row::Line(1));
        assert_eq!(r.row(9), Row::Line(10));
        assert_eq!(r.row_of(7), 6);
    }

    #[test]
    fn an_omitted_range_is_one_row() {
        let g = Gap {
            from: 5,
            to: 8,
            bytes: 100,
        };
        let r = Rows {
            last_seq: 12,
            gap: Some(g),
        };
        // rows: 1 2 3 4 [gap] 9 10 11 12
        assert_eq!(r.total(), 9);
        assert_eq!(r.row(3), Row::Line(4));
        assert_eq!(r.row(4), Row::Gap(g));
        assert_eq!(r.row(5), Row::Line(9));
        assert_eq!(r.row(8), Row::Line(12));
        for seq in [1, 4, 9, 12] {
            assert_eq!(r.row(r.row_of(seq)), Row::Line(seq));
        }
        assert_eq!(r.row_of(6), 4);
    }
}
