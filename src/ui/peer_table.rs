//! The one peer table: the rows and cells that the dashboard of `rumor up`, `rumor top` and the
//! plain progress lines of `rumor up --no-tui` all show, so a column means the same everywhere.

use std::time::Duration;

use crate::metrics::PeerStatus;

use super::format::{headline, human_bytes, loss, seconds_ago};

/// How a peer's row is shown beyond its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// Running normally: show the lifecycle.
    Running,
    /// Paused by the operator.
    Paused,
    /// Killed by the operator (r restarts it).
    Killed,
    /// Ended with an error, or unreachable.
    Failed,
    /// Finished and saved.
    Done,
}

/// One row of a peer table: what the peer last reported, how it is marked, and its accuracy
/// over time (for the dashboard's sparklines).
#[derive(Clone, Debug)]
pub struct PeerRow {
    /// What the peer last reported.
    pub view: PeerStatus,
    /// Operator state.
    pub mark: Mark,
    /// Samples over time of the workload's headline metric (test accuracy, validation loss).
    pub history: Vec<f32>,
}

/// The column titles of the peer table.
pub const COLUMNS: [&str; 13] = [
    "peer", "id", "address", "state", "version", "applied", "eval", "loss", "peers", "heard",
    "sent", "received", "dups",
];

/// The index of the state column in [`COLUMNS`].
pub const STATE_COLUMN: usize = 3;

/// The state shown for a row: the mark when the operator set one, else the lifecycle.
pub fn state_text(row: &PeerRow) -> String {
    match row.mark {
        Mark::Paused => "paused".into(),
        Mark::Killed => "killed".into(),
        Mark::Failed => "failed".into(),
        Mark::Done | Mark::Running => row.view.lifecycle.as_str().to_string(),
    }
}

/// The cells of one peer's row, in [`COLUMNS`] order.
pub fn row_cells(row: &PeerRow) -> Vec<String> {
    let v = &row.view;
    vec![
        v.name.clone(),
        crate::metrics::short_id(&v.peer_id_text()),
        v.addr_text(),
        state_text(row),
        v.version.to_string(),
        v.applied.to_string(),
        headline(v),
        loss(v.train_loss),
        v.peers_known.to_string(),
        seconds_ago(v.last_heard_seconds),
        human_bytes(v.bytes_sent),
        human_bytes(v.bytes_received),
        v.duplicates_dropped.to_string(),
    ]
}

/// The peer table as plain text (`rumor top` without a terminal); `color` paints the state
/// with ANSI colours.
pub fn render_plain(rows: &[PeerRow], color: bool) -> String {
    let mut out = String::new();
    let cols = COLUMNS;
    out.push_str(&format!(
        "{:<12} {:<8} {:<21} {:<11} {:>7} {:>7} {:>8} {:>7} {:>5} {:>6} {:>10} {:>10} {:>6}\n",
        cols[0],
        cols[1],
        cols[2],
        cols[3],
        cols[4],
        cols[5],
        cols[6],
        cols[7],
        cols[8],
        cols[9],
        cols[10],
        cols[11],
        cols[12]
    ));
    for r in rows {
        let c = row_cells(r);
        out.push_str(&format!(
            "{:<12} {:<8} {:<21} {} {:>7} {:>7} {:>8} {:>7} {:>5} {:>6} {:>10} {:>10} {:>6}\n",
            c[0],
            c[1],
            c[2],
            pad_state(&c[3], 11, color),
            c[4],
            c[5],
            c[6],
            c[7],
            c[8],
            c[9],
            c[10],
            c[11],
            c[12]
        ));
    }
    out
}

/// One peer as a progress line of `rumor up` without a terminal, `elapsed` since the start.
pub fn plain_line(v: &PeerStatus, elapsed: Duration) -> String {
    format!(
        "[{:>6.1}s] {} {} version {} applied {} step {} eval {} peers {} sent {} received {}",
        elapsed.as_secs_f64(),
        v.name,
        v.lifecycle.as_str(),
        v.version,
        v.applied,
        v.step,
        headline(v),
        v.peers_known,
        human_bytes(v.bytes_sent),
        human_bytes(v.bytes_received)
    )
}

/// Wraps `text` in an ANSI colour when `color`.
pub fn ansi(code: &str, text: &str, color: bool) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// The ANSI colour code of a lifecycle state, member status or mark.
pub fn state_code(state: &str) -> &'static str {
    match state {
        "joining" | "suspect" => "33",
        "training" | "alive" => "32",
        "draining" => "36",
        "stopped" | "left" => "34",
        "dead" | "unreachable" => "31",
        "paused" => "35",
        _ => "37",
    }
}

/// `state` left-aligned in `width` columns, coloured when `color`.
pub fn pad_state(state: &str, width: usize, color: bool) -> String {
    ansi(state_code(state), &format!("{state:<width$}"), color)
}
