//! xCAT `tabdump` table files: reading and writing, losslessly.
//!
//! The format (what `tabdump litefile` prints and `tabrestore` reads):
//!
//! ```text
//! #image,file,options,comments,disable
//! "ALL","/etc/fstab",,,
//! ```
//!
//! * The first line is the header: `#` then the column names, comma separated.
//!   Only the header may start with `#`.
//! * A field is empty (SQL NULL), or a double-quoted string in which `""` stands for one
//!   quote (quoted strings may span lines), or a bare word with neither `"` nor `,` (the
//!   design document writes litetree rows like `1,,10.0.0.1:/syncdirs/$node` that way).
//! * Lines end in LF or CRLF; blank lines are ignored; one trailing empty field past the
//!   last column (a trailing comma) is accepted.
//!
//! We keep NULL (`None`) apart from the empty string (`Some("")`, written `""`), so that
//! writing back what was read reproduces canonical input byte for byte.
//!
//! Why not the `csv` crate: it cannot tell a quoted empty string from an empty field, and
//! it accepts malformed quoting (`a"b`, `"a"b`) silently, where an admin needs an error
//! naming the line and field.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// One cell of a table: `None` is NULL (an empty field), `Some("")` is a quoted empty string.
pub type Field = Option<String>;

/// A table as read from a file: its header and its rows, with their line numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
}

/// One data row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// 1-based line number where the row starts in its file (0 for rows built in memory).
    pub line: usize,
    /// One entry per column of the table (missing trailing fields are NULL).
    pub fields: Vec<Field>,
}

/// What went wrong reading a table, and exactly where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TabError {
    pub file: PathBuf,
    pub line: usize,
    /// 1-based field number and, where known, the column's name.
    pub field: Option<(usize, Option<String>)>,
    pub problem: String,
}

impl fmt::Display for TabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)?;
        match &self.field {
            Some((n, Some(name))) => write!(f, ": field {n} ({name})")?,
            Some((n, None)) => write!(f, ": field {n}")?,
            None => {}
        }
        write!(f, ": {}", self.problem)
    }
}

impl Table {
    /// An empty table with the given columns.
    pub fn new(columns: &[&str]) -> Table {
        Table {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Index of a column by name.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// The value of `name` in `row`, NULL when the column does not exist.
    pub fn get<'a>(&self, row: &'a Row, name: &str) -> Option<&'a str> {
        self.column(name)
            .and_then(|i| row.fields.get(i))
            .and_then(|f| f.as_deref())
    }

    /// Parses a whole file's bytes. `file` is only used in error messages.
    pub fn parse(bytes: &[u8], file: &Path) -> Result<Table, TabError> {
        let mut scan = RowScanner::new(bytes, file)?;
        let mut rows = Vec::new();
        while let Some(row) = scan.next_row()? {
            rows.push(Row {
                line: row.line,
                fields: row
                    .fields
                    .iter()
                    .map(|f| f.as_deref().map(str::to_string))
                    .collect(),
            });
        }
        Ok(Table {
            columns: scan.columns,
            rows,
        })
    }

    /// Reads and parses a file.
    pub fn read(path: &Path) -> Result<Table, TabError> {
        Table::parse(&read_table_file(path)?, path)
    }

    /// The canonical text: header, then each row with every non-NULL value quoted; LF endings.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        out.push('#');
        out.push_str(&self.columns.join(","));
        out.push('\n');
        for row in &self.rows {
            if row.fields.len() == 1 && row.fields[0].is_none() {
                // A lone NULL would be an empty line, which reads back as no row at all;
                // a trailing comma keeps the row (and is dropped again when read).
                out.push_str(",\n");
                continue;
            }
            for (i, field) in row.fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if let Some(v) = field {
                    out.push('"');
                    out.push_str(&v.replace('"', "\"\""));
                    out.push('"');
                }
            }
            out.push('\n');
        }
        out
    }

    /// Writes the table atomically: a temporary file in the same directory, fsync, rename,
    /// fsync of the directory. A crash leaves either the old table or the new one.
    pub fn write_atomic(&self, path: &Path) -> std::io::Result<()> {
        write_file_atomic(path, self.to_text().as_bytes())
    }
}

