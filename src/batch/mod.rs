//! Batch input and output: streaming readers for the supported input formats,
//! an OpenAI-Batch-compatible result writer, and resume support.
//!
//! The pieces fit together as follows:
//! 1. [`validate`] streams the input once to count items and collect issues.
//! 2. [`Reader::open`] streams it again, yielding [`Item`]s; the caller turns
//!    [`Payload::Prompt`] into a request body for the chosen [`Api`].
//! 3. With `--resume`, [`read_done`] tells which `custom_id`s already
//!    succeeded and [`OutputWriter::resume`] appends after them; otherwise
//!    [`OutputWriter::create`] refuses to overwrite an existing output.

mod checks;
pub mod compress;
mod csv_input;
pub mod detect;
pub mod dupes;
pub mod fast;
mod format;
pub mod idsort;
mod lines;
pub mod merge;
mod reader;
pub mod resume;
mod shard;
mod validation;
pub mod writer;

pub use crate::api::Api;
pub use compress::{errors_path_for, Compression};
pub use detect::{detect_api, detect_api_in, Detected};
pub use dupes::DuplicateCheck;
pub use format::{Format, ParseNameError};
pub use lines::{FileError, Issue};
pub use reader::{Item, Payload, ReadOptions, Reader};
pub use resume::{read_done, read_done_from, scan_records, truncate_torn_tail, ResumeState};
pub use shard::{in_shard, parse_shard, resolve_auto, AutoShard, ShardRefusal};
pub use validation::{validate, validate_reader, ValidationReport};
pub use writer::{OutputRecord, OutputWriter};

#[cfg(test)]
mod testkit;
