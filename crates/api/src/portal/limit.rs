//! How many billing sessions one user may create: each portal (or checkout) session is a Stripe
//! API call, and one token in a loop must not spend the whole account's Stripe rate limit (100
//! calls per second in live mode by default) and get everyone else's calls refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window the limit counts over.
const WINDOW: Duration = Duration::from_secs(60);

/// Past this many users tracked, expired windows are dropped before another is added, so the
/// table stays as small as the set of users active within a minute.
const PRUNE_ABOVE: usize = 10_000;

/// At most `per_window` sessions per user in each minute (a fixed window per user).
#[derive(Debug)]
pub struct SessionLimit {
    per_window: u32,
    users: Mutex<HashMap<String, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    used: u32,
}

impl SessionLimit {
    /// `per_minute` sessions per user per minute.
    pub fn per_minute(per_minute: u32) -> Self {
        SessionLimit {
            per_window: per_minute,
            users: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one session for `user` at `now`, or says how long until the user may have one.
    pub fn take(&self, user: &str, now: Instant) -> Result<(), Duration> {
        let mut users = self
            .users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if users.len() > PRUNE_ABOVE {
            users.retain(|_, window| now.duration_since(window.started) < WINDOW);
        }
        let window = users.entry(user.to_owned()).or_insert(Window {
            started: now,
            used: 0,
        });
        if now.duration_since(window.started) >= WINDOW {
            *window = Window {
                started: now,
                used: 0,
            };
        }
        if window.used >= self.per_window {
            return Err(WINDOW.saturating_sub(now.duration_since(window.started)));
        }
        window.used += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_gets_the_limit_per_minute_and_others_are_not_affected() {
        let limit = SessionLimit::per_minute(2);
        let t0 = Instant::now();
        assert!(limit.take("user_a", t0).is_ok());
        assert!(limit.take("user_a", t0 + Duration::from_secs(1)).is_ok());
        let wait = limit
            .take("user_a", t0 + Duration::from_secs(20))
            .expect_err("the third within a minute is refused");
        assert_eq!(wait, Duration::from_secs(40));
        assert!(limit.take("user_b", t0 + Duration::from_secs(20)).is_ok());
        assert!(limit.take("user_a", t0 + WINDOW).is_ok(), "a new minute");
    }
}
