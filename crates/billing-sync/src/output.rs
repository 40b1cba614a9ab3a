//! What the commands print: their output, what happens when its reader has gone, and how an
//! error that ends a command reads.

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

/// `err` and its causes as one line, `outer: cause: cause`, each cause said once: a cause whose
/// message the line already holds is left out. Many errors (sea-orm's and sqlx's among them)
/// both repeat their source in their own message and return it as their source, so a plain
/// `{:#}` printed "pool timed out …: pool timed out …".
pub fn error_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(current) = cause {
        let message = current.to_string();
        if !message.is_empty() && !line.contains(&message) {
            line.push_str(": ");
            line.push_str(&message);
        }
        cause = current.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::error_line;

    /// An error with a message and an optional source.
    #[derive(Debug)]
    struct Layer(String, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|layer| layer as _)
        }
    }

    fn layers(messages: &[&str]) -> Layer {
        messages
            .iter()
            .rev()
            .fold(None, |inner: Option<Layer>, message| {
                Some(Layer((*message).to_owned(), inner.map(Box::new)))
            })
            .expect("one layer at least")
    }

    #[test]
    fn each_cause_is_said_once() {
        let repeated = layers(&[
            "database at postgres://127.0.0.1:1/x is unavailable",
            "Connection Error: pool timed out while waiting for an open connection",
            "pool timed out while waiting for an open connection",
        ]);
        assert_eq!(
            error_line(&repeated),
            "database at postgres://127.0.0.1:1/x is unavailable: Connection Error: pool timed out \
             while waiting for an open connection"
        );
        let distinct = layers(&[
            "listing from Stripe failed",
            "Stripe did not answer",
            "timeout",
        ]);
        assert_eq!(
            error_line(&distinct),
            "listing from Stripe failed: Stripe did not answer: timeout"
        );
    }
}
