//! How the wallet mocks list what they saw: whole (no parameters, as always), or a page at a
//! time from a cursor (`?since=<cursor>&limit=N`, in append order). A cursor is
//! `<epoch>.<offset>`: the epoch changes whenever the list changes other than by appending (an
//! entry forgotten, the list cleared, the mock restarted), and a cursor of another epoch is
//! answered 410 Gone, so the reader starts again from the beginning.
//!
//! Tests read what was asked ([`Listing::requests`]) and can hold list requests until released
//! ([`Listing::hold`]).

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

/// The most entries one page holds.
pub const MAX_LIMIT: usize = 10_000;

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    /// Where the previous page ended (its `next_cursor`); absent: from the start.
    pub since: Option<String>,
    /// Entries per page (at most [`MAX_LIMIT`]); absent with `since` absent: the whole list.
    pub limit: Option<usize>,
}

/// One list request, as the mock answered it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ListRequest {
    pub since: Option<String>,
    pub limit: Option<usize>,
    pub status: u16,
    /// Entries in the answer.
    pub returned: usize,
}

/// A page: the range of the list to answer, and where it leaves off.
#[derive(Debug, PartialEq, Eq)]
pub struct Window {
    pub range: Range<usize>,
    pub next_cursor: String,
    pub has_more: bool,
}

impl Window {
    /// The answer: `entries` under `key`, with the cursor.
    pub fn answer<T: Serialize>(&self, key: &str, entries: &[T]) -> Response {
        let mut body = serde_json::Map::new();
        body.insert(key.into(), json!(entries));
        body.insert("next_cursor".into(), json!(self.next_cursor));
        body.insert("has_more".into(), json!(self.has_more));
        Json(body).into_response()
    }
}

/// A fresh epoch for a list that starts, or stops being only appended to.
pub fn new_epoch() -> u32 {
    rand::random()
}

/// The window `query` asks of a list of `len` entries in `epoch`, or the refusal.
pub fn window(len: usize, epoch: u32, query: &PageQuery) -> Result<Window, (StatusCode, String)> {
    let start = match &query.since {
        None => 0,
        Some(cursor) => {
            let (cursor_epoch, offset) = cursor
                .split_once('.')
                .and_then(|(e, o)| Some((u32::from_str_radix(e, 16).ok()?, o.parse().ok()?)))
                .ok_or((StatusCode::BAD_REQUEST, format!("{cursor:?} is not a cursor")))?;
            if cursor_epoch != epoch || offset > len {
                return Err((
                    StatusCode::GONE,
                    "the list changed since this cursor; read it again from the start".into(),
                ));
            }
            offset
        }
    };
    let limit = match (query.limit, &query.since) {
        (None, None) => usize::MAX,
        (limit, _) => limit.unwrap_or(MAX_LIMIT).clamp(1, MAX_LIMIT),
    };
    let end = start.saturating_add(limit).min(len);
    Ok(Window {
        range: start..end,
        next_cursor: format!("{epoch:08x}.{end}"),
        has_more: end < len,
    })
}

/// The mock's record of list requests, and its hold on them.
pub struct Listing {
    requests: Mutex<Vec<ListRequest>>,
    hold: watch::Sender<bool>,
    /// Requests let through while held.
    passes: AtomicUsize,
    held: AtomicUsize,
}

impl Default for Listing {
    fn default() -> Self {
        Self {
            requests: Mutex::new(Vec::new()),
            hold: watch::Sender::new(false),
            passes: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
        }
    }
}

impl Listing {
    /// Every list request so far, in order.
    pub fn requests(&self) -> Vec<ListRequest> {
        self.requests.lock().expect("list log").clone()
    }

    /// List requests wait until [`Listing::release`].
    pub fn hold(&self) {
        self.hold_after(0);
    }

    /// The next `passes` list requests are answered, those after them wait until
    /// [`Listing::release`].
    pub fn hold_after(&self, passes: usize) {
        self.passes.store(passes, Ordering::SeqCst);
        self.hold.send_replace(true);
    }

    pub fn release(&self) {
        self.hold.send_replace(false);
    }

    /// List requests waiting for [`Listing::release`].
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// Waits while list requests are held.
    pub async fn admit(&self) {
        let mut hold = self.hold.subscribe();
        if !*hold.borrow_and_update()
            || self
                .passes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return;
        }
        self.held.fetch_add(1, Ordering::SeqCst);
        let _ = hold.wait_for(|held| !held).await;
        self.held.fetch_sub(1, Ordering::SeqCst);
    }

    /// Records a request and its answer.
    pub fn record(&self, query: &PageQuery, status: StatusCode, returned: usize) {
        self.requests.lock().expect("list log").push(ListRequest {
            since: query.since.clone(),
            limit: query.limit,
            status: status.as_u16(),
            returned,
        });
    }

    /// The refusal of a bad or expired cursor, recorded.
    pub fn refuse(&self, query: &PageQuery, (status, message): (StatusCode, String)) -> Response {
        self.record(query, status, 0);
        let error = if status == StatusCode::GONE {
            "cursor_expired"
        } else {
            "invalid_cursor"
        };
        (status, Json(json!({"error": error, "message": message}))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(since: Option<&str>, limit: Option<usize>) -> PageQuery {
        PageQuery {
            since: since.map(str::to_string),
            limit,
        }
    }

    #[test]
    fn pages_follow_the_cursor_to_the_end() {
        let whole = window(5, 0xab, &query(None, None)).unwrap();
        assert_eq!((whole.range, whole.has_more), (0..5, false));
        assert_eq!(whole.next_cursor, "000000ab.5");
        let first = window(5, 0xab, &query(None, Some(2))).unwrap();
        assert_eq!((first.range, first.has_more), (0..2, true));
        let last = window(5, 0xab, &query(Some(&first.next_cursor), Some(4))).unwrap();
        assert_eq!((last.range, last.has_more), (2..5, false));
        let empty = window(5, 0xab, &query(Some(&last.next_cursor), Some(4))).unwrap();
        assert_eq!((empty.range, empty.has_more), (5..5, false));
        assert_eq!(empty.next_cursor, last.next_cursor);
    }

    #[test]
    fn another_epoch_is_gone_and_garbage_is_refused() {
        let gone = window(5, 2, &query(Some("00000001.3"), None)).unwrap_err();
        assert_eq!(gone.0, StatusCode::GONE);
        let past_the_end = window(5, 1, &query(Some("00000001.6"), None)).unwrap_err();
        assert_eq!(past_the_end.0, StatusCode::GONE);
        for garbage in ["", "x", "1", "zz.1", "1.-1"] {
            let refused = window(5, 1, &query(Some(garbage), None)).unwrap_err();
            assert_eq!(refused.0, StatusCode::BAD_REQUEST, "{garbage}");
        }
        let capped = window(50_000, 1, &query(None, Some(1_000_000))).unwrap();
        assert_eq!(capped.range, 0..MAX_LIMIT);
    }
}
