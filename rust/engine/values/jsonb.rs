//! JSON values travel through the engine as text: the bindings encode Python
//! values straight to JSON text and decode saved text straight to Python, so
//! the engine never builds an intermediate tree.

use std::error::Error;

use bytes::{BufMut, BytesMut};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, accepts, to_sql_checked};

/// Version byte of the jsonb binary wire format.
const JSONB_VERSION: u8 = 1;

/// A JSON document as text. Whoever builds one vouches that it is valid JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonText(pub String);

impl JsonText {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl ToSql for JsonText {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.put_u8(JSONB_VERSION);
        }
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    accepts!(JSON, JSONB);
    to_sql_checked!();
}

impl<'a> FromSql<'a> for JsonText {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let text = if *ty == Type::JSONB {
            match raw.split_first() {
                Some((&JSONB_VERSION, rest)) => rest,
                _ => return Err("unsupported jsonb wire format version".into()),
            }
        } else {
            raw
        };
        Ok(JsonText(std::str::from_utf8(text)?.to_owned()))
    }

    accepts!(JSON, JSONB);
}
