//! The open-files limit: every connection is a file descriptor, and a process at its limit cannot accept
//! (`Too many open files`) — not even the next `/health` probe. The soft limit is raised to the hard one at
//! start-up, and the connection limit is kept under it with room for everything else the process opens.

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit in force afterwards (`None`
/// where it cannot be read).
pub fn raise_to_hard() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    Some(limit.rlim_cur)
}

/// Descriptors kept free for what is not a client connection (model files, the runtime, logs, remote
/// policies' connections, refusals being written): an eighth of the limit, at least 64.
pub fn reserve(limit: u64) -> u64 {
    (limit / 8).max(64)
}

/// The connection limit actually used: the configured one, or less where the open-files limit would not
/// leave [`reserve`] descriptors free (at least 1).
pub fn clamp(configured: usize, limit: Option<u64>) -> usize {
    match limit {
        Some(limit) => {
            let room = limit.saturating_sub(reserve(limit)).max(1);
            configured.min(usize::try_from(room).unwrap_or(usize::MAX))
        }
        None => configured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_leaves_room_under_the_file_limit() {
        assert_eq!(clamp(1024, Some(1024)), 896);
        assert_eq!(clamp(1024, Some(1 << 20)), 1024);
        assert_eq!(clamp(100, Some(1024)), 100);
        assert_eq!(clamp(1024, Some(64)), 1);
        assert_eq!(clamp(1024, None), 1024);
        assert!(raise_to_hard().is_some_and(|l| l > 0));
    }
}
