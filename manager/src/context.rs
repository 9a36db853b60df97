/*!
What the daemon's loop and its request tasks share. [`crate::daemon::run`] makes one
[`DaemonContext`] and passes clones down: nothing of it lives in a global, so each test
and each command makes its own.
*/

use crate::alert::Alerts;
use crate::config::ManagerConfig;
use crate::cutter::CutterHandle;
use crate::rejected::RejectedDir;
use std::sync::Arc;

/// The configuration and the daemon-owned state its parts share; clones share it all.
#[derive(Debug, Clone)]
pub struct DaemonContext {
    /// The validated configuration.
    pub cfg: Arc<ManagerConfig>,
    /// The site-list lock and the cutter's wake-up (a promotion takes the one and
    /// sends the other).
    pub cutter: CutterHandle,
    /// The alerts raised, each source's within its hourly share.
    pub alerts: Alerts,
    /// Where refused files are moved.
    pub rejected: RejectedDir,
}
