//! Every input line ends with exactly one final output record: a clean run, a run resumed after
//! kill -9, Ctrl-C or a torn last line, shards and their merge, and `auto` (its sweep included)
//! answer each line once, and at most the requests in flight are ever sent twice.

mod crash;
mod resume;
mod run;
mod shards;
