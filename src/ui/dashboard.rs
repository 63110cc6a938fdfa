//! The live dashboard of `rumor up`: a ratatui screen with a table of the peers, a per-peer
//! accuracy sparkline and a scrolling pane of recent gossip events, and keys for an operator to
//! pause, kill, restart and add peers or quit gracefully.
//!
//! Rendering ([`draw`]) is a pure function of a [`DashboardState`], so tests draw it into
//! ratatui's `TestBackend`. The controller ([`run`]) is a view and key handler over a
//! [`LocalCluster`], which owns the peers; it polls keys without blocking, and restores the
//! terminal on exit and on panic (ratatui's `try_init` installs a panic hook that does).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table, TableState};
use ratatui::Frame;

use crate::cluster::{LocalCluster, LocalPeer, PeerEnd};
use crate::metrics::{EventKind, GossipEvent};

use super::format::headline;
use super::peer_table::{row_cells, state_text, Mark, PeerRow, COLUMNS, STATE_COLUMN};

/// Most events kept in the pane.
const EVENTS_KEPT: usize = 500;

/// Everything the dashboard shows, independent of the terminal.
#[derive(Clone, Debug, Default)]
pub struct DashboardState {
    /// The title line.
    pub title: String,
    /// One row per peer.
    pub rows: Vec<PeerRow>,
    /// Recent events, oldest first.
    pub events: VecDeque<GossipEvent>,
    /// The selected row.
    pub selected: usize,
    /// A one-line message from the last operator action.
    pub message: String,
}

/// The state's display text and colour.
pub fn state_style(row: &PeerRow) -> (String, Color) {
    let color = match row.mark {
        Mark::Paused => Color::Magenta,
        Mark::Killed => Color::Red,
        Mark::Failed => Color::LightRed,
        Mark::Done | Mark::Running => lifecycle_color(row.view.lifecycle.as_str()),
    };
    (state_text(row), color)
}

/// Colour of a lifecycle state or member status.
pub fn lifecycle_color(state: &str) -> Color {
    match state {
        "starting" => Color::Gray,
        "joining" => Color::Yellow,
        "training" | "alive" => Color::Green,
        "draining" => Color::Cyan,
        "stopped" | "left" => Color::Blue,
        "suspect" => Color::Yellow,
        "dead" => Color::Red,
        _ => Color::White,
    }
}

fn event_color(kind: EventKind) -> Color {
    match kind {
        EventKind::Membership => Color::Green,
        EventKind::Failure => Color::Red,
        EventKind::Delta => Color::Gray,
        EventKind::Gossip => Color::Cyan,
        EventKind::Problem => Color::LightRed,
        EventKind::Operator => Color::Magenta,
    }
}

/// Draws the dashboard into `frame`.
pub fn draw(frame: &mut Frame, state: &DashboardState) {
    let area = frame.area();
    let table_height = (state.rows.len() as u16 + 3).min(area.height / 2 + 1);
    let chunks = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Length(table_height),
            Constraint::Min(4),
            Constraint::Length(1),
        ])
        .split(area);
    frame.render_widget(
        Paragraph::new(Line::from(Span::styled(
            state.title.clone(),
            Style::default().add_modifier(Modifier::BOLD),
        ))),
        chunks[0],
    );
    draw_table(frame, state, chunks[1]);
    let middle = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(40), Constraint::Percentage(60)])
        .split(chunks[2]);
    draw_sparklines(frame, state, middle[0]);
    draw_events(frame, state, middle[1]);
    let help = if state.message.is_empty() {
        "↑/↓ select  p pause/resume  k kill  r restart  a add peer  q quit (peers leave and save)"
            .to_string()
    } else {
        state.message.clone()
    };
    frame.render_widget(
        Paragraph::new(help).style(Style::default().fg(Color::DarkGray)),
        chunks[3],
    );
}