/// A table file's bytes; a failure to read it is a [`TabError`] naming the file.
pub fn read_table_file(path: &Path) -> Result<Vec<u8>, TabError> {
    std::fs::read(path).map_err(|e| TabError {
        file: path.to_path_buf(),
        line: 0,
        field: None,
        problem: format!("cannot read: {e}"),
    })
}

/// Replaces `path` with `data` atomically (temp file + fsync + rename + directory fsync).
pub fn write_file_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name")
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// One row as [`RowScanner`] reads it, borrowed from the input.
pub struct RawRow<'r, 'b> {
    /// The table's column names (from the header), for naming fields in errors.
    pub columns: &'r [String],
    /// 1-based line number where the row starts.
    pub line: usize,
    /// One entry per column (missing trailing fields are NULL). A value borrows the input
    /// unless it had a `""` to undo.
    pub fields: &'r [Option<Cow<'b, str>>],
}

/// Reads a table row by row without copying it: the header first, then each row into one
/// reused buffer. [`Table::parse`] is built on it; the daemon reads its litefile with it at
/// boot, where copying every field of a 2,000-row table was most of the time to a ready root.
pub struct RowScanner<'b> {
    parser: Parser<'b>,
    columns: Vec<String>,
    fields: Vec<Option<Cow<'b, str>>>,
}

impl<'b> RowScanner<'b> {
    /// Reads the header. `file` is only used in error messages.
    pub fn new(bytes: &'b [u8], file: &'b Path) -> Result<RowScanner<'b>, TabError> {
        let mut parser = Parser {
            bytes,
            text: std::str::from_utf8(bytes).ok(),
            pos: 0,
            line: 1,
            file,
        };
        let columns = parser.header()?;
        Ok(RowScanner {
            parser,
            fields: Vec::with_capacity(columns.len() + 1),
            columns,
        })
    }

    /// The column names, from the header.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The next data row, `None` at the end of the input.
    pub fn next_row(&mut self) -> Result<Option<RawRow<'_, 'b>>, TabError> {
        let p = &mut self.parser;
        loop {
            if p.pos >= p.bytes.len() {
                return Ok(None);
            }
            if !p.eat_eol() {
                break; // not a blank line
            }
        }
        if p.peek() == Some(b'#') {
            return Err(p.err(
                p.line,
                None,
                "only the first line (the header) may start with '#'".into(),
            ));
        }
        let line = p.row(&self.columns, &mut self.fields)?;
        Ok(Some(RawRow {
            columns: &self.columns,
            line,
            fields: &self.fields,
        }))
    }
}

struct Parser<'a> {
    bytes: &'a [u8],
    /// The input as text when all of it is UTF-8 (checked once, fast); otherwise each value
    /// is checked on its own, so an error can name the field.
    text: Option<&'a str>,
    pos: usize,
    line: usize,
    file: &'a Path,
}

