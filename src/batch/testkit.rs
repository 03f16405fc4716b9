//! Helpers the input unit tests share: read a buffer with a [`Reader`] and pick its items
//! and issues, and a well-formed openai-batch line. One place, so that the tests of each part
//! of the reader read the same way.

use std::io::Cursor;

use super::format::Format;
use super::lines::Issue;
use super::reader::{Item, ReadOptions, Reader};
use crate::api::Api;

pub(super) fn opts(api: Api) -> ReadOptions {
    ReadOptions::new(api)
}

pub(super) fn read_with(format: Format, o: ReadOptions, data: &[u8]) -> Vec<Result<Item, Issue>> {
    match Reader::new(Box::new(Cursor::new(data.to_vec())), format, o) {
        Ok(r) => r.collect(),
        Err(e) => panic!("unexpected file error: {e}"),
    }
}

pub(super) fn read(format: Format, api: Api, data: &str) -> Vec<Result<Item, Issue>> {
    read_with(format, opts(api), data.as_bytes())
}

pub(super) fn ok_items(res: &[Result<Item, Issue>]) -> Vec<&Item> {
    res.iter().filter_map(|r| r.as_ref().ok()).collect()
}

/// The single issue in `res`, as (line, reason).
pub(super) fn only_issue(res: &[Result<Item, Issue>]) -> (u64, String) {
    let issues: Vec<&Issue> = res.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(issues.len(), 1, "{res:?}");
    (issues[0].line, issues[0].reason.clone())
}

pub(super) const CHAT_BODY: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

pub(super) fn batch_line(id: &str) -> String {
    format!(r#"{{"custom_id":"{id}","method":"POST","url":"/v1/chat/completions","body":{CHAT_BODY}}}"#)
}
