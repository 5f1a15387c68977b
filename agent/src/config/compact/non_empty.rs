//! Text fields of the compact format that must say something: a name, a
//! namespace, a workload reference. Every such field reads through here,
//! trimmed, so blank text is refused alike everywhere, inside the field's
//! own visitor, where the YAML reader attaches its path and line.
use std::fmt;

use serde::{
    Deserialize, Deserializer,
    de::{self, DeserializeSeed, Visitor},
};

/// Trimmed text, not empty.
#[derive(Debug)]
pub(super) struct NonEmpty(pub(super) String);

impl<'de> Deserialize<'de> for NonEmpty {
    /// For a field of a derived struct: the YAML path names the field.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        NonEmptyField::new(String::new(), "").deserialize(d)
    }
}

/// Reads a [`NonEmpty`] whose error says whose field it is and what to
/// write instead.
pub(super) struct NonEmptyField {
    /// Whose field, like `service "cart": namespace`; empty when the YAML
    /// path says enough.
    what: String,
    /// What to write instead, or nothing.
    hint: &'static str,
}

impl NonEmptyField {
    pub(super) fn new(what: String, hint: &'static str) -> Self {
        Self { what, hint }
    }

    /// `v`, trimmed, or the error naming the field.
    pub(super) fn check<E: de::Error>(&self, v: &str) -> Result<String, E> {
        let v = v.trim();
        if !v.is_empty() {
            return Ok(v.to_string());
        }
        let mut message = String::new();
        if !self.what.is_empty() {
            message.push_str(&self.what);
            message.push(' ');
        }
        message.push_str("must not be empty");
        if !self.hint.is_empty() {
            message.push_str(&format!(" ({})", self.hint));
        }
        Err(E::custom(message))
    }
}

impl<'de> DeserializeSeed<'de> for NonEmptyField {
    type Value = NonEmpty;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<NonEmpty, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for NonEmptyField {
    type Value = NonEmpty;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("text that is not empty")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<NonEmpty, E> {
        self.check(v).map(NonEmpty)
    }
}
