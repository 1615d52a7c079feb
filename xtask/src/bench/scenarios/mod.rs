//! The phases of a run, each the operator under one kind of load on the shared local cluster:
//! `scale` applies N AtlasMigrations and waits until all are Ready, `steady` leaves it idle with
//! all of them Ready, `storm` edits many ConfigMaps at once, `restart` starts a new operator with
//! all of them present. Request counts and times come from the audit log; the start's times come
//! from the new operator's own log, which says when it reconciled what.

mod restart;
mod scale;
mod steady;
mod storm;

use std::time::Duration;

pub use restart::{StartFigures, restart};
pub use scale::{ScaleFigures, scale};
pub use steady::{SteadyFigures, steady};
pub use storm::{StormFigures, storm};

/// Writes of a finished apply (the last event, the Job's final status) still land for a moment
/// after the resource turns Ready.
const SETTLE: Duration = Duration::from_secs(3);
