//! veltrix_codec: Avro and Protobuf in the Confluent wire format (magic 0, big-endian schema
//! id, [message indexes,] payload) decoded straight into Arrow-layout column buffers.

mod columns;
mod json;
mod jsonin;
mod plan;
mod protobuf;
mod reader;
mod schema;

use std::collections::HashMap;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use columns::{Column, Kind};
use plan::Plan;
use reader::{DErr, Reader};

const HEADER: usize = 5;

/// The schema id of a framed value: -1 for no value or one shorter than the header,
/// -2 for a magic byte other than 0.
fn schema_id(value: Option<&[u8]>) -> i64 {
    match value {
        Some(v) if v.len() >= HEADER => {
            if v[0] != 0 {
                -2
            } else {
                u32::from_be_bytes([v[1], v[2], v[3], v[4]]) as i64
            }
        }
        _ => -1,
    }
}

/// Why a value is not in the Confluent wire format (magic byte 0, 4-byte schema id), if it is
/// not: the one wording of these conditions, for both codecs (batch/protobuf.py words them the
/// same for its Python twin).
pub(crate) fn header_error(v: &[u8]) -> Option<String> {
    match v.first() {
        Some(0) if v.len() >= HEADER => None,
        Some(1) => Some(
            "wrong magic byte 0x01: schema ids in record headers are not supported yet (the \
             Confluent wire format starts with magic byte 0)"
                .into(),
        ),
        Some(&m) if m != 0 => Some(format!(
            "wrong magic byte {m:#04x}: not the Confluent wire format (magic byte 0){}",
            if m == b'{' {
                "; the value looks like JSON"
            } else {
                ""
            }
        )),
        _ => Some(format!(
            "too short for the Confluent wire format: {} bytes (needs {HEADER}: magic byte 0 \
             and a 4-byte schema id)",
            v.len()
        )),
    }
}

fn message(e: DErr, field: &str, col: Option<&Column>) -> String {
    let cname = col.map_or("?", |c| c.name.as_str());
    match e {
        DErr::Truncated => format!("truncated: the record ends inside field `{field}`"),
        DErr::VarintOverflow => format!("varint overflow in field `{field}`"),
        DErr::NegativeLength(n) => format!("negative length {n} in field `{field}`"),
        DErr::TooLong { len, left } => {
            format!("truncated or corrupt: length {len} in field `{field}` exceeds the {left} bytes left")
        }
        DErr::Utf8 => format!("invalid UTF-8 in field `{field}`"),
        DErr::Nul => match col.map(|c| c.kind) {
            Some(Kind::Json) => format!("column `{cname}` contains \\u0000"),
            _ => format!("column `{cname}` contains a NUL character"),
        },
        DErr::Null => format!("null in non-nullable column `{cname}`"),
        DErr::EnumIndex(i) => format!("enum index {i} out of range in field `{field}`"),
        DErr::UnionIndex(i) => format!("union branch {i} out of range in field `{field}`"),
        DErr::Boolean(b) => format!("invalid boolean byte {b} in field `{field}`"),
        DErr::Depth => format!("field `{field}` is nested too deeply"),
        DErr::IntRange(v) => format!("int {v} out of range in field `{field}`"),
        DErr::TimestampRange(v) => format!("timestamp {v} out of range in field `{field}`"),
        DErr::NotUuid => format!("column `{cname}` is not a UUID (field `{field}`)"),
        DErr::DecimalTooLong(n) => format!("decimal of {n} bytes is too long in field `{field}`"),
        DErr::TooManyItems => format!("too many empty items in field `{field}`"),
        DErr::BatchTooLarge => format!("column `{cname}` holds over 2 GiB in one batch"),
    }
}

struct Decoder {
    columns: Vec<Column>,
    plans: HashMap<u32, Plan>,
}

/// Outcome of a decode call before it becomes Python objects.
struct Outcome {
    good: Vec<usize>,
    bad: Vec<(usize, String)>,
}

