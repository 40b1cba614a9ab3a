//! How a backfill shows its progress: a bar on a terminal, one plain line per page otherwise
//! (for logs and CI), both on standard error so that standard output holds only the summary.

use std::io::IsTerminal;

use billing_sync_store::backfill::Tally;
use indicatif::{ProgressBar, ProgressStyle};

/// Progress of one resource's listing.
pub enum Progress {
    /// A bar (a spinner while the total is unknown).
    Bar(ProgressBar),
    /// A line per page.
    Lines {
        /// `stripe/customers`, …
        resource: String,
    },
}

impl Progress {
    /// A bar when standard error is a terminal, plain lines otherwise.
    pub fn start(resource: &str, resumed: &Tally) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress::Lines {
                resource: resource.to_owned(),
            };
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix:24} {pos:>7}/{len:7} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(resource.to_owned());
        bar.set_position(resumed.seen);
        Progress::Bar(bar)
    }

    /// Reports the counts after a page; `total` is the size of the whole list when known.
    pub fn page(&self, tally: &Tally, total: Option<u64>) {
        match self {
            Progress::Bar(bar) => {
                if let Some(total) = total {
                    bar.set_length(total);
                }
                bar.set_position(tally.seen);
                bar.set_message(counts(tally));
            }
            Progress::Lines { resource } => {
                let of_total = total.map(|t| format!(" of {t}")).unwrap_or_default();
                eprintln!(
                    "{resource}: {}{of_total} listed, {}",
                    tally.seen,
                    counts(tally)
                );
            }
        }
    }

    /// Ends the bar, leaving its last state on screen.
    pub fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish();
        }
    }
}

fn counts(tally: &Tally) -> String {
    format!(
        "created {}, updated {}, unchanged {}, failed {}",
        tally.created, tally.updated, tally.unchanged, tally.failed
    )
}
