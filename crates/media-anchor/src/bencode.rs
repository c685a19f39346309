//! Bencode for the ng protocol, over `torrust-tracker-contrib-bencode`:
//! a decoder that takes dictionary keys in any order (rtpengine does not
//! sort them), bounds nesting and rejects duplicate keys; typed readers for
//! the fields of a decoded dictionary; and a dictionary writer.

use crate::codec::CodecError;
use bytes::Bytes;
use std::borrow::Cow;
use torrust_tracker_contrib_bencode::{
    BDecodeOpt, BDictAccess, BListAccess, BMutAccess, BRefAccess, BencodeMut, BencodeRef,
};

/// Deepest nesting accepted (a `query` reply nests about eight levels).
pub const MAX_DEPTH: usize = 24;

/// Decodes one bencoded dictionary that makes up all of `bytes`.
pub(crate) fn decode_dict(bytes: &[u8]) -> Result<BencodeRef<'_>, CodecError> {
    let opts = BDecodeOpt::new(MAX_DEPTH, false, true);
    let value = BencodeRef::decode(bytes, opts).map_err(|e| CodecError::Bencode(e.to_string()))?;
    if value.dict().is_none() {
        return Err(CodecError::NotADictionary);
    }
    Ok(value)
}

type RefDict<'a, 'b> = &'b dyn BDictAccess<&'a [u8], BencodeRef<'a>>;

/// Typed reads of a decoded dictionary's fields.
#[derive(Clone, Copy)]
pub(crate) struct DictView<'a, 'b>(RefDict<'a, 'b>);

/// A value that is not the type its key needs.
fn wrong(key: &'static str) -> CodecError {
    CodecError::WrongType(key)
}

impl<'a, 'b> DictView<'a, 'b> {
    /// The dictionary `value` is (None when it is something else).
    pub(crate) fn of(value: &'b BencodeRef<'a>) -> Option<DictView<'a, 'b>> {
        value.dict().map(DictView)
    }

    /// The raw value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&'b BencodeRef<'a>> {
        self.0.lookup(key.as_bytes())
    }

    /// Every `(key, value)`, in key order.
    pub(crate) fn entries(&self) -> Vec<(&'b [u8], &'b BencodeRef<'a>)> {
        let mut v: Vec<_> = self.0.to_list().into_iter().map(|(k, v)| (*k, v)).collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// A byte string, if present.
    pub(crate) fn bytes(&self, key: &'static str) -> Result<Option<&'b [u8]>, CodecError> {
        self.get(key).map(|v| v.bytes().ok_or(wrong(key))).transpose()
    }

    /// A UTF-8 string, if present.
    pub(crate) fn str(&self, key: &'static str) -> Result<Option<&'b str>, CodecError> {
        self.get(key).map(|v| v.str().ok_or(wrong(key))).transpose()
    }

    /// A UTF-8 string that must be there.
    pub(crate) fn required_str(&self, key: &'static str) -> Result<&'b str, CodecError> {
        self.str(key)?.ok_or(CodecError::Missing(key))
    }

    /// An integer, if present.
    pub(crate) fn int(&self, key: &'static str) -> Result<Option<i64>, CodecError> {
        self.get(key).map(|v| v.int().ok_or(wrong(key))).transpose()
    }

    /// A nested dictionary, if present.
    pub(crate) fn dict(&self, key: &'static str) -> Result<Option<DictView<'a, 'b>>, CodecError> {
        self.get(key).map(|v| DictView::of(v).ok_or(wrong(key))).transpose()
    }

    /// The items of a list, if present (at most `max` of them are kept).
    pub(crate) fn list(
        &self,
        key: &'static str,
        max: usize,
    ) -> Result<Vec<&'b BencodeRef<'a>>, CodecError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(v) => {
                let list: &'b dyn BListAccess<BencodeRef<'a>> = v.list().ok_or(wrong(key))?;
                Ok(list.into_iter().take(max).collect())
            }
        }
    }

    /// A list of UTF-8 strings (at most `max`), empty when absent.
    pub(crate) fn str_list(
        &self,
        key: &'static str,
        max: usize,
    ) -> Result<Vec<&'b str>, CodecError> {
        self.list(key, max)?.into_iter().map(|v| v.str().ok_or(wrong(key))).collect()
    }
}

/// A dictionary being written (keys come out sorted, as bencode asks).
pub(crate) struct DictWriter(BencodeMut<'static>);

impl DictWriter {
    pub(crate) fn new() -> DictWriter {
        DictWriter(BencodeMut::new_dict())
    }

    fn put(&mut self, key: &str, value: BencodeMut<'static>) {
        if let Some(d) = self.0.dict_mut() {
            d.insert(Cow::Owned(key.as_bytes().to_vec()), value);
        }
    }

    /// `key` = a byte string.
    pub(crate) fn bytes(&mut self, key: &str, value: &[u8]) -> &mut Self {
        self.put(key, BencodeMut::new_bytes(Cow::Owned(value.to_vec())));
        self
    }

    /// `key` = a string.
    pub(crate) fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.bytes(key, value.as_bytes())
    }

    /// `key` = a string, when there is one.
    pub(crate) fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.str(key, v);
        }
        self
    }

    /// `key` = an integer.
    pub(crate) fn int(&mut self, key: &str, value: i64) -> &mut Self {
        self.put(key, BencodeMut::new_int(value));
        self
    }

    /// `key` = a list of strings, left out when empty.
    pub(crate) fn str_list<'s>(
        &mut self,
        key: &str,
        items: impl IntoIterator<Item = &'s str>,
    ) -> &mut Self {
        let mut list = BencodeMut::new_list();
        let mut n = 0;
        if let Some(l) = list.list_mut() {
            for s in items {
                l.push(BencodeMut::new_bytes(Cow::Owned(s.as_bytes().to_vec())));
                n += 1;
            }
        }
        if n > 0 {
            self.put(key, list);
        }
        self
    }

    /// `key` = a nested dictionary.
    pub(crate) fn dict(&mut self, key: &str, value: DictWriter) -> &mut Self {
        self.put(key, value.0);
        self
    }

    /// `key` = a list of dictionaries (written even when empty).
    pub(crate) fn dict_list(&mut self, key: &str, items: Vec<DictWriter>) -> &mut Self {
        let mut list = BencodeMut::new_list();
        if let Some(l) = list.list_mut() {
            for d in items {
                l.push(d.0);
            }
        }
        self.put(key, list);
        self
    }

    /// The encoded dictionary.
    pub(crate) fn encode(&self) -> Bytes {
        Bytes::from(self.0.encode())
    }
}