fn draw_table(frame: &mut Frame, state: &DashboardState, area: Rect) {
    let header = Row::new(COLUMNS.iter().map(|c| Cell::from(*c)))
        .style(Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let rows = state.rows.iter().map(|r| {
        let (_, color) = state_style(r);
        let cells = row_cells(r).into_iter().enumerate().map(|(i, text)| {
            if i == STATE_COLUMN {
                Cell::from(text).style(Style::default().fg(color))
            } else {
                Cell::from(text)
            }
        });
        Row::new(cells)
    });
    let widths = [
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(21),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(6),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::default().borders(Borders::ALL).title(" peers "))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("▶ ");
    let mut ts = TableState::default();
    if !state.rows.is_empty() {
        ts.select(Some(state.selected.min(state.rows.len() - 1)));
    }
    frame.render_stateful_widget(table, area, &mut ts);
}

/// The lower end of the sparklines' scale: the lowest accuracy of the last minute, rounded down
/// to 10%, so that differences between peers at 85% and 87% stay visible.
pub fn sparkline_floor(rows: &[PeerRow]) -> f32 {
    let min = rows
        .iter()
        .flat_map(|r| r.history.iter().rev().take(60).copied())
        .filter(|a| a.is_finite())
        .fold(1.0f32, f32::min);
    ((min * 10.0).floor() / 10.0).clamp(0.0, 0.9)
}

/// The sparklines' metric and scale: test accuracy from [`sparkline_floor`] to 100%, or
/// another headline metric (a loss) between its lowest and highest value of the last minute.
fn sparkline_scale(rows: &[PeerRow]) -> (String, f32, f32) {
    let name = rows
        .iter()
        .find_map(|r| r.view.metrics.as_ref().and_then(|m| m.primary()))
        .map_or("accuracy", |(name, _)| name)
        .to_string();
    if name == "accuracy" {
        let floor = sparkline_floor(rows);
        let title = format!("test accuracy over time ({:.0}–100%)", floor * 100.0);
        return (title, floor, 1.0);
    }
    let recent = rows
        .iter()
        .flat_map(|r| r.history.iter().rev().take(60).copied())
        .filter(|v| v.is_finite());
    let (lo, hi) = recent.fold((f32::MAX, f32::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo <= hi {
        (lo, hi.max(lo + 1e-3))
    } else {
        (0.0, 1.0)
    };
    (format!("{name} over time ({lo:.3}–{hi:.3})"), lo, hi)
}

fn draw_sparklines(frame: &mut Frame, state: &DashboardState, area: Rect) {
    let (title, floor, top) = sparkline_scale(&state.rows);
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" {title} "));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let per = state.rows.len().max(1) as u16;
    let h = (inner.height / per).clamp(1, 3);
    for (i, row) in state.rows.iter().enumerate() {
        let y = inner.y + i as u16 * h;
        if y + h > inner.y + inner.height {
            break;
        }
        let line = Rect::new(inner.x, y, inner.width, h);
        let parts = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Length(18), Constraint::Min(1)])
            .split(line);
        let (_, color) = state_style(row);
        frame.render_widget(
            Paragraph::new(format!("{:<9} {:>7}", row.view.name, headline(&row.view)))
                .style(Style::default().fg(color)),
            parts[0],
        );
        let width = parts[1].width as usize;
        let data: Vec<u64> = row
            .history
            .iter()
            .skip(row.history.len().saturating_sub(width))
            .map(|a| ((a.clamp(floor, top) - floor) / (top - floor) * 1000.0) as u64)
            .collect();
        frame.render_widget(
            Sparkline::default()
                .data(&data)
                .max(1000)
                .style(Style::default().fg(color)),
            parts[1],
        );
    }
}