impl Decoder {
    fn record(&mut self, plan: &Plan, id: u32, body: &[u8]) -> Result<(), String> {
        if let Some(c) = plan.missing {
            return Err(format!(
                "missing field for non-nullable column `{}`: schema id {id} has no such field",
                self.columns[c].name
            ));
        }
        let mut r = Reader::new(body);
        if let Err((e, i)) = plan.decode(&mut r, &mut self.columns) {
            let (field, col) = match plan.fields.get(i) {
                Some(f) => (f.name.as_str(), f.col.map(|c| &self.columns[c])),
                None => ("?", None),
            };
            return Err(message(e, field, col));
        }
        if r.left() > 0 {
            return Err(format!("{} trailing bytes after the record", r.left()));
        }
        Ok(())
    }

    /// # Safety
    /// Each non-null pointer must point to `len` readable bytes for the whole call.
    unsafe fn run(&mut self, values: &[(*const u8, usize)]) -> Outcome {
        for c in &mut self.columns {
            c.clear(); // in case the last call failed before clearing
        }
        let plans = std::mem::take(&mut self.plans);
        let mut good = Vec::with_capacity(values.len());
        let mut bad = Vec::new();
        let mut rows = 0;
        let mut last: Option<(u32, &Plan)> = None;
        for (pos, &(ptr, len)) in values.iter().enumerate() {
            if ptr.is_null() {
                bad.push((pos, "no value".to_string()));
                continue;
            }
            let v = unsafe { std::slice::from_raw_parts(ptr, len) };
            if let Some(e) = header_error(v) {
                bad.push((pos, e));
                continue;
            }
            let id = u32::from_be_bytes([v[1], v[2], v[3], v[4]]);
            let plan = match last {
                Some((last_id, plan)) if last_id == id => plan,
                _ => match plans.get(&id) {
                    Some(plan) => {
                        last = Some((id, plan));
                        plan
                    }
                    None => {
                        bad.push((pos, format!("unknown schema id {id}")));
                        continue;
                    }
                },
            };
            match self.record(plan, id, &v[HEADER..]) {
                Ok(()) => {
                    good.push(pos);
                    rows += 1;
                }
                Err(e) => {
                    for c in &mut self.columns {
                        c.truncate(rows);
                    }
                    bad.push((pos, e));
                }
            }
        }
        self.plans = plans;
        Outcome { good, bad }
    }
}

/// Pointers to the values' bytes (null for None), for the GIL-free section.
struct Values(Vec<(*const u8, usize)>);
// SAFETY: read-only views of immutable bytes objects that a list owned by the caller keeps
// alive until the section ends.
unsafe impl Send for Values {}

/// A snapshot of `values` (a new list: its items stay alive whatever happens to `values`)
/// and pointers to the bytes of its items.
fn gather<'py>(values: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyList>, Values)> {
    let list = match values.cast::<PyList>() {
        Ok(list) => list.get_slice(0, list.len()),
        Err(_) => PyList::new(
            values.py(),
            values.try_iter()?.collect::<PyResult<Vec<_>>>()?,
        )?,
    };
    let mut ptrs = Vec::with_capacity(list.len());
    for i in 0..list.len() {
        // SAFETY: i < len of a list only we hold; the item is borrowed from it
        unsafe {
            let item = ffi::PyList_GetItem(list.as_ptr(), i as ffi::Py_ssize_t);
            if item == ffi::Py_None() {
                ptrs.push((std::ptr::null(), 0));
                continue;
            }
            let mut buf: *mut std::os::raw::c_char = std::ptr::null_mut();
            let mut len: ffi::Py_ssize_t = 0;
            if ffi::PyBytes_AsStringAndSize(item, &mut buf, &mut len) < 0 {
                let _ = PyErr::take(list.py());
                let kind = Bound::from_borrowed_ptr(list.py(), item).get_type();
                return Err(PyTypeError::new_err(format!(
                    "values must be bytes or None, not {}",
                    kind.name().map_or("?".into(), |n| n.to_string())
                )));
            }
            ptrs.push((buf as *const u8, len as usize));
        }
    }
    Ok((list, Values(ptrs)))
}

