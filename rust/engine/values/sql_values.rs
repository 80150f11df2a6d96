//! The values of a transaction step's statements: parameters as the
//! bindings matched them to the server's parameter types, and result cells
//! decoded from Postgres' binary format (see `transaction`).

use std::error::Error;
use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};
use tokio_postgres::Row;
use tokio_postgres::types::{Format, FromSql, IsNull, Kind, ToSql, Type, to_sql_checked};

use crate::engine::EngineError;
use crate::engine::values::jsonb::JsonText;

/// A parameter of a user's statement, already matched (by the bindings) to
/// the type the server inferred for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Null,
    Bool(bool),
    Int2(i16),
    Int4(i32),
    Int8(i64),
    Float4(f32),
    Float8(f64),
    /// Sent in Postgres' text format: the server parses it as the
    /// parameter's type (numeric, uuid, date, timestamps, text...).
    Text(String),
    Bytes(Vec<u8>),
    Json(JsonText),
}

impl ToSql for Param {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Param::Null => return Ok(IsNull::Yes),
            Param::Bool(v) => out.put_u8(u8::from(*v)),
            Param::Int2(v) => out.put_i16(*v),
            Param::Int4(v) => out.put_i32(*v),
            Param::Int8(v) => out.put_i64(*v),
            Param::Float4(v) => out.put_f32(*v),
            Param::Float8(v) => out.put_f64(*v),
            Param::Text(v) => out.put_slice(v.as_bytes()),
            Param::Bytes(v) => out.put_slice(v),
            Param::Json(v) => return v.to_sql(ty, out),
        }
        Ok(IsNull::No)
    }

    /// The bindings chose the variant from the parameter's type.
    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        if matches!(self, Param::Text(_)) {
            Format::Text
        } else {
            Format::Binary
        }
    }

    to_sql_checked!();
}

/// A value of a result column. Timestamps are microseconds since
/// 2000-01-01 (UTC for `TimestampTz`), dates days since then, as Postgres
/// sends them.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Json(JsonText),
    /// A numeric's decimal text (`NaN`, `Infinity`, `-Infinity` included).
    Numeric(String),
    Timestamp(i64),
    TimestampTz(i64),
    Date(i32),
    Uuid([u8; 16]),
    Bytes(Vec<u8>),
}

/// The rows of a query: column names, then each row's cells in that order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// The raw bytes of any column, for `cell` to decode by type.
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Column `i` of `row`, decoded from Postgres' binary format.
pub(crate) fn cell(row: &Row, i: usize) -> Result<Cell, EngineError> {
    let column = &row.columns()[i];
    let ty = column.type_();
    let Some(Raw(raw)) = row
        .try_get::<_, Option<Raw<'_>>>(i)
        .map_err(|e| EngineError::database(format_args!("reading column {:?}", column.name()), &e))?
    else {
        return Ok(Cell::Null);
    };
    decode(ty, raw).map_err(|problem| EngineError::Database {
        context: format!("reading column {:?}", column.name()),
        message: problem,
        sqlstate: None,
    })
}

