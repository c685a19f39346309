//! How a transaction event or an in-dialog request finds its call: who
//! owns each transaction key we made or took, and which call and side each
//! of our dialogs (Call-ID, our tag) belongs to.

use crate::dialog;
use crate::leg_state::LegAck;
use crate::state::{Call, Orphan, Owner, Role, Side, Stored};
use crate::CallRef;
use bytes::Bytes;
use rustc_hash::FxHashMap;
use sip_transaction::TxKey;
use std::collections::HashMap;

/// The owners of our transaction keys and the calls of our dialogs.
#[derive(Debug, Default)]
pub(crate) struct CallIndex {
    /// Keyed by the transaction layer's own handles: a fast hash.
    owners: FxHashMap<TxKey, Owner>,
    /// Keyed by Call-ID and tag from the wire: the default (keyed) hash.
    dialogs: HashMap<Box<[u8]>, (CallRef, Side)>,
}

impl CallIndex {
    /// Transaction keys we own.
    pub(crate) fn owned(&self) -> usize {
        self.owners.len()
    }

    pub(crate) fn owner(&self, key: TxKey) -> Option<&Owner> {
        self.owners.get(&key)
    }

    /// Forgets a key, and returns who owned it.
    pub(crate) fn remove(&mut self, key: TxKey) -> Option<Owner> {
        self.owners.remove(&key)
    }

    /// Records a key owned by `call`.
    pub(crate) fn own(&mut self, call: &mut Call, key: TxKey, role: Role) {
        self.owners.insert(key, Owner::Call(call.id, role));
        call.keys.push(key);
    }

    /// Records a key whose events are swallowed.
    pub(crate) fn detach(&mut self, key: TxKey) {
        self.owners.insert(key, Owner::Detached);
    }

    /// Records (again) the key of an orphaned leg INVITE.
    pub(crate) fn orphan(&mut self, key: TxKey, orphan: Box<Orphan>) {
        self.owners.insert(key, Owner::Orphan(orphan));
    }

    /// Files our dialog `call_id` / `local_tag` under `side` of `call`.
    pub(crate) fn add_dialog(
        &mut self,
        call_id: &[u8],
        local_tag: &[u8],
        call: CallRef,
        side: Side,
    ) {
        let key = dialog::dialog_key(call_id, local_tag).into_boxed_slice();
        self.dialogs.insert(key, (call, side));
    }

    /// The call and side of our dialog `call_id` / `local_tag`.
    pub(crate) fn find_dialog(&self, call_id: &[u8], local_tag: &[u8]) -> Option<(CallRef, Side)> {
        let k = dialog::dialog_key(call_id, local_tag);
        self.dialogs.get(k.as_slice()).copied()
    }

    /// Forgets an ended call: its dialogs leave the index, its live
    /// transactions become detached (or orphans, for answered legs' INVITEs).
    pub(crate) fn retire(&mut self, call: Call) {
        let c = &call.caller.dialog;
        self.dialogs.remove(dialog::dialog_key(&c.call_id, &c.local_tag).as_slice());
        for leg in &call.legs {
            let t = leg.template();
            self.dialogs.remove(dialog::dialog_key(&t.call_id, &t.local_tag).as_slice());
        }
        for key in call.keys {
            let Some(Owner::Call(_, role)) = self.owners.get(&key) else { continue };
            let orphan = match *role {
                Role::LegInvite(l) => call.legs.get(l as usize).and_then(|leg| {
                    let answered = leg.answered()?;
                    let mut acks: Vec<(Bytes, Stored)> = leg.forks().killed.clone();
                    if let LegAck::Sent(ack) = &answered.ack {
                        acks.push((answered.dialog.remote_tag.clone(), ack.clone()));
                    }
                    Some(Orphan { template: leg.template().clone(), acks })
                }),
                _ => None,
            };
            match orphan {
                Some(o) => self.orphan(key, Box::new(o)),
                None => self.detach(key),
            }
        }
    }
}
