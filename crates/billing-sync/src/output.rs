//! What the commands print on standard output, and what happens when its reader has gone.

use std::io::Write;

/// Writes one line of `args` to standard output. When the reader has gone
/// (`billing-sync openapi | head`), the process ends quietly with status 0, as a Unix tool killed
/// by `SIGPIPE` would, where `println!` panics; any other write error ends it with status 1 and
/// one line on standard error.
pub(crate) fn line(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = writeln!(stdout, "{args}").and_then(|()| stdout.flush()) {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("billing-sync: cannot write to standard output: {err}");
        std::process::exit(1);
    }
}

/// `println!` through [`line`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
pub(crate) use out;
