//! Report exporters for a concurrency sweep.
//!
//! The design follows hyperfine's exporters: one small [`Exporter`] trait and one
//! file per output format. Exporters never open files themselves; the caller hands
//! them a `&mut dyn Write`, so the same code serves files, stdout and tests.
//!
//! They render the domain model (`crate::model`: [`Summary`](crate::model::Summary) and its
//! rows); nothing here decides a figure.
//!
//! This file only declares the modules and re-exports their items: `exporter.rs` holds the
//! trait and imports no sibling, each format's file implements it, and `format.rs` picks
//! the exporter for a [`Format`] (no exporter uses it).

pub mod csv;
pub mod exporter;
pub mod format;
pub mod html;
pub mod json;
pub mod svg;
pub mod table;

pub use self::csv::RequestsCsv;
pub use self::format::Format;
pub use self::html::Section;
