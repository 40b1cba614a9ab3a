//! What the commands print: their output, what happens when its reader has gone, and how an
//! error that ends a command reads.

use std::io::Write;

use billing_sync_store::StoreError;
use billing_sync_store::sea_orm::sqlx::postgres::PgDatabaseError;
use billing_sync_store::sea_orm::{DbErr, RuntimeErr};

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
///
/// A PostgreSQL error is said in PostgreSQL's words for the user: its message, then its detail
/// and hint when it gives them, without the line of PostgreSQL's own source code that the
/// driver appends (" at line 948").
pub fn error_line(err: &(dyn std::error::Error + 'static)) -> String {
    let postgres = chain(err).find_map(postgres_error);
    let said = |layer: &dyn std::error::Error| {
        let mut message = layer.to_string();
        if let Some(source_line) = postgres.and_then(PgDatabaseError::line) {
            message = message.replace(&format!(" at line {source_line}"), "");
        }
        message
    };
    let mut line = said(err);
    for current in chain(err).skip(1) {
        let message = said(current);
        if !message.is_empty() && !line.contains(&message) {
            line.push_str(": ");
            line.push_str(&message);
        }
    }
    if let Some(postgres) = postgres {
        for (what, text) in [("detail", postgres.detail()), ("hint", postgres.hint())] {
            if let Some(text) = text.filter(|text| !line.contains(text)) {
                line.push_str(&format!(" ({what}: {text})"));
            }
        }
    }
    line
}

/// The PostgreSQL error `layer` stands for, if it is one: the driver's error is not a source of
/// sea-orm's (its message is written into theirs), so it is looked for inside them.
fn postgres_error<'e>(layer: &'e (dyn std::error::Error + 'static)) -> Option<&'e PgDatabaseError> {
    let database = match layer.downcast_ref::<StoreError>() {
        Some(
            StoreError::Database(database)
            | StoreError::Unavailable {
                source: database, ..
            },
        ) => Some(database),
        _ => layer.downcast_ref::<DbErr>(),
    }?;
    let (DbErr::Conn(RuntimeErr::SqlxError(driver))
    | DbErr::Exec(RuntimeErr::SqlxError(driver))
    | DbErr::Query(RuntimeErr::SqlxError(driver))) = database
    else {
        return layer.downcast_ref::<PgDatabaseError>();
    };
    driver
        .as_database_error()?
        .try_downcast_ref::<PgDatabaseError>()
}

/// `err` and its sources, outermost first.
fn chain<'e>(
    err: &'e (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'e (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |layer| layer.source())
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
