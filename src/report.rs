//! Saying an error once.
//!
//! Errors in this crate follow one convention: an error caused by another returns it from
//! [`source`](std::error::Error::source) and does not repeat its text in its own message. So the
//! chain of messages, read from the top, says each thing exactly once, and this module is the
//! one place that walks it: [`write_report`] for the binary (one line per cause) and [`Chain`]
//! for log lines (the causes joined by `: `).

use std::error::Error;
use std::fmt;

/// The messages of `error` and of each of its causes in turn, outermost first.
pub fn messages(error: &(dyn Error + 'static)) -> Vec<String> {
    let mut out = vec![error.to_string()];
    let mut cause = error.source();
    while let Some(e) = cause {
        out.push(e.to_string());
        cause = e.source();
    }
    out
}

/// Writes `error: MESSAGE` and one `  caused by: MESSAGE` line per cause, as the binary prints a
/// failed command.
///
/// # Errors
/// Whatever writing to `out` returns.
pub fn write_report(
    out: &mut impl std::io::Write,
    error: &(dyn Error + 'static),
) -> std::io::Result<()> {
    let messages = messages(error);
    let mut lines = messages.iter();
    if let Some(first) = lines.next() {
        writeln!(out, "error: {first}")?;
    }
    for cause in lines {
        writeln!(out, "  caused by: {cause}")?;
    }
    Ok(())
}

/// An error and its causes on one line, joined by `: `, for log lines and for errors folded into
/// a message: `tracing::warn!("checkpoint failed: {}", Chain(&e))`.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot load the checkpoint")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_report_gives_each_cause_on_its_own_line() -> Result<(), Box<dyn Error>> {
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file",
        ));
        let mut out = Vec::new();
        write_report(&mut out, &e)?;
        assert_eq!(
            String::from_utf8(out)?,
            "error: cannot load the checkpoint\n  caused by: no such file\n"
        );
        assert_eq!(
            Chain(&e).to_string(),
            "cannot load the checkpoint: no such file"
        );
        Ok(())
    }
}