/// (positions decoded, [(position, error)], (validity, offsets, data) per column)
type Decoded<'py> = (Vec<usize>, Vec<(usize, String)>, Vec<Bound<'py, PyTuple>>);

/// Decodes Avro datums in the Confluent wire format into Arrow column buffers.
#[pyclass(module = "veltrix_codec")]
struct AvroDecoder {
    inner: Decoder,
}

#[pymethods]
impl AvroDecoder {
    #[new]
    fn new(columns: Vec<(String, String, bool)>) -> PyResult<Self> {
        Ok(AvroDecoder {
            inner: Decoder {
                columns: parse_columns(columns)?,
                plans: HashMap::new(),
            },
        })
    }

    /// Compiles the writer schema `writer_schema` (Avro JSON) for records of `schema_id`.
    fn add_schema(&mut self, schema_id: u32, writer_schema: &str) -> PyResult<()> {
        let plan = Plan::new(writer_schema, &self.inner.columns)
            .map_err(|e| PyValueError::new_err(format!("schema id {schema_id}: {e}")))?;
        self.inner.plans.insert(schema_id, plan);
        Ok(())
    }

    fn has(&self, schema_id: u32) -> bool {
        self.inner.plans.contains_key(&schema_id)
    }

    /// -> (positions decoded, [(position, error)], [(validity, offsets, data)] per column)
    fn decode<'py>(
        &mut self,
        py: Python<'py>,
        values: &Bound<'py, PyAny>,
    ) -> PyResult<Decoded<'py>> {
        let (items, ptrs) = gather(values)?;
        let inner = &mut self.inner;
        let out = py.detach(move || {
            let ptrs = ptrs;
            // SAFETY: `items` keeps every value alive until after this section
            unsafe { inner.run(&ptrs.0) }
        });
        drop(items);
        Ok((out.good, out.bad, take_buffers(py, &mut self.inner.columns)?))
    }
}

/// (validity, offsets, data) of each column as bytes; the columns start again empty.
fn take_buffers<'py>(py: Python<'py>, columns: &mut [Column]) -> PyResult<Vec<Bound<'py, PyTuple>>> {
    let bytes = |b: Option<&[u8]>| b.map(|b| PyBytes::new(py, b));
    let mut buffers = Vec::with_capacity(columns.len());
    for c in columns {
        let (validity, offsets, data) = c.buffers();
        buffers.push(PyTuple::new(
            py,
            [
                bytes(validity).into_pyobject(py)?.into_any(),
                bytes(offsets).into_pyobject(py)?.into_any(),
                PyBytes::new(py, data).into_any(),
            ],
        )?);
        c.clear();
    }
    Ok(buffers)
}

fn parse_columns(columns: Vec<(String, String, bool)>) -> PyResult<Vec<Column>> {
    let mut cols = Vec::with_capacity(columns.len());
    for (name, kind, nullable) in columns {
        let k = Kind::parse(&kind).ok_or_else(|| {
            PyValueError::new_err(format!("column `{name}`: unknown type `{kind}`"))
        })?;
        cols.push(Column::new(name, k, nullable));
    }
    Ok(cols)
}

/// Decodes Protobuf values in the Confluent wire format into Arrow column buffers, from
/// plans that veltrix_ray.batch.protobuf makes of the compiled schemas.
#[pyclass(module = "veltrix_codec")]
struct ProtobufDecoder {
    inner: protobuf::ProtoDecoder,
}

#[pymethods]
impl ProtobufDecoder {
    #[new]
    fn new(columns: Vec<(String, String, bool)>) -> PyResult<Self> {
        Ok(ProtobufDecoder {
            inner: protobuf::ProtoDecoder {
                columns: parse_columns(columns)?,
                schemas: HashMap::new(),
            },
        })
    }

