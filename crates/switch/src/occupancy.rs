//! How many calls each extension is on, for `max_calls` (an extension at
//! its limit is busy: ring groups skip it or count it as 486, a direct call
//! gets 486 or its `forward_busy`). A call counts for the extension that
//! placed it from its INVITE, and for the extension that answered it from
//! the answer, until the call is forgotten; a ringing phone is not on a
//! call. Kept in the switch core, so that it is exact and replayable.

use rustc_hash::FxHashMap;

/// Calls in progress per extension AOR (`name@domain`).
#[derive(Debug, Default)]
pub(crate) struct Occupancy {
    on_calls: FxHashMap<String, u32>,
}

impl Occupancy {
    /// `aor` is on one more call.
    pub(crate) fn enter(&mut self, aor: &str) {
        match self.on_calls.get_mut(aor) {
            Some(n) => *n += 1,
            None => {
                self.on_calls.insert(aor.to_owned(), 1);
            }
        }
    }

    /// `aor` left a call it was counted on.
    pub(crate) fn leave(&mut self, aor: &str) {
        if let Some(n) = self.on_calls.get_mut(aor) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.on_calls.remove(aor);
            }
        }
    }

    /// How many calls `aor` is on.
    pub(crate) fn calls(&self, aor: &str) -> u32 {
        self.on_calls.get(aor).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::Occupancy;

    #[test]
    fn counts_up_and_down_and_forgets_at_zero() {
        let mut o = Occupancy::default();
        o.enter("a@t");
        o.enter("a@t");
        assert_eq!(o.calls("a@t"), 2);
        o.leave("a@t");
        o.leave("a@t");
        o.leave("a@t");
        assert_eq!(o.calls("a@t"), 0);
        assert!(o.on_calls.is_empty());
    }
}