fn draw_events(frame: &mut Frame, state: &DashboardState, area: Rect) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" recent gossip events ");
    let inner = block.inner(area);
    let shown = inner.height as usize;
    let start = state.events.len().saturating_sub(shown);
    let lines: Vec<Line> = state
        .events
        .iter()
        .skip(start)
        .map(|e| {
            Line::from(vec![
                Span::styled(format!("{:<9} ", e.peer), Style::default().fg(Color::White)),
                Span::styled(e.text.clone(), Style::default().fg(event_color(e.kind))),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

/// Log lines captured while the dashboard owns the terminal (shown in the events pane).
static CAPTURED_LOGS: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
static CAPTURING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A log writer for `tracing_subscriber`: stderr, except while the dashboard is on screen, when
/// each line goes to the dashboard's events pane instead of garbling the screen.
pub struct LogWriter {
    buf: Option<Vec<u8>>,
}

impl LogWriter {
    /// A writer for one log record.
    pub fn make() -> Self {
        let capture = CAPTURING.load(std::sync::atomic::Ordering::SeqCst);
        Self {
            buf: capture.then(Vec::new),
        }
    }
}

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match &mut self.buf {
            Some(b) => {
                b.extend_from_slice(bytes);
                Ok(bytes.len())
            }
            None => std::io::stderr().write(bytes),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.buf {
            Some(_) => Ok(()),
            None => std::io::stderr().flush(),
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            let text = strip_ansi(String::from_utf8_lossy(&b).trim_end());
            if !text.is_empty() {
                let mut q = crate::node::lock(&CAPTURED_LOGS);
                while q.len() >= EVENTS_KEPT {
                    q.pop_front();
                }
                q.push_back(text);
            }
        }
    }
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The mark of a supervised peer's row.
fn mark(peer: &LocalPeer) -> Mark {
    match (&peer.end, peer.handle()) {
        (PeerEnd::Killed, _) => Mark::Killed,
        (PeerEnd::Done(r), _) if r.is_ok() => Mark::Done,
        (PeerEnd::Done(_), _) => Mark::Failed,
        (PeerEnd::Running, Some(_)) if peer.is_paused() => Mark::Paused,
        (PeerEnd::Running, _) => Mark::Running,
    }
}

/// Shows `cluster` and lets an operator drive it until every peer has ended; returns the
/// cluster (outcomes inside). When the terminal cannot be put in raw mode it waits for the
/// peers without a screen.
///
/// # Errors
/// The terminal failed while drawing or reading keys.
pub async fn run(mut cluster: LocalCluster, started: Instant) -> std::io::Result<LocalCluster> {
    let mut terminal = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            // No usable terminal after all: run to the end without a screen.
            tracing::warn!("cannot open the dashboard ({e}); running without it");
            ratatui::restore();
            cluster.wait_all().await;
            return Ok(cluster);
        }
    };
    CAPTURING.store(true, std::sync::atomic::Ordering::SeqCst);
    let result = event_loop(&mut terminal, &mut cluster, started).await;
    CAPTURING.store(false, std::sync::atomic::Ordering::SeqCst);
    ratatui::restore();
    result.map(|()| cluster)
}

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    cluster: &mut LocalCluster,
    started: Instant,
) -> std::io::Result<()> {
    let mut state = DashboardState::default();
    let mut quitting = false;
    let mut last_sample = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        // Collect what peers said.
        let sample = last_sample.elapsed() >= Duration::from_secs(1);
        if sample {
            last_sample = Instant::now();
        }
        let (events, failures) = cluster.poll(sample).await;
        for e in events {
            push_event(&mut state.events, e);
        }
        for (name, e) in failures {
            state.message = format!("{name} failed: {e}");
        }
        for line in crate::node::lock(&CAPTURED_LOGS).drain(..) {
            push_event(
                &mut state.events,
                GossipEvent {
                    at: crate::metrics::unix_now(),
                    peer: "log".into(),
                    kind: EventKind::Problem,
                    text: line,
                },
            );
        }
        if cluster.all_ended() {
            return Ok(());
        }
        // Keys.
        while event::poll(Duration::ZERO)? {
            let TermEvent::Key(key) = event::read()? else {
                continue;
            };
            if key.kind != KeyEventKind::Press {
                continue;
            }
            let count = cluster.peers().len();
            let sel = state.selected.min(count.saturating_sub(1));
            let name = cluster
                .peers()
                .get(sel)
                .map(|p| p.name().to_string())
                .unwrap_or_default();
            match key.code {
                KeyCode::Char('q') | KeyCode::Esc => quitting = true,
                KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    quitting = true
                }
                KeyCode::Up => state.selected = sel.saturating_sub(1),
                KeyCode::Down => state.selected = (sel + 1).min(count.saturating_sub(1)),
                KeyCode::Char('p') => {
                    if let Some(now) = cluster.toggle_pause(sel) {
                        state.message =
                            format!("{name} {}", if now { "paused" } else { "resumed" });
                    }
                }
                KeyCode::Char('k') if cluster.kill(sel) => {
                    operator(&mut state, &name, "killed (no leave)");
                }
                KeyCode::Char('r') if !quitting => match cluster.restart(sel) {
                    Ok(how) => operator(&mut state, &name, how.describe()),
                    Err(_) => state.message = "r restarts a killed peer".into(),
                },
                KeyCode::Char('a') if !quitting => match cluster.add_peer() {
                    Ok(added) => operator(&mut state, &added, "added"),
                    Err(e @ crate::cluster::AddPeerError::NoLivePeer) => {
                        state.message = e.to_string()
                    }
                    Err(e) => state.message = format!("cannot add a peer: {e}"),
                },
                _ => {}
            }
        }
        if quitting {
            cluster.request_stop_all();
            state.message = "quitting: peers leave gracefully and save…".into();
        }
        state.rows = cluster
            .peers()
            .iter()
            .map(|p| PeerRow {
                view: p.last.clone(),
                mark: mark(p),
                history: p.history.clone(),
            })
            .collect();
        state.title = format!(
            "rumor up — {} peers — {:.0}s",
            cluster.peers().len(),
            started.elapsed().as_secs_f64()
        );
        terminal.draw(|f| draw(f, &state))?;
    }
}