impl<'a> Parser<'a> {
    fn err(
        &self,
        line: usize,
        field: Option<(usize, Option<String>)>,
        problem: String,
    ) -> TabError {
        TabError {
            file: self.file.to_path_buf(),
            line,
            field,
            problem,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// True at an end of line (LF, CRLF) or of input; consumes the line ending.
    fn eat_eol(&mut self) -> bool {
        match (self.peek(), self.bytes.get(self.pos + 1)) {
            (None, _) => true,
            (Some(b'\n'), _) => {
                self.pos += 1;
                self.line += 1;
                true
            }
            (Some(b'\r'), Some(b'\n')) => {
                self.pos += 2;
                self.line += 1;
                true
            }
            (Some(b'\r'), None) => {
                self.pos += 1;
                true
            }
            _ => false,
        }
    }

    /// The header line: the column names.
    fn header(&mut self) -> Result<Vec<String>, TabError> {
        if self.bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
            self.pos = 3; // a UTF-8 byte-order mark from a Windows editor
        }
        if self.peek() != Some(b'#') {
            return Err(self.err(
                1,
                None,
                "expected a header line starting with '#' (e.g. #image,file,options,comments,disable)"
                    .into(),
            ));
        }
        self.pos += 1;
        let start = self.pos;
        while !matches!(self.peek(), None | Some(b'\n') | Some(b'\r')) {
            self.pos += 1;
        }
        let header = std::str::from_utf8(&self.bytes[start..self.pos])
            .map_err(|_| self.err(1, None, "header is not valid UTF-8".into()))?;
        if !self.eat_eol() {
            return Err(self.err(1, None, "stray carriage return in header".into()));
        }
        let columns: Vec<String> = header.split(',').map(|c| c.trim().to_string()).collect();
        for (i, c) in columns.iter().enumerate() {
            let valid = !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
            if !valid {
                return Err(self.err(
                    1,
                    Some((i + 1, None)),
                    format!("expected a column name (letters, digits, '_'), found {c:?}"),
                ));
            }
            if columns[..i].contains(c) {
                return Err(self.err(1, Some((i + 1, None)), format!("duplicate column {c:?}")));
            }
        }
        Ok(columns)
    }

    /// Reads one row into `fields` (cleared first); returns the line it started on.
    fn row(
        &mut self,
        columns: &[String],
        fields: &mut Vec<Option<Cow<'a, str>>>,
    ) -> Result<usize, TabError> {
        let line = self.line;
        fields.clear();
        loop {
            let n = fields.len() + 1;
            let field = self.field(n, columns)?;
            fields.push(field);
            match self.peek() {
                Some(b',') => self.pos += 1,
                _ if self.eat_eol() => break,
                Some(c) => {
                    return Err(self.err(
                        self.line,
                        Some((n, columns.get(n - 1).cloned())),
                        format!(
                            "expected ',' or end of line after the field, found {:?}",
                            char::from(c)
                        ),
                    ));
                }
                None => break,
            }
        }
        // A trailing comma gives one extra empty field: accept and drop it.
        if fields.len() == columns.len() + 1 && matches!(fields.last(), Some(None)) {
            fields.pop();
        }
        if fields.len() > columns.len() {
            return Err(self.err(
                line,
                Some((columns.len() + 1, None)),
                format!(
                    "expected at most {} fields ({}), found {}",
                    columns.len(),
                    columns.join(","),
                    fields.len()
                ),
            ));
        }
        fields.resize(columns.len(), None);
        Ok(line)
    }

    /// Field `n` (1-based) of a row; `columns` only names it in errors. The value borrows
    /// the input unless a `""` in it had to become one quote.
    fn field(&mut self, n: usize, columns: &[String]) -> Result<Option<Cow<'a, str>>, TabError> {
        let name = || columns.get(n - 1).cloned();
        let bytes = self.bytes;
        // A value is a span of the input, or a copy when a `""` had to become one quote.
        enum Raw {
            Span(usize, usize),
            Copy(Vec<u8>),
        }
        let value = match self.peek() {
            Some(b'"') => {
                let start_line = self.line;
                self.pos += 1;
                let mut owned: Option<Vec<u8>> = None;
                loop {
                    // Up to the next quote, counting the line breaks on the way (values
                    // are short: a plain loop beats memchr's set-up here).
                    let rest = &bytes[self.pos..];
                    let mut breaks = 0;
                    let found = rest.iter().position(|&b| {
                        breaks += usize::from(b == b'\n');
                        b == b'"'
                    });
                    let Some(q) = found else {
                        return Err(self.err(
                            start_line,
                            Some((n, name())),
                            "unterminated quoted value (expected a closing '\"')".into(),
                        ));
                    };
                    let chunk = &rest[..q];
                    let chunk_start = self.pos;
                    self.line += breaks;
                    self.pos += q;
                    if bytes.get(self.pos + 1) == Some(&b'"') {
                        let buf = owned.get_or_insert_with(Vec::new);
                        buf.extend_from_slice(chunk);
                        buf.push(b'"');
                        self.pos += 2;
                    } else {
                        self.pos += 1;
                        break match owned {
                            Some(mut buf) => {
                                buf.extend_from_slice(chunk);
                                Raw::Copy(buf)
                            }
                            None => Raw::Span(chunk_start, chunk_start + q),
                        };
                    }
                }
            }
            _ => {
                let start = self.pos;
                while let Some(c) = self.peek() {
                    match c {
                        b',' | b'\n' => break,
                        b'\r' if bytes.get(self.pos + 1) == Some(&b'\n') => break,
                        b'"' => {
                            return Err(self.err(
                                self.line,
                                Some((n, name())),
                                "a '\"' inside an unquoted value (quote the whole value and write \"\" for a quote)"
                                    .into(),
                            ));
                        }
                        _ => self.pos += 1,
                    }
                }
                if self.pos == start {
                    return Ok(None);
                }
                Raw::Span(start, self.pos)
            }
        };
        let not_utf8 = || {
            self.err(
                self.line,
                Some((n, name())),
                "value is not valid UTF-8".into(),
            )
        };
        match value {
            // Spans end at ASCII delimiters, so they are char boundaries of valid input.
            Raw::Span(a, b) => match self.text {
                Some(text) => Ok(Some(Cow::Borrowed(&text[a..b]))),
                None => std::str::from_utf8(&bytes[a..b])
                    .map(|v| Some(Cow::Borrowed(v)))
                    .map_err(|_| not_utf8()),
            },
            Raw::Copy(b) => String::from_utf8(b)
                .map(|v| Some(Cow::Owned(v)))
                .map_err(|_| not_utf8()),
        }
    }
}

