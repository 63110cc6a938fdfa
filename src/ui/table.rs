//! `rumor status` (one peer's view as coloured plain text) and `rumor top` (the peer table of
//! several peers, refreshed from their `/status`).

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};

use super::dashboard::{self, DashboardState};
use super::format::{headline, human_bytes, loss};
use super::peer_table::{ansi, pad_state, render_plain, state_code, Mark, PeerRow};
use crate::metrics::http::{fetch_status, HttpError};
use crate::metrics::{EventKind, GossipEvent, PeerStatus, StatusSnapshot};

/// One peer's view as `rumor status` prints it: the peer itself, then each member as it sees
/// them, with the versions of each origin it holds. `color` adds ANSI colours.
pub fn render_status(s: &StatusSnapshot, color: bool) -> String {
    let p = &s.peer;
    let state = if p.paused {
        "paused"
    } else {
        p.lifecycle.as_str()
    };
    let mut out = format!(
        "{} ({}) at {} — {}\n  version {}  applied {}  eval {}  loss {}  peers {}  steps {}  \
         sent {}  received {}  duplicates {}  incarnation {}  up {:.0}s\n\n",
        ansi("1", &p.name, color),
        crate::metrics::short_id(&p.peer_id_text()),
        p.addr_text(),
        ansi(state_code(state), state, color),
        p.version,
        p.applied,
        headline(p),
        loss(p.train_loss),
        p.peers_known,
        p.step,
        human_bytes(p.bytes_sent),
        human_bytes(p.bytes_received),
        p.duplicates_dropped,
        p.incarnation,
        s.uptime_seconds,
    );
    out.push_str(&format!(
        "{:<12} {:<8} {:<21} {:<8} {:<9} {:>5} {:>9} {:>9} {:>9} {:>8}\n",
        "member",
        "id",
        "address",
        "status",
        "lifecycle",
        "inc",
        "heartbeat",
        "published",
        "applied",
        "missing"
    ));
    for m in &s.members {
        let held = s.version_vector.get(&m.peer_id.to_string());
        out.push_str(&format!(
            "{:<12} {:<8} {:<21} {} {} {:>5} {:>9} {:>9} {:>9} {:>8}\n",
            m.name,
            crate::metrics::short_id(&m.peer_id.to_string()),
            m.addr.to_string(),
            pad_state(&m.status, 8, color),
            pad_state(&m.lifecycle, 9, color),
            m.incarnation,
            m.heartbeat,
            m.published,
            held.map_or(0, |h| h.max),
            held.map_or(0, |h| h.missing.len()),
        ));
    }
    out
}

/// `rumor status ADDR`: fetches and prints one peer's view.
///
/// # Errors
/// The peer could not be reached or its answer was not a status.
pub async fn status(addr: &str, timeout: Duration) -> Result<(), HttpError> {
    let s = fetch_status(addr, timeout).await?;
    print!("{}", render_status(&s, std::io::stdout().is_terminal()));
    Ok(())
}

fn row_of(addr: &str, s: Result<&StatusSnapshot, &HttpError>) -> PeerRow {
    match s {
        Ok(s) => PeerRow {
            view: s.peer.clone(),
            mark: if s.peer.paused {
                Mark::Paused
            } else {
                Mark::Running
            },
            history: Vec::new(),
        },
        Err(_) => PeerRow {
            // The mark, not the lifecycle, is what an unreachable peer's row shows.
            view: PeerStatus::new(addr),
            mark: Mark::Failed,
            history: Vec::new(),
        },
    }
}

async fn fetch_all(addrs: &[String], timeout: Duration) -> Vec<Result<StatusSnapshot, HttpError>> {
    let mut out = Vec::with_capacity(addrs.len());
    for a in addrs {
        out.push(fetch_status(a, timeout).await);
    }
    out
}

