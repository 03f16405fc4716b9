//! The one trait every output format implements.

use crate::model::Summary;
use std::io::Write;

/// Writes a [`Summary`] in one output format.
pub trait Exporter {
    /// Render `summary` into `out`. Implementations must not panic on any data.
    fn write(&self, summary: &Summary, out: &mut dyn Write) -> anyhow::Result<()>;
}
