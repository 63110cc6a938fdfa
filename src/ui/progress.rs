//! Progress bars (indicatif) for long runs such as `--mode centralized` training: rate and ETA
//! on a terminal, nothing at all when stdout is not one (scripts and CI keep plain lines).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar over `total` steps, hidden unless stdout is a terminal and `enabled`.
pub fn bar(total: u64, what: &str, enabled: bool) -> ProgressBar {
    let pb = ProgressBar::new(total);
    if !(enabled && std::io::stdout().is_terminal()) {
        pb.set_draw_target(ProgressDrawTarget::hidden());
        return pb;
    }
    let style = ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} steps  {per_sec}  ETA {eta}  {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_prefix(what.to_string());
    pb
}

/// Whether progress bars would be drawn (stdout is a terminal).
pub fn drawn(enabled: bool) -> bool {
    enabled && std::io::stdout().is_terminal()
}
