//! CSV cells that a spreadsheet would run: a cell that starts with `=`, `+`, `-`, `@`, a
//! tab or a carriage return is read by Excel, LibreOffice and Google Sheets as a formula
//! (`=HYPERLINK(...)` sends whoever clicks it, with data of the sheet, to another site).
//! The names in a record come from the monitored users' own traffic, so the CSV, which is
//! made for spreadsheets, starts such cells with `'` (OWASP, "CSV Injection"): shown as
//! text, never run. The JSON Lines export, made for programs, keeps every value exact.

use super::ExportRow;

/// What makes a spreadsheet take a cell for a formula.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// `cell`, with a `'` before it if a spreadsheet would run it.
pub fn neutralise(cell: String) -> String {
    if cell.starts_with(FORMULA_STARTS) {
        format!("'{cell}")
    } else {
        cell
    }
}

/// `row` with every text cell neutralised (numbers, flags and times never start with one
/// of those characters).
pub fn for_spreadsheet(row: ExportRow) -> ExportRow {
    ExportRow {
        client: neutralise(row.client),
        client_mac: neutralise(row.client_mac),
        server: neutralise(row.server),
        protocol: neutralise(row.protocol),
        name: neutralise(row.name),
        category: neutralise(row.category),
        app: neutralise(row.app),
        method: neutralise(row.method),
        group: neutralise(row.group),
        verdict: neutralise(row.verdict),
        evasion: neutralise(row.evasion),
        second_name: neutralise(row.second_name),
        second_category: neutralise(row.second_category),
        end_reason: neutralise(row.end_reason),
        public_addr: neutralise(row.public_addr),
        ..row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised_and_others_left_alone() {
        for (cell, expected) in [
            (
                "=HYPERLINK(\"http://x.example/\",\"y\")",
                "'=HYPERLINK(\"http://x.example/\",\"y\")",
            ),
            ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
            ("-2+3", "'-2+3"),
            ("@SUM(1,1)", "'@SUM(1,1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("www.example.com", "www.example.com"),
            ("a=b", "a=b"),
            ("", ""),
            ("2001:db8::1", "2001:db8::1"),
        ] {
            assert_eq!(neutralise(cell.to_owned()), expected, "{cell:?}");
        }
    }
}