fn operator(state: &mut DashboardState, peer: &str, text: &str) {
    state.message = format!("{peer} {text}");
    push_event(
        &mut state.events,
        GossipEvent {
            at: crate::metrics::unix_now(),
            peer: peer.to_string(),
            kind: EventKind::Operator,
            text: text.to_string(),
        },
    );
}

fn push_event(events: &mut VecDeque<GossipEvent>, e: GossipEvent) {
    while events.len() >= EVENTS_KEPT {
        events.pop_front();
    }
    events.push_back(e);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::PeerStatus;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use rumor_proto::wire::Lifecycle;

    fn row(
        name: &str,
        lifecycle: Lifecycle,
        version: u64,
        acc: Option<f32>,
        mark: Mark,
    ) -> PeerRow {
        PeerRow {
            view: PeerStatus {
                name: name.into(),
                peer_id: "0193aabb-ccdd-4eff-8000-000000000000".parse().unwrap(),
                addr: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 7000))),
                lifecycle,
                version,
                applied: version * 3,
                test_accuracy: acc,
                train_loss: Some(0.5),
                peers_known: 3,
                ..PeerStatus::default()
            },
            mark,
            history: vec![0.1, 0.5, 0.8],
        }
    }

    fn line_of(buffer: &ratatui::buffer::Buffer, needle: &str) -> (u16, String) {
        let area = buffer.area;
        for y in 0..area.height {
            let text: String = (0..area.width)
                .map(|x| buffer[(x, y)].symbol().to_string())
                .collect();
            if text.contains(needle) && text.contains("127.0.0.1") {
                return (y, text);
            }
        }
        panic!("no table row with {needle}");
    }

    #[test]
    fn log_lines_lose_their_colours_in_the_pane() {
        assert_eq!(
            strip_ansi("\x1b[32m INFO\x1b[0m peer{peer=a}"),
            " INFO peer{peer=a}"
        );
    }

    #[test]
    fn the_table_shows_each_peers_state_version_and_accuracy_in_colour() {
        let state = DashboardState {
            title: "rumor up — 3 peers".into(),
            rows: vec![
                row(
                    "peer-0",
                    Lifecycle::Training,
                    7,
                    Some(0.8125),
                    Mark::Running,
                ),
                row("peer-1", Lifecycle::Draining, 12, Some(0.5), Mark::Running),
                row("peer-2", Lifecycle::Training, 3, None, Mark::Killed),
            ],
            events: VecDeque::from(vec![GossipEvent {
                at: 0.0,
                peer: "peer-1".into(),
                kind: EventKind::Delta,
                text: "delta from peer-0 v7 applied".into(),
            }]),
            selected: 1,
            message: String::new(),
        };
        let mut terminal = Terminal::new(TestBackend::new(160, 30)).unwrap();
        terminal.draw(|f| draw(f, &state)).unwrap();
        let buffer = terminal.backend().buffer().clone();

        let (y0, l0) = line_of(&buffer, "peer-0");
        let cells: Vec<&str> = l0.split_whitespace().collect();
        assert!(cells.contains(&"training"), "{l0}");
        assert!(cells.contains(&"7"), "{l0}");
        assert!(cells.contains(&"81.25%"), "{l0}");
        let (_, l1) = line_of(&buffer, "peer-1");
        assert!(
            l1.contains("draining") && l1.contains(" 12 ") && l1.contains("50.00%"),
            "{l1}"
        );
        let (y2, l2) = line_of(&buffer, "peer-2");
        assert!(l2.contains("killed") && l2.contains(" - "), "{l2}");

        // The state cell is coloured by state.
        let col =
            |line: &str, needle: &str| line[..line.find(needle).unwrap()].chars().count() as u16;
        let x0 = col(&l0, "training");
        assert_eq!(buffer[(x0, y0)].fg, Color::Green);
        let x2 = col(&l2, "killed");
        assert_eq!(buffer[(x2, y2)].fg, Color::Red);

        let all: String = buffer.content().iter().map(|c| c.symbol()).collect();
        assert!(all.contains("delta from peer-0 v7 applied"));
        assert!(all.contains("test accuracy over time (10–100%)"));
    }
}