/// `rumor top ADDR...`: a cluster-wide table refreshed every `every` from the peers' `/status`
/// (q quits). When stdout is not a terminal it prints the table once and returns.
///
/// # Errors
/// The terminal could not be used.
pub async fn top(addrs: &[String], every: Duration, timeout: Duration) -> std::io::Result<()> {
    if !std::io::stdout().is_terminal() {
        let results = fetch_all(addrs, timeout).await;
        let rows: Vec<PeerRow> = addrs
            .iter()
            .zip(&results)
            .map(|(a, r)| row_of(a, r.as_ref()))
            .collect();
        print!("{}", render_plain(&rows, false));
        for (a, r) in addrs.iter().zip(&results) {
            if let Err(e) = r {
                println!("{a}: {}", crate::report::Chain(e));
            }
        }
        return Ok(());
    }
    let mut terminal = ratatui::try_init()?;
    let result = top_loop(&mut terminal, addrs, every, timeout).await;
    ratatui::restore();
    result
}

async fn top_loop(
    terminal: &mut ratatui::DefaultTerminal,
    addrs: &[String],
    every: Duration,
    timeout: Duration,
) -> std::io::Result<()> {
    let started = Instant::now();
    let mut histories: Vec<Vec<f32>> = vec![Vec::new(); addrs.len()];
    let mut state = DashboardState {
        message: "q quit".into(),
        ..DashboardState::default()
    };
    let mut next_fetch = Instant::now();
    loop {
        if Instant::now() >= next_fetch {
            next_fetch = Instant::now() + every;
            let results = fetch_all(addrs, timeout).await;
            let mut events = VecDeque::new();
            state.rows = addrs
                .iter()
                .zip(&results)
                .zip(histories.iter_mut())
                .map(|((a, r), h)| {
                    let mut row = row_of(a, r.as_ref());
                    if let Some(acc) = row.view.test_accuracy {
                        h.push(acc);
                    }
                    row.history = h.clone();
                    if let Err(e) = r {
                        events.push_back(GossipEvent {
                            at: crate::metrics::unix_now(),
                            peer: a.clone(),
                            kind: EventKind::Problem,
                            text: crate::report::Chain(e).to_string(),
                        });
                    }
                    row
                })
                .collect();
            // Membership as each peer sees it, in the events pane.
            for (a, r) in addrs.iter().zip(&results) {
                if let Ok(s) = r {
                    let view: Vec<String> = s
                        .members
                        .iter()
                        .map(|m| format!("{} {}", m.name, m.status))
                        .collect();
                    events.push_back(GossipEvent {
                        at: crate::metrics::unix_now(),
                        peer: s.peer.name.clone(),
                        kind: EventKind::Membership,
                        text: format!("({a}) sees: {}", view.join(", ")),
                    });
                }
            }
            state.events = events;
            state.title = format!(
                "rumor top — {} peers — {:.0}s",
                addrs.len(),
                started.elapsed().as_secs_f64()
            );
            terminal.draw(|f| dashboard::draw(f, &state))?;
        }
        if event::poll(Duration::from_millis(100))? {
            if let TermEvent::Key(key) = event::read()? {
                let ctrl_c =
                    key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
                if key.kind == KeyEventKind::Press
                    && (matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c)
                {
                    return Ok(());
                }
                if key.kind == KeyEventKind::Press {
                    match key.code {
                        KeyCode::Up => state.selected = state.selected.saturating_sub(1),
                        KeyCode::Down => state.selected += 1,
                        _ => {}
                    }
                    terminal.draw(|f| dashboard::draw(f, &state))?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{MemberView, OriginView};

    #[test]
    fn status_lists_every_member_with_its_status() {
        let mut s = StatusSnapshot::default();
        s.peer.name = "peer-0".into();
        s.peer.lifecycle = rumor_proto::wire::Lifecycle::Training;
        let ids: Vec<rumor_proto::PeerId> = (0..3).map(|_| rumor_proto::PeerId::random()).collect();
        for (i, st) in ["alive", "suspect", "dead"].iter().enumerate() {
            s.members.push(MemberView {
                peer_id: ids[i],
                name: format!("peer-{i}"),
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
                status: st.to_string(),
                lifecycle: "training".into(),
                incarnation: 0,
                heartbeat: 5,
                published: 4,
            });
        }
        s.version_vector.insert(
            ids[1].to_string(),
            OriginView {
                contiguous: 2,
                max: 4,
                missing: vec![3],
            },
        );
        let text = render_status(&s, false);
        for needle in ["peer-0", "peer-1", "peer-2", "suspect", "dead", "training"] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        let coloured = render_status(&s, true);
        assert!(coloured.contains("\x1b[33msuspect"));
    }
}
