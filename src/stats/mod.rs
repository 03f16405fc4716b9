//! Pure statistics: confidence intervals, knee detection, latency histograms. No I/O, no clock.

pub mod ci;
pub mod fit;
pub mod knee;
pub mod latency;
pub mod level;
pub mod prefix;
pub mod server;
