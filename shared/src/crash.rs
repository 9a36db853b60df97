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