    /// The plan of one schema id: its message types, enums, and per message-index path the
    /// message and each column's operation (or the error of every record with that path).
    fn add_schema(
        &mut self,
        schema_id: u32,
        messages: Vec<protobuf::MessagePlan>,
        enums: Vec<protobuf::EnumPlan>,
        targets: Vec<protobuf::TargetPlan>,
    ) -> PyResult<()> {
        let proto = protobuf::Proto::new(messages, enums, targets, self.inner.columns.len())
            .map_err(|e| PyValueError::new_err(format!("schema id {schema_id}: bad plan: {e}")))?;
        self.inner.schemas.insert(schema_id, proto);
        Ok(())
    }

    fn has(&self, schema_id: u32) -> bool {
        self.inner.schemas.contains_key(&schema_id)
    }

    /// -> (positions decoded, [(position, error)], [(validity, offsets, data)] per column)
    fn decode<'py>(
        &mut self,
        py: Python<'py>,
        values: &Bound<'py, PyAny>,
    ) -> PyResult<Decoded<'py>> {
        let (items, ptrs) = gather(values)?;
        let inner = &mut self.inner;
        let out = py.detach(move || {
            let ptrs = ptrs;
            // SAFETY: `items` keeps every value alive until after this section
            unsafe { inner.run(&ptrs.0) }
        });
        drop(items);
        Ok((out.good, out.bad, take_buffers(py, &mut self.inner.columns)?))
    }
}

/// Decodes JSON values (one object per record) into Arrow column buffers; records it cannot
/// decode exactly as the Python path would are deferred to it.
#[pyclass(module = "veltrix_codec")]
struct JsonDecoder {
    inner: jsonin::JsonDecoder,
}

/// (positions decoded, positions deferred, positions without a value, buffers per column)
type JsonDecoded<'py> = (Vec<usize>, Vec<usize>, Vec<usize>, Vec<Bound<'py, PyTuple>>);

#[pymethods]
impl JsonDecoder {
    #[new]
    fn new(columns: Vec<(String, String, bool)>, max_record_bytes: usize) -> PyResult<Self> {
        let columns = parse_columns(columns)?;
        if let Some(c) = columns.iter().find(|c| !jsonin::supported(c.kind)) {
            return Err(PyValueError::new_err(format!(
                "column `{}`: type {} is decoded by the Python path",
                c.name,
                c.kind.name()
            )));
        }
        Ok(JsonDecoder {
            inner: jsonin::JsonDecoder::new(columns, max_record_bytes),
        })
    }

    /// -> (positions decoded, positions deferred, positions of None, buffers per column)
    fn decode<'py>(
        &mut self,
        py: Python<'py>,
        values: &Bound<'py, PyAny>,
    ) -> PyResult<JsonDecoded<'py>> {
        let (items, ptrs) = gather(values)?;
        let inner = &mut self.inner;
        let out = py.detach(move || {
            let ptrs = ptrs;
            // SAFETY: `items` keeps every value alive until after this section
            unsafe { inner.run(&ptrs.0) }
        });
        drop(items);
        let buffers = take_buffers(py, &mut self.inner.columns)?;
        Ok((out.good, out.deferred, out.absent, buffers))
    }
}

/// The Confluent schema id of each value: -1 for None or under 5 bytes, -2 for a magic byte
/// other than 0.
#[pyfunction]
fn schema_ids(values: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
    let mut ids = Vec::new();
    for item in values.try_iter()? {
        let item = item?;
        if item.is_none() {
            ids.push(-1);
        } else {
            let b = item
                .cast::<PyBytes>()
                .map_err(|_| PyTypeError::new_err("values must be bytes or None"))?;
            ids.push(schema_id(Some(b.as_bytes())));
        }
    }
    Ok(ids)
}

#[pymodule]
fn veltrix_codec(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<AvroDecoder>()?;
    m.add_class::<ProtobufDecoder>()?;
    m.add_class::<JsonDecoder>()?;
    m.add_function(wrap_pyfunction!(schema_ids, m)?)?;
    Ok(())
}
