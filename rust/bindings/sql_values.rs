//! Python values to the parameters of a transaction step's statements, and
//! result cells back to Python; on the Python thread (the engine does I/O).
//!
//! A parameter is converted for the type the server inferred for it
//! (`Statement::params`), so the user writes plain `$1` placeholders:
//!
//! * `None` is NULL; to `json`/`jsonb` any JSON value is its JSON text.
//! * `bool`, `int` (int2/int4/int8, range-checked; float4/float8; numeric),
//!   `float` (float4/float8, numeric) and `bytes` (bytea) go in binary.
//! * `str`, and `datetime` (timestamptz: aware only; timestamp: naive only),
//!   `date`, `Decimal` (numeric) and `UUID` go in Postgres' text format, as
//!   their ISO / decimal / canonical text, and the server parses them. A
//!   `str` goes to any type but bytea and json this way (its text form).
//!
//! Anything else is a `TypeError` naming the parameter and both types.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMemoryView, PyString};
use tokio_postgres::types::Type;

use super::json;
use crate::engine::{Cell, Param, Rows};

static DATETIME: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static DATE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static TIMEDELTA: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static DECIMAL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static UUID: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
/// 2000-01-01, naive, aware (UTC), and as a date: Postgres' epoch.
static EPOCH: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static EPOCH_UTC: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static EPOCH_DATE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn class<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    module: &str,
    name: &str,
) -> PyResult<Bound<'py, PyAny>> {
    cell.get_or_try_init(py, || Ok::<_, PyErr>(py.import(module)?.getattr(name)?.unbind()))
        .map(|c| c.bind(py).clone())
}

fn epoch<'py>(py: Python<'py>, cell: &'static PyOnceLock<Py<PyAny>>, expr: &str) -> PyResult<Bound<'py, PyAny>> {
    cell.get_or_try_init(py, || {
        let datetime = py.import("datetime")?;
        let value = match expr {
            "utc" => datetime.getattr("datetime")?.call1((
                2000,
                1,
                1,
                0,
                0,
                0,
                0,
                datetime.getattr("timezone")?.getattr("utc")?,
            ))?,
            "date" => datetime.getattr("date")?.call1((2000, 1, 1))?,
            _ => datetime.getattr("datetime")?.call1((2000, 1, 1))?,
        };
        Ok::<_, PyErr>(value.unbind())
    })
    .map(|c| c.bind(py).clone())
}

