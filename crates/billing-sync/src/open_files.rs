//! The open-files limit: every connection is a file descriptor, and a process at its limit
//! cannot accept, nor open a database connection or a log file. Debian's default soft limit
//! (1,024) is far below the default `MAX_CONNECTIONS`; the hard limit (systemd's default
//! 524,288) is what a process may raise it to without privilege.

use std::io;

/// Descriptors kept for everything but client connections: the database pool (32), outgoing
/// HTTP to Stripe and Clerk, the listener, the standard streams, the runtime's own.
pub const RESERVED: u64 = 128;

/// Raises the soft open-files limit to the hard limit; returns the soft limit in force.
pub fn raise_to_hard_limit() -> io::Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let (Some(soft), hard) = (limit.current, limit.maximum) else {
        return Ok(u64::MAX);
    };
    if hard.is_none_or(|hard| soft < hard) {
        let raised = Rlimit {
            current: hard,
            maximum: hard,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return Ok(hard.unwrap_or(u64::MAX));
        }
    }
    Ok(soft)
}

/// How many connections fit in `limit` descriptors beside the [`RESERVED`] ones: `wanted`, or
/// fewer; `None` when none would.
pub fn connections_within(wanted: usize, limit: u64) -> Option<usize> {
    let room = limit.checked_sub(RESERVED).filter(|room| *room > 0)?;
    Some(wanted.min(usize::try_from(room).unwrap_or(usize::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_beside_the_reserved_descriptors() {
        assert_eq!(connections_within(10_000, 1_024), Some(896));
        assert_eq!(connections_within(200, 1_024), Some(200));
        assert_eq!(connections_within(10_000, 524_288), Some(10_000));
        assert_eq!(connections_within(10, RESERVED), None);
    }
}
