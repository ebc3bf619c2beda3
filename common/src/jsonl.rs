//! Registry files in JSON lines (the store registry, the supplier catalog): one record a
//! line, blank lines and `#` comments skipped; an error names the file, the line and what
//! is wrong with it, so a bad file stops a start with a message an operator can act on.

use std::io::BufRead;
use std::path::Path;

use serde::de::DeserializeOwned;

/// A registry file is unusable; the message names the file, line and field.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Line { path: String, line: usize, message: String },
}

/// Reads every record of `path` and hands it to `apply` (whose error names the field and
/// the rule). Returns the number of records.
pub fn load<T: DeserializeOwned>(
    path: &Path,
    mut apply: impl FnMut(T) -> Result<(), String>,
) -> Result<usize, FileError> {
    let p = path.display().to_string();
    let io = |source| FileError::Io { path: p.clone(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut n = 0;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |message: String| FileError::Line { path: p.clone(), line: i + 1, message };
        apply(serde_json::from_str(line).map_err(|e| err(e.to_string()))?).map_err(err)?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_load_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("r.jsonl");
        std::fs::write(&path, "# header\n1\n\n2\n\"x\"\n").expect("write");
        let mut got = Vec::new();
        let e = load(&path, |n: i64| {
            got.push(n);
            Ok(())
        })
        .expect_err("line 5 is not a number");
        assert_eq!(got, [1, 2]);
        assert!(
            e.to_string().contains("r.jsonl:5: invalid type: string \"x\", expected i64"),
            "{e}"
        );
        let e = load(&path.with_extension("none"), |_: i64| Ok(())).expect_err("no file");
        assert!(matches!(e, FileError::Io { .. }));
        let n = load(&path, |n: serde_json::Value| if n == 2 { Err("two".into()) } else { Ok(()) });
        assert!(n.expect_err("refused").to_string().ends_with(":4: two"));
    }
}
