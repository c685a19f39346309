//! What a busy lamp can watch, and the dialogs each watched resource has
//! now: the state every NOTIFY of its subscriptions is written from.
//!
//! The switch reports every dialog change of every extension and ring
//! group (not only watched ones: a phone that subscribes while a call
//! rings must see it at once). A resource keeps at most `cap` dialogs; a
//! terminated one stays listed, as `terminated`, until the next change of
//! the resource (so every watcher is told how it ended), and at once goes
//! when nobody watches.

use crate::dialog_info::DialogEntry;

/// A resource a phone can subscribe to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Watched {
    /// An extension, by AOR (`test12@test`): its calls in and out.
    Extension(String),
    /// A ring group, by `number@domain` (`800@test`): the calls it rings.
    RingGroup(String),
    /// One member's login in a group (a key on `*45800` lights while the
    /// member is logged in): the switch reports a `confirmed` dialog while
    /// logged in, `terminated` at logout.
    MemberLogin {
        /// The group, `number@domain`.
        group: String,
        /// The member's AOR.
        member: String,
    },
}

/// The dialogs of one resource, oldest first.
#[derive(Clone, Debug, Default)]
pub(crate) struct WatchedDialogs {
    pub(crate) dialogs: Vec<DialogEntry>,
}

impl WatchedDialogs {
    /// Applies one change: returns `true` when the watchers must be told.
    /// Dialogs that were terminated by an earlier change go first; fields
    /// the update leaves `None` keep their earlier value; a new dialog
    /// beyond `cap`, or one first seen terminated, is not listed.
    pub(crate) fn apply(&mut self, update: DialogEntry, cap: usize) -> bool {
        self.drop_terminated();
        let listed = self.dialogs.len();
        match self.dialogs.iter_mut().find(|d| d.id == update.id) {
            Some(d) => {
                let merged = DialogEntry {
                    id: update.id,
                    state: update.state,
                    direction: update.direction.or(d.direction),
                    ids: update.ids.or_else(|| d.ids.clone()),
                    local: update.local.or_else(|| d.local.clone()),
                    remote: update.remote.or_else(|| d.remote.clone()),
                };
                let changed = *d != merged;
                *d = merged;
                changed
            }
            None if update.state.is_terminated() || listed >= cap => false,
            None => {
                self.dialogs.push(update);
                true
            }
        }
    }

    /// Forgets terminated dialogs.
    pub(crate) fn drop_terminated(&mut self) {
        self.dialogs.retain(|d| !d.state.is_terminated());
    }

    /// `true` when nothing is listed.
    pub(crate) fn is_empty(&self) -> bool {
        self.dialogs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialog_info::{DialogIds, DialogState, Identity, Termination};

    fn entry(id: &str, state: DialogState) -> DialogEntry {
        DialogEntry::new(id, state)
    }

    #[test]
    fn changes_merge_and_terminated_dialogs_linger_one_change() {
        let mut w = WatchedDialogs::default();
        let mut ringing = entry("a", DialogState::Early);
        ringing.remote = Identity::new(Some("Alice"), "sip:alice@test");
        ringing.ids = Some(DialogIds { call_id: "c".into(), local_tag: None, remote_tag: None });
        assert!(w.apply(ringing, 4));
        // The answer keeps the caller and ids it does not repeat.
        assert!(w.apply(entry("a", DialogState::Confirmed), 4));
        assert_eq!(w.dialogs[0].remote.as_ref().unwrap().display(), Some("Alice"));
        assert!(w.dialogs[0].ids.is_some());
        // The same state again is no change.
        assert!(!w.apply(entry("a", DialogState::Confirmed), 4));
        let over = DialogState::Terminated(Termination::default());
        assert!(w.apply(entry("a", over), 4));
        assert_eq!(w.dialogs.len(), 1, "listed as terminated until the next change");
        assert!(w.apply(entry("b", DialogState::Trying), 4));
        assert_eq!(w.dialogs.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["b"]);
        // Unknown and already over: nothing to show.
        assert!(!w.apply(entry("z", over), 4));
    }

    #[test]
    fn at_most_cap_dialogs_are_listed() {
        let mut w = WatchedDialogs::default();
        assert!(w.apply(entry("a", DialogState::Early), 2));
        assert!(w.apply(entry("b", DialogState::Early), 2));
        assert!(!w.apply(entry("c", DialogState::Early), 2));
        assert_eq!(w.dialogs.len(), 2);
        let over = DialogState::Terminated(Termination::default());
        assert!(w.apply(entry("a", over), 2));
        // "a" makes room at the next change: "c" is listed once it changes.
        assert!(w.apply(entry("c", DialogState::Confirmed), 2));
        assert_eq!(w.dialogs.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        w.drop_terminated();
        assert!(!w.is_empty());
    }
}
