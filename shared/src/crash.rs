//! A test hook for the crash windows of the protocol: with `<VAR>=<point>` in the
//! environment, the process dies at that point as a `kill -9` would (no cleanup, no
//! destructors), so a test can stop it exactly between two steps.

/// Dies here if the environment variable `var` names `point`.
pub fn point(var: &str, point: &str) {
    if std::env::var(var).is_ok_and(|p| p == point) {
        eprintln!("crashing at {point} ({var})");
        std::process::abort();
    }
}

/// Dies here if `var` names `<point>:<n>`: the n-th time through a step repeated in a
/// loop (counted from 1 by the caller).
pub fn nth_point(var: &str, point: &str, n: usize) {
    if let Ok(p) = std::env::var(var) {
        if p.split_once(':')
            .is_some_and(|(name, at)| name == point && at.parse() == Ok(n))
        {
            eprintln!("crashing at {p} ({var})");
            std::process::abort();
        }
    }
}
