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

pub mod compress;
pub mod detect;
pub mod dupes;
pub mod fast;
pub mod idsort;
pub mod merge;
pub mod reader;
pub mod resume;
pub mod writer;

pub use compress::{errors_path_for, Compression};
pub use detect::{detect_api, detect_api_in, Detected};
pub use dupes::DuplicateCheck;
pub use reader::{
    in_shard, parse_shard, validate, validate_reader, Api, FileError, Format, Issue, Item, ParseNameError, Payload,
    ReadOptions, Reader, ValidationReport, DEFAULT_MAX_LINE_BYTES,
};
pub use resume::{read_done, read_done_from, scan_records, truncate_torn_tail, ResumeState};
pub use writer::{OutputRecord, OutputWriter};