fn decode(ty: &Type, raw: &[u8]) -> Result<Cell, String> {
    let bad = |e: Box<dyn Error + Sync + Send>| format!("cannot decode a value of type {ty}: {e}");
    Ok(match *ty {
        Type::BOOL => Cell::Bool(bool::from_sql(ty, raw).map_err(bad)?),
        Type::INT2 => Cell::Int(i16::from_sql(ty, raw).map_err(bad)?.into()),
        Type::INT4 => Cell::Int(i32::from_sql(ty, raw).map_err(bad)?.into()),
        Type::INT8 => Cell::Int(i64::from_sql(ty, raw).map_err(bad)?),
        Type::OID => Cell::Int(u32::from_sql(ty, raw).map_err(bad)?.into()),
        Type::FLOAT4 => Cell::Float(f32::from_sql(ty, raw).map_err(bad)?.into()),
        Type::FLOAT8 => Cell::Float(f64::from_sql(ty, raw).map_err(bad)?),
        Type::JSON | Type::JSONB => Cell::Json(JsonText::from_sql(ty, raw).map_err(bad)?),
        Type::NUMERIC => Cell::Numeric(numeric_text(raw)?),
        Type::TIMESTAMP => Cell::Timestamp(i64::from_sql(&Type::INT8, raw).map_err(bad)?),
        Type::TIMESTAMPTZ => Cell::TimestampTz(i64::from_sql(&Type::INT8, raw).map_err(bad)?),
        Type::DATE => Cell::Date(i32::from_sql(&Type::INT4, raw).map_err(bad)?),
        Type::UUID => Cell::Uuid(raw.try_into().map_err(|_| format!("a uuid of {} bytes", raw.len()))?),
        Type::BYTEA => Cell::Bytes(raw.to_vec()),
        // Text-like types (text, varchar, char, name, citext...) and enums
        // (whose binary form is their label) are UTF-8 text.
        _ if <&str as FromSql>::accepts(ty) || matches!(ty.kind(), Kind::Enum(_)) => {
            Cell::Text(std::str::from_utf8(raw).map_err(|e| bad(e.into()))?.to_owned())
        }
        _ => {
            return Err(format!(
                "durable does not convert values of type {ty}; cast the column in the query \
                 (e.g. `col::text`)"
            ));
        }
    })
}

/// The decimal text of a numeric in Postgres' binary format: ndigits,
/// weight, sign, dscale, then base-10000 digits, the first of weight
/// `weight`.
fn numeric_text(raw: &[u8]) -> Result<String, String> {
    let word = |i: usize| {
        raw.get(2 * i..2 * i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "a truncated numeric".to_owned())
    };
    let ndigits = usize::from(word(0)?);
    let weight = i32::from(i16::from_ne_bytes(word(1)?.to_ne_bytes()));
    let sign = word(2)?;
    let scale = word(3)?;
    let dscale = usize::from(scale);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok("NaN".to_owned()),
        0xD000 => return Ok("Infinity".to_owned()),
        0xF000 => return Ok("-Infinity".to_owned()),
        other => return Err(format!("a numeric with sign word {other:#x}")),
    }
    let digits = (0..ndigits).map(|i| word(4 + i)).collect::<Result<Vec<u16>, _>>()?;
    // The base-10000 digit at index `i` (0: weight `weight`), zero outside.
    let digit = |i: i32| {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i))
            .copied()
            .unwrap_or(0)
    };
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        for i in 0..=weight {
            let _ = if i == 0 {
                write!(text, "{}", digit(i))
            } else {
                write!(text, "{:04}", digit(i))
            };
        }
    }
    if dscale > 0 {
        let mut fraction = String::new();
        for k in 1..=i32::from(scale.div_ceil(4)) {
            let _ = write!(fraction, "{:04}", digit(weight + k));
        }
        fraction.truncate(dscale);
        text.push('.');
        text.push_str(&fraction);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::numeric_text;

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut out = Vec::new();
        for word in [ndigits, u16::from_ne_bytes(weight.to_ne_bytes()), sign, dscale]
            .iter()
            .chain(digits)
        {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out
    }

    #[test]
    fn numerics_decode_to_their_decimal_text() {
        assert_eq!(numeric_text(&numeric(0, 0, 0, 0, &[])).unwrap(), "0");
        assert_eq!(numeric_text(&numeric(2, 1, 0, 2, &[12, 3456])).unwrap(), "123456.00");
        assert_eq!(numeric_text(&numeric(2, 0, 0x4000, 3, &[1, 2300])).unwrap(), "-1.230");
        assert_eq!(numeric_text(&numeric(1, -2, 0, 6, &[1200])).unwrap(), "0.000012");
        assert_eq!(numeric_text(&numeric(1, 2, 0, 0, &[5])).unwrap(), "500000000");
        assert_eq!(numeric_text(&numeric(0, 0, 0xC000, 0, &[])).unwrap(), "NaN");
        assert!(numeric_text(&[0, 1]).is_err());
    }
}