/// True when a `disable` value turns its row off (xCAT: anything but empty, `0` or `no`).
pub fn is_disabled(value: Option<&str>) -> bool {
    match value {
        None => false,
        Some(v) => {
            let v = v.trim();
            !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("no"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Table, TabError> {
        Table::parse(s.as_bytes(), Path::new("litefile.csv"))
    }

    #[test]
    fn reads_tabdump_output() {
        let t = parse("#image,file,options,comments,disable\n\"ALL\",\"/etc/fstab\",,,\n").unwrap();
        assert_eq!(
            t.columns,
            ["image", "file", "options", "comments", "disable"]
        );
        assert_eq!(t.rows.len(), 1);
        assert_eq!(t.rows[0].line, 2);
        assert_eq!(
            t.rows[0].fields,
            vec![
                Some("ALL".into()),
                Some("/etc/fstab".into()),
                None,
                None,
                None
            ]
        );
    }

    #[test]
    fn quotes_escapes_null_and_empty_string_are_distinct() {
        let t = parse("#a,b,c\n\"say \"\"hi\"\"\",\"\",\n").unwrap();
        assert_eq!(
            t.rows[0].fields,
            vec![Some("say \"hi\"".into()), Some(String::new()), None]
        );
    }

    #[test]
    fn canonical_round_trip_is_byte_identical() {
        let text = "#a,b,c\n\"x\",,\"\"\n,\"multi\nline\",\"q\"\"q\"\n";
        let t = parse(text).unwrap();
        assert_eq!(t.to_text(), text);
        assert_eq!(t.rows[1].line, 3);
    }

    #[test]
    fn one_column_null_row_survives_a_round_trip() {
        let mut t = Table::new(&["key"]);
        t.rows.push(Row {
            line: 2,
            fields: vec![None],
        });
        t.rows.push(Row {
            line: 3,
            fields: vec![Some("x".into())],
        });
        let again = parse(&t.to_text()).unwrap();
        assert_eq!(
            again
                .rows
                .iter()
                .map(|r| r.fields.clone())
                .collect::<Vec<_>>(),
            vec![vec![None], vec![Some("x".to_string())]]
        );
        assert_eq!(again.to_text(), t.to_text());
    }

    #[test]
    fn crlf_bare_words_trailing_comma_and_short_rows() {
        let t = parse("#priority,image,directory\r\n1,,10.0.0.1:/syncdirs/$node,\r\n2\r\n\r\n")
            .unwrap();
        assert_eq!(
            t.rows[0].fields,
            vec![
                Some("1".into()),
                None,
                Some("10.0.0.1:/syncdirs/$node".into())
            ]
        );
        assert_eq!(t.rows[1].fields, vec![Some("2".into()), None, None]);
    }

    #[test]
    fn malformed_inputs_name_line_and_field() {
        let cases: &[(&str, usize, Option<usize>, &str)] = &[
            ("", 1, None, "header"),
            ("\"ALL\"\n", 1, None, "header"),
            ("#a,,b\n", 1, Some(2), "column name"),
            ("#a,a\n", 1, Some(2), "duplicate"),
            ("#a,b\n\"x\n", 2, Some(1), "unterminated"),
            ("#a,b\n\"x\"y,\n", 2, Some(1), "expected ','"),
            ("#a,b\nx\"y,\n", 2, Some(1), "unquoted"),
            ("#a,b\n1,2,3\n", 2, Some(3), "at most 2"),
            ("#a,b\n1,2\n#c\n", 3, None, "header"),
        ];
        for (text, line, field, needle) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!(e.line, *line, "{text:?}: {e}");
            assert_eq!(e.field.as_ref().map(|f| f.0), *field, "{text:?}: {e}");
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
            assert!(e.to_string().starts_with("litefile.csv:"), "{e}");
        }
        let e = Table::parse(b"#a\n\"\xff\"\n", Path::new("t")).unwrap_err();
        assert!(e.problem.contains("UTF-8"));
        // Valid rows before it do not hide where the bad byte is (the whole-input check
        // fails, and each value is then checked on its own).
        let e = Table::parse(b"#a,b\n\"x\",\"y\"\nz,\"\"\"q\xc3\"\n", Path::new("t")).unwrap_err();
        assert_eq!(
            (e.line, e.field.map(|f| f.0)),
            (3, Some(2)),
            "{}",
            e.problem
        );
    }

    #[test]
    fn scanned_values_borrow_the_input_unless_a_doubled_quote_is_undone() {
        let text = b"#a,b,c\n\"plain\",\"say \"\"hi\"\"\",bare\n,,\n";
        let mut scan = RowScanner::new(text, Path::new("t")).unwrap();
        assert_eq!(scan.columns(), ["a", "b", "c"]);
        let row = scan.next_row().unwrap().unwrap();
        assert_eq!(row.line, 2);
        assert_eq!(row.columns, ["a", "b", "c"]);
        assert!(matches!(row.fields[0], Some(Cow::Borrowed("plain"))));
        assert!(matches!(&row.fields[1], Some(Cow::Owned(v)) if v == "say \"hi\""));
        assert!(matches!(row.fields[2], Some(Cow::Borrowed("bare"))));
        let row = scan.next_row().unwrap().unwrap();
        assert_eq!((row.line, row.fields), (3, &[None, None, None][..]));
        assert!(scan.next_row().unwrap().is_none());
    }

    #[test]
    fn disable_values() {
        for v in [None, Some(""), Some("0"), Some("no"), Some("NO")] {
            assert!(!is_disabled(v), "{v:?}");
        }
        for v in [Some("1"), Some("yes"), Some("true"), Some("x")] {
            assert!(is_disabled(v), "{v:?}");
        }
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("litefile.csv");
        std::fs::write(&p, "old").unwrap();
        let t = parse("#a\n\"1\"\n").unwrap();
        t.write_atomic(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "#a\n\"1\"\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