/// Converts the arguments of a statement, one per `$n` of `types`.
pub(crate) fn params(args: &[Bound<'_, PyAny>], types: &[Type], limit: usize) -> PyResult<Vec<Param>> {
    if args.len() != types.len() {
        return Err(PyTypeError::new_err(format!(
            "the statement has {} parameter(s) ($1...), but {} argument(s) were given",
            types.len(),
            args.len()
        )));
    }
    args.iter()
        .zip(types)
        .enumerate()
        .map(|(i, (value, ty))| param(value, ty, i + 1, limit))
        .collect()
}

fn param(value: &Bound<'_, PyAny>, ty: &Type, n: usize, limit: usize) -> PyResult<Param> {
    let py = value.py();
    if value.is_none() {
        return Ok(Param::Null);
    }
    let kind = || {
        value
            .get_type()
            .qualname()
            .map_or_else(|_| "?".to_owned(), |q| q.to_string())
    };
    let mismatch = || {
        PyTypeError::new_err(format!(
            "parameter ${n} is a Python {}, which durable does not send to a parameter of type {ty}; \
             pass a value of a matching type (see the type mapping of ctx.transaction in doc/api.md) \
             or cast the parameter in the SQL (e.g. ${n}::text)",
            kind()
        ))
    };
    if *ty == Type::JSON || *ty == Type::JSONB {
        return json::encode(value, &format!("parameter ${n}"), limit).map(Param::Json);
    }
    if value.is_instance_of::<PyBool>() {
        return match *ty {
            Type::BOOL => Ok(Param::Bool(value.extract()?)),
            _ => Err(mismatch()),
        };
    }
    if value.is_instance_of::<PyInt>() {
        let out_of_range = || PyValueError::new_err(format!("parameter ${n}: {value} is out of range for type {ty}"));
        let wide = || value.extract::<i64>().map_err(|_| out_of_range());
        return match *ty {
            Type::INT2 => Ok(Param::Int2(i16::try_from(wide()?).map_err(|_| out_of_range())?)),
            Type::INT4 => Ok(Param::Int4(i32::try_from(wide()?).map_err(|_| out_of_range())?)),
            Type::INT8 => Ok(Param::Int8(wide()?)),
            Type::FLOAT4 => Ok(Param::Float4(value.extract::<f64>()? as f32)),
            Type::FLOAT8 => Ok(Param::Float8(value.extract()?)),
            Type::NUMERIC => Ok(Param::Text(value.str()?.to_string())),
            _ => Err(mismatch()),
        };
    }
    if value.is_instance_of::<PyFloat>() {
        return match *ty {
            Type::FLOAT4 => Ok(Param::Float4(value.extract::<f64>()? as f32)),
            Type::FLOAT8 => Ok(Param::Float8(value.extract()?)),
            Type::NUMERIC => Ok(Param::Text(
                value
                    .repr()?
                    .to_string()
                    .replace("inf", "Infinity")
                    .replace("nan", "NaN"),
            )),
            _ => Err(mismatch()),
        };
    }
    if value.is_instance_of::<PyString>() {
        return match *ty {
            Type::BYTEA => Err(mismatch()),
            _ => Ok(Param::Text(value.extract()?)),
        };
    }
    if value.is_instance_of::<PyBytes>()
        || value.is_instance_of::<PyByteArray>()
        || value.is_instance_of::<PyMemoryView>()
    {
        return match *ty {
            Type::BYTEA => Ok(Param::Bytes(
                py.import("builtins")?.getattr("bytes")?.call1((value,))?.extract()?,
            )),
            _ => Err(mismatch()),
        };
    }
    if let Some(param) = library_param(value, ty, n, &mismatch)? {
        return Ok(param);
    }
    if value.is_instance_of::<PyList>() || value.is_instance_of::<PyDict>() {
        return Err(PyTypeError::new_err(format!(
            "parameter ${n} is a Python {}, sent only to json or jsonb parameters, not {ty}: cast the \
             parameter in the SQL (e.g. ${n}::jsonb)",
            kind()
        )));
    }
    Err(mismatch())
}

/// A value of the standard library's datetime, date, Decimal and UUID
/// types as a parameter of type `ty`; `None` for any other value.
fn library_param(
    value: &Bound<'_, PyAny>,
    ty: &Type,
    n: usize,
    mismatch: &dyn Fn() -> PyErr,
) -> PyResult<Option<Param>> {
    let py = value.py();
    // datetime before date: a datetime is a date.
    if value.is_instance(&class(py, &DATETIME, "datetime", "datetime")?)? {
        let aware = !value.call_method0("utcoffset")?.is_none();
        return Ok(Some(match (ty, aware) {
            (&Type::TIMESTAMPTZ, true) | (&Type::TIMESTAMP, false) => Param::Text(iso(value)?),
            (&Type::TIMESTAMPTZ, false) => {
                return Err(PyValueError::new_err(format!(
                    "parameter ${n} is a naive datetime, ambiguous for type timestamptz: give it a tzinfo \
                 (e.g. datetime.now(timezone.utc))"
                )));
            }
            (&Type::TIMESTAMP, true) => {
                return Err(PyValueError::new_err(format!(
                    "parameter ${n} is an aware datetime, but type timestamp has no time zone: pass a naive \
                 datetime, or use timestamptz"
                )));
            }
            _ => return Err(mismatch()),
        }));
    }
    if value.is_instance(&class(py, &DATE, "datetime", "date")?)? {
        return Ok(Some(match *ty {
            Type::DATE => Param::Text(iso(value)?),
            _ => return Err(mismatch()),
        }));
    }
    if value.is_instance(&class(py, &DECIMAL, "decimal", "Decimal")?)? {
        return Ok(Some(match *ty {
            Type::NUMERIC => Param::Text(value.str()?.to_string()),
            _ => return Err(mismatch()),
        }));
    }
    if value.is_instance(&class(py, &UUID, "uuid", "UUID")?)? {
        return Ok(Some(match *ty {
            Type::UUID => Param::Text(value.str()?.to_string()),
            _ => return Err(mismatch()),
        }));
    }
    Ok(None)
}

fn iso(value: &Bound<'_, PyAny>) -> PyResult<String> {
    value.call_method0("isoformat")?.extract()
}

/// The rows of a query as a list of dicts (column name to value).
pub(crate) struct Fetched(pub(crate) Rows);

impl<'py> IntoPyObject<'py> for Fetched {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let Rows { columns, rows } = self.0;
        let names: Vec<Bound<'py, PyString>> = columns.iter().map(|c| PyString::new(py, c)).collect();
        let list = PyList::empty(py);
        for row in rows {
            let dict = PyDict::new(py);
            for (name, cell) in names.iter().zip(row) {
                dict.set_item(name, value(py, cell)?)?;
            }
            list.append(dict)?;
        }
        Ok(list.into_any())
    }
}

fn value(py: Python<'_>, cell: Cell) -> PyResult<Bound<'_, PyAny>> {
    let delta = |key: &str, amount: i64| -> PyResult<Bound<'_, PyAny>> {
        let kwargs = PyDict::new(py);
        kwargs.set_item(key, amount)?;
        class(py, &TIMEDELTA, "datetime", "timedelta")?.call((), Some(&kwargs))
    };
    let out_of_range = |what: &str| {
        PyValueError::new_err(format!(
            "a {what} outside what Python's datetime holds (infinity?); cast the column in the query (e.g. col::text)"
        ))
    };
    Ok(match cell {
        Cell::Null => py.None().into_bound(py),
        Cell::Bool(v) => PyBool::new(py, v).to_owned().into_any(),
        Cell::Int(v) => v.into_pyobject(py)?.into_any(),
        Cell::Float(v) => PyFloat::new(py, v).into_any(),
        Cell::Text(v) => PyString::new(py, &v).into_any(),
        Cell::Json(v) => json::decode(py, v.as_str())?,
        Cell::Numeric(v) => class(py, &DECIMAL, "decimal", "Decimal")?.call1((v,))?,
        Cell::Timestamp(us) => delta("microseconds", us)
            .and_then(|d| epoch(py, &EPOCH, "naive")?.add(d))
            .map_err(|_| out_of_range("timestamp"))?,
        Cell::TimestampTz(us) => delta("microseconds", us)
            .and_then(|d| epoch(py, &EPOCH_UTC, "utc")?.add(d))
            .map_err(|_| out_of_range("timestamptz"))?,
        Cell::Date(days) => delta("days", days.into())
            .and_then(|d| epoch(py, &EPOCH_DATE, "date")?.add(d))
            .map_err(|_| out_of_range("date"))?,
        Cell::Uuid(bytes) => {
            let kwargs = PyDict::new(py);
            kwargs.set_item("bytes", PyBytes::new(py, &bytes))?;
            class(py, &UUID, "uuid", "UUID")?.call((), Some(&kwargs))?
        }
        Cell::Bytes(v) => PyBytes::new(py, &v).into_any(),
    })
}
