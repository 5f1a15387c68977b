//! Tables that drop their least important columns when the terminal is
//! narrow, instead of squeezing every column into illegibility.
use ratatui::{
    Frame,
    layout::{Constraint, Rect},
    style::Style,
    text::Line,
    widgets::{Cell, Row, Table},
};

use crate::{
    format,
    sort::{Sort, SortKey},
    stats::Quantile,
    theme::Theme,
};

/// The text of a cell and how it looks.
pub type Text = (String, Style);

pub struct Column<R> {
    pub header: &'static str,
    /// Columns of a fixed width; the priority 0 column takes what is left
    /// and needs at least this.
    pub width: u16,
    /// Lower numbers stay longest as the terminal narrows.
    pub priority: u8,
    pub right_aligned: bool,
    /// The sort key this column shows an arrow for.
    pub sort: Option<SortKey>,
    pub cell: fn(&R, &Theme) -> Text,
    /// Takes the room left over (at least `width`) instead of the priority
    /// 0 column, which then keeps its own width.
    pub fill: bool,
}

/// Every figure fits in 7 columns (see [`format`]), header and arrow too.
const FIGURE_WIDTH: u16 = 7;

impl<R> Column<R> {
    pub fn text(
        header: &'static str,
        width: u16,
        priority: u8,
        sort: Option<SortKey>,
        cell: fn(&R, &Theme) -> Text,
    ) -> Self {
        Column {
            header,
            width,
            priority,
            right_aligned: false,
            sort,
            cell,
            fill: false,
        }
    }

    /// A column that takes what the others leave (a list of names).
    pub fn filling(self) -> Self {
        Column { fill: true, ..self }
    }

    pub fn figure(
        header: &'static str,
        priority: u8,
        sort: Option<SortKey>,
        cell: fn(&R, &Theme) -> Text,
    ) -> Self {
        Column {
            right_aligned: true,
            ..Column::text(header, FIGURE_WIDTH, priority, sort, cell)
        }
    }
}

/// The columns that fit in `width`, most important first, shown in their
/// original order. The most important one stays however narrow it gets.
pub fn fit<R>(columns: &[Column<R>], width: u16) -> Vec<&Column<R>> {
    let mut order: Vec<usize> = (0..columns.len()).collect();
    order.sort_by_key(|&i| columns[i].priority);
    let mut keep = vec![false; columns.len()];
    let mut used = 0u16;
    for i in order {
        let need = columns[i].width + u16::from(used > 0);
        if used == 0 || used + need <= width {
            keep[i] = true;
            used += need;
        }
    }
    columns
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(c, _)| c)
        .collect()
}

pub fn table<'a, R>(
    columns: &[&Column<R>],
    rows: &[R],
    theme: &Theme,
    sort: Option<Sort>,
) -> Table<'a> {
    let align = |column: &Column<R>, line: Line<'a>| {
        if column.right_aligned {
            line.right_aligned()
        } else {
            line
        }
    };
    let header = columns.iter().map(|c| {
        let arrow = match sort {
            Some(s) if c.sort == Some(s.key) => {
                if s.descending {
                    "▼"
                } else {
                    "▲"
                }
            }
            _ => "",
        };
        Cell::from(align(c, Line::from(format!("{}{arrow}", c.header))))
    });
    let body = rows.iter().map(|row| {
        Row::new(columns.iter().map(|c| {
            let (text, style) = (c.cell)(row, theme);
            Cell::from(align(c, Line::styled(text, style)))
        }))
    });
    let filler = columns.iter().any(|c| c.fill);
    let widths = columns.iter().map(|c| match (c.fill, c.priority) {
        (true, _) => Constraint::Fill(1),
        (false, 0) if filler => Constraint::Min(c.width),
        (false, 0) => Constraint::Fill(1),
        _ => Constraint::Length(c.width),
    });
    Table::new(body, widths)
        .header(Row::new(header).style(theme.header()))
        .column_spacing(1)
        .row_highlight_style(theme.selected())
}

/// Drawn under the header of a table that `filter` left empty, so it does
/// not pass for a mesh with nothing in it.
pub fn no_match_hint(frame: &mut Frame, table: Rect, what: &str, filter: &str, theme: &Theme) {
    if let Some(row) = table.rows().nth(1) {
        let hint = format!("no {what} matches \"{filter}\" (Esc clears the filter)");
        frame.render_widget(Line::styled(hint, theme.warning()), row);
    }
}

/// A quantile; a `*` and a dim style mark one since the agent started.
pub fn quantile(q: Option<Quantile>, theme: &Theme) -> Text {
    match q {
        Some(Quantile {
            us,
            cumulative: false,
        }) => (format::micros(us), Style::new()),
        Some(Quantile {
            us,
            cumulative: true,
        }) => (format!("{}*", format::micros(us)), theme.dim()),
        None => ("-".into(), theme.dim()),
    }
}

pub fn plain(text: impl Into<String>) -> Text {
    (text.into(), Style::new())
}

pub fn rate(per_second: Option<f64>) -> Text {
    (per_second.map_or("-".into(), format::rate), Style::new())
}

pub fn bytes_rate(per_second: Option<f64>) -> Text {
    (per_second.map_or("-".into(), format::bytes), Style::new())
}

/// A rate that should be zero: anything else stands out.
pub fn trouble_rate(per_second: Option<f64>, style: Style) -> Text {
    match per_second {
        Some(r) if r > 0.0 => (format::rate(r), style),
        other => rate(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(header: &'static str, width: u16, priority: u8) -> Column<()> {
        Column::text(header, width, priority, None, |_, _| {
            (String::new(), Style::new())
        })
    }

    #[test]
    fn drops_the_least_important_columns_first() {
        let columns = [
            column("a", 10, 0),
            column("b", 10, 2),
            column("c", 10, 1),
            column("d", 3, 3),
        ];
        let headers = |width| {
            fit(&columns, width)
                .iter()
                .map(|c| c.header)
                .collect::<Vec<_>>()
        };
        assert_eq!(headers(100), ["a", "b", "c", "d"]);
        assert_eq!(headers(21), ["a", "c"]);
        assert_eq!(headers(25), ["a", "c", "d"]);
        assert_eq!(headers(5), ["a"]);
    }
}
